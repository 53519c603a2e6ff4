"""Normal patches only (issue 8's budget 0): the default one-class scorer through ``train``.

Trains exactly what ``train-patches`` trains when it is given no tumour patches (the
``knn`` scorer, :mod:`qupath_rkd.model.local_knn`) on the 10,000 PCam train normals, for each
seed, in the issue's two settings, and reports the AUROC on all of PCam valid (3,000 patches):

- (a) with the PCam valid folders given (they calibrate the model; nothing is selected on them:
  the scorer has no setting chosen on valid, see ``one_class_select.py``);
- (b) without them: the trainer holds out a fifth of the normals (at most 1,000) to calibrate.

    PYTHONPATH=$PWD python benchmarks/one_class.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.model.calibration import auroc  # noqa: E402
from qupath_rkd.model.scorer import load_model  # noqa: E402
from qupath_rkd.training.config import TrainConfig  # noqa: E402
from qupath_rkd.training.datasets import PatchFolderDataset  # noqa: E402
from qupath_rkd.training.trainer import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=REPO.parent / "shared" / "data" / "pcam")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--settings", default="a,b")
    ap.add_argument("--tap", type=int, default=None, help="knn_tap (default: the library's)")
    ap.add_argument("--pool", type=int, default=None, help="knn_pool_cells (default: ditto)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "one_class.json")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tr = PatchFolderDataset([args.pcam / "train/0"], [])
    va = PatchFolderDataset([args.pcam / "valid/0"], [args.pcam / "valid/1"])
    images = np.stack([va[i][0] for i in range(len(va))])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                cfg = TrainConfig(device="cpu", seed=seed, mpp=0.972, input_px=96)
                if args.tap is not None:
                    cfg = dataclasses.replace(cfg, knn_tap=args.tap)
                if args.pool is not None:
                    cfg = dataclasses.replace(cfg, knn_pool_cells=args.pool)
                out = Path(tmp) / f"{setting}{seed}.pt"
                t0 = time.time()
                res = train(tr, va if setting == "a" else None, cfg, out, tr.fingerprint())
                train_s = time.time() - t0
                model = load_model(out, device="cpu")
                t1 = time.time()
                scores, probs = model.score_images(images, batch_size=128)
                score_s = time.time() - t1
                row = {
                    "setting": setting,
                    "seed": seed,
                    "kind": model.kind,
                    "tap": model.config["knn_tap"],
                    "pool_cells": model.config["knn_pool_cells"],
                    "auroc_valid": auroc(va.labels, scores),
                    "calibration": res.calibration["method"],
                    "normal_tiles_at_0.5": float((probs[va.labels == 0] >= 0.5).mean()),
                    "tumour_tiles_at_0.5": float((probs[va.labels == 1] >= 0.5).mean()),
                    "train_s": round(train_s, 1),
                    "score_ms_per_patch": round(1000 * score_s / len(images), 2),
                    "load": os.getloadavg()[0],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    for setting in args.settings.split(","):
        a = [r["auroc_valid"] for r in rows if r["setting"] == setting]
        sd = np.std(a, ddof=1) if len(a) > 1 else 0.0
        print(f"setting {setting}: AUROC {np.mean(a):.4f} +- {sd:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
