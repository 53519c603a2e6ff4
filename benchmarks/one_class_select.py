"""How the one-class ``knn`` scorer was chosen, on PCam **train** only (no valid patch is read).

Selection set: 1,000 train normals not in the bank (``train/0`` files 9,000-9,999 in the
dataset's order) and a seeded 1,000 ``train/1`` tumour patches. Bank: local features of the
first ``--bank-patches`` train normals, a seeded ``--bank-rows`` subset. For each trunk tap
(EfficientNet-Lite0 strides 4, 8, 16 and strides 8 + 16 upsampled and concatenated, as
PatchCore does), each neighbourhood average (1, 3, 5 cells) and each patch statistic of the
per-position nearest-bank distance (mean, 75th / 90th percentile, max), the AUROC of tumour
against the held-out normals.

    PYTHONPATH=$PWD python benchmarks/one_class_select.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.features.trunk import build_trunk  # noqa: E402
from qupath_rkd.model.calibration import auroc  # noqa: E402
from qupath_rkd.model.scorer import preprocess_batch  # noqa: E402
from qupath_rkd.training.datasets import PatchFolderDataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=REPO.parent / "shared" / "data" / "pcam")
    ap.add_argument("--taps", default="0;1;2;1,2", help="tap sets, ';'-separated")
    ap.add_argument("--pools", default="1,3,5")
    ap.add_argument("--bank-patches", type=int, default=1000)
    ap.add_argument("--bank-rows", type=int, default=30000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    trunk = build_trunk("efficientnet_lite0").eval()
    normals = PatchFolderDataset([args.pcam / "train/0"], [], seed=123)
    tumour = PatchFolderDataset([], [args.pcam / "train/1"], max_tumor=1000, seed=7)

    def images(ds, idx) -> torch.Tensor:
        return torch.from_numpy(np.stack([ds[int(i)][0] for i in idx]))

    bank_img = images(normals, range(args.bank_patches))
    sel_img = torch.cat([images(normals, range(9000, 10000)), images(tumour, range(1000))])
    y = np.r_[np.zeros(1000), np.ones(1000)].astype(int)

    def taps(x: torch.Tensor, which: list[int]) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 200):
                t = trunk.taps(preprocess_batch(x[i : i + 200], 96, torch.device("cpu")))
                size = t[which[0]].shape[-1]
                maps = [
                    F.interpolate(t[k], size=size, mode="bilinear", align_corners=False)
                    if t[k].shape[-1] != size
                    else t[k]
                    for k in which
                ]
                out.append(torch.cat(maps, 1))
        return torch.cat(out)

    t0 = time.time()
    for spec in args.taps.split(";"):
        which = [int(k) for k in spec.split(",")]
        fb, fs = taps(bank_img, which), taps(sel_img, which)
        for pool in (int(p) for p in args.pools.split(",")):
            b = F.avg_pool2d(fb, pool, 1, pool // 2) if pool > 1 else fb
            s = F.avg_pool2d(fs, pool, 1, pool // 2) if pool > 1 else fs
            c, h = b.shape[1], b.shape[-1]
            bank = b.permute(0, 2, 3, 1).reshape(-1, c)
            g = torch.Generator().manual_seed(0)
            bank = bank[torch.randperm(len(bank), generator=g)[: args.bank_rows]]
            q = s.permute(0, 2, 3, 1).reshape(-1, c)
            d = torch.cat(
                [torch.cdist(q[i : i + 8192], bank).amin(1) for i in range(0, len(q), 8192)]
            ).reshape(len(s), h * h)
            stats = {
                "mean": d.mean(1),
                "q75": d.quantile(0.75, 1),
                "q90": d.quantile(0.9, 1),
                "max": d.amax(1),
            }
            row = " ".join(f"{k} {auroc(y, v.numpy()):.4f}" for k, v in stats.items())
            print(f"taps {spec} ({c} ch, {h}x{h}) pool {pool}: {row} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
