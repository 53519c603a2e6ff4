"""Tissue masks, tile grids and the semi-real slide builder."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import shapely

from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs
from qupath_rkd.slides import open_slide, tile_grid, tissue_mask
from qupath_rkd.slides.tissue import tissue_mask_from_rgb


@pytest.fixture(scope="module")
def semireal(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    normal, tumor = demo_patch_dirs()
    return build_semireal_slide(
        tmp_path_factory.mktemp("semi") / "semi.tif",
        normal_dir=normal,
        tumor_dir=tumor,
        width_px=2400,
        height_px=1800,
        n_lesions=2,
        lesion_diameters_um=(500.0, 300.0),
        seed=3,
        compression="zlib",
        max_patches=200,
    )


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb_f = rgb.astype(np.float64) / 255
    value = rgb_f.max(axis=-1)
    return (value - rgb_f.min(axis=-1)) / np.maximum(value, 1e-6)


def test_semireal_slide_is_a_pyramidal_generic_tiff_with_lesions_inside_tissue(semireal) -> None:  # type: ignore[no-untyped-def]
    with open_slide(semireal.path) as slide:
        assert slide.format == "generic-tiff"
        assert (slide.width_px, slide.height_px) == (2400, 1800)
        assert slide.mpp == pytest.approx(0.972, rel=1e-4)
        assert slide.level_count >= 2
        assert slide.level_downsamples[1] == pytest.approx(2.0)
    assert len(semireal.lesions) == 2
    for lesion in semireal.lesions:
        assert lesion.is_valid
        assert semireal.tissue.contains(lesion)
    diameters_um = sorted(2 * np.sqrt(p.area / np.pi) * semireal.mpp for p in semireal.lesions)
    assert diameters_um == pytest.approx([300.0, 500.0], rel=0.2)


def test_semireal_lesion_pixels_come_from_tumour_patches(semireal) -> None:  # type: ignore[no-untyped-def]
    """Inside a lesion the pixels are a tumour mosaic, outside it a normal one (both real H&E)."""
    lesion = max(semireal.lesions, key=lambda p: p.area)
    cx, cy = lesion.centroid.x, lesion.centroid.y
    with open_slide(semireal.path) as slide:
        inside = slide.read_tile(int(cx) - 48, int(cy) - 48, 96, slide.mpp)
        corner = slide.read_tile(0, 0, 96, slide.mpp)
    assert _saturation(inside).mean() > 0.15  # stained tissue
    assert _saturation(corner).mean() < 0.05  # glass


def test_grid_tiles_lie_inside_the_slide_and_over_tissue(semireal) -> None:  # type: ignore[no-untyped-def]
    with open_slide(semireal.path) as slide:
        mask = tissue_mask(slide)
        grid = tile_grid(slide, 64, 1.944, min_tissue_fraction=0.5, mask=mask)
        assert len(grid) > 20
        assert grid.tile_level0_px == pytest.approx(128.0)
        x, y = grid.xy_px[:, 0], grid.xy_px[:, 1]
        assert (x >= 0).all() and (y >= 0).all()
        assert (x + grid.tile_level0_px <= slide.width_px).all()
        assert (y + grid.tile_level0_px <= slide.height_px).all()
        # every tile is mostly over the builder's true tissue outline
        for tx, ty in grid.xy_px:
            tile_box = shapely.box(tx, ty, tx + 128, ty + 128)
            assert semireal.tissue.intersection(tile_box).area / tile_box.area > 0.3
        # row-major, deterministic
        order = grid.rc[:, 0] * grid.grid_shape[1] + grid.rc[:, 1]
        assert (np.diff(order) > 0).all()
        again = tile_grid(slide, 64, 1.944, min_tissue_fraction=0.5, mask=mask)
        np.testing.assert_array_equal(grid.xy_px, again.xy_px)
        # grid cell (r, c) starts at (c * stride, r * stride)
        np.testing.assert_array_equal(grid.xy_px[:, 0], np.floor(grid.rc[:, 1] * 128.0).astype(int))


def test_grid_stride_and_region(semireal) -> None:  # type: ignore[no-untyped-def]
    with open_slide(semireal.path) as slide:
        mask = tissue_mask(slide)
        dense = tile_grid(slide, 64, 1.944, stride_px=32, min_tissue_fraction=0.5, mask=mask)
        sparse = tile_grid(slide, 64, 1.944, min_tissue_fraction=0.5, mask=mask)
        assert dense.stride_level0_px == pytest.approx(64.0)
        assert len(dense) > 3 * len(sparse)
        lesion = semireal.lesions[0]
        inside = tile_grid(slide, 64, 1.944, min_tissue_fraction=0.0, region=lesion)
        assert len(inside) > 0
        centres = inside.centres_px()
        assert shapely.contains_xy(lesion, centres[:, 0], centres[:, 1]).all()


def test_blank_slide_yields_no_tiles(tmp_path: Path) -> None:
    normal, tumor = demo_patch_dirs()
    blank = build_semireal_slide(
        tmp_path / "blank.tif",
        normal_dir=normal,
        tumor_dir=tumor,
        width_px=1200,
        height_px=900,
        tissue_fraction=0.0,
        max_patches=10,
    )
    with open_slide(blank.path) as slide:
        mask = tissue_mask(slide)
        assert mask.fraction == 0.0
        assert len(tile_grid(slide, 96, slide.mpp, mask=mask)) == 0


def test_tissue_mask_on_pure_glass_and_pure_stain() -> None:
    glass = np.full((200, 200, 3), 240, np.uint8)
    mask, _ = tissue_mask_from_rgb(glass, min_object_px=10)
    assert not mask.any()
    stain = np.zeros((200, 200, 3), np.uint8)
    stain[:] = (190, 90, 170)  # eosin/haematoxylin-like pink-purple
    stain[:, :100] = 240
    mask, _ = tissue_mask_from_rgb(stain, min_object_px=10)
    assert mask[:, 110:].all() and not mask[:, :90].any()


def test_pyramid_levels_built_strip_by_strip_equal_a_whole_image_downsample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: reduced levels were computed on the whole level at once (a 40k slide was
    OOM-killed); they are now built in strips, which must give the same pixels."""
    import tifffile

    from qupath_rkd.demo import semireal

    monkeypatch.setattr(semireal, "_STRIP_ROWS", 64)
    normal, tumor = demo_patch_dirs()
    slide = build_semireal_slide(
        tmp_path / "strips.tif",
        normal_dir=normal,
        tumor_dir=tumor,
        width_px=1100,
        height_px=1030,
        compression="zlib",
        max_patches=20,
        min_level_px=256,
    )
    with tifffile.TiffFile(slide.path) as tif:
        pages = [page.asarray() for page in tif.pages]
    assert len(pages) == 3
    for finer, coarser in itertools.pairwise(pages):
        np.testing.assert_array_equal(coarser, semireal._downsample2(finer))
