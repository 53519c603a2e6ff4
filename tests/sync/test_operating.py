"""Sync's operating-point inputs: which images are tumour-free knowledge, their key, the mask
of a normal region on the heatmap grid, and the new inference settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shapely.geometry import box

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.qupath.geojson import QupathObject
from qupath_rkd.sync.config import load_config
from qupath_rkd.sync.operating import (
    negative_heatmap,
    negative_sources,
    normal_mask,
    operating_key,
)
from qupath_rkd.sync.runner import inference_config

CLASSES = {"tumor": ["Tumor"], "normal": ["Normal"], "ignore": ["Ignore*"], "region": ["Region*"]}


@dataclass
class Entry:
    entry_id: str
    name: str
    metadata: dict[str, str] = field(default_factory=dict)
    width_px: int = 1000
    height_px: int = 1000


@dataclass
class AnnotationSet:
    objects: list[Any]
    metadata: dict[str, str] = field(default_factory=dict)


def annotation(geom: Any, cls: str) -> QupathObject:
    return QupathObject(geometry=geom, object_type="annotation", class_name=cls)


def test_tumour_free_images_and_normal_regions_are_the_sources() -> None:
    entries = [
        Entry("1", "free", {"qupath-rkd.tumor-free": "true"}),
        Entry("2", "with normal"),
        Entry("3", "tumour only"),
        Entry("4", "nothing"),
        Entry("5", "fully annotated", {"qupath-rkd.fully-annotated": "true"}),
    ]
    sets = {
        "1": AnnotationSet([]),
        "2": AnnotationSet(
            [annotation(box(0, 0, 400, 1000), "Normal"), annotation(box(600, 0, 900, 90), "Tumor")]
        ),
        "3": AnnotationSet([annotation(box(0, 0, 100, 100), "Tumor")]),
        "4": AnnotationSet([]),
        "5": AnnotationSet([annotation(box(100, 100, 300, 300), "Tumor")]),
    }
    sources = negative_sources(entries, sets, CLASSES)
    assert set(sources) == {"1", "2", "5"}
    assert sources["5"].fully_annotated and sources["5"].tumor.area == pytest.approx(40_000)
    assert sources["1"].tumor_free and sources["1"].normal is None
    assert not sources["2"].tumor_free and sources["2"].normal.area == pytest.approx(400_000)
    key = operating_key(sources, {"1": "fp1", "2": "fp2"})
    assert key == operating_key(sources, {"1": "fp1", "2": "fp2"})
    assert key != operating_key(sources, {"1": "fp1-rescanned", "2": "fp2"})
    assert key != operating_key({"1": sources["1"]}, {"1": "fp1"})


def test_normal_mask_takes_the_cells_whose_centre_lies_in_the_region() -> None:
    hm = Heatmap(np.zeros((4, 5), np.float32), (0.0, 0.0), 100.0, 100.0, 0.5)
    mask = normal_mask(hm, box(0, 0, 210, 400))  # cell centres at x = 50, 150, 250, ...
    want = np.zeros((4, 5), bool)
    want[:, :2] = True
    np.testing.assert_array_equal(mask, want)
    src = negative_sources(
        [Entry("2", "n")],
        {"2": AnnotationSet([annotation(box(0, 0, 210, 400), "Normal")])},
        CLASSES,
    )["2"]
    np.testing.assert_array_equal(negative_heatmap(src, hm, "n").mask, want)


def test_inference_settings_reach_the_inference_config(tmp_path: Path) -> None:
    config = load_config(
        tmp_path,
        overrides={
            "inference.smooth_um": 30.0,
            "inference.extent_ratio": 0.8,
            "inference.slide_score": "largest_area",
        },
    )
    cfg = inference_config(config, None)
    assert (cfg.smooth_sigma_um, cfg.extent_ratio, cfg.slide_score) == (30.0, 0.8, "largest_area")
    assert config.get("inference.target_fp_per_slide") == 0.25


def test_fully_annotated_slides_count_away_from_their_tumour() -> None:
    from qupath_rkd.sync.operating import NegativeSource

    hm = Heatmap(np.zeros((6, 6), np.float32), (0.0, 0.0), 100.0, 100.0, 0.5)
    src = NegativeSource("5", False, None, box(210, 210, 290, 290))  # inside cell (2, 2)
    mask = negative_heatmap(src, hm, "f").mask
    want = np.ones((6, 6), bool)
    want[2, 2] = False  # only the tile holding the tumour touches it
    np.testing.assert_array_equal(mask, want)
    src = NegativeSource("5", False, None, box(180, 180, 290, 290))  # reaches cells (1, 1)...
    want[1:3, 1:3] = False
    np.testing.assert_array_equal(negative_heatmap(src, hm, "f").mask, want)
