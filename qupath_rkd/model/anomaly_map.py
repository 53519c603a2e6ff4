"""Anomaly maps and patch scores from teacher and student features (RD4AD / FW-RD).

Per scale ``1 - cosine`` along channels, bilinearly upsampled to the input size, summed over the
three scales and smoothed by a Gaussian (sigma 4 px). The patch score is the map's mean (FW-RD)
or max (RD4AD). Raw values lie in [0, 2 * n_scales] = [0, 6]; calibrate before thresholding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from qupath_rkd.errors import ModelError

REDUCTIONS = ("mean", "max")


def gaussian_kernel_1d(sigma_px: float, device: torch.device | None = None) -> Tensor:
    """Normalised 1-D Gaussian, radius ``round(4 sigma)`` (scipy's default truncation)."""
    radius = max(1, int(4.0 * sigma_px + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return k / k.sum()


def gaussian_blur(maps: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` maps; edges mirrored (or replicated if tiny)."""
    if sigma_px <= 0:
        return maps
    k = gaussian_kernel_1d(sigma_px, maps.device)
    r = (k.numel() - 1) // 2
    x = maps[:, None].float()
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def anomaly_map(
    teacher_feats: list[Tensor],
    student_feats: list[Tensor],
    out_px: int | tuple[int, int],
    sigma_px: float = 4.0,
) -> Tensor:
    """Anomaly map ``(B, H, W)`` float32 in input pixels (``out_px`` = input size).

    Args:
        teacher_feats, student_feats: per scale ``(B, C_k, H_k, W_k)``.
        out_px: side (or ``(H, W)``) of the input the features came from.
        sigma_px: Gaussian sigma in input pixels (0 = no smoothing).
    """
    size = (out_px, out_px) if isinstance(out_px, int) else tuple(out_px)
    total: Tensor | None = None
    for t, s in zip(teacher_feats, student_feats, strict=True):
        m = 1.0 - F.cosine_similarity(t.float(), s.float(), dim=1, eps=1e-8)  # (B, h, w)
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        total = m if total is None else total + m
    if total is None:
        raise ModelError("no feature scales given")
    return gaussian_blur(total, sigma_px)


def patch_scores(maps: Tensor, reduction: str = "mean") -> Tensor:
    """``(B, H, W) -> (B,)``: mean (FW-RD) or max (RD4AD) of each map."""
    if reduction == "mean":
        return maps.flatten(1).mean(dim=1)
    if reduction == "max":
        return maps.flatten(1).amax(dim=1)
    raise ModelError(f"unknown score reduction {reduction!r}", hint=f"use one of {REDUCTIONS}")


def max_raw_score(n_scales: int = 3) -> float:
    """Upper bound of a raw score: each scale contributes at most 2 (cosine of -1)."""
    return float(2 * n_scales) if n_scales > 0 else math.nan
