"""The heatmaps of normal-patch mosaics a patch-trained model carries for its operating point.

Built at training (:mod:`qupath_rkd.training.normal_mosaics`, which says how and why), stored in
the checkpoint under :data:`PAYLOAD_KEY`, and turned into tumour-free heatmaps by ``predict``
(:mod:`qupath_rkd.inference.batch`), which chooses the seed threshold on them with its own
post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Key of the mosaics in the checkpoint.
PAYLOAD_KEY = "normal_mosaics"
#: Patches per mosaic side: 32 x 32 PCam patches of 96 px at 0.972 µm/px are 8.9 mm² of
#: tissue, about one slide of the benchmark set (9.0 mm² each); a mosaic counts as one slide.
MOSAIC_SIDE_PATCHES = 32
#: A fold with fewer normal patches than this squared (a quarter of a full mosaic) gives no
#: mosaic: fewer would measure a rate per slide on too little tissue.
MIN_SIDE_PATCHES = 16


@dataclass(frozen=True)
class NormalMosaics:
    """Calibrated heatmaps of mosaics of held-out normal patches.

    Attributes:
        probability: one ``(rows, cols)`` float32 grid per mosaic, calibrated probabilities of
            the tiles at ``stride_px`` steps (tile ``(r, c)`` covers mosaic pixels
            ``[r * stride_px, r * stride_px + input_px)`` in y, likewise in x).
        side_patches: patches per side of each mosaic.
        input_px: tile side in mosaic pixels (the network input; a patch is resized to it).
        stride_px: grid step in mosaic pixels.
        full_side: ``side_patches`` of a mosaic that counts as one slide.
    """

    probability: list[np.ndarray]
    side_patches: list[int]
    input_px: int
    stride_px: int
    full_side: int = MOSAIC_SIDE_PATCHES

    @property
    def stride_fraction(self) -> float:
        return self.stride_px / self.input_px

    def to_payload(self) -> dict[str, Any]:
        """Tensors and plain values (the checkpoint loads with ``weights_only=True``)."""
        return {
            "probability": [torch.from_numpy(np.ascontiguousarray(p)) for p in self.probability],
            "side_patches": [int(s) for s in self.side_patches],
            "input_px": int(self.input_px),
            "stride_px": int(self.stride_px),
            "full_side": int(self.full_side),
        }

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> NormalMosaics:
        """Raises ``ValueError`` on a malformed payload."""
        try:
            probs = [
                np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.float32)
                for t in d["probability"]
            ]
            out = cls(
                probability=probs,
                side_patches=[int(s) for s in d["side_patches"]],
                input_px=int(d["input_px"]),
                stride_px=int(d["stride_px"]),
                full_side=int(d.get("full_side", MOSAIC_SIDE_PATCHES)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed normal mosaics ({type(exc).__name__}: {exc})") from exc
        if len(out.probability) != len(out.side_patches) or any(
            p.ndim != 2 for p in out.probability
        ):
            raise ValueError("malformed normal mosaics (grids and sides do not match)")
        return out

    def grids(
        self, stride_fraction: float
    ) -> tuple[list[tuple[np.ndarray, int, float]] | None, str]:
        """``(grid (rows, cols) float32, stride in mosaic px, slide equivalents)`` per mosaic
        for a grid of ``stride_fraction`` (stride / tile side); ``(None, why)`` when the stored
        grid cannot give it (only its own step and whole multiples of it: every other tile for
        the tile step when the stored step is half a tile)."""
        step = 1
        if not np.isclose(stride_fraction, self.stride_fraction):
            ratio = stride_fraction / self.stride_fraction
            if not (np.isclose(ratio, round(ratio)) and round(ratio) >= 1):
                return None, (
                    f"the normal mosaics were scored at a step of {self.stride_fraction:g} tile, "
                    f"not {stride_fraction:g}"
                )
            step = round(ratio)
        out = [
            (
                np.ascontiguousarray(grid[::step, ::step], dtype=np.float32),
                self.stride_px * step,
                (side / self.full_side) ** 2,
            )
            for grid, side in zip(self.probability, self.side_patches, strict=True)
        ]
        return out, ""


__all__ = ["MIN_SIDE_PATCHES", "MOSAIC_SIDE_PATCHES", "PAYLOAD_KEY", "NormalMosaics"]
