"""Dihedral views and the on-disk feature cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from qupath_rkd.features.cache import FeatureCache, default_cache_dir, open_default_cache, tile_key
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.trunk import build_trunk, centre_third_mean
from qupath_rkd.features.views import N_VIEWS, view_images, view_list, view_tiles
from qupath_rkd.training.datasets import ArrayDataset


def _tiles(n: int = 6, side: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_the_eight_views_are_distinct_and_tile_and_image_layouts_agree() -> None:
    tiles = torch.from_numpy(_tiles(2))
    seen = set()
    for v in range(N_VIEWS):
        a = view_tiles(tiles, v)
        b = view_images(tiles.permute(0, 3, 1, 2), v).permute(0, 2, 3, 1)
        assert torch.equal(a, b)
        seen.add(a.numpy().tobytes())
    assert len(seen) == N_VIEWS
    assert torch.equal(view_tiles(tiles, 0), tiles)
    assert view_list(8) == list(range(8)) and view_list(1) == [0]
    with pytest.raises(Exception, match="1, 2, 4 or 8"):
        view_list(3)


def test_centre_third_covers_the_middle_cells() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[..., 3:6, 3:6] = 1.0
    assert float(centre_third_mean(x)) == 1.0
    assert float(centre_third_mean(torch.ones(1, 1, 1, 1))) == 1.0  # a 1x1 map is its own centre


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    return build_trunk("efficientnet_lite0", random_weights_for_tests=True)


def test_cold_and_warm_cache_give_the_same_features_and_only_misses_are_computed(
    tmp_path, trunk
) -> None:
    ds = ArrayDataset(_tiles(6), np.zeros(6, dtype=np.int64))
    cache = FeatureCache(tmp_path)
    cold = extract_features(trunk, ds, input_px=32, views=[0, 5], cache=cache)
    assert cold.computed == 12 and cold.cached == 0 and cold.ok.all()
    warm = extract_features(trunk, ds, input_px=32, views=[0, 5], cache=cache)
    assert warm.computed == 0 and warm.cached == 12
    np.testing.assert_array_equal(cold.values, warm.values)
    nocache = extract_features(trunk, ds, input_px=32, views=[0, 5], cache=None)
    np.testing.assert_array_equal(cold.values, nocache.values)
    # a new view, other pixels, another input size: misses
    assert extract_features(trunk, ds, input_px=32, views=[3], cache=cache).computed == 6
    other = ArrayDataset(_tiles(6, seed=1), np.zeros(6, dtype=np.int64))
    assert extract_features(trunk, other, input_px=32, views=[0], cache=cache).computed == 6
    assert extract_features(trunk, ds, input_px=64, views=[0], cache=cache).computed == 6
    # views really differ
    assert not np.array_equal(cold.values[:, 0], cold.values[:, 1])


def test_other_weights_are_another_feature_space(tmp_path, trunk) -> None:
    ds = ArrayDataset(_tiles(3), np.zeros(3, dtype=np.int64))
    cache = FeatureCache(tmp_path)
    extract_features(trunk, ds, input_px=32, cache=cache)
    torch.manual_seed(1)
    other = build_trunk("efficientnet_lite0", random_weights_for_tests=True)
    assert extract_features(other, ds, input_px=32, cache=cache).computed == 3


def test_each_pooling_is_its_own_feature_space_and_adds_the_max(tmp_path) -> None:
    """``mean_centre_max`` keeps the ``mean_centre`` statistics and adds each tap's maximum;
    the cache never hands one pooling's features to the other."""
    from qupath_rkd.features.trunk import POOLINGS

    ds = ArrayDataset(_tiles(3), np.zeros(3, dtype=np.int64))
    torch.manual_seed(0)
    old = build_trunk("efficientnet_lite0", pooling="mean_centre", random_weights_for_tests=True)
    torch.manual_seed(0)
    new = build_trunk(
        "efficientnet_lite0", pooling="mean_centre_max", random_weights_for_tests=True
    )
    assert new.dim == old.dim // 2 * 3 == 5328 and "mean_centre_std" in POOLINGS
    cache = FeatureCache(tmp_path)
    a = extract_features(old, ds, input_px=32, cache=cache)
    b = extract_features(new, ds, input_px=32, cache=cache)
    assert b.computed == 3 and b.cached == 0
    # per tap: mean, centre mean (as before), then the max, which is >= the mean
    x = torch.from_numpy(_tiles(3)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        taps = new.taps(x)
    start = 0
    for t in taps:
        c = int(t.shape[1])
        got = torch.from_numpy(np.asarray(new(x))[:, start : start + 3 * c])
        torch.testing.assert_close(got[:, :c], t.mean(dim=(-2, -1)))
        torch.testing.assert_close(got[:, 2 * c :], t.amax(dim=(-2, -1)))
        start += 3 * c
    assert start == new.dim
    assert a.values.shape[-1] == 3552
    # the std statistic: the population std of every channel (0, not NaN, on a 1 x 1 map)
    torch.manual_seed(0)
    std = build_trunk(
        "efficientnet_lite0", pooling="mean_centre_std", random_weights_for_tests=True
    )
    with torch.no_grad():
        feats = std(x)
    assert torch.isfinite(feats).all()
    c0 = int(taps[0].shape[1])
    torch.testing.assert_close(feats[:, 2 * c0 : 3 * c0], taps[0].std(dim=(-2, -1), correction=0))
    with pytest.raises(Exception, match="unknown trunk pooling"):
        build_trunk("efficientnet_lite0", pooling="gem", random_weights_for_tests=True)


def test_cache_is_bounded_least_recently_used_first(tmp_path) -> None:
    dim = 256  # 512 bytes a vector
    cache = FeatureCache(tmp_path, max_bytes=10 * 512)
    keys = [tile_key(t) for t in _tiles(20)]
    for i, k in enumerate(keys[:8]):
        cache.put("s", [(k, np.full(dim, i, np.float32))], 0)
    cache.get("s", keys[:2], 0, dim)  # keys 0 and 1 used recently
    cache.put("s", [(k, np.zeros(dim)) for k in keys[8:12]], 0)
    assert cache.size_bytes() <= 10 * 512
    kept = cache.get("s", keys, 0, dim)
    assert 0 in kept and 1 in kept and 2 not in kept  # the oldest unused went first
    assert all(j in kept for j in range(8, 12))


def test_a_damaged_cache_file_warns_and_runs_without(tmp_path, trunk, caplog) -> None:
    (tmp_path / "features.sqlite").write_bytes(b"not a database" * 100)
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(tmp_path)
        ds = ArrayDataset(_tiles(2), np.zeros(2, dtype=np.int64))
        f = extract_features(trunk, ds, input_px=32, cache=cache)
    assert f.ok.all() and not cache.enabled
    assert "running without it" in caplog.text


def test_cache_location_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QUPATH_RKD_CACHE_DIR", "off")
    assert default_cache_dir() is None and open_default_cache() is None
    monkeypatch.setenv("QUPATH_RKD_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


def test_repeated_tiles_are_found_in_the_cache_every_time(tmp_path, trunk) -> None:
    """Regression: byte-identical patches in one batch (PCam has 975) were recomputed on every
    run, as the lookup kept only the last position of a repeated key."""
    tiles = _tiles(3)
    ds = ArrayDataset(np.concatenate([tiles, tiles[:2]]), np.zeros(5, dtype=np.int64))
    cache = FeatureCache(tmp_path)
    cold = extract_features(trunk, ds, input_px=32, views=[0, 1], cache=cache)
    warm = extract_features(trunk, ds, input_px=32, views=[0, 1], cache=cache)
    assert warm.computed == 0 and warm.cached == 10
    np.testing.assert_array_equal(cold.values, warm.values)


def test_a_weights_file_of_another_network_is_a_clear_error(tmp_path) -> None:
    from qupath_rkd.errors import TeacherWeightsError

    path = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(TeacherWeightsError, match="does not hold efficientnet_lite0 ImageNet"):
        build_trunk("efficientnet_lite0", path)
    with pytest.raises(Exception, match="unknown feature trunk"):
        build_trunk("vgg16")
