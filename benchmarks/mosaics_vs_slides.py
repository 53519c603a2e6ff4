"""How a model's normal mosaics (stored by ``train-patches``) compare with real tumour-free slides.

For the mosaics in the checkpoint and the heatmaps ``predict`` wrote for the tumour-free slides:
the share of tiles at or above 0.5 and 0.72 (raw, and smoothed as ``predict`` smooths), the raw
share in the slides' interior (no empty cell within 3 cells: away from glass and fat), the
lag-1 correlation of neighbouring tiles, and the false lesions per unit (mosaic or slide) at a
range of thresholds with ``predict``'s default post-processing (extent capped at the model's
calibrated threshold).

    PYTHONPATH=. python benchmarks/mosaics_vs_slides.py --model /work/exp/nm/issue.pt \\
        --pred /work/exp/nm/pred4000b --prefix semireal_normal_
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.inference import InferenceConfig
from qupath_rkd.lesions.pipeline import count_lesions
from qupath_rkd.lesions.postprocess import smooth_heatmap
from qupath_rkd.model.scorer import load_model
from qupath_rkd.outputs import SlideOutputs


def _stats(heatmaps: list[Heatmap], sigma_um: float, cap: float, thresholds: list[float]) -> dict:
    raw, smoothed, interior, corr = [], [], [], []
    lesions = {t: 0 for t in thresholds}
    for h in heatmaps:
        p = h.probability
        tissue = np.isfinite(p)
        s = smooth_heatmap(h, sigma_um).probability
        empty_near = ndimage.convolve((~tissue).astype(float), np.ones((7, 7)), mode="constant")
        raw.append(p[tissue])
        smoothed.append(s[tissue])
        interior.append(p[tissue & (empty_near == 0)])
        a, b = p[:, :-1], p[:, 1:]
        both = np.isfinite(a) & np.isfinite(b)
        x, y = a[both].astype(np.float64), b[both].astype(np.float64)
        if x.std() > 1e-9 and y.std() > 1e-9:  # a constant heatmap has none
            corr.append(float(np.corrcoef(x, y)[0, 1]))
        for t in thresholds:
            lesions[t] += count_lesions(
                s, t, min(t, cap), cell_um=h.cell_um, min_major_axis_um=200.0
            )
    r, sm, inner = np.concatenate(raw), np.concatenate(smoothed), np.concatenate(interior)
    return {
        "units": len(heatmaps),
        "tiles": int(r.size),
        "raw_ge_0.5": float((r >= 0.5).mean()),
        "raw_ge_0.72": float((r >= 0.72).mean()),
        "raw_ge_0.5_per_unit": [float((x >= 0.5).mean()) for x in raw],
        "raw_ge_0.72_per_unit": [float((x >= 0.72).mean()) for x in raw],
        "interior_raw_ge_0.5": float((inner >= 0.5).mean()) if inner.size else None,
        "smoothed_ge_0.5": float((sm >= 0.5).mean()),
        "lag1_correlation": float(np.mean(corr)) if corr else None,
        "false_lesions_per_unit": {f"{t:.2f}": lesions[t] / len(heatmaps) for t in thresholds},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a train-patches model")
    ap.add_argument("--pred", type=Path, required=True, help="its predict --out folder")
    ap.add_argument("--prefix", required=True, help="name prefix of the tumour-free slides")
    args = ap.parse_args()
    model = load_model(args.model, device="cpu")
    if model.normal_mosaics is None:
        raise SystemExit(f"{args.model} holds no normal mosaics")
    cfg = InferenceConfig().resolved(model)
    mosaics = model.normal_mosaics
    assert cfg.tile_mpp is not None
    um_per_px = cfg.tile_mpp * model.tile_px / mosaics.input_px
    mosaic_maps = [
        Heatmap(g, (0.0, 0.0), float(mosaics.stride_px), float(mosaics.input_px), um_per_px)
        for g in mosaics.probability
    ]
    slides = sorted(p.name for p in args.pred.iterdir() if p.name.startswith(args.prefix))
    slide_maps = [
        Heatmap.load(SlideOutputs(args.pred, s).heatmap_json.with_suffix("")) for s in slides
    ]
    thresholds = [round(t, 2) for t in np.arange(0.70, 0.815, 0.01)]
    sigma, cap = cfg.smooth_sigma_um, float(model.threshold)
    out = {
        "mosaics": _stats(mosaic_maps, sigma, cap, thresholds),
        "tumor_free_slides": _stats(slide_maps, sigma, cap, thresholds),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
