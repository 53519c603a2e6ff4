"""Run the loop on a QuPath project from Python: sync, then sync again (nothing to redo).

    python examples/sync_project.py [PROJECT]

With a PROJECT it runs ``qupath-rkd sync`` on it with the configuration in effect (see
``qupath-rkd config PROJECT``). Without arguments it first builds a tiny demo project in a
temporary folder (three small semi-real slides — mosaics of real PCam patches — one outlined
as Tumor and marked fully annotated, one marked tumour-free) and syncs it with settings small
enough for a few seconds of training on a CPU; the numbers are then meaningless, the mechanics
are the point: the second sync trains nothing, predicts nothing and writes nothing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from qupath_rkd.demo import DemoSlideSpec, build_demo_project
from qupath_rkd.errors import QupathRkdError
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.report import format_table
from qupath_rkd.sync.runner import run_sync

TINY = {
    "training.input_px": 64,
    "training.steps": 4,
    "training.batch_size": 8,
    "labels.max_tiles_per_class": 32,
    "sync.backend": "geojson",
    "sync.device": "cpu",
}


def sync_twice(project: Path, overrides: dict[str, object]) -> None:
    config = load_config(project, overrides)
    for attempt in ("first", "second"):
        outcome = run_sync(project, config)
        trained = f"trained ({outcome.train_reason})" if outcome.trained else "model reused"
        print(f"{attempt} sync: {trained}, {len(outcome.predicted)} slide(s) predicted")
        print(format_table(outcome.slides))


def main() -> int:
    try:
        if len(sys.argv) > 1:
            sync_twice(Path(sys.argv[1]), {})
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            specs = (
                DemoSlideSpec("tumour outlined.tif", (500.0,), "annotated", 1),
                DemoSlideSpec("tumour-free.tif", (), "tumor-free", 2),
                DemoSlideSpec("to predict.tif", (500.0,), "unlabelled", 3),
            )
            demo = build_demo_project(
                Path(tmp) / "demo", width_px=1280, height_px=1152, specs=specs
            )
            print(f"built {demo.project_dir / 'project.qpproj'}")
            sync_twice(demo.project_dir, TINY)
        return 0
    except QupathRkdError as exc:
        print(f"Error: {exc.one_line()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
