"""The demo's plain lesion counts beside the FROC (regression: with every held-out lesion found
and no false lesion the demo printed only "FROC 0.750", since the organisers' FROC never counts
the lowest-scored detection of all slides)."""

from __future__ import annotations

import numpy as np

from qupath_rkd.demo.project import lesion_counts
from qupath_rkd.evaluation.camelyon16 import SlideDetections, froc


def _slide(tp: list[float], fp: list[float], n_lesions: int) -> SlideDetections:
    return SlideDetections(
        slide_id="s",
        fp_probs=np.asarray(fp, np.float64),
        tp_probs=np.asarray(tp, np.float64),
        n_lesions=n_lesions,
        is_tumor=n_lesions > 0,
    )


def test_every_lesion_found_and_none_false_reads_as_such_though_the_froc_is_below_one() -> None:
    slides = [_slide([0.95, 0.76], [], 2), _slide([0.91, 0.90], [], 2), _slide([], [], 0)]
    assert froc(slides).score < 1.0  # the lowest detection (a true one) is never counted
    assert lesion_counts(slides) == (4, 0)


def test_missed_lesions_itcs_and_false_detections_are_counted_apart() -> None:
    # instance 3 is an ITC or missed (0): neither found nor false; two false detections
    slides = [_slide([0.9, 0.0, 0.0], [0.7], 2), _slide([], [0.6], 0)]
    assert lesion_counts(slides) == (1, 2)
