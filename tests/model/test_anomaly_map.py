"""Anomaly map (per-scale 1 - cosine along channels, upsampled, summed, Gaussian) and scores."""

from __future__ import annotations

import math

import pytest
import torch

from qupath_rkd.errors import ModelError
from qupath_rkd.model.anomaly_map import (
    anomaly_map,
    gaussian_blur,
    gaussian_kernel_1d,
    patch_scores,
)


def test_constant_per_scale_dissimilarity_sums_over_scales() -> None:
    # scale 1: cosine 0 everywhere (1 - cos = 1); scale 2: cosine 0.6 (0.4); scale 3: identical (0)
    t1, s1 = (
        torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 4, 4),
        torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 4, 4),
    )
    t2, s2 = (
        torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2),
        torch.tensor([3.0, -4.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2),
    )
    t3 = torch.rand(1, 5, 1, 1)
    amap = anomaly_map([t1, t2, t3], [s1, s2, t3.clone()], 16, sigma_px=4.0)
    assert amap.shape == (1, 16, 16)
    assert torch.allclose(amap, torch.full((1, 16, 16), 1.4), atol=1e-5)
    assert float(patch_scores(amap, "mean")[0]) == pytest.approx(1.4, abs=1e-5)


def test_local_anomaly_is_located_upsampled_and_smoothed() -> None:
    t = torch.zeros(1, 2, 4, 4)
    t[:, 0] = 1.0
    s = t.clone()
    s[0, :, 1, 2] = torch.tensor([0.0, 1.0])  # one stride-8 cell (rows 8..15, cols 16..23 of 32 px)
    raw = anomaly_map([t], [s], 32, sigma_px=0.0)
    smooth = anomaly_map([t], [s], 32, sigma_px=4.0)
    peak = divmod(int(raw[0].argmax()), 32)
    assert 6 <= peak[0] <= 17 and 14 <= peak[1] <= 25
    assert float(smooth.max()) < float(raw.max())  # smoothing spreads the peak
    assert float(patch_scores(smooth, "max")[0]) > float(patch_scores(smooth, "mean")[0])


def test_gaussian_kernel_follows_scipy_truncation_and_sums_to_one() -> None:
    k = gaussian_kernel_1d(4.0)
    assert k.numel() == 2 * 16 + 1
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(k[16] / k[16 + 4]) == pytest.approx(math.exp(0.5), rel=1e-5)
    flat = torch.full((2, 40, 40), 3.0)
    assert torch.allclose(gaussian_blur(flat, 4.0), flat, atol=1e-5)


def test_unknown_reduction_is_refused() -> None:
    with pytest.raises(ModelError):
        patch_scores(torch.zeros(1, 4, 4), "median")
