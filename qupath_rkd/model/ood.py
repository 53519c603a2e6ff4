"""The out-of-domain check: how far a tile's features lie from the training tiles' features.

A lymph-node model scores skin or a head-and-neck carcinoma without complaint, and what it says
there means nothing. At training time (the supervised head, :mod:`qupath_rkd.training.head_trainer`)
a compact reference of the training tiles' pooled trunk features ``(N, D)`` is kept in the
checkpoint (:class:`OodReference`): the per-dimension mean and scale (the std, floored at the
median std so that near-constant dimensions do not dominate) and a PCA basis of ``k``
components of the scaled features. A tile's distance is the norm of its scaled features'
residual outside that PCA space (how badly the training tiles' main directions reconstruct
it), squared and divided by the mean of the same on a held-out share of the training tiles
that the PCA did not see::

    d = |z - C^T C z|^2 / mean_held(|z - C^T C z|^2),   z = (f - mean) / scale

The tile threshold is the ``quantile`` (0.95) of the held-out tiles' distances, so neither
is optimistic. Measured on PCam features (benchmarks/ood_check.py, docs/benchmarks.md), this
residual separated skin and head-and-neck tiles from held-out lymph-node tiles better than
the whitened (Mahalanobis) distance inside the PCA space, alone or added to it.

At prediction a slide's statistic is the fraction of its
tissue tiles beyond that distance ("far tiles"); a slide whose far fraction exceeds
``DEFAULT_OOD_FAR_FRACTION`` (:mod:`qupath_rkd.constants`, chosen by measurement on real
non-lymph-node slides against semi-real lymph-node ones) is flagged out-of-domain
(:class:`OodResult`).

The distance is computed from the very features the head scores (view 0, rounded to float16 as
the head sees them), so it costs no second trunk pass. Numpy for the fit; torch or numpy for
:meth:`OodReference.distances`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qupath_rkd.constants import (
    DEFAULT_OOD_COMPONENTS,
    DEFAULT_OOD_FAR_FRACTION,
    DEFAULT_OOD_HELD_SHARE,
    DEFAULT_OOD_QUANTILE,
)

#: Version of the reference's layout in a checkpoint (the payload key ``ood_reference``).
OOD_REFERENCE_VERSION = 1
#: Checkpoint payload key of the reference (absent in checkpoints written before it).
PAYLOAD_KEY = "ood_reference"


@dataclass(frozen=True)
class OodReference:
    """The training tiles' features in brief, and the thresholds fitted on them.

    Attributes:
        mean, scale: ``(D,)`` float32 per-dimension mean and scale of the training features.
        components: ``(k, D)`` float32 orthonormal PCA basis of the scaled features.
        residual_var: mean squared residual norm of the held-out tiles outside the PCA space
            (of the fit tiles when none was held out).
        tile_threshold: a tile whose distance exceeds it is "far".
        quantile: the held-out quantile ``tile_threshold`` was taken at.
        n_fit, n_held: training tiles the PCA was fitted on / the threshold was taken on.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    residual_var: float
    tile_threshold: float
    quantile: float
    n_fit: int
    n_held: int

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def distances(self, feats: Any) -> Any:
        """``(N, D)`` features (numpy or torch, any float dtype) -> ``(N,)`` distances (float32,
        same library and device as the input)."""
        if isinstance(feats, np.ndarray):
            z = (feats.astype(np.float32) - self.mean) / self.scale
            p = z @ self.components.T
            resid = np.maximum((z * z).sum(axis=1) - (p * p).sum(axis=1), 0.0)
            return (resid / self.residual_var).astype(np.float32)
        import torch

        dev = feats.device
        mean = torch.from_numpy(self.mean).to(dev)
        scale = torch.from_numpy(self.scale).to(dev)
        comps = torch.from_numpy(self.components).to(dev)
        z = (feats.float() - mean) / scale
        p = z @ comps.T
        resid = ((z * z).sum(dim=1) - (p * p).sum(dim=1)).clamp_min(0.0)
        return resid / float(self.residual_var)

    def to_payload(self) -> dict[str, Any]:
        """Tensors and plain values for the checkpoint (loads with ``weights_only=True``)."""
        import torch

        return {
            "version": OOD_REFERENCE_VERSION,
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean, np.float32)),
            "scale": torch.from_numpy(np.ascontiguousarray(self.scale, np.float32)),
            "components": torch.from_numpy(np.ascontiguousarray(self.components, np.float32)),
            "residual_var": float(self.residual_var),
            "tile_threshold": float(self.tile_threshold),
            "quantile": float(self.quantile),
            "n_fit": int(self.n_fit),
            "n_held": int(self.n_held),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OodReference:
        """Read :meth:`to_payload`'s dict back; ``ValueError`` when it is malformed or of a
        newer version."""
        try:
            version = int(payload["version"])
            if version > OOD_REFERENCE_VERSION:
                raise ValueError(f"out-of-domain reference version {version} is newer")
            arrays = {
                name: np.asarray(payload[name].detach().cpu().numpy(), np.float32)
                for name in ("mean", "scale", "components")
            }
            ref = cls(
                **arrays,
                residual_var=float(payload["residual_var"]),
                tile_threshold=float(payload["tile_threshold"]),
                quantile=float(payload["quantile"]),
                n_fit=int(payload["n_fit"]),
                n_held=int(payload["n_held"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed out-of-domain reference ({exc})") from exc
        d = ref.mean.shape[0]
        if ref.scale.shape != (d,) or ref.components.shape != (ref.k, d):
            raise ValueError("out-of-domain reference arrays of inconsistent shapes")
        return ref


def top_components(z: np.ndarray, k: int, *, seed: int = 0, oversample: int = 16) -> np.ndarray:
    """The ``k`` leading right singular vectors ``(k, D)`` of ``z`` ``(N, D)`` (float64).

    A full SVD when ``z`` is small; otherwise a seeded randomized range finder with 6 power
    iterations (Halko, Martinsson & Tropp 2011), which gives the leading components of
    tile features to within ~1e-6 of the SVD's subspace at a fraction of its cost (a full SVD
    of 8,000 x 5,328 features took 82 s on 2 cores, this takes about 2 s)."""
    n, d = z.shape
    q = min(k + oversample, n, d)
    if min(n, d) <= 4 * q:
        return np.linalg.svd(z, full_matrices=False)[2][:k]
    rng = np.random.default_rng([seed, 0x00D])
    basis = np.linalg.qr(z @ rng.standard_normal((d, q)))[0]
    for _ in range(6):
        basis = np.linalg.qr(z.T @ basis)[0]
        basis = np.linalg.qr(z @ basis)[0]
    return np.linalg.svd(basis.T @ z, full_matrices=False)[2][:k]


def fit_reference(
    feats: np.ndarray,
    *,
    k: int = DEFAULT_OOD_COMPONENTS,
    held_share: float = DEFAULT_OOD_HELD_SHARE,
    quantile: float = DEFAULT_OOD_QUANTILE,
    seed: int = 0,
) -> OodReference:
    """Fit the reference on the training tiles' features ``(N, D)`` (view 0, any label).

    A seeded ``held_share`` of the tiles (at least 1 when N >= 4) is kept out of the PCA and
    gives the distance's unit and the tile threshold (their distances' ``quantile``); with
    fewer than 4 tiles, the fit tiles themselves (optimistic). ``k`` is capped at a quarter of
    the fit tiles (a basis of nearly as many components as tiles reconstructs the fit tiles,
    and little else).

    Raises:
        ValueError: fewer than 2 tiles or non-finite features.
    """
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"the out-of-domain reference needs >= 2 tiles, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("non-finite features")
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_held = math.ceil(held_share * n) if n >= 4 else 0
    held, fit = np.sort(order[:n_held]), np.sort(order[n_held:])
    xf = x[fit]
    mean = xf.mean(axis=0)
    std = xf.std(axis=0)
    scale = np.maximum(std, max(float(np.median(std)), 1e-6))
    z = (xf - mean) / scale
    k_eff = max(1, min(int(k), len(fit) // 4))
    comps = top_components(z, k_eff, seed=seed)
    # deterministic sign: the largest-magnitude loading of each component positive
    signs = np.sign(comps[np.arange(k_eff), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    ref = OodReference(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        components=comps.astype(np.float32),
        residual_var=1.0,
        tile_threshold=math.inf,
        quantile=float(quantile),
        n_fit=len(fit),
        n_held=n_held,
    )
    basis = (x[held] if n_held else xf).astype(np.float32)
    raw = ref.distances(basis).astype(np.float64)
    residual_var = max(float(raw.mean()), 1e-12)
    threshold = float(np.quantile(raw / residual_var, quantile))
    return dataclasses.replace(ref, residual_var=residual_var, tile_threshold=threshold)


@dataclass(frozen=True)
class OodResult:
    """A slide's out-of-domain check.

    Attributes:
        available: whether the model carries a reference (when not: the other fields are
            ``None``/False and ``note`` says why).
        far_fraction: share of the slide's tissue tiles farther than the tile threshold
            (``None`` without tiles).
        flagged: ``far_fraction > far_fraction_threshold``.
        far_fraction_threshold, tile_threshold: the thresholds applied.
        median_distance: median tile distance (``None`` without tiles).
        note: "out-of-domain check: not available ..." when it could not run.
    """

    available: bool
    far_fraction: float | None = None
    flagged: bool = False
    far_fraction_threshold: float | None = None
    tile_threshold: float | None = None
    median_distance: float | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (fractions rounded to 1e-4, distances to 1e-3)."""
        return {
            "ood_available": self.available,
            "ood_far_fraction": (
                None if self.far_fraction is None else round(float(self.far_fraction), 4)
            ),
            "out_of_domain": bool(self.flagged),
            "ood_far_fraction_threshold": self.far_fraction_threshold,
            "ood_median_distance": (
                None if self.median_distance is None else round(float(self.median_distance), 3)
            ),
            "ood_note": self.note,
        }

    def describe(self) -> str:
        """One line for a table or log: ``far tiles 3% (limit 50%)``, ``OUT OF DOMAIN: far
        tiles 85% > 50%``, or the note when not available."""
        if not self.available:
            return self.note or "out-of-domain check: not available"
        if self.far_fraction is None:
            return "out-of-domain check: no tissue tiles"
        limit = self.far_fraction_threshold or 0.0
        if self.flagged:
            return f"OUT OF DOMAIN: far tiles {self.far_fraction:.0%} > {limit:.0%}"
        return f"far tiles {self.far_fraction:.0%} (limit {limit:.0%})"


def not_available(reason: str) -> OodResult:
    """The result of a model that cannot run the check (``reason``: why)."""
    return OodResult(available=False, note=f"out-of-domain check: not available ({reason})")


def slide_ood(
    reference: OodReference, distances: np.ndarray, far_fraction: float = DEFAULT_OOD_FAR_FRACTION
) -> OodResult:
    """The slide's check from its tissue tiles' ``(N,)`` distances; ``far_fraction`` is the
    slide threshold (a default chosen by measurement, not fitted per model)."""
    limit = float(far_fraction)
    d = np.asarray(distances, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return OodResult(True, None, False, limit, reference.tile_threshold, None)
    frac = float((d > reference.tile_threshold).mean())
    return OodResult(True, frac, frac > limit, limit, reference.tile_threshold, float(np.median(d)))


__all__ = [
    "OOD_REFERENCE_VERSION",
    "PAYLOAD_KEY",
    "OodReference",
    "OodResult",
    "fit_reference",
    "not_available",
    "slide_ood",
]
