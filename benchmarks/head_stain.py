"""Stain augmentation of the rare class and teacher concatenation for the head (issue 8.3).

Same data and protocol as ``head_ablation.py`` (PCam train/0 10,000 normals in view 0; a seeded
1,500 of train/1, of which each seed draws its budget; all of PCam valid in 8 views, L2 chosen
on valid: setting (a)), with the default ``t8`` mode (every tumour patch in its 8 dihedral views)
as the baseline and these variants, all fitted with the library's :mod:`qupath_rkd.model.head`:

- ``stain<S>x<K>``: the tumour patches also in ``K`` stain-jittered copies of strength ``S``
  (:mod:`qupath_rkd.features.stain`), each in its 8 views;
- ``concat``: the baseline on the concatenated features of ``--teachers`` (e.g. Lite0 + Lite2).

    python benchmarks/head_stain.py --budgets 100,1000 --variants t8,stain0.1x1,stain0.05x1
    python benchmarks/head_stain.py --budgets 100,1000 --variants concat \
        --teachers efficientnet_lite0,efficientnet_lite2
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.features.cache import open_default_cache  # noqa: E402
from qupath_rkd.features.extract import extract_features  # noqa: E402
from qupath_rkd.features.stain import StainJitterDataset  # noqa: E402
from qupath_rkd.features.trunk import build_trunk  # noqa: E402
from qupath_rkd.model.head import auroc_of, choose_l2_on_valid  # noqa: E402
from qupath_rkd.training.datasets import PatchFolderDataset  # noqa: E402

VIEWS = list(range(8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=REPO.parent / "shared" / "data" / "pcam")
    ap.add_argument("--teachers", default="efficientnet_lite0")
    ap.add_argument("--budgets", default="100,1000")
    ap.add_argument("--variants", default="t8,stain0.1x1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "head_stain.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cache = open_default_cache()
    teachers = args.teachers.split(",")
    variants = args.variants.split(",")

    def feats(trunk, ds, views):
        f = extract_features(trunk, ds, input_px=96, views=views, cache=cache)
        return f.values.astype(np.float32)

    def dataset(normal, tumor, max_t=None):
        return PatchFolderDataset(normal, tumor, max_tumor=max_t, seed=123)

    valid_ds = dataset([args.pcam / "valid/0"], [args.pcam / "valid/1"])
    vy = valid_ds.labels
    normal_ds = dataset([args.pcam / "train/0"], [])
    tumor_ds = dataset([], [args.pcam / "train/1"], max_t=1500)
    vx, nx, tx = [], [], []
    stain: dict[str, list[np.ndarray]] = {}
    t0 = time.time()
    for name in teachers:
        trunk = build_trunk(name)
        vx.append(feats(trunk, valid_ds, VIEWS))
        nx.append(feats(trunk, normal_ds, [0])[:, 0])
        tx.append(feats(trunk, tumor_ds, VIEWS))
        for v in variants:
            m = re.fullmatch(r"stain([0-9.]+)x(\d+)", v)
            if m:
                s, k = float(m.group(1)), int(m.group(2))
                ds = StainJitterDataset(tumor_ds, k, s, seed=7)
                f = feats(trunk, ds, VIEWS)  # (k * 1500, 8, D), copy-major
                stain.setdefault(v, []).append(f.reshape(k, len(tumor_ds), 8, -1))
    print(f"features: {time.time() - t0:.0f} s", flush=True)
    cat = lambda parts: np.concatenate(parts, axis=-1)  # noqa: E731
    vx_all, nx_all, tx_all = cat(vx), cat(nx), cat(tx)
    results: dict[str, list[float]] = {}
    for budget in (int(b) for b in args.budgets.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            pick = np.random.default_rng(seed).choice(len(tx_all), size=budget, replace=False)
            for v in variants:
                t1 = time.time()
                d = vx_all.shape[-1] if v == "concat" else vx[0].shape[-1]
                nxx = nx_all if v == "concat" else nx[0]
                vxx = vx_all if v == "concat" else vx[0]
                tum = (tx_all if v == "concat" else tx[0])[pick].reshape(-1, d)
                if v in stain:
                    extra = stain[v][0][:, pick].reshape(-1, d)
                    tum = np.concatenate([tum, extra])
                x = np.concatenate([nxx, tum])
                y = np.r_[np.zeros(len(nxx)), np.ones(len(tum))].astype(int)
                choice, fit = choose_l2_on_valid(
                    x, y, lambda f, vxx=vxx: f.logits(vxx).mean(axis=1), vy
                )
                auc = auroc_of(vy, fit.logits(vxx).mean(axis=1))
                results.setdefault(f"{budget} {v}", []).append(auc)
                print(
                    f"{budget} {seed} {v} AUROC {auc:.4f} l2 {choice.l2:g} "
                    f"({time.time() - t1:.0f} s)",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"teachers": teachers, "results": results}, indent=1))
    print("| tumour | variant | AUROC mean ± sd |\n|---|---|---|")
    for key, vals in results.items():
        budget, v = key.split(" ")
        print(f"| {budget} | {v} | {np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f} |")


if __name__ == "__main__":
    main()
