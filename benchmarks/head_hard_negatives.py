"""Hard-negative mining for the head: are the normal patches that an out-of-fold head scores
highest worth more weight? (Measured, not adopted: docs/benchmarks.md.)

Features of PCam through the feature cache as ``head_ablation.py`` reads them (valid in 8
views, 10,000 train normals in view 0, a seeded 1,500 train tumour patches in 8 views). Per
seed: 100 tumour patches (all 8 views) + the 10,000 normals; the head at L2 0.3 (what the
validation chooses at 100); then the normals' out-of-fold logits (5 folds over the normals,
the tumour rows in every fit), the top ``q`` of them weighted ``w`` times (each class still half
the loss: :func:`qupath_rkd.model.head.fit_head`'s ``normal_weights``), refitted. Scored on PCam
valid in view 0 (as slides are): AUROC and the tumour recall at 0.5 / 1 / 2 / 5 % of the
normals (the tail that makes false lesions on slides).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/head_hard_negatives.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.features.cache import open_default_cache  # noqa: E402
from qupath_rkd.features.extract import extract_features  # noqa: E402
from qupath_rkd.features.trunk import build_trunk  # noqa: E402
from qupath_rkd.model.head import HeadFit, auroc_of, fit_head  # noqa: E402
from qupath_rkd.training.datasets import PatchFolderDataset  # noqa: E402

#: Shares of the normal patches at which the tumour recall is read.
NORMAL_SHARES = (0.005, 0.01, 0.02, 0.05)


def tail_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUROC and the tumour recall above the score that ``NORMAL_SHARES`` of the normals
    exceed (``(N,)`` scores, 0/1 labels)."""
    neg = np.sort(scores[labels == 0])[::-1]
    pos = scores[labels == 1]
    out = {"auroc": round(auroc_of(labels, scores), 4)}
    for share in NORMAL_SHARES:
        cut = neg[min(int(np.floor(share * len(neg))), len(neg) - 1)]
        out[f"recall_at_{share:g}"] = round(float((pos > cut).mean()), 4)
    return out


def hard_weights(oof: np.ndarray, share: float, weight: float) -> np.ndarray:
    """``(N,)`` weights of the normals: ``weight`` for the top ``share`` by out-of-fold logit,
    1 for the rest."""
    w = np.ones(len(oof))
    w[oof >= np.quantile(oof, 1.0 - share)] = weight
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=REPO.parent / "shared" / "data" / "pcam")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--shares", default="0.02,0.05,0.1")
    ap.add_argument("--weights", default="3,10")
    ap.add_argument("--l2", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/head_hard_negatives.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    trunk, cache = build_trunk("efficientnet_lite0"), open_default_cache()

    def feats(normal: list[Path], tumor: list[Path], views: list[int], max_t: int | None = None):
        ds = PatchFolderDataset(normal, tumor, max_tumor=max_t, seed=123)
        f = extract_features(trunk, ds, input_px=96, views=views, cache=cache)
        return f.values.astype(np.float32), ds.labels

    vx, vy = feats([args.pcam / "valid/0"], [args.pcam / "valid/1"], [0])
    nx, _ = feats([args.pcam / "train/0"], [], [0])
    tx, _ = feats([], [args.pcam / "train/1"], list(range(8)), max_t=1500)
    nx = nx[:, 0]

    def score(fit: HeadFit) -> dict[str, float]:
        return tail_metrics(fit.logits(vx).mean(axis=1), vy)

    rows: dict[str, list[dict[str, float]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        tum = tx[np.random.default_rng(seed).choice(len(tx), size=100, replace=False)]
        x = np.concatenate([nx, tum.reshape(-1, tum.shape[-1])])
        y = np.r_[np.zeros(len(nx)), np.ones(len(x) - len(nx))].astype(int)
        rows.setdefault("equal weights (the default)", []).append(score(fit_head(x, y, args.l2)))
        fold = np.random.default_rng(seed).permutation(len(nx)) % 5
        oof = np.zeros(len(nx))
        for k in range(5):
            keep = np.r_[fold != k, np.ones(len(x) - len(nx), dtype=bool)]
            fold_fit = fit_head(x[keep], y[keep], args.l2)
            oof[fold == k] = fold_fit.logits(nx[fold == k][:, None])[:, 0]
        for share in (float(s) for s in args.shares.split(",")):
            for weight in (float(w) for w in args.weights.split(",")):
                fit = fit_head(x, y, args.l2, normal_weights=hard_weights(oof, share, weight))
                rows.setdefault(f"top {share:g} of normals x{weight:g}", []).append(score(fit))
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
    summary = {
        name: {k: round(float(np.mean([m[k] for m in ms])), 4) for k in ms[0]}
        for name, ms in rows.items()
    }
    for name, m in summary.items():
        print(name, m)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "seconds": round(time.time() - t0),
                "load_average_end": [round(v, 2) for v in os.getloadavg()],
                "summary": summary,
                "per_seed": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
