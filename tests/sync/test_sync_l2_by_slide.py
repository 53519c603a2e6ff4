"""Sync's head chooses its L2 on held-out slides once tumour is outlined on two of them."""

from __future__ import annotations

from pathlib import Path

from sync_helpers import FAST

from qupath_rkd.demo import DemoSlideSpec, build_demo_project
from qupath_rkd.model.scorer import load_model
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.runner import MODEL_RELPATH, run_sync

TWO_TUMOUR_SLIDES = (
    DemoSlideSpec("A tumour annotated.tif", (450.0,), "annotated", 31),
    DemoSlideSpec("E tumour annotated.tif", (450.0,), "annotated", 32),
    DemoSlideSpec("B tumour-free.tif", (), "tumor-free", 33),
)


def test_tumour_on_two_slides_holds_whole_slides_out(tmp_path: Path) -> None:
    demo = build_demo_project(
        tmp_path / "demo", width_px=1024, height_px=1024, specs=TWO_TUMOUR_SLIDES
    )
    project = demo.root / "project"
    outcome = run_sync(project, load_config(project, dict(FAST)))
    assert outcome.trained and outcome.exit_code == 0, outcome.slides
    metrics = load_model(project / MODEL_RELPATH, device="cpu").info["metrics"]
    # 3 slides, each its own fold; before, 5 folds of annotated regions
    assert metrics["val_source"] == "3-fold cross-validation by slide (pooled)", metrics
    assert metrics["selected_by"] == "cv_auroc"
