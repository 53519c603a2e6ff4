"""The slide reader on real slides and on generated pyramidal TIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qupath_rkd.errors import (
    ResolutionError,
    SlideNotFoundError,
    SlideReadError,
    TileOutOfBoundsError,
    UnknownResolutionError,
)
from qupath_rkd.slides import open_slide, tissue_mask


def test_cmu_small_region_opens_with_size_and_mpp(real_data: Path) -> None:
    with open_slide(real_data / "slides" / "cmu-1-small-region.svs") as slide:
        assert (slide.width_px, slide.height_px) == (2220, 2967)
        assert slide.format == "aperio"
        assert slide.mpp == pytest.approx(0.499, abs=5e-4)
        assert slide.mpp_source == "metadata"
        mask = tissue_mask(slide)
        # the section covers roughly a third of this crop; glass the rest
        assert 0.2 < mask.fraction < 0.7


def test_missing_mpp_is_a_clear_error_unless_overridden(real_data: Path) -> None:
    path = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as slide:
        assert slide.mpp_or_none is None
        with pytest.raises(UnknownResolutionError, match=r"tcga-cr-7395.*--slide-mpp"):
            _ = slide.mpp
        with pytest.raises(UnknownResolutionError):
            slide.read_tile(0, 0, 64, 1.0)
    with open_slide(path, mpp=0.25) as slide:
        assert slide.mpp == 0.25
        tile = slide.read_tile(100, 100, 64, 0.5)
        assert tile.shape == (64, 64, 3) and tile.dtype == np.uint8


def test_72_dpi_default_resolution_is_not_taken_as_a_pixel_size(real_data: Path) -> None:
    with open_slide(real_data / "slides" / "openslide-python-boxes.tiff") as slide:
        assert slide.mpp_or_none is None


def test_unreadable_format_is_a_clear_error(real_data: Path) -> None:
    with pytest.raises(SlideReadError, match=r"kidney-48-5\.tif: cannot read"):
        open_slide(real_data / "slides" / "kidney-48-5.tif")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError, match="no such file"):
        open_slide(tmp_path / "missing.svs")
    with pytest.raises(SlideNotFoundError, match="is a directory"):
        open_slide(tmp_path)


def test_level0_tile_equals_source_pixels_exactly(
    pyramid_slide: Path, real_pixels: np.ndarray
) -> None:
    with open_slide(pyramid_slide) as slide:
        assert slide.format == "generic-tiff"
        assert slide.mpp == pytest.approx(0.25, rel=1e-6)
        assert slide.level_count == 3
        for x, y in [(0, 0), (131, 77), (1152 - 200, 768 - 200)]:
            tile = slide.read_tile(x, y, 200, 0.25)
            np.testing.assert_array_equal(tile, real_pixels[y : y + 200, x : x + 200])


def _box_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    h, w = pixels.shape[0] // factor * factor, pixels.shape[1] // factor * factor
    blocks = pixels[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, 3)
    return blocks.mean(axis=(1, 3))


def test_tile_at_twice_the_mpp_is_the_downsampled_source(
    pyramid_slide: Path, real_pixels: np.ndarray
) -> None:
    with open_slide(pyramid_slide) as slide:
        tile = slide.read_tile(256, 128, 128, 0.5).astype(np.float64)
    expected = _box_mean(real_pixels[128 : 128 + 256, 256 : 256 + 256], 2)
    # level 1 is a 2x2 box mean of level 0, so it matches up to rounding and resampling
    assert np.abs(tile - expected).mean() < 2.0


def test_non_integer_downsample_matches_an_antialiased_resize(
    pyramid_slide: Path, real_pixels: np.ndarray
) -> None:
    with open_slide(pyramid_slide) as slide:
        tile = slide.read_tile(96, 96, 100, 0.3).astype(np.float64)  # 120 level-0 px -> 100 px
    source = Image.fromarray(real_pixels[96 : 96 + 120, 96 : 96 + 120])
    expected = np.asarray(source.resize((100, 100), Image.Resampling.LANCZOS), dtype=np.float64)
    assert np.abs(tile - expected).mean() < 1.0
    # and it is not merely a crop: an unresized crop differs far more
    crop = real_pixels[96 : 96 + 100, 96 : 96 + 100].astype(np.float64)
    assert np.abs(tile - crop).mean() > 5.0


def test_target_finer_than_level0_is_refused(pyramid_slide: Path) -> None:
    with open_slide(pyramid_slide) as slide:
        with pytest.raises(ResolutionError, match="finer than the slide's level 0"):
            slide.read_tile(0, 0, 64, 0.2)
        # within the 1 % tolerance a metadata rounding is accepted and read at level 0
        assert slide.read_tile(0, 0, 64, 0.2490).shape == (64, 64, 3)


def test_tile_outside_the_slide_is_refused(pyramid_slide: Path) -> None:
    with open_slide(pyramid_slide) as slide:
        with pytest.raises(TileOutOfBoundsError, match="outside the slide"):
            slide.read_tile(1152 - 50, 0, 64, 0.25)
        with pytest.raises(TileOutOfBoundsError):
            slide.read_tile(-1, 0, 64, 0.25)


class _BoundsProxy:
    """An OpenSlide handle whose properties claim bounds (as MRXS files do)."""

    def __init__(self, handle, bx: int, by: int, bw: int, bh: int) -> None:  # type: ignore[no-untyped-def]
        self._handle = handle
        self.properties = dict(handle.properties) | {
            "openslide.bounds-x": str(bx),
            "openslide.bounds-y": str(by),
            "openslide.bounds-width": str(bw),
            "openslide.bounds-height": str(bh),
        }

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._handle, name)


def test_bounds_offset_puts_tiles_in_qupaths_frame(
    pyramid_slide: Path, real_pixels: np.ndarray
) -> None:
    import openslide

    from qupath_rkd.slides.reader import Slide

    proxy = _BoundsProxy(openslide.OpenSlide(str(pyramid_slide)), 100, 60, 800, 600)
    slide = Slide(pyramid_slide, proxy, None)
    assert (slide.width_px, slide.height_px) == (800, 600)
    assert slide.bounds_offset_px == (100, 60)
    # QuPath (0, 0) is OpenSlide (100, 60)
    np.testing.assert_array_equal(slide.read_tile(0, 0, 64, 0.25), real_pixels[60:124, 100:164])
    with pytest.raises(TileOutOfBoundsError):
        slide.read_tile(800 - 32, 0, 64, 0.25)
    slide.close()


def test_thumbnail_has_the_slide_aspect_and_content(
    pyramid_slide: Path, real_pixels: np.ndarray
) -> None:
    with open_slide(pyramid_slide) as slide:
        thumb, downsample = slide.thumbnail(288)
    assert downsample == pytest.approx(1152 / 288)
    assert thumb.shape == (192, 288, 3)
    expected = _box_mean(real_pixels, 4)
    assert np.abs(thumb.astype(np.float64) - expected).mean() < 3.0


def test_72_dpi_warning_names_the_file_and_the_fix_once(
    real_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from qupath_rkd.slides import reader

    path = real_data / "slides" / "openslide-python-boxes.tiff"
    reader._WARNED_IMPLAUSIBLE.discard(str(path))
    with caplog.at_level("WARNING", logger="qupath_rkd.slides.reader"):
        for _ in range(3):  # predict opens a slide many times: one warning
            with open_slide(path):
                pass
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{path}: ignoring the pixel size")
    assert "352.8" in messages[0] and "72 dpi" in messages[0] and "--slide-mpp" in messages[0]
