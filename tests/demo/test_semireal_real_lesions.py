"""Semi-real slides with real Camelyon16 lesion geometry (holes, satellites), irregular tissue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from qupath_rkd.demo import demo_patch_dirs
from qupath_rkd.demo.camelyon_lesions import (
    SOURCE_MPP,
    build_real_lesion_slide,
    load_camelyon16_lesions,
    place_lesion_cluster,
)
from qupath_rkd.evaluation.camelyon16 import evaluation_mask
from qupath_rkd.evaluation.truth import load_truth
from qupath_rkd.slides import open_slide

ANNOTATIONS = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ANNOTATIONS = ANNOTATIONS / "camelyon16-annotations"
# Tumor_037: lesion 6 (218 × 190 µm) has two non-tumour islands (``negative``) and satellites
SOURCE = ANNOTATIONS / "train" / "Tumor_037.json"
MAIN = 6

pytestmark = pytest.mark.skipif(
    not SOURCE.is_file(),
    reason=f"{SOURCE} is absent (the project's shared Camelyon16 annotations beside the checkout)",
)


def _orientations(patch: np.ndarray) -> list[np.ndarray]:
    """The 8 orientations the builder's mosaic uses (rot90 by k, then mirrored for k >= 4)."""
    return [np.rot90(patch, k % 4)[:, ::-1] if k >= 4 else np.rot90(patch, k % 4) for k in range(8)]


