"""The focal similarity loss of He & Li (MIDL 2023), on teacher-student cosine similarity.

Per scale k and sample i, ``s_ik`` is the cosine similarity of the *flattened* (C*H*W) teacher
and student features. A normal sample should be reconstructed (``p = s``, weight ``alpha``), a
tumour sample should not (``p = 1 - s``, weight ``1 - alpha``). With the focal factor:

    L = sum_k mean_i [ -w_i (1 - p_ik)^gamma log p_ik ],   alpha = 0.1, gamma = 2 by default.

With no tumour samples in the batch this is one-class reverse distillation on the flattened
similarity (scaled by ``alpha``).

Clamping (the paper's code does not clamp and can give NaN): ``s`` lies in [-1, 1], so ``p`` lies
in [-1, 2]. ``log p`` is taken of ``clamp(p, eps, 1)`` and the focal factor of
``clamp(p, max=1)``. So ``p >= 1`` (a tumour sample already dissimilar, ``s <= 0``) costs 0 with no
gradient, and ``p < eps`` (a normal sample with ``s < eps``, e.g. a fresh student) costs
``-w (1 - p)^gamma log eps``: finite, and for ``gamma > 0`` still with a gradient that raises
``p``. In between it is exactly the formula above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qupath_rkd.constants import DEFAULT_ALPHA, DEFAULT_GAMMA, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import ModelError

DEFAULT_EPS = 1e-6


def flat_cosine_similarity(teacher: Tensor, student: Tensor) -> Tensor:
    """Cosine similarity per sample of flattened features: ``(B, C, H, W) x2 -> (B,)`` float32."""
    return F.cosine_similarity(
        teacher.flatten(1).float(), student.flatten(1).float(), dim=1, eps=1e-8
    )


def focal_term(p: Tensor, weight: Tensor | float, gamma: float, eps: float = DEFAULT_EPS) -> Tensor:
    """``-w (1 - p)^gamma log p`` elementwise, with the clamping described in the module doc."""
    log_p = torch.log(p.clamp(min=eps, max=1.0))
    focal = (1.0 - p.clamp(max=1.0)).pow(gamma)
    return -weight * focal * log_p


def focal_similarity_loss(
    teacher_feats: list[Tensor],
    student_feats: list[Tensor],
    labels: Tensor,
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """The focal loss summed over scales, averaged over the batch.

    Args:
        teacher_feats: per scale ``(B, C_k, H_k, W_k)`` (the teacher's, first argument).
        student_feats: per scale, same shapes (the student's).
        labels: ``(B,)`` integer tensor of ``LABEL_NORMAL`` / ``LABEL_TUMOR``.
        alpha: weight of normal samples (tumour samples get ``1 - alpha``).
        gamma: focal exponent (0 gives weighted cross-entropy on ``p``).
        eps: lower clamp of ``p`` inside the logarithm.

    Returns:
        scalar float32 tensor.
    """
    if len(teacher_feats) != len(student_feats):
        raise ModelError(
            f"{len(teacher_feats)} teacher scales but {len(student_feats)} student scales"
        )
    labels = labels.reshape(-1)
    bad = (labels != LABEL_NORMAL) & (labels != LABEL_TUMOR)
    if bool(bad.any()):
        raise ModelError(f"labels must be {LABEL_NORMAL} (normal) or {LABEL_TUMOR} (tumour)")
    tumour = labels == LABEL_TUMOR
    weight = torch.where(tumour, 1.0 - alpha, alpha).to(torch.float32)
    total = torch.zeros((), dtype=torch.float32, device=labels.device)
    for t, s in zip(teacher_feats, student_feats, strict=True):
        if t.shape != s.shape:
            raise ModelError(
                f"teacher feature {tuple(t.shape)} != student feature {tuple(s.shape)}"
            )
        sim = flat_cosine_similarity(t, s)
        p = torch.where(tumour, 1.0 - sim, sim)
        total = total + focal_term(p, weight, gamma, eps).mean()
    return total
