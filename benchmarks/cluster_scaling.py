"""Benchmark: slides over a Dask cluster (issue 14.4), measured and simulated.

    # measured: slides/s of one process, --local-cluster 1 and --local-cluster 2 (~4 min here)
    PYTHONPATH=$PWD nice -n 10 python benchmarks/cluster_scaling.py measured
    # simulated: orchestration overhead for 1..16 workers, the model replaced by a sleep
    PYTHONPATH=$PWD nice -n 10 python benchmarks/cluster_scaling.py simulated \\
        --workers 1,2,4,8,16 --slides 64 --gpu-s 5 --tiles 10000
    # writes: one process's write time per Camelyon16-size slide (10,000 tiles)
    PYTHONPATH=$PWD nice -n 10 python benchmarks/cluster_scaling.py writes --repeats 5

``measured`` builds (cached in benchmarks/out/) a few small semi-real slides (mosaics of real
PCam **validation** patches, 0.972 µm/px) and a supervised head trained by ``qupath-rkd
train-patches`` on a few hundred PCam train patches, then predicts them three ways through
the library path ``qupath-rkd predict`` takes: one process without Dask (its defaults), and
``predict_slides(cluster=ClusterSession(cluster_spec(None, N)))`` for N = 1 and 2 (what
``--local-cluster N`` builds). Cluster start-up (worker processes) is timed apart; slides/s
is over ``predict_slides`` alone (checkpoint broadcast, one model load per worker, every
slide, every file).

``simulated`` keeps everything of a cluster run but the model: the same ``ClusterSession``
(a LocalCluster of N processes, one thread each), the same ``predict_slides`` submission, the
checkpoint broadcast, each worker rendering its slide's files (tile and lesion GeoJSON, CSVs,
heatmap, overlay PNG), the prediction and the files' bytes sent back and the client writing
every output file; on the worker, :func:`sleep_predict` stands in for ``predict_slide`` (the
session's ``slide_predictor`` seam): it sleeps ``--gpu-s`` (the per-slide GPU time) and
returns a prediction the size of a Camelyon16 slide's (``--tiles`` scored tiles, its lesions
found by the library's own post-processing), so the rendering, the transfer and the writes are
those of a real slide. On one small machine the N workers' rendering shares its cores; on a
cluster each worker renders on its own.
Timed: ``predict_slides`` only; the cluster's start-up and each worker's one-off model load
(done before, through the same checkpoint broadcast) are reported apart. Efficiency =
T1 / (N × TN); ``ideal_efficiency`` = slides × gpu_s / (N × TN) needs no T1 (a lower bound of
the efficiency, since T1 >= slides × gpu_s).

``writes`` times what one process spends writing one Camelyon16-size slide (the same fake
10,000-tile prediction): ``write_slide_outputs`` = rendering every file (tile and lesion
GeoJSON, CSVs, heatmap, overlay PNG from the slide's thumbnail) + writing them atomically. It
uses only what every version of the package has, so running it with another checkout on
``PYTHONPATH`` times that version's write path (before/after ratios on one machine). Where
the files can be rendered apart (``render_slide_outputs``), it also times what a cluster
client does per slide: write the bytes a worker rendered (``client_median_s``).

Prints JSON (also written to ``--json``); each run carries the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PCAM = REPO.parent / "shared" / "data" / "pcam"
OUT = REPO / "benchmarks" / "out"
SLIDE_MPP = 0.972  # PCam's own µm/px: the patches are stored unchanged

# --- simulated: what runs on the worker instead of predict_slide ---------------------------
_TEMPLATES: dict[tuple[Any, ...], Any] = {}


def fake_prediction(path: Path, model: Any, config: Any, n_tiles: int) -> Any:
    """A :class:`~qupath_rkd.inference.predict.SlidePrediction` with ``n_tiles`` scored tiles
    on a square grid laid over the slide at ``path`` (level-0 px, QuPath frame; the scored cells
    a disc about its centre), probabilities low with two blobs above the threshold, lesions
    found by the library's :func:`~qupath_rkd.inference.predict.apply_threshold`. Built once
    per process and configuration; each call returns a copy naming ``path``."""
    from qupath_rkd.heatmap import Heatmap
    from qupath_rkd.inference.predict import SlidePrediction, TileScores, apply_threshold
    from qupath_rkd.slides import open_slide

    cfg = config.resolved(model)
    key = (cfg.key(model.model_id), n_tiles)  # streaming fields (readers, threads) aside
    template = _TEMPLATES.get(key)
    if template is None:
        with open_slide(path, mpp=cfg.slide_mpp) as slide:
            size = (slide.width_px, slide.height_px)
            slide_mpp = float(slide.mpp)
        side = int(np.ceil(np.sqrt(n_tiles / 0.6)))
        stride = min(size) / side
        rr, cc = np.mgrid[0:side, 0:side]
        dist = np.hypot(rr - side / 2, cc - side / 2).ravel()
        order = np.argsort(dist, kind="stable")[:n_tiles]
        rc = np.sort(order).astype(np.int64)
        rc = np.stack([rc // side, rc % side], axis=1)
        rng = np.random.default_rng(0)
        prob = rng.beta(1, 12, len(rc)).astype(np.float32)
        for r0, c0 in ((0.4, 0.4), (0.6, 0.65)):  # two lesions
            d = np.hypot(rc[:, 0] - r0 * side, rc[:, 1] - c0 * side)
            prob = np.maximum(prob, np.exp(-((d / (0.12 * side)) ** 2)).astype(np.float32))
        heat = np.full((side, side), np.nan, np.float32)
        heat[rc[:, 0], rc[:, 1]] = prob
        xy = np.round(rc[:, ::-1] * stride).astype(np.int64)
        heatmap = Heatmap(
            probability=heat,
            origin_xy_px=(0.0, 0.0),
            stride_level0_px=float(stride),
            tile_level0_px=float(stride),
            mpp=slide_mpp,
            meta={"model_id": model.model_id, "threshold": cfg.threshold, "slide": path.name},
        )
        tiles = TileScores(xy, rc, float(stride), prob.copy(), prob)
        template = SlidePrediction(
            slide_path=path,
            heatmap=heatmap,
            slide_score=0.0,
            lesions=[],
            tiles=tiles,
            note=None,
            config=cfg,
            model_id=model.model_id,
            slide_mpp=slide_mpp,
            slide_size_px=size,
        )
        template = apply_threshold(template, float(cfg.threshold))
        _TEMPLATES[key] = template
    return dataclasses.replace(template, slide_path=path, config=cfg)


def sleep_predict(
    path: Path,
    model: Any,
    *,
    region: Any = None,
    config: Any = None,
    progress: Any = None,
    gpu_s: float,
    n_tiles: int,
) -> Any:
    """``predict_slide``'s stand-in on a worker: sleep ``gpu_s`` where the model would run, then
    return :func:`fake_prediction` (``region`` and ``progress`` are not used)."""
    time.sleep(gpu_s)
    pred = fake_prediction(Path(path), model, config, n_tiles)
    pred.seconds = gpu_s
    return pred


def _warm_worker(sha256: str, device: str, slide: str, config: Any, n_tiles: int) -> int:
    """On each worker before the timed region: load the model (the worker's own cache), build
    the fake prediction once and, where workers render the files, render them once (the
    one-off imports of PIL, the font, OpenSlide's thumbnail path); returns the process id."""
    import qupath_rkd.inference.write as write_module
    from qupath_rkd.cluster.worker import _model

    pred = fake_prediction(Path(slide), _model(sha256, device), config, n_tiles)
    render = getattr(write_module, "render_slide_outputs", None)
    if render is not None:
        render(pred, "warm-up", "warm-up")
    return os.getpid()


# --- shared helpers -------------------------------------------------------------------------
def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }


def _cluster_run(
    n_workers: int,
    slides: list[Path],
    model_path: Path,
    out: Path,
    config: Any,
    *,
    predictor: Any = None,
    warm: Any = None,
) -> dict[str, Any]:
    """One ``predict_slides`` over a fresh LocalCluster of ``n_workers``; the dict of timings."""
    from qupath_rkd.cluster import cluster_spec
    from qupath_rkd.cluster.session import ClusterSession
    from qupath_rkd.inference.batch import predict_slides
    from qupath_rkd.model.scorer import load_model

    load_before = _load()
    t0 = time.perf_counter()
    spec = cluster_spec(None, n_workers)
    session = ClusterSession(spec, device="cpu", slide_predictor=predictor)
    try:
        session.connect()
        started_s = time.perf_counter() - t0
        model = load_model(model_path, device="cpu")  # the client's copy, as `predict` loads it
        warm_s = 0.0
        if warm is not None:  # broadcast the checkpoint and load it on every worker
            t1 = time.perf_counter()
            session.submit(model_path, [])
            pids = session.run_on_workers(warm)
            if len(pids) != n_workers:
                raise SystemExit(f"{len(pids)} of {n_workers} workers answered the warm-up")
            warm_s = time.perf_counter() - t1
        if out.exists():
            shutil.rmtree(out)
        t2 = time.perf_counter()
        runs = predict_slides(
            slides, model, out, config=config, overwrite=True, cluster=session,
            checkpoint=model_path,
        )  # fmt: skip
        seconds = time.perf_counter() - t2
    finally:
        session.close()
    failed = [f"{r.slide_path.name}: {r.error}" for r in runs if r.status != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} slide(s) failed, first: {failed[0]}")
    return {
        "workers": n_workers,
        "slides": len(slides),
        "cluster_start_s": round(started_s, 2),
        "warm_up_s": round(warm_s, 2),
        "seconds": round(seconds, 3),
        "slides_per_s": round(len(slides) / seconds, 4),
        "tiles": int(sum(r.n_tiles for r in runs)),
        "load_before": load_before,
        "load_after": _load(),
    }


# --- measured -------------------------------------------------------------------------------
def build_head(path: Path, max_normal: int, max_tumor: int) -> Path:
    """A supervised head trained by ``qupath-rkd train-patches`` on PCam **train** patches."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable, "-m", "qupath_rkd", "train-patches",
            "--normal", str(PCAM / "train" / "0"), "--tumor", str(PCAM / "train" / "1"),
            "--max-normal", str(max_normal), "--max-tumor", str(max_tumor),
            "--patch-mpp", str(SLIDE_MPP), "--device", "cpu", "--out", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def build_slides(folder: Path, n: int, size_px: int, normal: Path, tumor: Path) -> list[Path]:
    """``n`` semi-real slides of ``size_px`` square at 0.972 µm/px, every second one with a
    lesion (cached)."""
    from qupath_rkd.demo import build_semireal_slide

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"slide-{i:02d}.tif"
        if not path.exists():
            build_semireal_slide(
                path,
                normal_dir=normal,
                tumor_dir=tumor,
                width_px=size_px,
                height_px=size_px,
                n_lesions=i % 2,
                lesion_diameters_um=(size_px * SLIDE_MPP / 5,),
                mpp=SLIDE_MPP,
                seed=i,
                max_patches=1500,
            )
        paths.append(path)
    return paths


def measured(args: argparse.Namespace) -> dict[str, Any]:
    from qupath_rkd.inference.batch import predict_slides
    from qupath_rkd.inference.predict import InferenceConfig
    from qupath_rkd.model.scorer import load_model

    if not (PCAM / "valid" / "0").is_dir():
        raise SystemExit(f"{PCAM}/valid is missing: the measured mode needs the PCam patches")
    model_path = args.model or build_head(
        OUT / "cluster-scaling-head.pt", args.max_normal, args.max_tumor
    )
    slides = build_slides(
        OUT / f"cluster-scaling-slides-{args.size_px}",
        args.slides,
        args.size_px,
        PCAM / "valid" / "0",
        PCAM / "valid" / "1",
    )
    config = InferenceConfig()
    work = Path(tempfile.mkdtemp(prefix="cluster-scaling-"))
    rows: list[dict[str, Any]] = []
    heatmaps: dict[str, list[bytes]] = {}
    try:
        for rep in range(args.repeats):
            order = args.workers if rep % 2 == 0 else args.workers[::-1]
            for n in order:
                out = work / f"n{n}"
                if n == 0:  # one process, no Dask, `predict`'s defaults
                    load_before = _load()
                    model = load_model(model_path, device="cpu")
                    t0 = time.perf_counter()
                    runs = predict_slides(slides, model, out, config=config, overwrite=True)
                    seconds = time.perf_counter() - t0
                    if any(r.status != "ok" for r in runs):
                        raise SystemExit("a slide failed in the one-process run")
                    row = {
                        "workers": 0,
                        "slides": len(slides),
                        "cluster_start_s": 0.0,
                        "warm_up_s": 0.0,
                        "seconds": round(seconds, 3),
                        "slides_per_s": round(len(slides) / seconds, 4),
                        "tiles": int(sum(r.n_tiles for r in runs)),
                        "load_before": load_before,
                        "load_after": _load(),
                    }
                else:
                    row = _cluster_run(n, slides, model_path, out, config)
                row["repeat"] = rep
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if n > 0:
                    heatmaps[str(n)] = [(out / p.stem / "heatmap.npy").read_bytes() for p in slides]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = {n: float(np.mean([r["slides_per_s"] for r in rows if r["workers"] == n])) for n in
            args.workers}  # fmt: skip
    result: dict[str, Any] = {
        "mode": "measured",
        "machine": _machine(),
        "model": str(model_path),
        "slide_px": args.size_px,
        "slide_mpp": SLIDE_MPP,
        "runs": rows,
        "mean_slides_per_s": {str(k): round(v, 4) for k, v in rate.items()},
        "cluster_heatmaps_identical": len({tuple(v) for v in heatmaps.values()}) <= 1,
    }
    if 1 in rate and 2 in rate:
        result["ratio_2_to_1_workers"] = round(rate[2] / rate[1], 3)
    if 0 in rate and 2 in rate:
        result["ratio_2_workers_to_one_process"] = round(rate[2] / rate[0], 3)
    return result


# --- simulated ------------------------------------------------------------------------------
def build_sim_inputs(folder: Path, n_slides: int) -> tuple[list[Path], Path]:
    """One small semi-real slide (the package's demo PCam patches) linked under ``n_slides``
    names, and a small real checkpoint (random-weight teacher: the model never runs here)."""
    import torch

    from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs
    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.training.config import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base.tif"
    if not base.exists():
        normal, tumor = demo_patch_dirs()
        build_semireal_slide(
            base, normal_dir=normal, tumor_dir=tumor, width_px=1500, height_px=1500,
            n_lesions=1, lesion_diameters_um=(300.0,), mpp=SLIDE_MPP, seed=0,
        )  # fmt: skip
    slides = []
    for i in range(n_slides):
        path = folder / f"slide-{i:03d}.tif"
        if not path.exists():
            os.link(base, path)
        slides.append(path)
    model_path = folder / "model.pt"
    if not model_path.exists():
        cfg = TrainConfig(
            scorer="rd", teacher="efficientnet_lite0", input_px=32, mpp=1.944,
            teacher_random_weights_for_tests=True,
        ).resolved()  # fmt: skip
        torch.manual_seed(0)
        net = build_network(cfg).eval()
        save_checkpoint(model_path, net, cfg, Calibration("logistic", 4.0, -10.0, 5, 5), "bench")
    return slides, model_path


def simulated(args: argparse.Namespace) -> dict[str, Any]:
    from qupath_rkd.inference.predict import InferenceConfig

    # the workers import this module by name (sleep_predict pickles by reference)
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [here, str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    import cluster_scaling as me  # this file, under its module name

    work = Path(tempfile.mkdtemp(prefix="cluster-scaling-sim-"))
    try:
        slides, model_path = build_sim_inputs(work / "in", args.slides)
        config = InferenceConfig()
        sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
        predictor = functools.partial(me.sleep_predict, gpu_s=args.gpu_s, n_tiles=args.tiles)
        warm = functools.partial(me._warm_worker, sha, "cpu", str(slides[0]), config, args.tiles)
        rows = []
        for n in args.workers:
            row = _cluster_run(
                n, slides, model_path, work / f"out{n}", config, predictor=predictor, warm=warm
            )
            row["gpu_s"] = args.gpu_s
            row["ideal_seconds"] = round(args.slides * args.gpu_s / n, 3)
            row["ideal_efficiency"] = round(row["ideal_seconds"] / row["seconds"], 4)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
        out_bytes = sum(f.stat().st_size for f in (work / f"out{args.workers[-1]}").rglob("*"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t1 = next((r["seconds"] for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["efficiency"] = None if t1 is None else round(t1 / (r["workers"] * r["seconds"]), 4)
    return {
        "mode": "simulated",
        "machine": _machine(),
        "gpu_s": args.gpu_s,
        "tiles_per_slide": args.tiles,
        "slides": args.slides,
        "output_bytes_per_slide": int(out_bytes / args.slides),
        "runs": rows,
        "note": "measures scheduling, transfer and write contention, not compute",
    }


def writes(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds ``write_slide_outputs`` takes per slide in one process (see the docstring)."""
    import qupath_rkd
    import qupath_rkd.inference.write as write_module
    from qupath_rkd.inference.predict import InferenceConfig
    from qupath_rkd.inference.write import write_slide_outputs
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.outputs import SlideOutputs

    work = Path(tempfile.mkdtemp(prefix="cluster-scaling-writes-"))
    try:
        slides, model_path = build_sim_inputs(work / "in", 1)
        model = load_model(model_path, device="cpu")
        cfg = InferenceConfig().resolved(model)
        pred = fake_prediction(slides[0], model, cfg, args.tiles)
        key = cfg.key(model.model_id)
        write_slide_outputs(SlideOutputs(work / "out", "warm"), pred, key)  # imports, caches
        load_before = _load()
        seconds = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            write_slide_outputs(SlideOutputs(work / "out", f"s{i}"), pred, key)
            seconds.append(time.perf_counter() - t0)
        out_bytes = sum(f.stat().st_size for f in (work / "out" / "s0").rglob("*"))
        client = []  # a cluster client's share: the bytes rendered elsewhere, written here
        render = getattr(write_module, "render_slide_outputs", None)
        for i in range(args.repeats if render is not None else 0):
            rendered = render(pred, key, f"c{i}")
            t0 = time.perf_counter()
            write_slide_outputs(SlideOutputs(work / "out", f"c{i}"), pred, key, rendered=rendered)
            client.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "mode": "writes",
        "client_write_s": [round(x, 4) for x in client] or None,
        "client_median_s": round(float(np.median(client)), 4) if client else None,
        "machine": _machine(),
        "package": str(Path(qupath_rkd.__file__).resolve().parent),
        "tiles_per_slide": args.tiles,
        "seconds": [round(x, 4) for x in seconds],
        "median_s": round(float(np.median(seconds)), 4),
        "output_bytes_per_slide": int(out_bytes),
        "load_before": load_before,
        "load_after": _load(),
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("measured", help="real slides and model, 1 and 2 local workers")
    m.add_argument("--workers", type=_ints, default=[0, 1, 2], help="0 = one process, no Dask")
    m.add_argument("--slides", type=int, default=6)
    m.add_argument("--size-px", type=int, default=2000)
    m.add_argument("--repeats", type=int, default=1, help="passes (alternating order)")
    m.add_argument("--model", type=Path, default=None, help="a checkpoint instead of the head")
    m.add_argument("--max-normal", type=int, default=300)
    m.add_argument("--max-tumor", type=int, default=100)
    s = sub.add_parser("simulated", help="the model replaced by a sleep, 1..16 workers")
    s.add_argument("--workers", type=_ints, default=[1, 2, 4, 8, 16])
    s.add_argument("--slides", type=int, default=64)
    s.add_argument("--gpu-s", type=float, default=30.0, help="per-slide GPU time slept")
    s.add_argument("--tiles", type=int, default=10_000, help="scored tiles per fake slide")
    w = sub.add_parser("writes", help="one process's write time per 10,000-tile slide")
    w.add_argument("--tiles", type=int, default=10_000, help="scored tiles of the fake slide")
    w.add_argument("--repeats", type=int, default=5, help="slides written (timed one by one)")
    for p in (m, s, w):
        p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.mode == "simulated" and (args.slides < 1 or args.gpu_s < 0 or min(args.workers) < 1):
        parser.error("simulated needs --slides >= 1, --gpu-s >= 0 and workers >= 1")
    modes = {"measured": measured, "simulated": simulated, "writes": writes}
    result = modes[args.mode](args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
