"""Issue 8, point 6: a re-sync of the demo after one new annotation, timed.

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 nice -n 5 python benchmarks/demo_resync.py
    python benchmarks/demo_resync.py --out DIR --cache DIR   # a given (maybe warm) cache

What it does, in one process, through the library functions the CLI calls:

1. ``qupath-rkd demo``'s code path (:func:`qupath_rkd.demo.run_demo`: build the five semi-real
   slides and the QuPath project, then ``sync``) into ``<out>/demo``, timed (wall). The CLI's
   ``done in`` also draws the demo's pictures afterwards; this script does not.
2. Adds ONE ``Tumor`` annotation the way a pathologist's new annotation reaches ``sync`` without
   QuPath: the image's exported GeoJSON (``project/qupath-rkd/annotations/<entryID>.geojson``,
   what ``groovy/export_annotations.groovy`` writes and the geojson backend reads) gets one
   more feature, made by :func:`qupath_rkd.qupath.geojson.make_feature` and written by
   :func:`~qupath_rkd.qupath.geojson.write_geojson`; the features already there are kept
   exactly (same JSON values, same order: checked) and the manifest's ``nAnnotations`` and
   ``exportedAt`` of that image are updated as a re-export would. The annotation is the largest
   true lesion (by area) of the held-out tumour slide ``LN-03.tif`` from the demo's
   ``truth/`` folder (the exact truth polygon, not a hand outline), as docs/sync.md did.
3. ``sync`` again (:func:`qupath_rkd.sync.runner.run_sync` with the project's own
   ``config.toml``, what ``qupath-rkd sync PROJECT`` runs), timed: the total wall, the training
   (the runner's own ``trained in … s`` log record, which spans the training tiles' features
   and the head's fits) and every progress task's span (labelling is the time from the start
   to the ``training:`` line). The feature cache serves only the training tiles (and the
   held-out heads' re-extraction of them); slide prediction always runs the trunk on every
   tile. ``new`` vs ``cached`` tiles are the counts of ``extract_features``' log record
   (tile-views run through the trunk / found in the cache), summed per run and per task.

Scored after each sync: the operating point (``report.json``), the Camelyon16 lesion FROC over
the demo's held-out slides (role ``unlabelled``: LN-03/04/05, what the demo prints; after the
new annotation LN-03 is no longer unseen, so the FROC over LN-04/05 alone is given too),
per slide the predicted lesions, how many of them touch no true lesion ("false"), how many true
lesions some predicted lesion touches, the lesions' maximum probabilities, their area against the
true area, and the tumour score. The FROC is the organisers' (:func:`qupath_rkd.evaluation.
camelyon16.froc`), which never counts the lowest-probability detection of all slides: with 4
true lesions and a handful of detections, a false lesion scored above a true one moves it a lot.

Feature cache: ``--cache DIR`` sets ``QUPATH_RKD_CACHE_DIR`` (a warm cache makes the first demo
faster); by default a fresh empty temporary folder, deleted at the end, so the first run is cold
and the re-sync sees only what the first run put there.

Writes ``<out>/resync.json`` (everything, with load averages and the commit) and prints a
markdown summary. ``<out>/demo`` must be missing or empty (``--fresh`` deletes it first).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qupath_rkd.progress import ProgressCallback, ProgressEvent

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "out" / "demo_resync"
#: The slide that gets the new annotation, and the demo's roles the FROC is computed over.
ANNOTATED_SLIDE = "LN-03.tif"
HELD_OUT_ROLE = "unlabelled"


# --- recording what a run did ----------------------------------------------------------------
@dataclass
class TaskSpan:
    """One progress task: first and last event, seconds since the recorder started."""

    task: str
    start_s: float
    end_s: float | None = None
    done: int = 0
    total: int | None = None
    unit: str = ""


class Recorder(logging.Handler):
    """A progress callback and logging handler that time-stamps a run's tasks, its echo lines
    and the log records that carry timings (training, features computed vs cached).

    Times are seconds since the recorder was made (``time.perf_counter``).
    """

    def __init__(self, forward: ProgressCallback | None = None) -> None:
        super().__init__(level=logging.INFO)
        self.forward = forward
        self.t0 = time.perf_counter()
        self.spans: dict[str, TaskSpan] = {}
        self.echoes: list[tuple[float, str]] = []
        self.feature_calls: list[dict[str, Any]] = []
        self.trained_s: list[float] = []
        self.head_fit_s: list[float] = []
        self.last_finished = ""

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, event: ProgressEvent) -> None:
        t = self.now()
        span = self.spans.get(event.task)
        if span is None or span.end_s is not None:
            # a task name seen again (another slide, another fold) is one span from first to last
            span = span or TaskSpan(event.task, t)
            self.spans[event.task] = span
        span.done, span.total, span.unit = event.done, event.total, event.unit
        if event.finished:
            span.end_s = t
            self.last_finished = event.task
        if self.forward is not None:
            self.forward(event)

    def echo(self, line: str) -> None:
        self.echoes.append((self.now(), line))
        print(line, file=sys.stderr, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        msg = str(record.msg)
        if not isinstance(record.args, tuple):
            return
        args: tuple[Any, ...] = record.args
        if record.name.endswith("features.extract") and msg.startswith("features of"):
            n, n_views, computed, cached, seconds = args
            self.feature_calls.append(
                {
                    "task": self.last_finished,  # extract_features logs after its task ends
                    "items": int(n),
                    "views": int(n_views),
                    "computed": int(computed),
                    "cached": int(cached),
                    "seconds": round(float(seconds), 2),
                }
            )
        elif record.name.endswith("sync.runner") and msg.startswith("trained in"):
            self.trained_s.append(round(float(args[0]), 2))
        elif record.name.endswith("head_trainer") and msg.startswith("head fitted"):
            self.head_fit_s.append(round(float(args[-1]), 2))

    def summary(self) -> dict[str, Any]:
        """The recorded timings as JSON values."""

        def first(prefix: str) -> float | None:
            t = next((t for t, line in self.echoes if line.startswith(prefix)), None)
            return None if t is None else round(t, 2)

        return {
            # the sync's start (the demo says "running: qupath-rkd sync"; a plain sync at 0)
            "sync_start_s": first("running:") or 0.0,
            # the labelled set is built and training starts
            "training_line_s": first("training:"),
            "trained_s": self.trained_s,
            "head_fit_s": self.head_fit_s,
            "features": {
                "computed": sum(c["computed"] for c in self.feature_calls),
                "cached": sum(c["cached"] for c in self.feature_calls),
                "calls": self.feature_calls,
            },
            "echoes": [[round(t, 2), line.splitlines()[0][:120]] for t, line in self.echoes],
            "tasks": [
                {
                    "task": s.task,
                    "start_s": round(s.start_s, 2),
                    "seconds": None if s.end_s is None else round(s.end_s - s.start_s, 2),
                    "done": s.done,
                    "total": s.total,
                    "unit": s.unit,
                }
                for s in self.spans.values()
            ],
        }


def recording(forward: ProgressCallback | None) -> tuple[Recorder, Callable[[], None]]:
    """A fresh :class:`Recorder` listening to the ``qupath_rkd`` loggers; returns it and the
    function that detaches it."""
    rec = Recorder(forward=forward)
    log = logging.getLogger("qupath_rkd")
    old_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(rec)

    def detach() -> None:
        log.removeHandler(rec)
        log.setLevel(old_level)

    return rec, detach


# --- the new annotation ----------------------------------------------------------------------
def _layout(project_dir: Path) -> Any:
    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.qupath.backends.base import ExchangeLayout

    return ExchangeLayout(project_dir / PROJECT_SUBDIR)


def _manifest(project_dir: Path) -> dict[str, dict[str, Any]]:
    """The export manifest's records by entry ID (library reader)."""
    from qupath_rkd.qupath.backends.base import read_manifest

    records = read_manifest(_layout(project_dir).manifest_path)
    if not records:
        raise SystemExit(f"{_layout(project_dir).manifest_path}: no exported images")
    return records


