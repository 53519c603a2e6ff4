"""Stain (colour) augmentation of H&E tiles in the haematoxylin-eosin-DAB space.

A tile's RGB is turned into optical densities per stain by colour deconvolution
(:func:`skimage.color.rgb2hed`, Ruifrok & Johnston's H&E-DAB vectors); each stain channel ``c``
is then scaled and shifted, ``od'_c = od_c * a_c + b_c`` with ``a_c ~ U(1 - s, 1 + s)`` and
``b_c ~ U(-s, s) * scale_c`` (``scale_c`` the channel's typical range on H&E, so ``s`` means the
same on every channel), and turned back into RGB. This imitates the spread of staining
strength between laboratories and batches that a pathologist's few tumour annotations do not
cover. Tiles are ``(H, W, 3)`` uint8 RGB in, ``(H, W, 3)`` uint8 RGB out.
"""

from __future__ import annotations

import hashlib

import numpy as np
from torch.utils.data import Dataset

from qupath_rkd.errors import DataError

#: typical optical-density range of each HED channel on H&E (for the shift's scale)
_HED_SCALE = np.array([0.05, 0.05, 0.02])


def hed_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> the same tissue with jittered stain strengths (uint8).

    ``strength`` is ``s`` above (0 returns an unchanged copy; 0.05-0.2 is the usual range)."""
    from skimage.color import hed2rgb, rgb2hed

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"stain jitter needs (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if strength < 0:
        raise DataError(f"stain jitter strength must be >= 0, got {strength}")
    if strength == 0:
        return image.copy()
    alpha = rng.uniform(1 - strength, 1 + strength, size=3)
    beta = rng.uniform(-strength, strength, size=3) * _HED_SCALE
    hed = rgb2hed(image) * alpha + beta
    rgb = hed2rgb(hed)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


class StainJitterDataset(Dataset):
    """``copies`` stain-jittered copies of every item of ``base`` (items ``(image, label)``).

    Item ``k * len(base) + i`` is copy ``k`` of item ``i``; its jitter is drawn from a generator
    seeded by ``(seed, i, k)``, so the same item always gets the same colours (and the feature
    cache, keyed by the tile's bytes, finds it again).
    """

    def __init__(self, base: Dataset, copies: int, strength: float, seed: int = 0) -> None:
        if copies < 1:
            raise DataError(f"stain jitter copies must be >= 1, got {copies}")
        self.base, self.copies, self.strength, self.seed = base, copies, strength, seed
        self.n_base = len(base)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n_base * self.copies

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        k, i = divmod(index, self.n_base)
        image, label = self.base[i]
        digest = hashlib.sha256(f"{self.seed}:{i}:{k}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return hed_jitter(image, rng, self.strength), label
