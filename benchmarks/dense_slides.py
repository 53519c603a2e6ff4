"""Benchmark: ``slide_quality.py`` with each slide's heatmap from one trunk pass per region.

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 python benchmarks/dense_slides.py \
        --set benchmarks/out/slide_set_4000 --model MODEL.pt --strides 32 --sigmas-um 40 \
        --extent-ratios 1 --min-lesion-um 200 --extent-cap 0.5 --workers 0 \
        --cache benchmarks/out/slide_quality_model/dense_cache_NAME --out OUT

Takes every option of ``benchmarks/slide_quality.py`` and runs it with the model's tile
scoring (:func:`qupath_rkd.inference.predict.score_tiles`) replaced by a region pass: the
grid's tiles are grouped into blocks of ``BLOCK x BLOCK`` grid steps, each block's pixels (its
tiles' union, glass-white past the slide's edge) run through the frozen trunk once, and each
tile's taps are cut from the block's maps and pooled as the head pools a tile (mean, centre
third's mean, max, std: the statistics of the trunk's pooling, by average / max pooling over
windows). The stride must make every tap cell-aligned (a multiple of 32 px for
EfficientNet-Lite0); head models, one view, slides read at level 0 (tile µm/px = the slide's).
``benchmarks/dense_pass.py`` measures the same cut against each tile alone. The heatmaps are
cached under ``--cache`` as ``slide_quality.py`` caches its own: give a folder of their own.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: grid steps per block side (a block of 30 steps of 32 px is 1,024 px with a 96 px tile)
BLOCK = 30
_TIMES: dict[str, float] = {"score_s": 0.0, "tiles": 0.0}


def _pooled_windows(tap: torch.Tensor, k: int, o: int, stats: tuple[str, ...]) -> torch.Tensor:
    """``(1, C, H, W)`` tap -> ``(n_rows * n_cols, C * len(stats))``: per window of ``k`` cells
    every ``o`` cells, its statistics in ``stats`` order (as ``pool_taps`` takes them)."""
    t = tap.float()
    n_rows, n_cols = (t.shape[-2] - k) // o + 1, (t.shape[-1] - k) // o + 1
    parts = []
    for stat in stats:
        if stat == "mean":
            v = F.avg_pool2d(t, k, o)
        elif stat == "centre_mean":
            c0 = k // 3
            c1 = max(c0 + 1, math.ceil(2 * k / 3))
            v = F.avg_pool2d(t[..., c0:, c0:], c1 - c0, o)
        elif stat == "max":
            v = F.max_pool2d(t, k, o)
        else:  # population std
            mean = F.avg_pool2d(t, k, o)
            v = (F.avg_pool2d(t * t, k, o) - mean * mean).clamp_min(0).sqrt()
        parts.append(v[..., :n_rows, :n_cols])  # the centre's windows run on past the last
    n = n_rows * n_cols
    rows = [p.flatten(2)[0].T.reshape(n, -1) for p in parts]  # (n, C) each, row-major windows
    return torch.cat(rows, dim=1)


def dense_score_tiles(model, dataset, **kwargs):  # same signature as score_tiles
    from qupath_rkd.features.trunk import POOLINGS
    from qupath_rkd.model.scorer import preprocess_batch

    t0 = time.perf_counter()
    if model.kind != "head":
        raise SystemExit("the region pass needs a head model")
    if kwargs.get("tta_views") not in (None, 1):
        raise SystemExit("the region pass scores one view")
    net, trunk = model.net, model.net.trunk
    stats = POOLINGS[trunk.pooling]
    xy = np.asarray(dataset.xy_px, dtype=np.int64)
    n = len(xy)
    scores = np.full(n, np.nan, dtype=np.float32)
    distances = np.full(n, np.nan, dtype=np.float32) if model.ood_reference is not None else None
    if n == 0:
        return scores, distances, None
    slide = dataset.open()
    if abs(slide.downsample_for(dataset.tile_mpp) - 1.0) > 1e-6:
        raise SystemExit("the region pass reads level 0: tile µm/px must be the slide's")
    tile = int(dataset.tile_px)
    steps = np.unique(np.diff(np.unique(xy[:, 0])))
    step = int(steps.min()) if steps.size else tile
    if tile != model.input_px:
        raise SystemExit("the region pass needs tiles at the model's input size")
    origin = xy.min(axis=0)
    cell = (xy - origin) // step
    block = cell // BLOCK
    side = (BLOCK - 1) * step + tile
    cpu = torch.device("cpu")
    for bx, by in sorted({(int(a), int(b)) for a, b in block}):
        members = np.flatnonzero((block[:, 0] == bx) & (block[:, 1] == by))
        x0 = int(origin[0] + bx * BLOCK * step)
        y0 = int(origin[1] + by * BLOCK * step)
        region = np.full((side, side, 3), 255, dtype=np.uint8)  # glass past the slide's edge
        w = min(side, slide.width_px - x0)
        h = min(side, slide.height_px - y0)
        region[:h, :w] = slide.read_region_px(x0, y0, w, h, (w, h))
        with torch.inference_mode():
            taps = trunk.taps(preprocess_batch(torch.from_numpy(region[None]), side, cpu))
            pooled = []
            for t in taps:
                stride = side // t.shape[-1]
                if tile % stride or step % stride:
                    raise SystemExit(f"step {step} px is not aligned with a tap of stride {stride}")
                pooled.append(_pooled_windows(t, tile // stride, step // stride, stats))
            feats = torch.cat(pooled, dim=1)  # (BLOCK * BLOCK, D), windows row-major
            feats = feats.half().float()
            local = cell[members] - np.array([bx, by]) * BLOCK  # (col, row) inside the block
            index = torch.as_tensor(local[:, 1] * BLOCK + local[:, 0])
            f = feats[index]
            scores[members] = net.head_logits(f).float().numpy()
            if distances is not None:
                distances[members] = model.ood_reference.distances(f).float().numpy()
    _TIMES["score_s"] += time.perf_counter() - t0
    _TIMES["tiles"] += n
    return scores, distances, None


def main() -> None:
    import slide_quality

    import qupath_rkd.inference.predict as predict

    predict.score_tiles = dense_score_tiles
    slide_quality.main()
    print(
        f"region pass: {int(_TIMES['tiles'])} tiles scored in {_TIMES['score_s']:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
