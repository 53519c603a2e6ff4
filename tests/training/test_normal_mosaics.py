"""The operating point of a patch-trained model from mosaics of its held-out normal patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_rkd.cli.train_patches import _echo_mosaic_threshold
from qupath_rkd.constants import DEFAULT_TARGET_FP_PER_SLIDE, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.trunk import build_trunk
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.inference import InferenceConfig
from qupath_rkd.inference.batch import model_operating_point
from qupath_rkd.lesions.operating_point import (
    METHOD_FALLBACK,
    METHOD_NORMAL_PATCHES,
    NegativeHeatmap,
    choose_on_mosaics,
    choose_operating_point,
)
from qupath_rkd.lesions.postprocess import PostProcessing
from qupath_rkd.model.calibration import Calibration
from qupath_rkd.model.checkpoint import read_checkpoint
from qupath_rkd.model.normal_mosaics import MIN_SIDE_PATCHES, PAYLOAD_KEY, NormalMosaics
from qupath_rkd.model.scorer import load_model
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import ArrayDataset
from qupath_rkd.training.normal_mosaics import build_normal_mosaics, mosaic_members
from qupath_rkd.training.trainer import train

PX = 32


def _patches(n_normal: int, n_tumor: int, seed: int = 0) -> ArrayDataset:
    """Pale, speckled 'normal' and dark, blotchy 'tumour' patches of PX px."""
    rng = np.random.default_rng(seed)
    normal = rng.integers(170, 250, size=(n_normal, PX, PX, 3), dtype=np.uint8)
    tumor = rng.integers(40, 140, size=(n_tumor, PX, PX, 3), dtype=np.uint8)
    labels = [LABEL_NORMAL] * n_normal + [LABEL_TUMOR] * n_tumor
    return ArrayDataset(np.concatenate([normal, tumor]), labels)


def test_each_mosaic_holds_readable_normal_patches_of_its_own_fold_only() -> None:
    labels = np.array([LABEL_NORMAL] * 700 + [LABEL_TUMOR] * 10)
    ok = np.ones(len(labels), dtype=bool)
    ok[5] = False
    folds = 1 + np.arange(len(labels)) % 2
    folds[:400] = 0  # fold 0: 400 normal, 399 readable (side 19); folds 1 and 2: 150 each
    members = mosaic_members(labels, ok, folds, n_mosaics=4, seed=0)
    assert [f for f, _ in members] == [0]  # folds 1, 2: fewer than 16 x 16 normal patches
    fold, idx = members[0]
    assert len(idx) == 19 * 19 and len(set(idx.tolist())) == len(idx)
    assert (folds[idx] == fold).all() and (labels[idx] == LABEL_NORMAL).all() and ok[idx].all()
    again = mosaic_members(labels, ok, folds, n_mosaics=4, seed=0)
    assert np.array_equal(again[0][1], idx)  # seeded
    other = mosaic_members(labels, ok, folds, n_mosaics=4, seed=1)
    assert not np.array_equal(other[0][1], idx)
    assert len(mosaic_members(labels, ok, np.arange(len(labels)) % 2, 1, 0)) == 1  # at most 1


def test_mosaic_tiles_are_scored_by_their_folds_head_and_aligned_tiles_are_the_patches() -> None:
    data = _patches(2 * 16 * 16, 0)
    trunk = build_trunk("efficientnet_lite0", random_weights_for_tests=True).eval()
    members = [(0, np.arange(256)), (1, np.arange(256, 512))]
    seen: dict[int, np.ndarray] = {}

    def fold_logits(fold: int, x: np.ndarray) -> np.ndarray:
        seen.setdefault(fold, x[:, 0].astype(np.float32))
        return np.full(len(x), -2.0 if fold == 0 else 1.0)

    cal = Calibration("logistic", 1.0, 0.0, 10, 10)
    mosaics = build_normal_mosaics(
        trunk, data, members, fold_logits, cal, input_px=PX, device=torch.device("cpu")
    )
    assert mosaics is not None and mosaics.stride_px == PX // 2
    rows = (16 * PX - PX) // (PX // 2) + 1
    assert [g.shape for g in mosaics.probability] == [(rows, rows)] * 2
    assert mosaics.side_patches == [16, 16]
    # mosaic 0 was scored by fold 0's head only, mosaic 1 by fold 1's
    assert np.allclose(mosaics.probability[0], 1 / (1 + np.exp(2.0)))
    assert np.allclose(mosaics.probability[1], 1 / (1 + np.exp(-1.0)))
    # tile (0, 0) of mosaic 1 is patch 256 itself; tile (0, 1) straddles patches 256 and 257
    own = extract_features(trunk, data, input_px=PX, views=[0]).values[:, 0]
    assert np.array_equal(seen[1][0], own[256].astype(np.float32))
    assert np.array_equal(seen[1][2], own[257].astype(np.float32))
    assert not np.array_equal(seen[1][1], own[256].astype(np.float32))


def _grid(rows: int, hot: tuple[int, int] | None = None, value: float = 0.95) -> np.ndarray:
    g = np.full((rows, rows), 0.05, dtype=np.float32)
    if hot is not None:
        r, c = hot
        g[r : r + 6, c : c + 6] = value  # 6 cells of 46.7 µm: a lesion of about 280 µm
    return g


def test_the_mosaics_threshold_clears_their_false_lesions_unless_there_are_enough_of_them() -> None:
    post = PostProcessing(smooth_sigma_um=0.0, extent_ratio=1.0, min_major_axis_um=200.0)
    common = {"tile_px": 96, "um_per_px": 0.972, "post": post}
    clean = (_grid(63), 48, 1.0)
    hot = (_grid(63, (20, 20)), 48, 1.0)
    above_hot = float(np.float32(0.95))
    two = choose_on_mosaics([clean, hot], **common)
    assert two.method == METHOD_NORMAL_PATCHES and two.held_out == "out-of-fold"
    assert two.threshold > above_hot and two.false_lesions_per_slide == 0.0
    assert two.slide_equivalents == pytest.approx(2.0) and "2 mosaic(s)" in two.note
    # one false lesion on four mosaics: the plain rate (0.25) meets the target at 0.5; the
    # estimate with 1/2 ((1 + 1/2) / 4) does not, so the threshold clears the false lesion
    four = [clean, clean, clean, hot]
    assert choose_on_mosaics(four, **common).threshold > above_hot
    plain = choose_operating_point(
        [NegativeHeatmap(_heatmap(g)) for g, _s, _w in four], post, prior_lesions=0.0
    )
    assert plain.threshold == 0.5 and plain.false_lesions_per_slide == pytest.approx(0.25)
    # none on four: (0 + 1/2) / 4 <= 0.25 at the calibrated 0.5
    quiet = choose_on_mosaics([clean] * 4, **common)
    assert quiet.threshold == 0.5 and "lowest threshold" in quiet.note
    # a single mosaic can never show 0.25 per slide: the threshold with the fewest, said so
    one = choose_on_mosaics([clean], **common)
    assert one.threshold == 0.5 and "no threshold reaches" in one.note
    # a quarter-size mosaic counts as a quarter of a slide
    small = choose_on_mosaics([clean, clean, clean, (_grid(31, (10, 10)), 48, 0.25)], **common)
    assert small.slide_equivalents == pytest.approx(3.25) and small.threshold > above_hot
    assert choose_on_mosaics([], **common).method == METHOD_FALLBACK


def _heatmap(grid: np.ndarray) -> Heatmap:
    return Heatmap(grid, (0.0, 0.0), 48.0, 96.0, 0.972)


def test_stored_grids_serve_their_own_step_and_the_tile_step_only() -> None:
    g = np.arange(63 * 63, dtype=np.float32).reshape(63, 63) / 63**2
    m = NormalMosaics([g, g[:31, :31]], [32, 16], input_px=96, stride_px=48)
    back = NormalMosaics.from_payload(m.to_payload())
    assert np.array_equal(back.probability[1], g[:31, :31]) and back.side_patches == [32, 16]
    same, _ = back.grids(0.5)
    assert same is not None and np.array_equal(same[0][0], g) and same[0][1:] == (48, 1.0)
    assert same[1][2] == pytest.approx(0.25)
    tile, _ = back.grids(1.0)
    assert tile is not None and np.array_equal(tile[0][0], g[::2, ::2]) and tile[0][1] == 96
    none, why = back.grids(1 / 3)
    assert none is None and "0.5 tile" in why
    with pytest.raises(ValueError, match="malformed"):
        NormalMosaics.from_payload({"probability": [], "side_patches": [1]})


def test_training_stores_the_mosaics_and_a_small_set_gets_a_warning(tmp_path) -> None:
    data = _patches(2 * MIN_SIDE_PATCHES**2 + 40, 20)
    cfg = TrainConfig(
        input_px=PX,
        device="cpu",
        seed=0,
        mpp=0.972,
        tta_views=1,
        rare_views=1,
        cv_folds=2,
        head="linear",
        normal_mosaics=2,
        teacher_random_weights_for_tests=True,
    )
    res = train(data, None, cfg, tmp_path / "m.pt", data.fingerprint())
    info = res.best_metrics["normal_mosaics"]
    assert info["mosaics"] == 2 and info["patches"] == 2 * 16 * 16
    obj, _ = read_checkpoint(tmp_path / "m.pt")
    assert PAYLOAD_KEY in obj
    model = load_model(tmp_path / "m.pt", device="cpu")
    assert model.normal_mosaics is not None
    rows = (16 * PX - PX) // (PX // 2) + 1
    for grid in model.normal_mosaics.probability:
        assert grid.shape == (rows, rows) and ((grid >= 0) & (grid <= 1)).all()
    # train-patches says which threshold predict will use with its defaults
    lines: list[str] = []
    _echo_mosaic_threshold(tmp_path / "m.pt", 0.972, res.best_metrics, lines.append)
    assert len(lines) == 1 and lines[0].startswith("Threshold predict will use")
    assert "mosaic(s) of held-out normal training patches" in lines[0]
    model_cfg = InferenceConfig().resolved(model)
    expected = model_operating_point(model, model_cfg, DEFAULT_TARGET_FP_PER_SLIDE)
    assert f"{expected.threshold:.3f}" in lines[0]
    # the same patches, fewer of them than a fold's quarter mosaic needs: no mosaics, a warning
    few = _patches(100, 20)
    res = train(few, None, cfg, tmp_path / "few.pt", few.fingerprint())
    assert "normal_mosaics" not in res.best_metrics
    assert any("normal mosaics" in w for w in res.warnings)
    assert load_model(tmp_path / "few.pt", device="cpu").normal_mosaics is None
    # off by default in the config (sync has slides): no warning, no mosaics
    res = train(
        few,
        None,
        TrainConfig.from_dict({**cfg.to_dict(), "normal_mosaics": 0}),
        tmp_path / "o.pt",
        "x",
    )
    assert not any("normal mosaics" in w for w in res.warnings)