def _entry_id(project_dir: Path, image_name: str) -> str:
    for entry_id, rec in _manifest(project_dir).items():
        if rec.get("imageName") == image_name:
            return entry_id
    raise SystemExit(f"{project_dir}: no image named {image_name!r} in the annotation export")


def _truth(demo_root: Path, image_name: str, entry_id: str) -> list[Any]:
    """The true lesion polygons of one demo slide (level-0 px)."""
    from qupath_rkd.demo.project import truth_file
    from qupath_rkd.qupath.geojson import read_geojson

    path = truth_file(demo_root, image_name, int(entry_id))
    return [o.geometry for o in read_geojson(path)]


def add_largest_true_lesion(demo_root: Path, image_name: str = ANNOTATED_SLIDE) -> dict[str, Any]:
    """Append the largest true lesion of ``image_name`` as a ``Tumor`` annotation to the
    image's exported annotations (what a pathologist's outline plus a re-export gives).

    The features already in the file are kept exactly (same JSON values, same order; raises
    ``SystemExit`` if not). Returns what was added: entry ID, file, area in mm², feature ID,
    annotations before / after.
    """
    from qupath_rkd.io_utils import atomic_write_json
    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id, write_geojson

    project_dir = demo_root / "project"
    entry_id = _entry_id(project_dir, image_name)
    lesions = _truth(demo_root, image_name, entry_id)
    if not lesions:
        raise SystemExit(f"{image_name} has no true lesion in {demo_root / 'truth'}")
    largest = max(lesions, key=lambda g: g.area)
    export = _layout(project_dir).annotations_file(entry_id)
    before_text = export.read_text(encoding="utf-8")
    before = json.loads(before_text)
    if not isinstance(before, dict) or not isinstance(before.get("features"), list):
        raise SystemExit(f"{export}: not a FeatureCollection (export the annotations again)")
    kept = list(before["features"])
    feature = make_feature(
        largest,
        object_type="annotation",
        class_name="Tumor",
        feature_id=stable_feature_id("demo-resync", entry_id, "largest-true-lesion"),
    )
    write_geojson(export, [*kept, feature])
    after = json.loads(export.read_text(encoding="utf-8"))["features"]
    if after[: len(kept)] != before["features"] or len(after) != len(kept) + 1:
        raise SystemExit(f"{export}: the existing annotations changed: stopping")
    # the export script's manifest: the image's annotation count and export time
    manifest_path = _layout(project_dir).manifest_path
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for rec in manifest.get("images", []):
        if str(rec.get("entryID")) == entry_id:
            rec["nAnnotations"] = len(after)
            rec["exportedAt"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    atomic_write_json(manifest_path, manifest)
    mpp = float(_manifest(project_dir)[entry_id].get("pixelWidthMicrons") or 0.0)
    return {
        "image": image_name,
        "entry_id": entry_id,
        "file": str(export),
        "class": "Tumor",
        "feature_id": feature["id"],
        "area_mm2": round(largest.area * mpp * mpp / 1e6, 4),
        "annotations_before": len(kept),
        "annotations_after": len(after),
    }


# --- scoring a synced demo -------------------------------------------------------------------
def _role(metadata: Mapping[str, Any]) -> str:
    from qupath_rkd.demo.project import FULLY_ANNOTATED_KEY, TUMOR_FREE_KEY

    if str(metadata.get(FULLY_ANNOTATED_KEY, "")).lower() == "true":
        return "annotated"
    if str(metadata.get(TUMOR_FREE_KEY, "")).lower() == "true":
        return "tumor-free"
    return HELD_OUT_ROLE


def demo_slides(demo_root: Path) -> list[Any]:
    """The demo's slides as :class:`qupath_rkd.demo.project.DemoSlide` (role from the
    project's metadata, lesions from ``truth/``), for any demo folder."""
    from qupath_rkd.demo.project import DemoSlide, DemoSlideSpec

    project_dir = demo_root / "project"
    slides = []
    for entry_id, rec in _manifest(project_dir).items():
        name = str(rec["imageName"])
        spec = DemoSlideSpec(name, (), _role(rec.get("metadata") or {}), 0)
        slides.append(
            DemoSlide(
                entry_id=int(entry_id),
                spec=spec,
                path=demo_root / "slides" / name,
                width_px=int(rec["width"]),
                height_px=int(rec["height"]),
                mpp=float(rec["pixelWidthMicrons"]),
                levels=[],
                lesions=_truth(demo_root, name, entry_id),
            )
        )
    return slides


def _froc(demo_root: Path, slides: Sequence[Any]) -> dict[str, Any] | None:
    from qupath_rkd.demo.project import DemoProject, demo_froc

    project = DemoProject(root=demo_root, project_dir=demo_root / "project", slides=list(slides))
    result, n_slides = demo_froc(project, roles=(HELD_OUT_ROLE,))
    if result is None:
        return None
    return {
        "slides": [s.spec.name for s in slides if s.spec.role == HELD_OUT_ROLE],
        "n_slides": n_slides,
        "score": round(float(result.score), 4),
        "n_lesions": int(result.n_lesions),
        "sensitivity_at": {f"{k:g}": round(float(v), 4) for k, v in result.sensitivity_at.items()},
    }


def score_demo(demo_root: Path, outcome: Any, annotated: str | None = None) -> dict[str, Any]:
    """Operating point, FROC and per-slide lesions of the demo's project as synced now.

    A predicted lesion is ``false`` when its outline touches no true lesion.
    """
    from shapely.ops import unary_union

    from qupath_rkd.outputs import MEASURE_MAX_PROBABILITY, MEASURE_PEAK_X_PX
    from qupath_rkd.qupath.geojson import read_geojson

    slides = demo_slides(demo_root)
    layout = _layout(demo_root / "project")
    rows = {r.entry_id: r for r in outcome.slides}
    per_slide = []
    for s in slides:
        row = rows.get(str(s.entry_id))
        pred = layout.predictions_file(str(s.entry_id))
        lesions = [
            (o.geometry, float(o.measurements[MEASURE_MAX_PROBABILITY]))
            for o in (read_geojson(pred) if pred.is_file() else [])
            if o.object_type == "detection"
            and MEASURE_MAX_PROBABILITY in o.measurements
            and MEASURE_PEAK_X_PX in o.measurements
        ]
        truth = unary_union(s.lesions) if s.lesions else None
        false = [g for g, _p in lesions if truth is None or not g.intersects(truth)]
        mm2 = s.mpp * s.mpp / 1e6
        per_slide.append(
            {
                "image": s.spec.name,
                "role": s.spec.role,
                "true_lesions": len(s.lesions),
                "true_area_mm2": round(sum(g.area for g in s.lesions) * mm2, 4),
                "lesions": len(lesions),
                "false_lesions": len(false),
                "true_lesions_touched": sum(
                    any(g.intersects(t) for g, _p in lesions) for t in s.lesions
                ),
                # the FROC ranks lesions by these (and, as the organisers' code does, never
                # counts the lowest one of all slides: with 5 lesions in all, that matters)
                "max_probabilities": sorted((round(p, 4) for _g, p in lesions), reverse=True),
                "false_area_mm2": round(sum(g.area for g in false) * mm2, 4),
                "lesion_area_mm2": None if row is None else row.lesion_area_mm2,
                "largest_lesion_major_axis_um": None
                if row is None
                else row.largest_lesion_major_axis_um,
                "tumor_score": None if row is None else row.tumor_score,
                "status": None if row is None else row.status,
                "reason": None if row is None else row.reason,
            }
        )
    unseen = [s for s in slides if s.spec.name != annotated]
    return {
        "operating_point": outcome.operating_point,
        "froc_held_out": _froc(demo_root, slides),
        "froc_never_annotated": _froc(demo_root, unseen) if annotated else None,
        "slides": per_slide,
    }


# --- the runs --------------------------------------------------------------------------------
def _outcome_summary(outcome: Any) -> dict[str, Any]:
    return {
        "trained": bool(outcome.trained),
        "train_reason": outcome.train_reason,
        "model_id": outcome.model_id,
        "predicted": [s.image_name for s in outcome.predicted],
        "failed": [s.image_name for s in outcome.failed],
        "labelled_tiles": outcome.label_summary,
        "warnings": list(outcome.warnings),
        "notes": list(outcome.notes),
    }


def first_demo(demo_root: Path, forward: ProgressCallback | None) -> tuple[Any, dict[str, Any]]:
    """``qupath-rkd demo``'s code path into ``demo_root``, timed."""
    from qupath_rkd.demo import run_demo

    rec, detach = recording(forward)
    started = time.perf_counter()
    try:
        result = run_demo(demo_root, progress=rec, echo=rec.echo)
    finally:
        detach()
    wall = time.perf_counter() - started
    build = rec.spans.get("building the demo")
    timing = {"wall_s": round(wall, 2), **rec.summary(), "tail_s": _tail_s(rec, wall)}
    timing["build_s"] = None if build is None or build.end_s is None else round(build.end_s, 2)
    return result.outcome, timing


def resync(
    project_dir: Path,
    forward: ProgressCallback | None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``qupath-rkd sync PROJECT``'s code path (the project's config.toml, then ``overrides``
    as ``--set`` gives them), timed."""
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import run_sync

    rec, detach = recording(forward)
    started = time.perf_counter()
    try:
        config = load_config(project_dir, dict(overrides or {}))
        outcome = run_sync(project_dir, config, progress=rec, echo=rec.echo)
    finally:
        detach()
    wall = time.perf_counter() - started
    return outcome, {"wall_s": round(wall, 2), **rec.summary(), "tail_s": _tail_s(rec, wall)}


def _tail_s(rec: Recorder, wall_s: float) -> float | None:
    """Seconds from the end of the last progress task to the end of the run: the suggestions
    and the write-back, which send no progress events (``None`` without any task)."""
    ends = [s.end_s for s in rec.spans.values() if s.end_s is not None]
    return round(wall_s - max(ends), 2) if ends else None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _fmt(value: Any, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def markdown(result: Mapping[str, Any]) -> str:
    """The summary tables of ``resync.json``."""
    first, second = result["first_demo"], result["resync"]
    lines = [
        f"Demo re-sync, {result['started_utc']}, load average {result['load_before']} → "
        f"{result['load_after']}, cache {result['cache']['state_at_start']}",
        "",
        "| run | wall s | training s | trained | features new / cached | predicted | "
        "operating point | FROC held-out (LN-03/04/05) | FROC never annotated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in (("first demo", first), ("re-sync, +1 Tumor on LN-03", second)):
        t, o, s = run["timing"], run["outcome"], run["scores"]
        op = s["operating_point"] or {}
        froc = s["froc_held_out"] or {}
        never = s["froc_never_annotated"] or {}
        lines.append(
            f"| {label} | {t['wall_s']:.1f} | {', '.join(f'{x:.1f}' for x in t['trained_s'])} | "
            f"{'yes' if o['trained'] else 'no'} ({o['train_reason'] or '-'}) | "
            f"{t['features']['computed']} / {t['features']['cached']} | {len(o['predicted'])} | "
            f"{_fmt(op.get('threshold'), '.3f')} ({op.get('method', '-')}, "
            f"{op.get('held_out', '-')}) | {_fmt(froc.get('score'), '.3f')} "
            f"({froc.get('n_lesions', '-')} lesions) | {_fmt(never.get('score'), '.3f')} "
            f"({never.get('n_lesions', '-')} lesions) |"
        )
    lines += [
        "",
        "| slide | role | true lesions | true mm² | lesions (false) first | mm² first | "
        "lesions (false) re-sync | mm² re-sync | score first | score re-sync |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a, b in zip(first["scores"]["slides"], second["scores"]["slides"], strict=True):
        lines.append(
            f"| {a['image']} | {a['role']} | {a['true_lesions']} | {a['true_area_mm2']:.3f} | "
            f"{a['lesions']} ({a['false_lesions']}) | {_fmt(a['lesion_area_mm2'], '.3f')} | "
            f"{b['lesions']} ({b['false_lesions']}) | {_fmt(b['lesion_area_mm2'], '.3f')} | "
            f"{_fmt(a['tumor_score'], '.3f')} | {_fmt(b['tumor_score'], '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="feature cache folder (QUPATH_RKD_CACHE_DIR); default: a fresh empty temporary one",
    )
    parser.add_argument("--fresh", action="store_true", help="delete <out>/demo first")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    from qupath_rkd.cli.progress import ProgressRenderer
    from qupath_rkd.features.cache import CACHE_ENV
    from qupath_rkd.io_utils import atomic_write_json, atomic_write_text

    out: Path = args.out.resolve()
    demo_root = out / "demo"
    if demo_root.exists() and any(demo_root.iterdir()):
        if not args.fresh:
            raise SystemExit(f"{demo_root} is not empty: delete it or pass --fresh")
        shutil.rmtree(demo_root)
    out.mkdir(parents=True, exist_ok=True)
    tmp_cache = None
    if args.cache is None:
        tmp_cache = tempfile.TemporaryDirectory(prefix="qupath-rkd-cache-")
        cache_dir = Path(tmp_cache.name)
    else:
        cache_dir = args.cache.resolve()
        cache_dir.mkdir(parents=True, exist_ok=True)
    warm = any(cache_dir.iterdir())
    os.environ[CACHE_ENV] = str(cache_dir)

    import torch

    result: dict[str, Any] = {
        "what": "issue 8 point 6: qupath-rkd demo, then one more Tumor annotation, then sync",
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "cache": {
            "dir": None if tmp_cache else str(cache_dir),
            "state_at_start": "warm (not empty)" if warm else "cold (empty)",
            "temporary": tmp_cache is not None,
        },
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    renderer = None if args.quiet else ProgressRenderer(tty=False)
    try:
        with renderer if renderer is not None else nullcontext():
            outcome1, timing1 = first_demo(demo_root, renderer)
            result["first_demo"] = {
                "timing": timing1,
                "outcome": _outcome_summary(outcome1),
                "scores": score_demo(demo_root, outcome1),
            }
            result["added_annotation"] = add_largest_true_lesion(demo_root, ANNOTATED_SLIDE)
            outcome2, timing2 = resync(demo_root / "project", renderer)
            result["resync"] = {
                "timing": timing2,
                "outcome": _outcome_summary(outcome2),
                "scores": score_demo(demo_root, outcome2, annotated=ANNOTATED_SLIDE),
            }
    finally:
        if tmp_cache is not None:
            tmp_cache.cleanup()
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_json(out / "resync.json", result)
    table = markdown(result)
    atomic_write_text(out / "resync.md", table)
    print(table)
    print(f"written: {out / 'resync.json'}")
    return 1 if outcome1.exit_code or outcome2.exit_code else 0


if __name__ == "__main__":
    sys.exit(main())
