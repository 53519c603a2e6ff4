"""Benchmark: one trunk pass over a slide region, pooled per window, against each window alone.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/dense_pass.py --model MODEL.pt \
        --set benchmarks/out/slide_set_4000 \
        --slides semireal_tumor_01,semireal_tumor_02,semireal_tumor_03,semireal_normal_01

The half-tile grid (the slide default) runs the trunk on every 96 px tile, 4x the tiles of the
plain grid. A convolutional trunk could instead run once over a region and each window's taps
be cut from the region's maps: at a step of 32 px every tap of EfficientNet-Lite0 (strides 4-32)
is cell-aligned, so the windows are exactly the tiles' receptive fields, apart from what lies
beyond each tile's edge (real neighbours instead of the zero padding the head was trained
with). This measures what that changes, on a head model (``--model``): per window, the head's
logit from its own pass and from the region's, their correlation and mean absolute
difference, the tile AUROC of each against the truth (a window is tumour when at least half of
it lies inside the truth's lesions) and the time of each. Regions of 992 px (30 x 30 windows):
up to three around lesions of a tumour slide, else at random; glass windows (mean RGB > 220)
are left out. Writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from qupath_rkd.features.trunk import pool_taps
from qupath_rkd.model.calibration import auroc
from qupath_rkd.model.scorer import load_model, preprocess_batch

TILE_PX, STEP_PX, REGION_PX = 96, 32, 992


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--set", required=True, type=Path, help="a build_slide_set.py folder")
    ap.add_argument("--slides", required=True, help="comma-separated slide names (no suffix)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import openslide
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cpu = torch.device("cpu")
    model = load_model(args.model, device="cpu")
    if model.kind != "head":
        raise SystemExit(f"{args.model}: a head model is needed (this one is {model.kind!r})")
    net = model.net
    n = (REGION_PX - TILE_PX) // STEP_PX + 1
    alone_l, dense_l, labels_l = [], [], []
    t_alone = t_dense = 0.0
    for name in args.slides.split(","):
        slide = openslide.OpenSlide(str(args.set / "slides" / f"{name}.tif"))
        truth = json.loads((args.set / "truth" / "geojson" / f"{name}.geojson").read_text())
        polys = [
            shape(f["geometry"])
            for f in truth.get("features", [])
            if (f["properties"].get("classification") or {}).get("name", "Tumor") == "Tumor"
        ]
        tumour = unary_union(polys) if polys else None
        w_px, h_px = slide.dimensions
        rng = np.random.default_rng(0)
        origins = [
            (
                int(np.clip(p.centroid.x - REGION_PX / 2, 0, w_px - REGION_PX)),
                int(np.clip(p.centroid.y - REGION_PX / 2, 0, h_px - REGION_PX)),
            )
            for p in polys[:3]
        ]
        while len(origins) < 3:
            origins.append(
                (int(rng.integers(0, w_px - REGION_PX)), int(rng.integers(0, h_px - REGION_PX)))
            )
        for ox, oy in origins:
            region = np.asarray(
                slide.read_region((ox, oy), 0, (REGION_PX, REGION_PX)).convert("RGB")
            )
            cells = [(r, c) for r in range(n) for c in range(n)]
            tiles = np.stack(
                [
                    region[r * STEP_PX : r * STEP_PX + TILE_PX, c * STEP_PX : c * STEP_PX + TILE_PX]
                    for r, c in cells
                ]
            )
            keep = tiles.reshape(len(tiles), -1).mean(axis=1) < 220
            t0 = time.perf_counter()
            with torch.inference_mode():
                x = preprocess_batch(torch.from_numpy(tiles), model.input_px, cpu)
                alone = model.raw_scores(x, 1).numpy()
            t_alone += time.perf_counter() - t0
            t0 = time.perf_counter()
            with torch.inference_mode():
                taps = net.trunk.taps(
                    preprocess_batch(torch.from_numpy(region[None]), REGION_PX, cpu)
                )
                pooled = []
                for r, c in cells:
                    cut = []
                    for t in taps:
                        stride = REGION_PX // t.shape[-1]
                        k, o = TILE_PX // stride, STEP_PX // stride
                        cut.append(t[:, :, r * o : r * o + k, c * o : c * o + k])
                    pooled.append(pool_taps(cut, net.trunk.pooling))
                dense = net.head_logits(torch.cat(pooled).half().float()).numpy()
            t_dense += time.perf_counter() - t0
            y = [
                int(
                    tumour is not None
                    and tumour.intersection(
                        box(
                            ox + c * STEP_PX,
                            oy + r * STEP_PX,
                            ox + c * STEP_PX + TILE_PX,
                            oy + r * STEP_PX + TILE_PX,
                        )
                    ).area
                    >= TILE_PX * TILE_PX / 2
                )
                for r, c in cells
            ]
            alone_l.append(alone[keep])
            dense_l.append(dense[keep])
            labels_l.append(np.asarray(y)[keep])
    a, d, y = (np.concatenate(v) for v in (alone_l, dense_l, labels_l))
    result = {
        "model": str(args.model),
        "slides": args.slides.split(","),
        "windows": int(a.size),
        "tumour_windows": int(y.sum()),
        "logit_correlation": float(np.corrcoef(a, d)[0, 1]),
        "logit_mean_abs_diff": float(np.abs(a - d).mean()),
        "logit_mean_diff_dense_minus_alone": float((d - a).mean()),
        "logit_sd_alone": float(a.std()),
        "auroc_alone": auroc(y, a),
        "auroc_dense": auroc(y, d),
        "seconds_alone": round(t_alone, 1),
        "seconds_dense": round(t_dense, 1),
        "speedup": round(t_alone / t_dense, 2),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