def _patches(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
    return np.stack(
        [o for f in files for o in _orientations(np.asarray(Image.open(f).convert("RGB")))]
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    normal, tumor = demo_patch_dirs()
    return build_real_lesion_slide(
        tmp_path_factory.mktemp("real") / "real.tif",
        normal_dir=normal,
        tumor_dir=tumor,
        width_px=1000,
        height_px=1000,
        annotation=SOURCE,
        main=MAIN,
        seed=5,
        compression="zlib",
        n_fat_lobules=1,
        n_tears=1,
    )


def test_loader_reuses_the_truth_reader_and_keeps_holes() -> None:
    source = load_camelyon16_lesions(SOURCE)
    truth = load_truth(SOURCE)
    assert len(truth.exclude) > 0
    assert all(p.is_valid for p in source)
    assert [p.area for p in source] == sorted((p.area for p in source), reverse=True)
    valid = (
        [shapely.make_valid(p) for p in truth.tumor],
        [shapely.make_valid(p) for p in truth.exclude],
    )
    expected = shapely.union_all(valid[0]).difference(shapely.union_all(valid[1]))
    assert shapely.union_all(source).symmetric_difference(expected).area < 1e-6 * expected.area
    # the two negative regions inside lesion MAIN became its holes
    holes = [shapely.Polygon(h) for h in source[MAIN].interiors]
    assert len(holes) == 2
    assert all(any(h.intersects(n) for n in truth.exclude) for h in holes)


def _kept_sources(cluster, source):  # type: ignore[no-untyped-def]
    """The source lesions wholly inside the window less its margin (what must be kept)."""
    ox, oy = cluster.origin_src_px
    w, h = 1000 / cluster.scale, 1000 / cluster.scale
    m = 150.0 / SOURCE_MPP
    inner = shapely.box(ox + m, oy + m, ox + w - m, oy + h - m)
    return [p for p in source if inner.contains(p)]


def test_real_lesions_keep_holes_satellites_and_physical_size(built) -> None:  # type: ignore[no-untyped-def]
    slide, cluster = built.slide, built.cluster
    source = load_camelyon16_lesions(SOURCE)
    assert cluster.main_index == MAIN
    assert cluster.scale == pytest.approx(SOURCE_MPP / slide.mpp)
    expected = _kept_sources(cluster, source)
    assert len(slide.lesions) == len(expected) >= 2  # the lesion and its satellite(s)
    assert any(p.equals(source[MAIN]) for p in expected)
    main = max(slide.lesions, key=lambda p: p.area)
    assert len(main.interiors) == 2  # holes kept
    for placed, src in zip(slide.lesions, expected, strict=True):  # source order is kept
        assert placed.is_valid
        # physical size (µm², µm) equals the source's after rescaling 0.243 -> 0.972 µm/px
        assert placed.area * slide.mpp**2 == pytest.approx(
            src.area * SOURCE_MPP**2, rel=0.02, abs=5.0
        )
        w = (placed.bounds[2] - placed.bounds[0]) * slide.mpp
        h = (placed.bounds[3] - placed.bounds[1]) * slide.mpp
        assert w == pytest.approx((src.bounds[2] - src.bounds[0]) * SOURCE_MPP, abs=1.0)
        assert h == pytest.approx((src.bounds[3] - src.bounds[1]) * SOURCE_MPP, abs=1.0)
        assert len(placed.interiors) == len(src.interiors)
    # the satellites sit where they sat relative to the lesion (distances in µm)
    big = expected.index(max(expected, key=lambda p: p.area))
    for placed, src in zip(slide.lesions, expected, strict=True):
        assert placed.distance(main) * slide.mpp == pytest.approx(
            src.distance(expected[big]) * SOURCE_MPP, abs=1.0
        )


def test_tissue_is_irregular_with_holes_and_covers_the_lesions(built) -> None:  # type: ignore[no-untyped-def]
    slide = built.slide
    tissue = slide.tissue
    assert tissue.is_valid and not tissue.is_empty
    holes = [h for p in getattr(tissue, "geoms", [tissue]) for h in p.interiors]
    assert len(holes) >= 5  # fat (adipocytes) and a tear
    frame = shapely.box(0, 0, slide.width_px, slide.height_px)
    assert tissue.area < 0.9 * frame.area and tissue.convex_hull.area > tissue.area
    for lesion in slide.lesions:
        assert tissue.contains(lesion)
        assert all(not lesion.intersects(shapely.Polygon(h)) for h in holes)


def test_pixels_tumour_inside_lesions_normal_in_holes_glass_outside(built) -> None:  # type: ignore[no-untyped-def]
    """Pixels well inside a lesion come from real tumour patches, in its holes from normal ones."""
    slide = built.slide
    normal_dir, tumor_dir = demo_patch_dirs()
    tumour, normal = _patches(tumor_dir), _patches(normal_dir)
    with open_slide(slide.path) as opened:
        level0 = opened.read_tile(0, 0, slide.width_px, slide.mpp)
    assert level0.shape == (slide.height_px, slide.width_px, 3)
    ys, xs = np.mgrid[0 : slide.height_px, 0 : slide.width_px] + 0.5
    lesions = shapely.union_all(slide.lesions)
    # 2 px clear of every outline: the rasteriser (PIL) rounds vertices to whole pixels
    in_lesion = shapely.contains_xy(lesions.buffer(-2.0), xs, ys)
    holes = shapely.union_all(
        [shapely.Polygon(h) for p in slide.lesions for h in p.interiors]
    ).buffer(-2.0)
    in_hole = shapely.contains_xy(holes, xs, ys)
    assert in_lesion.sum() > 1000 and in_hole.sum() > 20
    cell = 96
    checked = {"tumour": 0, "normal": 0}
    for r in range(0, slide.height_px, cell):
        for c in range(0, slide.width_px, cell):
            block = level0[r : r + cell, c : c + cell]
            h, w = block.shape[:2]
            for name, mask, patches in (
                ("tumour", in_lesion, tumour),
                ("normal", in_hole, normal),
            ):
                m = mask[r : r + h, c : c + w]
                if not m.any():
                    continue
                equal = (patches[:, :h, :w][:, m] == block[m]).all(axis=(1, 2))
                assert equal.any(), f"{name} pixels of cell ({r}, {c}) match no {name} patch"
                checked[name] += int(m.sum())
    assert checked["tumour"] == in_lesion.sum() and checked["normal"] == in_hole.sum()
    # glass outside the tissue (a real slide's white background), not a mosaic
    outside = ~shapely.contains_xy(slide.tissue.buffer(2.0), xs, ys)
    assert outside.mean() > 0.1
    assert np.abs(level0[outside].astype(int) - (242, 241, 244)).max() <= 3


def test_truth_files_read_back_the_same_lesion_instances(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    slide = built.slide
    geojson, camelyon = tmp_path / "a.geojson", tmp_path / "b.json"
    geojson.write_text(json.dumps(slide.lesions_geojson()))
    camelyon.write_text(json.dumps(slide.lesions_camelyon16()))
    size = (slide.width_px, slide.height_px)
    expected = evaluation_mask(slide.lesions, mpp=slide.mpp, slide_size_px=size)
    assert expected.n_instances >= 1
    for path in (geojson, camelyon):
        truth = load_truth(path)
        mask = evaluation_mask(truth.tumor, truth.exclude, mpp=slide.mpp, slide_size_px=size)
        assert (mask.labels > 0).sum() == (expected.labels > 0).sum()
        assert (mask.n_instances, mask.n_lesions) == (expected.n_instances, expected.n_lesions)
    assert len(load_truth(camelyon).exclude) == sum(len(p.interiors) for p in slide.lesions)


def test_placement_at_another_resolution_keeps_physical_size() -> None:
    source = load_camelyon16_lesions(SOURCE)
    cluster = place_lesion_cluster(
        source, width_px=2000, height_px=2000, mpp=0.5, rng=np.random.default_rng(1), main=MAIN
    )
    assert len(cluster.lesions) >= 1 and cluster.scale == pytest.approx(SOURCE_MPP / 0.5)
    ox, oy = cluster.origin_src_px
    m, w = 150.0 / SOURCE_MPP, 2000 / cluster.scale
    inner = shapely.box(ox + m, oy + m, ox + w - m, oy + w - m)
    expected = [p for p in source if inner.contains(p)]
    placed = sum(p.area for p in cluster.lesions) * 0.5**2
    assert placed == pytest.approx(sum(p.area for p in expected) * SOURCE_MPP**2, rel=0.01)
    for p in cluster.lesions:
        assert shapely.box(0, 0, 2000, 2000).contains(p)
