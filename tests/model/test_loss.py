"""The focal similarity loss against values computed by hand (He & Li, MIDL 2023, eq. for L)."""

from __future__ import annotations

import math

import pytest
import torch

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import ModelError
from qupath_rkd.model.loss import DEFAULT_EPS, flat_cosine_similarity, focal_similarity_loss

ALPHA, GAMMA = 0.1, 2.0
LOG_EPS = math.log(DEFAULT_EPS)


def feat(*values: float) -> torch.Tensor:
    """One sample, len(values) channels, 1x1 spatial: (1, C, 1, 1)."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def one_scale(t: torch.Tensor, s: torch.Tensor, label: int) -> float:
    return float(focal_similarity_loss([t], [s], torch.tensor([label])))


# (student, cosine with teacher (1, 0), loss if normal, loss if tumour), all by hand:
#   normal: -0.1 (1 - s)^2 ln s ; tumour: -0.9 s^2 ln(1 - s) ; p clamped to [1e-6, 1] in the log
CASES = [
    ((1.0, 0.0), 1.0, 0.0, -0.9 * 1.0 * LOG_EPS),  # identical: normal costs 0, tumour maximal
    ((0.0, 1.0), 0.0, -0.1 * 1.0 * LOG_EPS, 0.0),  # orthogonal
    (
        (1.0, 1.0),
        1 / math.sqrt(2),
        -0.1 * (1 - 1 / math.sqrt(2)) ** 2 * math.log(1 / math.sqrt(2)),
        -0.9 * 0.5 * math.log(1 - 1 / math.sqrt(2)),
    ),
    ((-1.0, 0.0), -1.0, -0.1 * 4.0 * LOG_EPS, 0.0),  # opposite: normal p = -1 -> (1-p)^2 = 4
    ((3.0, -4.0), 0.6, -0.1 * 0.16 * math.log(0.6), -0.9 * 0.36 * math.log(0.4)),
]


@pytest.mark.parametrize(("student", "cos", "normal_loss", "tumour_loss"), CASES)
def test_loss_matches_hand_computed_values(student, cos, normal_loss, tumour_loss) -> None:
    t, s = feat(1.0, 0.0), feat(*student)
    assert float(flat_cosine_similarity(t, s)) == pytest.approx(cos, abs=1e-6)
    assert one_scale(t, s, LABEL_NORMAL) == pytest.approx(normal_loss, rel=1e-5, abs=1e-7)
    assert one_scale(t, s, LABEL_TUMOR) == pytest.approx(tumour_loss, rel=1e-5, abs=1e-7)


def test_loss_flattens_channels_and_space_then_sums_scales_and_averages_the_batch() -> None:
    # scale 1: (2, 2, 1, 2) features; sample 0 identical, sample 1 cosine 0.6 over C*H*W
    t1 = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]], [[[1.0, 0.0]], [[0.0, 0.0]]]])
    s1 = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]], [[[3.0, 0.0]], [[0.0, 4.0]]]])
    # scale 2: (2, 1, 1, 1), both identical -> contributes only for the tumour sample
    t2 = torch.ones(2, 1, 1, 1)
    s2 = torch.ones(2, 1, 1, 1)
    labels = torch.tensor([LABEL_NORMAL, LABEL_TUMOR])
    got = float(focal_similarity_loss([t1, t2], [s1, s2], labels))
    scale1 = (0.0 + (-0.9 * 0.36 * math.log(0.4))) / 2
    scale2 = (0.0 + (-0.9 * LOG_EPS)) / 2
    assert got == pytest.approx(scale1 + scale2, rel=1e-5)


def test_alpha_and_gamma_are_used() -> None:
    t, s = feat(1.0, 0.0), feat(3.0, -4.0)  # cos 0.6
    got = float(focal_similarity_loss([t], [s], torch.tensor([LABEL_NORMAL]), alpha=0.5, gamma=0.0))
    assert got == pytest.approx(-0.5 * math.log(0.6), rel=1e-6)
    got = float(focal_similarity_loss([t], [s], torch.tensor([LABEL_TUMOR]), alpha=0.5, gamma=1.0))
    assert got == pytest.approx(-0.5 * 0.6 * math.log(0.4), rel=1e-6)


def test_one_class_batch_is_alpha_times_normal_term() -> None:
    gen = torch.Generator().manual_seed(0)
    t = [torch.rand(4, 3, 2, 2, generator=gen) for _ in range(3)]
    s = [x + 0.1 * torch.rand(x.shape, generator=gen) for x in t]
    labels = torch.full((4,), LABEL_NORMAL)
    a = float(focal_similarity_loss(t, s, labels, alpha=0.1))
    b = float(focal_similarity_loss(t, s, labels, alpha=1.0))
    assert a == pytest.approx(0.1 * b, rel=1e-6)
    assert a > 0


@pytest.mark.parametrize("label", [LABEL_NORMAL, LABEL_TUMOR])
@pytest.mark.parametrize("student", [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, 0.0), (1e-30, 0.0)])
def test_extreme_similarities_give_finite_loss_and_gradients(student, label) -> None:
    t = feat(1.0, 0.0)
    s = feat(*student).requires_grad_(True)
    loss = focal_similarity_loss([t], [s], torch.tensor([label]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(s.grad).all()


def test_normal_sample_below_eps_still_gets_a_gradient_towards_the_teacher() -> None:
    # a fresh student can start anti-aligned; the clamp must not freeze it there
    t = feat(1.0, 0.0)
    s = feat(-1.0, 0.2).requires_grad_(True)
    focal_similarity_loss([t], [s], torch.tensor([LABEL_NORMAL])).backward()
    with torch.no_grad():
        moved = s - 0.01 * s.grad
    assert float(flat_cosine_similarity(t, moved)) > float(flat_cosine_similarity(t, s.detach()))


def test_labels_other_than_normal_and_tumour_are_refused() -> None:
    with pytest.raises(ModelError):
        focal_similarity_loss([feat(1.0, 0.0)], [feat(1.0, 0.0)], torch.tensor([-1]))


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ModelError):
        focal_similarity_loss([feat(1.0, 0.0)], [feat(1.0, 0.0, 0.0)], torch.tensor([0]))
