"""The evaluation mask and the ITC rule on real Camelyon16 lesion polygons (tests/data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from qupath_rkd.evaluation.camelyon16 import evaluation_mask, rasterize
from qupath_rkd.evaluation.truth import load_truth, load_truth_dir

MPP = 0.243
DS = 32.0
# Small slides whose raster instances agree with the vector reference below.
SLIDES = ["Tumor_006", "Tumor_008", "Tumor_017", "Tumor_019", "Tumor_023"]


def truth(real_data, slide_id):
    return load_truth(real_data / "camelyon16-annotations" / "train" / f"{slide_id}.json")


def vector_tumour(t):
    g = shapely.union_all([shapely.make_valid(p) for p in t.tumor])
    if t.exclude:
        g = g.difference(shapely.union_all([shapely.make_valid(p) for p in t.exclude]))
    return g


def centres(mask):
    rows, cols = mask.labels.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    return mask.origin_xy_px[0] + (cc + 0.5) * DS, mask.origin_xy_px[1] + (rr + 0.5) * DS


def test_camelyon16_json_is_read_with_its_resolution(real_data) -> None:
    t = truth(real_data, "Tumor_021")
    assert t.format == "camelyon16-json" and t.mpp == MPP
    assert len(t.tumor) == 16 and len(t.exclude) == 19
    assert t.is_tumor and t.slide_id == "Tumor_021"
    all_truth = load_truth_dir(real_data / "camelyon16-annotations" / "valid")
    assert len(all_truth) == 10 and all(v.is_tumor for v in all_truth.values())


def test_rasterisation_samples_pixel_centres_exactly(real_data) -> None:
    t = truth(real_data, "Tumor_017")  # valid polygons: even-odd = shapely
    assert all(p.is_valid for p in t.tumor)
    mask = evaluation_mask(t.tumor, t.exclude, mpp=MPP)
    xs, ys = centres(mask)
    ras = rasterize(
        t.tumor, t.exclude, origin_xy_px=mask.origin_xy_px, downsample=DS, shape=mask.labels.shape
    )
    np.testing.assert_array_equal(ras, shapely.contains_xy(vector_tumour(t), xs, ys))
    assert ras.sum() > 50


@pytest.mark.parametrize("slide_id", SLIDES)
def test_instances_and_itc_rule_on_real_lesions(real_data, slide_id) -> None:
    t = truth(real_data, slide_id)
    mask = evaluation_mask(t.tumor, t.exclude, mpp=MPP)
    assert mask.downsample == 32.0  # level 5 of a 0.243 µm/px slide
    # Instances = connected parts of the tumour grown by 37.5 µm, computed on vectors.
    grown = vector_tumour(t).buffer(37.5 / MPP)
    parts = list(shapely.get_parts(grown))
    assert mask.n_instances == len(parts)
    # Each vector part holds exactly one instance.
    xs, ys = centres(mask)
    for part in parts:
        inside = shapely.contains_xy(part, xs, ys)
        labels = set(np.unique(mask.labels[inside]).tolist()) - {0}
        assert len(labels) == 1
    # The ITC rule, recomputed from each instance's pixels: major axis < 275 µm.
    for k in range(1, mask.n_instances + 1):
        pts = np.argwhere(mask.labels == k).astype(float)
        cov = np.cov(pts.T, bias=True)
        major_um = 4 * math.sqrt(np.linalg.eigvalsh(cov).max()) * DS * MPP
        assert (k in mask.itc_labels) == (major_um < 275.0), (slide_id, k, major_um)
    # Every instance larger than an ITC is at least 275 µm across in the vector geometry too.
    for k in set(range(1, mask.n_instances + 1)) - mask.itc_labels:
        part = next(
            p
            for p in parts
            if shapely.contains_xy(p, xs[mask.labels == k][:1], ys[mask.labels == k][:1])[0]
        )
        minx, miny, maxx, maxy = part.bounds
        assert math.hypot(maxx - minx, maxy - miny) * MPP > 275.0


def test_itc_counts_on_real_slides(real_data) -> None:
    # Tumor_017 holds only two tiny lesions (both ITC); Tumor_008 one real lesion and ITCs.
    m17 = evaluation_mask(*_pair(truth(real_data, "Tumor_017")), mpp=MPP)
    assert m17.n_instances == 2 and m17.n_lesions == 0
    m8 = evaluation_mask(*_pair(truth(real_data, "Tumor_008")), mpp=MPP)
    assert m8.n_lesions == 1 and len(m8.itc_labels) == m8.n_instances - 1


def _pair(t):
    return t.tumor, t.exclude


def test_labels_hit_by_level0_points_as_the_organisers_index(real_data) -> None:
    t = truth(real_data, "Tumor_008")
    mask = evaluation_mask(t.tumor, t.exclude, mpp=MPP)
    minx, miny, maxx, maxy = shapely.union_all([shapely.make_valid(p) for p in t.tumor]).bounds
    # the whole-slide mask, as the organisers build it, of a slide reaching past the lesions
    full = evaluation_mask(
        t.tumor, t.exclude, mpp=MPP, slide_size_px=(int(maxx) + 3000, int(maxy) + 3000)
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(minx - 500, maxx + 500, 2000)
    y = rng.uniform(miny - 500, maxy + 500, 2000)
    # organisers: evaluation_mask[int(Y / 32), int(X / 32)] on the whole-slide mask
    want = full.labels[(y / 32).astype(int), (x / 32).astype(int)]
    np.testing.assert_array_equal(full.label_at(x, y), want)
    got = mask.label_at(x, y)
    assert np.array_equal(got > 0, want > 0)
    assert (got > 0).sum() > 100
