"""GPU benchmark (prepared, run where a CUDA GPU exists): the paper's teacher at full size.

    python benchmarks/inference_speed_gpu.py                  # on a GPU machine, ~5-8 min
    python benchmarks/inference_speed_gpu.py --smoke          # tiny CPU run that checks the code

``wide_resnet50_2`` teacher (random weights: no download is possible on the GPU machine and
speed does not depend on the weights), 256 px tiles at 0.5 µm/px, bf16 autocast and
channels-last (the checkpoint's ``amp`` / ``channels_last``). Builds a semi-real slide (a
mosaic of real PCam patches written at 0.5 µm/px) with at least TILES tissue tiles, then in one
run measures model-only tiles/s (tiles already in pinned host memory, same batch and input
size), end-to-end ``predict_slides`` tiles/s with DataLoader workers, and the wall time for the
slide's first TILES tissue tiles (goal: 10,000 tiles in under 30 s on one H100). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam" / "train"
OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10_000)
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--model-only-tiles", type=int, default=2048)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = parser.parse_args()

    import torch
    from shapely.geometry import box

    from qupath_rkd.demo import build_semireal_slide
    from qupath_rkd.inference import InferenceConfig, predict_slides
    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network, load_model
    from qupath_rkd.slides import open_slide, tile_grid
    from qupath_rkd.training.config import TrainConfig

    if args.smoke:
        args.tiles, args.batch_size, args.workers, args.model_only_tiles = 24, 8, 1, 16
        args.tile_px = 64  # WRN-50 at 256 px is minutes on a CPU; the code path is the same
        device = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (use --smoke to check the script on the CPU)")
    else:
        device = "cuda"
    OUT.mkdir(parents=True, exist_ok=True)

    # A square slide whose tissue (about 85 % of it) holds at least --tiles tiles.
    side_tiles = math.ceil(math.sqrt(args.tiles / 0.55)) + 2
    size_px = int(side_tiles * args.tile_px)  # the slide is written at --mpp: 1 level-0 px = 1 px
    slide_path = OUT / f"gpu-semireal-{size_px}-{args.mpp:g}.tif"
    t0 = time.perf_counter()
    if not slide_path.exists():
        build_semireal_slide(
            slide_path,
            normal_dir=SHARED / "0",
            tumor_dir=SHARED / "1",
            width_px=size_px,
            height_px=size_px,
            n_lesions=0 if args.smoke else 3,
            lesion_diameters_um=(2000.0, 800.0),
            tissue_fraction=0.85,
            mpp=args.mpp,
            seed=0,
            max_patches=3000,
        )
    build_s = time.perf_counter() - t0

    cfg = TrainConfig(
        teacher="wide_resnet50_2",
        input_px=args.tile_px,
        mpp=args.mpp,
        teacher_random_weights_for_tests=True,
        amp=True,
        channels_last=True,
    ).resolved()
    model_path = OUT / f"gpu-wrn50-{args.tile_px}.pt"
    if not model_path.exists():
        torch.manual_seed(0)
        save_checkpoint(
            model_path, build_network(cfg), cfg, Calibration("logistic", 4, -10, 0, 0), "bench"
        )
    model = load_model(model_path, device=device)

    with open_slide(slide_path) as s:
        grid = tile_grid(s, args.tile_px, args.mpp)
        if len(grid) < args.tiles:
            raise SystemExit(f"slide has only {len(grid)} tissue tiles, fewer than {args.tiles}")
        # the region holding exactly the first --tiles tissue tiles (row-major)
        last = grid.xy_px[args.tiles - 1]
        side = grid.tile_level0_px
        region = box(0, 0, s.width_px, float(last[1]) + 0.75 * side)  # whole rows up to it
        n_ref = min(args.model_only_tiles, len(grid))
        pick = np.linspace(0, len(grid) - 1, n_ref).astype(int)
        tiles = np.stack(
            [s.read_tile(float(x), float(y), args.tile_px, args.mpp) for x, y in grid.xy_px[pick]]
        )

    def model_only() -> float:
        x = torch.from_numpy(tiles)
        if device == "cuda":
            x = x.pin_memory()
        with torch.inference_mode():
            model.raw_scores(model.preprocess(x[: args.batch_size]))
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(0, len(x), args.batch_size):
                model.raw_scores(model.preprocess(x[i : i + args.batch_size])).float().cpu()
            return len(x) / (time.perf_counter() - t)

    ref = [model_only()]
    icfg = InferenceConfig(batch_size=args.batch_size, num_workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        from qupath_rkd.inference import predict_slide

        t = time.perf_counter()
        pred = predict_slide(slide_path, model, config=icfg, region=region)
        slide_s = time.perf_counter() - t
        t = time.perf_counter()
        runs = predict_slides([slide_path], model, tmp, config=icfg)
        e2e_s = time.perf_counter() - t
    assert runs[0].status == "ok", runs[0].error
    ref.append(model_only())
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
        "cpus": os.cpu_count(),
        "teacher": "wide_resnet50_2",
        "tile_px": args.tile_px,
        "mpp": args.mpp,
        "autocast": str(model._amp) if hasattr(model, "_amp") else None,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "slide_build_s": build_s,
        "model_only_tiles_per_s": float(np.mean(ref)),
        "end_to_end_tiles": runs[0].n_tiles,
        "end_to_end_tiles_per_s": runs[0].n_tiles / e2e_s,
        "ratio": runs[0].n_tiles / e2e_s / float(np.mean(ref)),
        "first_tiles": len(pred.tiles),
        "first_tiles_wall_s": slide_s,
    }
    print(json.dumps(result, indent=2))
    (
        OUT / ("inference_speed_gpu_smoke.json" if args.smoke else "inference_speed_gpu.json")
    ).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
