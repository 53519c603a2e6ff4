"""The ensemble head's perceptron: it learns what a linear head cannot, it is seeded, and the
ensemble is the mean of its two members' logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_rkd.errors import DataError
from qupath_rkd.model.calibration import auroc
from qupath_rkd.model.head import HeadNetwork, fit_ensemble, fit_head, standardiser
from qupath_rkd.model.mlp_head import fit_mlp


def _ring(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tumour where |x0| > 1: no hyperplane separates it (a linear head is at chance)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (np.abs(x[:, 0]) > 1.0).astype(int)
    return x, y


def test_the_perceptron_separates_what_the_linear_head_cannot() -> None:
    x, y = _ring(3000)
    xt, yt = _ring(2000, seed=1)
    linear = fit_head(x, y, 1.0)
    mlp = fit_mlp(x, y, linear.mean, linear.std, seed=0)
    assert auroc(yt, linear.logits(xt)) < 0.6
    assert auroc(yt, mlp.logits(xt)) > 0.9
    ens = fit_ensemble(x, y, linear, seed=0)
    np.testing.assert_allclose(
        ens.logits(xt), 0.5 * (linear.logits(xt) + ens.mlp.logits(xt)), rtol=1e-12
    )
    assert ens.l2 == 1.0 and auroc(yt, ens.logits(xt)) > 0.85


def test_the_fit_is_seeded_and_leaves_the_global_rng_alone() -> None:
    x, y = _ring(600)
    mean, std = standardiser(x)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = fit_mlp(x, y, mean, std, seed=4)
    after = torch.rand(3)
    b = fit_mlp(x, y, mean, std, seed=4)
    c = fit_mlp(x, y, mean, std, seed=5)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a.logits(x), b.logits(x))
    assert not np.array_equal(a.logits(x), c.logits(x))
    with pytest.raises(DataError, match="tumour and normal"):
        fit_mlp(x, np.zeros(len(x), dtype=int), mean, std, seed=0)


def test_the_network_scores_as_the_ensemble_fit_and_refuses_a_mismatched_fit() -> None:
    x, y = _ring(800)
    ens = fit_ensemble(x, y, fit_head(x, y, 1.0), seed=0)
    net = HeadNetwork(torch.nn.Identity(), x.shape[1], mlp_hidden=ens.mlp.hidden).set_fit(ens)
    with torch.no_grad():
        got = net.head_logits(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(got, ens.logits(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="mlp_hidden"):
        HeadNetwork(torch.nn.Identity(), x.shape[1]).set_fit(ens)
    with pytest.raises(ValueError, match="without the perceptron"):
        net.set_fit(ens.linear)


def test_the_fit_restores_the_callers_thread_count() -> None:
    x, y = _ring(300)
    mean, std = standardiser(x)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit_mlp(x, y, mean, std, seed=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_feature_constant_in_training_cannot_blow_up_a_new_tiles_logit() -> None:
    """Regression: a feature constant in the training rows (std floored at 1e-6) standardised
    a new tile's slightly other value to ~1e5, and the perceptron's random input weights made
    a huge logit of it (sync's demo: out-of-fold logits Platt scaling could only flatten)."""
    x, y = _ring(600)
    x[:, 5] = 0.25  # constant in training
    linear = fit_head(x, y, 1.0)
    mlp = fit_mlp(x, y, linear.mean, linear.std, seed=0)
    new = x[:50].copy()
    shifted = new.copy()
    shifted[:, 5] = 0.35  # 1e5 standard deviations away
    gap = np.abs(mlp.logits(shifted) - mlp.logits(new))
    assert gap.max() < 2.0, gap.max()
    assert np.abs(linear.logits(shifted) - linear.logits(new)).max() < 1e-6  # its weight is 0
