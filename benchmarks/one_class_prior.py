"""The one-class knn score as a prior beside the supervised head (issue 8, point 3).

Score = head logit / sd(normal logits) + w * knn z-score (the knn score centred on the median
and scaled by the sd of 1,000 train normals outside its bank). ``w`` in {0, 0.25, 0.5, 1, 2, 4}
is chosen on a PCam **train** split (head on train normals 0-8,999 + the seed's tumour budget
in 8 views, L2 and AUROC on train normals 9,000-9,999 + 1,000 train tumour patches outside the
1,500-patch tumour pool); PCam valid is only reported (head on all 10,000 normals, L2 on valid,
as head_ablation.py's setting (a)), with the TPR at 5 % and 1 % FPR.

    PYTHONPATH=$PWD python benchmarks/one_class_prior.py 100
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qupath_rkd.features.cache import open_default_cache
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.trunk import build_trunk
from qupath_rkd.model.head import auroc_of, choose_l2_on_valid
from qupath_rkd.model.local_knn import LocalKnnNetwork, sample_bank
from qupath_rkd.model.scorer import preprocess_batch
from qupath_rkd.training.datasets import PatchFolderDataset

torch.set_num_threads(2)
P = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam"
trunk, cache = build_trunk("efficientnet_lite0"), open_default_cache()
t0 = time.time()


def feats(ds, views):
    f = extract_features(trunk, ds, input_px=96, views=views, cache=cache)
    print("feats computed", f.computed, "cached", f.cached, round(time.time() - t0), flush=True)
    return f.values.astype(np.float32)


nds = PatchFolderDataset([P / "train/0"], [], seed=123)
pool = PatchFolderDataset([], [P / "train/1"], max_tumor=1500, seed=123)
allt = PatchFolderDataset([], [P / "train/1"], seed=123)
vds = PatchFolderDataset([P / "valid/0"], [P / "valid/1"], seed=123)
nx = feats(nds, [0])[:, 0]
px = feats(pool, list(range(8)))
in_pool = set(map(str, pool.paths))
rest = [i for i, p in enumerate(allt.paths) if str(p) not in in_pool]
sel_t = np.random.default_rng(7).choice(rest, 1000, replace=False)
stx = feats(Subset(allt, sel_t.tolist()), [0])[:, 0]
vx = feats(vds, list(range(8)))
vy = vds.labels
knn = LocalKnnNetwork(trunk, 1)


def kscore(ds, idx):
    s = []
    for i in range(0, len(idx), 256):
        x = torch.from_numpy(np.stack([ds[int(j)][0] for j in idx[i : i + 256]]))
        s.append(knn(preprocess_batch(x, 96, torch.device("cpu"))))
    return torch.cat(s).numpy()


# train-split knn: bank from normals 0..1999, z from normals 2000..2999
loc = []
for i in range(0, 2000, 256):
    x = torch.from_numpy(np.stack([nds[j][0] for j in range(i, min(2000, i + 256))]))
    f = knn.local_features(preprocess_batch(x, 96, torch.device("cpu")))
    loc.append(f.reshape(-1, f.shape[-1]))
knn.set_bank(sample_bank(torch.cat(loc), 10000, 0))
zn = kscore(nds, np.arange(2000, 3000))
mu, sd = np.median(zn), zn.std()
k_sel = (np.r_[kscore(nds, np.arange(9000, 10000)), kscore(allt, sel_t)] - mu) / sd
k_val = (kscore(vds, np.arange(len(vds))) - mu) / sd
print(
    "knn scored",
    round(time.time() - t0),
    "knn AUROC sel",
    round(auroc_of(np.r_[np.zeros(1000), np.ones(1000)], k_sel), 4),
    "valid",
    round(auroc_of(vy, k_val), 4),
    flush=True,
)
sel_y = np.r_[np.zeros(1000), np.ones(1000)].astype(int)
sel_x = np.concatenate([nx[9000:], stx])[:, None]
ws = [0, 0.25, 0.5, 1, 2, 4]


def tpr_at(y, s, fpr):
    thr = np.quantile(s[y == 0], 1 - fpr)
    return float((s[y == 1] > thr).mean())


for budget in (int(b) for b in sys.argv[1].split(",")):
    for seed in (0, 1, 2):
        tum = px[np.random.default_rng(seed).choice(len(px), size=budget, replace=False)]
        # train split: head on normals 0-8,999 (2,000 of them are the knn bank too: it is
        # unsupervised)
        x = np.concatenate([nx[:9000], tum.reshape(-1, tum.shape[-1])])
        y = np.r_[np.zeros(9000), np.ones(len(x) - 9000)].astype(int)
        _, fit = choose_l2_on_valid(x, y, lambda f: f.logits(sel_x).mean(axis=1), sel_y)
        ls = fit.logits(sel_x).mean(axis=1)
        lsd = ls[sel_y == 0].std()
        sel = {w: auroc_of(sel_y, ls / lsd + w * k_sel) for w in ws}
        best = max(ws, key=lambda w: sel[w])
        # valid: the default head (all 10,000 normals, L2 on valid)
        x = np.concatenate([nx, tum.reshape(-1, tum.shape[-1])])
        y = np.r_[np.zeros(10000), np.ones(len(x) - 10000)].astype(int)
        _, fit = choose_l2_on_valid(x, y, lambda f: f.logits(vx).mean(axis=1), vy)
        lv = fit.logits(vx).mean(axis=1)
        lvd = lv[vy == 0].std()
        res = {
            w: (
                round(auroc_of(vy, lv / lvd + w * k_val), 4),
                round(tpr_at(vy, lv / lvd + w * k_val, 0.05), 3),
                round(tpr_at(vy, lv / lvd + w * k_val, 0.01), 3),
            )
            for w in ws
        }
        print(
            budget,
            seed,
            "sel",
            {w: round(v, 4) for w, v in sel.items()},
            "best w",
            best,
            "valid (auc, tpr@5%, tpr@1%)",
            res,
            round(time.time() - t0),
            flush=True,
        )
