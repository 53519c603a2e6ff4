"""The supervised head: the convex fit, the folds, the L2 choice, test-time views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_rkd.errors import DataError
from qupath_rkd.features.trunk import build_trunk
from qupath_rkd.features.views import view_list, view_tiles
from qupath_rkd.model.head import (
    L2_GRID,
    HeadNetwork,
    choose_l2_on_valid,
    cross_validate_l2,
    fit_head,
    slide_folds,
    stratified_folds,
)


def _blobs(n_pos: int, n_neg: int, dim: int = 20, shift: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_pos + n_neg, dim))
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(int)
    x[y == 1, 0] += shift
    return x, y


def test_fit_separates_and_is_class_balanced() -> None:
    x, y = _blobs(10, 1000)
    fit = fit_head(x, y, l2=0.01)
    z = fit.logits(x)
    assert z[y == 1].mean() > 0 > z[y == 0].mean()
    # class-balanced: the decision boundary sits between the classes, not swamped by the
    # 100x more numerous normals (an unweighted fit puts nearly every positive below 0)
    assert (z[y == 1] > 0).mean() >= 0.6
    # the feature that carries the signal dominates the weights
    assert np.argmax(np.abs(fit.weight)) == 0
    # deterministic
    np.testing.assert_array_equal(fit.weight, fit_head(x, y, l2=0.01).weight)


def test_stronger_l2_shrinks_the_weights_and_one_class_is_refused() -> None:
    x, y = _blobs(20, 200)
    assert np.linalg.norm(fit_head(x, y, 3.0).weight) < np.linalg.norm(fit_head(x, y, 0.01).weight)
    with pytest.raises(DataError, match="tumour and normal"):
        fit_head(x, np.zeros(len(y), int), 0.1)


def test_folds_are_stratified_seeded_and_keep_groups_together() -> None:
    y = np.r_[np.ones(10), np.zeros(90)].astype(int)
    folds = stratified_folds(y, 5, seed=0)
    assert all((folds[y == 1] == f).sum() == 2 for f in range(5))
    assert all((folds[y == 0] == f).sum() == 18 for f in range(5))
    np.testing.assert_array_equal(folds, stratified_folds(y, 5, seed=0))
    assert not np.array_equal(folds, stratified_folds(y, 5, seed=1))
    groups = np.repeat(np.arange(20), 5)  # 20 regions of 5 tiles
    gf = stratified_folds(y, 5, seed=0, groups=groups)
    for g in range(20):
        assert len(set(gf[groups == g])) == 1
    assert len(set(gf[y == 1])) == 2  # the 2 tumour regions went to 2 folds


def test_l2_choice_on_valid_and_by_cross_validation() -> None:
    x, y = _blobs(30, 300, dim=200, shift=1.5)
    vx, vy = _blobs(100, 100, dim=200, shift=1.5, seed=1)
    choice, fit = choose_l2_on_valid(x, y, lambda f: f.logits(vx), vy)
    assert choice.l2 == fit.l2 and choice.scores[choice.l2] == max(choice.scores.values())
    folds = stratified_folds(y, 5, 0)
    cv, oof = cross_validate_l2(
        lambda m, train: (x[m], y[m]) if train else (x[m][:, None], None), y, folds
    )
    assert oof.shape == (len(y),) and cv.scores[cv.l2] == max(cv.scores.values())
    # out-of-fold logits rank the classes (the signal is real)
    from qupath_rkd.model.calibration import auroc

    assert auroc(y, oof) > 0.7  # Bayes-optimal: 0.86


def test_slide_folds_hold_whole_slides_out_and_need_tumour_on_two() -> None:
    # slides a, b: 10 tumour and 10 normal tiles each; c, d, e: 10 normal; f: 10 normal and
    # one unreadable tumour tile (-1)
    slides = np.repeat(list("aabbcdef"), 10)
    y = np.r_[np.ones(10), np.zeros(10), np.ones(10), np.zeros(50)].astype(int)
    slides, y = np.r_[slides, ["f"]], np.r_[y, [-1]]
    folds = slide_folds(y, slides, 5, seed=0)
    assert folds is not None and folds.shape == y.shape and int(folds.max()) + 1 == 5
    for name in set(slides):
        assert len(set(folds[slides == name])) == 1  # a slide is never split
    assert folds[slides == "a"][0] != folds[slides == "b"][0]  # the tumour slides apart
    for f in range(5):  # every fold is trained on both classes
        assert {0, 1} <= set(y[(folds != f) & (y >= 0)].tolist())
    np.testing.assert_array_equal(folds, slide_folds(y, slides, 5, seed=0))
    # fewer slides than folds: one fold per slide
    two = slide_folds(y[:40], slides[:40], 5, seed=0)
    assert two is not None and sorted(set(two.tolist())) == [0, 1]
    # tumour on one slide (an unreadable tumour tile does not count): no slide folds
    assert slide_folds(np.where(slides == "b", 0, y), slides, 5, seed=0) is None


def test_slide_folds_are_refused_when_a_fold_trains_on_too_little_of_a_class() -> None:
    """The benchmark's round 1 (docs/benchmarks.md): 63 tumour tiles on one slide and one on
    another, so the fold holding out the first trained on 1 tumour tile; or nearly every
    normal tile on the tumour-free slide (3 of 136 elsewhere). Both scored the held-out slides
    backwards (pooled AUROC 0.06-0.08) and chose the weakest L2."""
    one_tumour_tile = np.r_[np.ones(63), np.zeros(8), np.ones(1), np.zeros(2), np.zeros(133)]
    slides = np.repeat(list("abn"), [71, 3, 133])
    assert slide_folds(one_tumour_tile.astype(int), slides, 5, seed=0) is None
    three_normal_tiles = np.r_[np.ones(63), np.zeros(3), np.ones(16), np.zeros(133)]
    slides = np.repeat(list("abn"), [66, 16, 133])
    assert slide_folds(three_normal_tiles.astype(int), slides, 5, seed=0) is None
    # with 7 of 140 normal tiles (5 %) elsewhere, slide folds are used (they chose well there)
    enough = np.r_[np.ones(63), np.zeros(7), np.ones(16), np.zeros(133)]
    slides = np.repeat(list("abn"), [70, 16, 133])
    assert slide_folds(enough.astype(int), slides, 5, seed=0) is not None


def test_the_one_standard_error_rule_takes_the_strongest_l2_within_one_se_of_the_best() -> None:
    from qupath_rkd.model.calibration import auroc

    x, y = _blobs(30, 120, dim=200, shift=1.0)
    folds = stratified_folds(y, 5, 0)

    def feats(m, train):
        return (x[m], y[m]) if train else (x[m][:, None], None)

    best, _ = cross_validate_l2(feats, y, folds)
    rule, oof = cross_validate_l2(feats, y, folds, one_se=True)
    assert rule.scores == best.scores and (best.rule, rule.rule) == ("best", "one_se")
    assert rule.l2 > best.l2  # noisy folds: a stronger L2 is within one SE here
    # recomputed: the SE of the best L2's per-fold AUROCs
    _, best_oof = cross_validate_l2(feats, y, folds, grid=(best.l2,))
    per_fold = [auroc(y[folds == f], best_oof[folds == f]) for f in range(5)]
    se = np.std(per_fold, ddof=1) / np.sqrt(5)
    top = best.scores[best.l2]
    assert rule.scores[rule.l2] >= top - se
    assert all(rule.scores[l2] < top - se for l2 in L2_GRID if l2 > rule.l2)
    # the out-of-fold logits returned are the chosen L2's
    _, chosen_oof = cross_validate_l2(feats, y, folds, grid=(rule.l2,))
    assert auroc(y, oof) == pytest.approx(auroc(y, chosen_oof), abs=0.02)
    # pooled (slide folds) ignores the rule
    pooled, _ = cross_validate_l2(feats, y, folds, pooled=True, one_se=True)
    assert pooled.rule == "best"


def test_l2_by_slide_is_scored_on_the_pooled_out_of_fold_logits() -> None:
    from qupath_rkd.model.calibration import auroc

    x, y = _blobs(40, 160, dim=50, shift=1.5)
    slides = np.arange(len(y)) % 4  # 4 slides, each with both classes
    folds = slide_folds(y, slides, 5, seed=0)
    assert folds is not None and int(folds.max()) + 1 == 4

    def feats(m, train):
        return (x[m], y[m]) if train else (x[m][:, None], None)

    pooled, oof = cross_validate_l2(feats, y, folds, pooled=True)
    assert pooled.scores[pooled.l2] == pytest.approx(auroc(y, oof))
    assert pooled.scores[pooled.l2] == max(pooled.scores.values())
    per_fold, _ = cross_validate_l2(feats, y, folds)
    assert pooled.scores != per_fold.scores  # the two scores differ: the flag is used


def test_eight_view_scores_do_not_depend_on_the_tiles_orientation() -> None:
    torch.manual_seed(0)
    trunk = build_trunk("efficientnet_lite0", random_weights_for_tests=True)
    net = HeadNetwork(trunk, trunk.dim)
    with torch.no_grad():
        net.head.weight.normal_()
        net.head.std.fill_(10.0)
    tiles = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    )
    from qupath_rkd.model.scorer import preprocess_batch

    def score(t: torch.Tensor, n_views: int) -> torch.Tensor:
        with torch.no_grad():
            return net(preprocess_batch(t, 64, torch.device("cpu")), view_list(n_views))

    base8, base1 = score(tiles, 8), score(tiles, 1)
    for v in (1, 5, 6):
        turned = view_tiles(tiles, v)
        # all 8 views of a turned tile are the 8 views of the tile: the same score
        torch.testing.assert_close(score(turned, 8), base8, rtol=1e-3, atol=1e-3)
    # one view is orientation-dependent (so the assertion above can fail)
    assert not torch.allclose(score(view_tiles(tiles, 1), 1), base1, atol=1e-3)


def test_normal_weights_keep_each_class_at_half_the_loss_and_pull_weighted_normals_down() -> None:
    """``fit_head(normal_weights=...)``: equal weights are the default fit; weighting a few
    normals up lowers their logits (hard-negative mining, benchmarks/head_hard_negatives.py)."""
    x, y = _blobs(20, 400, seed=3)
    plain = fit_head(x, y, 1.0)
    n_neg = int((y == 0).sum())
    same = fit_head(x, y, 1.0, normal_weights=np.full(n_neg, 7.0))
    np.testing.assert_allclose(same.weight, plain.weight, rtol=1e-3, atol=1e-5)
    assert same.bias == pytest.approx(plain.bias, abs=1e-4)
    normals = x[y == 0]
    hard = np.argsort(plain.logits(normals[:, None])[:, 0])[-10:]  # the 10 highest normals
    w = np.ones(n_neg)
    w[hard] = 20.0
    mined = fit_head(x, y, 1.0, normal_weights=w)
    before = plain.logits(normals[hard][:, None])[:, 0].mean()
    after = mined.logits(normals[hard][:, None])[:, 0].mean()
    assert after < before - 0.2
    with pytest.raises(ValueError, match="normal_weights"):
        fit_head(x, y, 1.0, normal_weights=np.ones(n_neg - 1))
    with pytest.raises(ValueError, match="normal_weights"):
        fit_head(x, y, 1.0, normal_weights=np.zeros(n_neg))


def test_the_hard_negative_benchmark_reads_the_tail() -> None:
    """benchmarks/head_hard_negatives.py: recall at a share of the normals, and the weights."""
    from bench_scripts import benchmark_module

    # 200 normals scored 0..199; tumours at 198.5 and 190
    scores = np.r_[np.arange(200.0), [198.5, 190.0]]
    labels = np.r_[np.zeros(200), [1, 1]].astype(int)
    with benchmark_module("head_hard_negatives.py") as module:
        m = module.tail_metrics(scores, labels)
        w = module.hard_weights(np.arange(100.0), 0.1, 5.0)
    assert m["recall_at_0.005"] == 0.5  # cut at the 2nd highest normal (198): one tumour above
    assert m["recall_at_0.05"] == 1.0  # cut at the 11th highest (189): both above
    assert w.sum() == 90 + 10 * 5.0 and (w[90:] == 5.0).all()
