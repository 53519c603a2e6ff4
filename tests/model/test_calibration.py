"""Calibration (logistic / normal-tail) and the AUROC helper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qupath_rkd.errors import DataError
from qupath_rkd.model.calibration import (
    Calibration,
    auroc,
    fit_calibration,
    fit_logistic,
    fit_normal_tail,
    ranks_backwards,
)


def test_auroc_matches_hand_count() -> None:
    # pairs (tumour, normal): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3/4
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # tie counts half
    assert math.isnan(auroc(np.array([0, 0]), np.array([0.1, 0.2])))


def test_logistic_fit_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 6.0, 20_000)
    p_true = 1.0 / (1.0 + np.exp(-(2.0 * scores - 6.0)))
    labels = (rng.uniform(size=scores.size) < p_true).astype(np.int64)
    cal = fit_logistic(scores, labels)
    assert cal.method == "logistic"
    assert cal.a == pytest.approx(2.0, rel=0.1)
    assert cal.b == pytest.approx(-6.0, rel=0.1)
    p = cal.apply(np.array([0.0, 3.0, 6.0]))
    assert p[1] == pytest.approx(0.5, abs=0.05) and p[0] < 0.01 and p[2] > 0.99


def test_logistic_fit_is_finite_on_perfectly_separated_data() -> None:
    cal = fit_logistic(np.array([1.0, 1.1, 1.2, 3.0, 3.1]), np.array([0, 0, 0, 1, 1]))
    p = cal.apply(np.array([1.0, 3.1]))
    assert np.isfinite([cal.a, cal.b]).all() and p[0] < 0.5 < p[1]


def test_normal_tail_maps_median_and_99th_percentile() -> None:
    normal = np.random.default_rng(1).normal(2.0, 0.1, 5000)
    cal = fit_normal_tail(normal)
    p = cal.apply(np.array([np.median(normal), np.quantile(normal, 0.99)]))
    assert p[0] == pytest.approx(0.01, abs=1e-4)
    assert p[1] == pytest.approx(0.5, abs=1e-4)
    assert (cal.apply(np.sort(normal)) == np.sort(cal.apply(normal))).all()  # monotone


def test_auto_picks_logistic_only_with_both_classes() -> None:
    s = np.array([0.1, 0.2, 0.3, 0.9])
    assert fit_calibration(s, np.array([0, 0, 1, 1])).method == "logistic"
    assert fit_calibration(s, np.array([0, 0, 0, 0])).method == "normal-tail"
    with pytest.raises(DataError):
        fit_logistic(s, np.zeros(4, dtype=int))


def test_roundtrip_and_probabilities_in_unit_interval() -> None:
    cal = Calibration("logistic", 50.0, -100.0, 3, 2)
    assert Calibration.from_dict(cal.to_dict()) == cal
    p = cal.apply(np.array([-1e6, 0.0, 2.0, 1e6]))
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()


def test_scores_ranking_the_classes_backwards_never_invert_the_probabilities() -> None:
    # Regression: Platt scaling on scores that rank tumour below normal (out-of-fold scores
    # of a few annotated regions can) gave a negative slope, which turned every probability
    # of the model around. The normal tail, increasing by construction, replaces it.
    rng = np.random.default_rng(1)
    normal = rng.normal(1.0, 0.5, 400)
    tumour = rng.normal(-1.0, 0.5, 40)  # below the normals
    scores = np.r_[normal, tumour]
    labels = np.r_[np.zeros(400, int), np.ones(40, int)]
    assert fit_logistic(scores, labels).a < 0  # what was used before
    cal = fit_calibration(scores, labels)
    assert cal.method == "normal-tail" and cal.a > 0 and ranks_backwards(cal, labels)
    # the normal tail asked for is no fallback
    asked = fit_calibration(-scores, labels, "normal-tail")
    assert not ranks_backwards(asked, labels, "normal-tail")
    p = cal.apply(np.array([-2.0, 0.0, 2.0]))
    assert p[0] < p[1] < p[2]
    assert cal.apply(np.array([np.quantile(normal, 0.99)]))[0] == pytest.approx(0.5, abs=1e-6)
    # scores that rank them the right way keep the logistic fit
    good = fit_calibration(-scores, labels)
    assert good.method == "logistic" and good.a > 0 and not ranks_backwards(good, labels)
    # normal patches only: the normal tail, which is no fallback
    only_normal = fit_calibration(normal, np.zeros(400, int))
    assert only_normal.method == "normal-tail" and not ranks_backwards(only_normal, np.zeros(3))
