"""Fixtures for the slide layer: small pyramidal TIFFs written with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_pyramid_tiff(path: Path, level0: np.ndarray, mpp: float, n_levels: int = 3) -> Path:
    """Write ``level0`` (h, w, 3) uint8 as a lossless tiled pyramidal TIFF (generic-tiff).

    Reduced levels are 2×2 box means of the previous one, as pages with ``subfiletype=1``.
    """
    import tifffile

    levels = [level0]
    for _ in range(n_levels - 1):
        prev = levels[-1].astype(np.float64)
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(
            prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        )
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            scale = 2**index
            tif.write(
                level,
                tile=(128, 128),
                photometric="rgb",
                compression="zlib",
                subfiletype=1 if index else 0,
                resolution=(1e4 / (mpp * scale), 1e4 / (mpp * scale)),
                resolutionunit="CENTIMETER",
            )
    return path


def pcam_mosaic(folder: Path, rows: int, cols: int) -> np.ndarray:
    """A (rows*96, cols*96, 3) uint8 mosaic of the first rows*cols real PCam patches in
    ``folder`` (name order, row by row), not the builder's."""
    from PIL import Image

    files = sorted(folder.glob("*.jpg"))[: rows * cols]
    assert len(files) == rows * cols, f"{folder}: {len(files)} patches, need {rows * cols}"
    out = np.empty((rows * 96, cols * 96, 3), dtype=np.uint8)
    for index, path in enumerate(files):
        r, c = divmod(index, cols)
        out[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] = np.asarray(
            Image.open(path).convert("RGB")
        )
    return out


@pytest.fixture(scope="session")
def real_pixels(real_data: Path) -> np.ndarray:
    """768 × 1152 px of real H&E: a mosaic of 96 PCam normal patches (tests/data/pcam-mosaic,
    drawn once at random from PCam's train/0)."""
    return pcam_mosaic(real_data / "pcam-mosaic", 8, 12)


@pytest.fixture(scope="session")
def pyramid_slide(tmp_path_factory: pytest.TempPathFactory, real_pixels: np.ndarray) -> Path:
    """A lossless 3-level pyramidal TIFF of ``real_pixels`` at 0.25 µm/px."""
    return write_pyramid_tiff(tmp_path_factory.mktemp("pyr") / "slide.tif", real_pixels, mpp=0.25)
