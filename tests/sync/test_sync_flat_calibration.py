"""Sync's operating point may go below the calibrated 0.5 with a tumour-free slide's worth of
tissue (regression).

A head calibrated out-of-fold on a few hard annotated regions (what active learning gives: the
pathologist outlines the uncertain places) has a flat calibration: in the active-learning
benchmark (``benchmarks/active_learning.py``) a project with 71 tumour tiles labelled had its
calibrated maximum near 0.55 on every slide, the threshold never went below 0.5 and sync
reported **no lesion at all**, even on the slides with annotated tumour. Here the small demo's
model gets such a flat calibration (its tumour peaks below 0.5) and the operating point is
chosen again, as sync does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sync_helpers import FAST

from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR
from qupath_rkd.inference import predict_slide
from qupath_rkd.model.calibration import Calibration
from qupath_rkd.model.scorer import TrainedModel, load_model
from qupath_rkd.qupath.backends import get_backend
from qupath_rkd.qupath.project import open_project
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.report import SyncOutcome
from qupath_rkd.sync.runner import (
    MODEL_RELPATH,
    _negative_sources,
    _operating_point,
    inference_config,
)

A, B, C = "A tumour annotated.tif", "B tumour-free.tif", "C.tif"


def flattened(model: TrainedModel, top: float) -> TrainedModel:
    """The model with a flat calibration: ``p = sigmoid(a s + b)`` with a fifth of the slope,
    shifted so that the raw score the old calibration put at 0.99 maps to ``top``."""
    cal = model.calibration
    a = cal.a / 5.0
    old_99 = (np.log(99.0) - cal.b) / cal.a  # the raw score the old calibration put at 0.99
    b = float(np.log(top / (1.0 - top)) - a * old_99)
    model.calibration = Calibration("logistic", a, b, cal.n_normal, cal.n_tumor)
    return model


def test_a_flat_calibration_gets_a_threshold_below_it_and_finds_the_lesion(
    synced_copy: Path,
) -> None:
    project = synced_copy
    config = load_config(project, dict(FAST))
    backend, _ = get_backend(open_project(project), "geojson")
    entries = list(backend.images())
    by_name = {e.name: e for e in entries}
    sets = {e.entry_id: backend.read_annotations(e) for e in entries}
    sources = _negative_sources(entries, sets, config)
    model = flattened(load_model(project / MODEL_RELPATH, device="cpu"), top=0.45)

    # the flat model's heatmap of the unlabelled tumour slide C stays below the calibrated 0.5
    pred_c = predict_slide(by_name[C].path, model, config=inference_config(config, by_name[C].mpp))
    assert np.nanmax(pred_c.heatmap.probability) < model.threshold == 0.5
    assert pred_c.lesions == []

    outcome = SyncOutcome(project_dir=project)
    op, _ = _operating_point(entries, sets, sources, model, config, outcome, None)
    assert op["method"] == "tumor-free"
    assert op["slide_equivalents"] >= 1.0  # B (a whole slide) and A away from its tumour
    assert DEFAULT_CANDIDATE_FLOOR <= op["threshold"] < 0.5, op
    assert op["false_lesions_per_slide"] <= 0.25
    # at that threshold the tumour of C (never labelled) is found
    cfg = dataclasses.replace(inference_config(config, by_name[C].mpp), threshold=op["threshold"])
    found = predict_slide(by_name[C].path, model, config=cfg)
    assert len(found.lesions) >= 1

    # without the tumour-free slide (A's normal tissue alone, less than one slide) it does not
    # go below the calibrated threshold, and the note says why
    partial = {k: v for k, v in sources.items() if k != by_name[B].entry_id}
    op2, _ = _operating_point(entries, sets, partial, model, config, SyncOutcome(project), None)
    assert op2["slide_equivalents"] < 1.0
    assert op2["threshold"] >= 0.5
    assert "not below the calibrated 0.5" in op2["note"]
