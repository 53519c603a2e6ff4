"""Ablation of the head on PCam features from the feature cache (what chose the defaults).

Reads the pooled features of PCam (valid in all 8 views; 10,000 train normals in view 0; a
seeded 1,500 train tumour patches in all 8 views) through the feature cache, then for each
tumour budget and seed fits the head with the library's own functions
(:mod:`qupath_rkd.model.head`) in these modes:

- ``notta``: tumour patches in view 0, valid scored in view 0 only (no test-time views);
- ``t1``: tumour patches in view 0, valid scored as the mean over 8 views;
- ``t8``: every tumour patch in all 8 views (the rare class augmented; the default), 8-view valid;
- ``cv``: as ``t8`` but L2 chosen by 5-fold cross-validation on the training patches;
- ``auto``: the default since 2026-12-06 (``head = "auto"``): ``t8``, then from
  ``ENSEMBLE_MIN_TUMOUR_PATCHES`` tumour patches on the ensemble (linear + perceptron,
  :mod:`qupath_rkd.model.mlp_head`) if its PCam valid AUROC is at least the linear head's;
- ``cvauto``: the same without validation: ``cv``, and the ensemble kept if its mean per-fold
  AUROC (the perceptron's out-of-fold logits) is at least the linear head's (setting (b));
- ``ens``: ``t8``, then always the ensemble (``head = "ensemble"``; what ``auto`` does not try
  below ``ENSEMBLE_MIN_TUMOUR_PATCHES``).

L2 is chosen on PCam valid (the issue's setting (a)) except in ``cv``; AUROC on all of PCam valid.

    python benchmarks/head_ablation.py --budgets 10,100,1000 --modes notta,t1,t8,cv
    python benchmarks/head_ablation.py --budgets 10,100,1000 --modes auto,cvauto
    python benchmarks/head_ablation.py --all-labels     # all 10,000 train/1 patches, view 0

``--all-labels`` (the issue's "all labels" budget) fits once on the 10,000 train normals and
all 10,000 train/1 patches (files as they are: PCam's train/1 here holds 9,171 distinct
images, the rest exact copies), the tumour patches in view 0 only (eight views of 10,000
patches would cost 70,000 more trunk passes for a budget where the rare class is not rare),
valid scored in 8 views, L2 on valid; then the ensemble (seed 0) and what ``auto`` keeps; no
seeds for the draw (the data are all there is).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.constants import ENSEMBLE_MIN_TUMOUR_PATCHES  # noqa: E402
from qupath_rkd.features.cache import open_default_cache  # noqa: E402
from qupath_rkd.features.extract import extract_features  # noqa: E402
from qupath_rkd.features.trunk import build_trunk  # noqa: E402
from qupath_rkd.model.head import (  # noqa: E402
    auroc_of,
    choose_l2_on_valid,
    cross_validate_l2,
    fit_ensemble,
    fit_head,
    keep_ensemble,
    mean_fold_auroc,
    perceptron_oof,
    stratified_folds,
)
from qupath_rkd.training.datasets import PatchFolderDataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=REPO.parent / "shared" / "data" / "pcam")
    ap.add_argument("--teacher", default="efficientnet_lite0")
    ap.add_argument("--budgets", default="10,100,1000")
    ap.add_argument("--modes", default="notta,t1,t8,cv")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--all-labels", action="store_true", help="only the all-labels fit")
    args = ap.parse_args()
    torch.set_num_threads(2)
    trunk, cache = build_trunk(args.teacher), open_default_cache()

    def feats(normal: list[Path], tumor: list[Path], views: list[int], max_t: int | None = None):
        ds = PatchFolderDataset(normal, tumor, max_tumor=max_t, seed=123)
        f = extract_features(trunk, ds, input_px=96, views=views, cache=cache)
        return f.values.astype(np.float32), ds.labels

    vx, vy = feats([args.pcam / "valid/0"], [args.pcam / "valid/1"], list(range(8)))
    nx, _ = feats([args.pcam / "train/0"], [], [0])
    nx = nx[:, 0]
    if args.all_labels:
        t0 = time.time()
        ax, _ = feats([], [args.pcam / "train/1"], [0])
        x = np.concatenate([nx, ax[:, 0]])
        y = np.r_[np.zeros(len(nx)), np.ones(len(ax))].astype(int)
        choice, fit = choose_l2_on_valid(x, y, lambda f: f.logits(vx).mean(axis=1), vy)
        auc = auroc_of(vy, fit.logits(vx).mean(axis=1))
        print(
            f"all labels ({len(nx)} normal + {len(ax)} tumour, view 0) linear AUROC {auc:.4f} "
            f"l2 {choice.l2:g} ({time.time() - t0:.0f} s)",
            flush=True,
        )
        ens = fit_ensemble(x, y, fit, seed=0)
        ens_auc = auroc_of(vy, ens.logits(vx).mean(axis=1))
        kept = (
            "ensemble" if keep_ensemble("auto", {"linear": auc, "ensemble": ens_auc}) else "linear"
        )
        print(
            f"all labels: ensemble AUROC {ens_auc:.4f}; --head auto keeps the {kept} "
            f"head ({time.time() - t0:.0f} s)",
            flush=True,
        )
        return
    tx, _ = feats([], [args.pcam / "train/1"], list(range(8)), max_t=1500)
    results: dict[tuple[int, str], list[float]] = {}
    for budget in (int(b) for b in args.budgets.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            tum = tx[np.random.default_rng(seed).choice(len(tx), size=budget, replace=False)]
            for mode in args.modes.split(","):
                t0 = time.time()
                views = tum[:, :1] if mode in ("notta", "t1") else tum
                x = np.concatenate([nx, views.reshape(-1, tum.shape[-1])])
                y = np.r_[np.zeros(len(nx)), np.ones(len(x) - len(nx))].astype(int)
                valid = vx[:, :1] if mode == "notta" else vx
                head = "linear"
                if mode in ("cv", "cvauto"):
                    labels = np.r_[np.zeros(len(nx)), np.ones(budget)].astype(int)

                    def rows(mask: np.ndarray, train: bool, labels=labels, tum=tum):
                        n_idx = np.flatnonzero(mask[: len(nx)])
                        t_idx = np.flatnonzero(mask[len(nx) :])
                        if not train:
                            return np.concatenate([nx[n_idx][:, None], tum[t_idx, :1]]), None
                        part = tum[t_idx].reshape(-1, tum.shape[-1])
                        return np.concatenate([nx[n_idx], part]), np.r_[
                            np.zeros(len(n_idx)), np.ones(len(part))
                        ].astype(int)

                    folds = stratified_folds(labels, 5, seed)
                    choice, oof = cross_validate_l2(rows, labels, folds)
                    model = fit_head(x, y, choice.l2)
                    if mode == "cvauto" and budget >= ENSEMBLE_MIN_TUMOUR_PATCHES:
                        ens_oof = 0.5 * (oof + perceptron_oof(rows, folds, seed, None))
                        scores = {
                            "linear": choice.scores[choice.l2],
                            "ensemble": mean_fold_auroc(labels, ens_oof, folds),
                        }
                        if keep_ensemble("auto", scores):
                            model, head = fit_ensemble(x, y, model, seed=seed), "ensemble"
                else:
                    choice, model = choose_l2_on_valid(
                        x, y, lambda f, valid=valid: f.logits(valid).mean(axis=1), vy
                    )
                    if mode == "ens" or (mode == "auto" and budget >= ENSEMBLE_MIN_TUMOUR_PATCHES):
                        ens = fit_ensemble(x, y, model, seed=seed)
                        scores = {
                            "linear": choice.scores[choice.l2],
                            "ensemble": auroc_of(vy, ens.logits(valid).mean(axis=1)),
                        }
                        print(f"  {budget} {seed} {mode} {scores}", flush=True)
                        if keep_ensemble("ensemble" if mode == "ens" else "auto", scores):
                            model, head = ens, "ensemble"
                auc = auroc_of(vy, model.logits(valid).mean(axis=1))
                results.setdefault((budget, mode), []).append(auc)
                print(
                    f"{budget} {seed} {mode} AUROC {auc:.4f} l2 {choice.l2:g} {head} "
                    f"({time.time() - t0:.0f} s)",
                    flush=True,
                )
    print("| tumour | mode | AUROC mean ± sd (3 seeds) |\n|---|---|---|")
    for (budget, mode), v in sorted(results.items()):
        print(f"| {budget} | {mode} | {np.mean(v):.3f} ± {np.std(v, ddof=1):.3f} |")


if __name__ == "__main__":
    main()
