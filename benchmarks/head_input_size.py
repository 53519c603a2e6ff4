"""Does the head gain from a larger trunk input (PCam's 96 px patches upsampled)? A paired proxy.

The same patches at every input size: 2,000 PCam train normals (view 0), a seeded 300 train
tumour patches in 8 views (100 drawn per seed), 600 + 600 PCam valid patches (view 0); L2 chosen
on those valid patches (setting (a) of issue 8), AUROC on them, seeds 0, 1, 2.

    PYTHONPATH=$PWD python benchmarks/head_input_size.py efficientnet_lite0 96,128,160
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from qupath_rkd.features.cache import open_default_cache
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.trunk import build_trunk
from qupath_rkd.model.head import auroc_of, choose_l2_on_valid
from qupath_rkd.training.datasets import PatchFolderDataset

P = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam"
torch.set_num_threads(2)
teacher = sys.argv[1] if len(sys.argv) > 1 else "efficientnet_lite0"
sizes = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "96,128,160").split(",")]
trunk, cache = build_trunk(teacher), open_default_cache()


def feats(normal, tumor, views, px, max_n=None, max_t=None):
    ds = PatchFolderDataset(normal, tumor, max_normal=max_n, max_tumor=max_t, seed=123)
    f = extract_features(trunk, ds, input_px=px, views=views, cache=cache)
    return f.values.astype(np.float32), ds.labels


for px in sizes:
    t0 = time.time()
    vx, vy = feats([P / "valid/0"], [P / "valid/1"], [0], px, max_n=600, max_t=600)
    nx, _ = feats([P / "train/0"], [], [0], px, max_n=2000)
    nx = nx[:, 0]
    tx, _ = feats([], [P / "train/1"], list(range(8)), px, max_t=300)
    tf = time.time() - t0
    aucs = []
    for seed in (0, 1, 2):
        tum = tx[np.random.default_rng(seed).choice(len(tx), size=100, replace=False)]
        x = np.concatenate([nx, tum.reshape(-1, tum.shape[-1])])
        y = np.r_[np.zeros(len(nx)), np.ones(len(x) - len(nx))].astype(int)
        choice, fit = choose_l2_on_valid(x, y, lambda f, vx=vx: f.logits(vx).mean(axis=1), vy)
        aucs.append(auroc_of(vy, fit.logits(vx).mean(axis=1)))
    print(
        f"{teacher} px {px}: AUROC {np.mean(aucs):.4f} ± {np.std(aucs, ddof=1):.4f} "
        f"{[round(a, 4) for a in aucs]} features {tf:.0f} s",
        flush=True,
    )
