"""benchmarks/operating_point_rules.py: each rule's threshold from what sync chose its
operating point on (a tumour-free slide and a hard normal outline on another slide)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from bench_scripts import benchmark_module

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.operating_point import NegativeHeatmap
from qupath_rkd.lesions.postprocess import PostProcessing

SCRIPT = "operating_point_rules.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with benchmark_module(SCRIPT) as module:
        yield module


def _heatmap(prob: np.ndarray) -> Heatmap:
    return Heatmap(prob.astype(np.float32), (0.0, 0.0), 96.0, 96.0, 0.972)


def test_rules_weigh_a_hard_normal_outline_differently(bench: ModuleType) -> None:
    # a tumour-free slide whose hottest spot is 0.3, and a slide with a small normal outline
    # (9 of 400 tissue cells) over a 0.8 spot: where a pathologist corrected the model
    free = np.full((20, 20), 0.1)
    free[5:8, 5:8] = 0.3
    other = np.full((20, 20), 0.1)
    other[10:13, 10:13] = 0.8
    mask = np.zeros((20, 20), bool)
    mask[10:13, 10:13] = True
    negatives = [
        NegativeHeatmap(_heatmap(free), None, "free"),
        NegativeHeatmap(_heatmap(other), mask, "outlined"),
    ]
    cap = bench.Captured(negatives, PostProcessing(), 0.05, 0.5, {"free"}, {})
    share = bench.rule_threshold("share", cap, 0.5)
    slide = bench.rule_threshold("slide", cap, 0.5)
    unbiased = bench.rule_threshold("unbiased", cap, 0.5)
    # share: one false lesion on 1.0225 slides is above 0.5 per slide -> above the outline's spot
    assert share > 0.6
    # slide: the outlined slide counts 1, one false lesion on 2 slides meets 0.5 -> above the
    # tumour-free spot only; unbiased: the tumour-free slide alone -> the same
    assert unbiased == slide < 0.35
    assert bench.rule_threshold("calibrated", cap, 0.5) == 0.5
    with pytest.raises(ValueError):
        bench.rule_threshold("nonsense", cap, 0.5)
