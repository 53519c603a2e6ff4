"""The default scorer: the supervised head trained through ``train`` on real PCam patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.model.calibration import auroc
from qupath_rkd.model.checkpoint import read_checkpoint
from qupath_rkd.model.scorer import load_model
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import ArrayDataset, PatchFolderDataset
from qupath_rkd.training.trainer import train


def _sets(pcam_small):
    tr = PatchFolderDataset([pcam_small["train_normal"]], [pcam_small["train_tumor"]])
    va = PatchFolderDataset([pcam_small["valid_normal"]], [pcam_small["valid_tumor"]])
    return tr, va


def _cfg(**kw) -> TrainConfig:
    base = {"input_px": 64, "device": "cpu", "seed": 0, "mpp": 0.972, "tta_views": 2}
    base.update(kw)
    return TrainConfig(**base)


def _images(ds) -> np.ndarray:
    return np.stack([ds[i][0] for i in range(len(ds))])


def _check_progress(events: list, totals: dict[str, int]) -> None:
    """Each step of the head is one task, in order, with increasing counts, its total and one
    end."""
    assert list(dict.fromkeys(e.task for e in events)) == list(totals)
    for name, total in totals.items():
        seen = [e for e in events if e.task == name]
        assert [e.done for e in seen] == sorted(e.done for e in seen), name
        assert {e.total for e in seen} == {total}, name
        assert seen[0].done == 0 and not seen[0].finished, name
        assert seen[-1].finished and seen[-1].done == total, name
        assert sum(e.finished for e in seen) == 1, name


def test_the_default_is_the_head_chosen_on_valid_and_its_auroc_is_the_stored_models(
    tmp_path, pcam_small
) -> None:
    assert TrainConfig().scorer == "head" and TrainConfig().tta_views == 8
    tr, va = _sets(pcam_small)
    events: list = []
    res = train(tr, va, _cfg(), tmp_path / "m.pt", tr.fingerprint(), progress=events.append)
    # 32 patches, 7 more views of the 8 tumour ones, 24 validation patches, 9 L2 strengths
    totals = {"features": 32, "tumour views": 8, "validation": 24}
    _check_progress(events, {**totals, "choosing L2 on validation": 9})
    assert events[-1].info["val AUROC"] == pytest.approx(res.best_metrics["val_auroc"], abs=1e-4)
    assert res.selected_by == "valid_auroc" and res.n_valid == {"normal": 12, "tumor": 12}
    assert {r["l2"] for r in res.history} >= {0.01, 1.0}
    assert res.calibration["method"] == "logistic" and not res.interrupted
    model = load_model(tmp_path / "m.pt", device="cpu")
    assert model.kind == "head" and model.tta_views == 2 and model.mpp == 0.972
    scores, probs = model.score_images(_images(va))
    assert ((probs >= 0) & (probs <= 1)).all()
    assert auroc(va.labels, scores) == pytest.approx(res.best_metrics["val_auroc"], abs=1e-4)
    # real ImageNet features separate real tumour from normal even from 8 tumour patches
    assert res.best_metrics["val_auroc"] > 0.75
    with pytest.raises(Exception, match="no anomaly map"):
        model.anomaly_maps(model.preprocess(torch.from_numpy(_images(va)[:2])))
    obj, _ = read_checkpoint(tmp_path / "m.pt")
    assert obj["format_version"] == 2 and obj["config"]["scorer"] == "head"


def test_without_validation_the_l2_is_cross_validated_and_the_cache_makes_a_rerun_cheap(
    tmp_path, pcam_small
) -> None:
    tr, _ = _sets(pcam_small)
    events: list = []
    first = train(tr, None, _cfg(), tmp_path / "a.pt", tr.fingerprint(), progress=events.append)
    totals = {"features": 32, "tumour views": 8, "choosing L2 (5-fold CV)": 5 * 9}
    _check_progress(events, {**totals, "fitting the head": 1})
    cv = [e for e in events if e.task.startswith("choosing L2")]
    assert cv[-1].info["fold"] == "5/5" and cv[-1].unit == "fit"
    assert first.selected_by == "cv_auroc" and first.best_metrics["val_source"].startswith("5-fold")
    assert first.n_valid == {"normal": 0, "tumor": 0} and not first.warnings
    assert first.best_metrics["features_computed"] == 32 + 7 * 8  # all + 7 more views of 8
    second = train(tr, None, _cfg(), tmp_path / "b.pt", tr.fingerprint())
    assert second.best_metrics["features_computed"] == 0
    assert second.best_metrics["features_cached"] == 88
    a = load_model(tmp_path / "a.pt", device="cpu").net.state_dict()
    b = load_model(tmp_path / "b.pt", device="cpu").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # a warm cache gives the same model


def test_with_slides_the_cross_validation_holds_out_whole_slides(tmp_path, pcam_small) -> None:
    """``slides`` (what sync passes): with tumour on two or more slides, whole slides are held
    out and the pooled out-of-fold AUROC chooses the L2 and is the stored one; with tumour on
    one slide, the patch-level cross-validation as before."""
    from qupath_rkd.model.head import cross_validate_l2, slide_folds, stratified_folds

    tr, _ = _sets(pcam_small)
    labels = np.asarray(tr.labels)
    slides = np.arange(len(labels)) % 3  # 3 slides, each with tumour and normal patches
    res = train(tr, None, _cfg(), tmp_path / "s.pt", tr.fingerprint(), slides=slides)
    assert res.best_metrics["val_source"] == "3-fold cross-validation by slide (pooled)"
    assert res.selected_by == "cv_auroc" and not res.warnings
    # the stored AUROC is the pooled one of the held-out slides, recomputed here
    from qupath_rkd.features.cache import open_default_cache
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.training.head_trainer import training_features

    cfg = _cfg().resolved()
    net = build_network(cfg)
    rows = training_features(net, tr, cfg, torch.device("cpu"), open_default_cache())
    folds = slide_folds(labels, slides, 5, cfg.seed)
    assert folds is not None

    def feats(mask, train):
        if train:
            x, y, _ = rows.rows(mask)
            return x, y
        return rows.base.values[mask, :1].astype(np.float32), None

    choice, oof = cross_validate_l2(feats, labels, folds, pooled=True)
    assert res.best_metrics["l2"] == choice.l2
    assert res.best_metrics["val_auroc"] == pytest.approx(auroc(labels, oof), abs=1e-6)
    # tumour on one slide only: held-out slides cannot be scored; patches are held out and
    # the one-standard-error rule picks the L2 (the regions share the slides' look)
    one = np.where(labels == LABEL_TUMOR, 0, slides)
    res = train(tr, None, _cfg(), tmp_path / "o.pt", tr.fingerprint(), slides=one)
    assert res.best_metrics["val_source"] == "5-fold cross-validation (one-standard-error rule)"
    patch_folds = stratified_folds(labels, 5, cfg.seed)
    plain, _ = cross_validate_l2(feats, labels, patch_folds)
    one_se, _ = cross_validate_l2(feats, labels, patch_folds, one_se=True)
    assert res.best_metrics["l2"] == one_se.l2 >= plain.l2
    # without slides (train-patches), the best mean per-fold AUROC as before
    res = train(tr, None, _cfg(), tmp_path / "p.pt", tr.fingerprint())
    assert res.best_metrics["val_source"] == "5-fold cross-validation"
    assert res.best_metrics["l2"] == plain.l2


def test_one_tumour_patch_is_fitted_with_a_warning_and_none_falls_back_to_knn(
    tmp_path, pcam_small
) -> None:
    tr, _ = _sets(pcam_small)
    images, labels = _images(tr), tr.labels
    keep = np.r_[np.flatnonzero(labels != LABEL_TUMOR), np.flatnonzero(labels == LABEL_TUMOR)[:1]]
    one = ArrayDataset(images[keep], labels[keep])
    res = train(one, None, _cfg(), tmp_path / "one.pt", one.fingerprint())
    assert res.selected_by == "fixed" and "only 1 tumour patch" in res.warnings[0]
    none = ArrayDataset(images[labels != LABEL_TUMOR], labels[labels != LABEL_TUMOR])
    res = train(none, None, _cfg(), tmp_path / "knn.pt", none.fingerprint())
    assert "one-class texture model (knn)" in res.warnings[0]
    model = load_model(tmp_path / "knn.pt", device="cpu")
    assert model.kind == "knn" and model.tta_views == 1
    # 24 normals: a fifth (4) held out to calibrate, the bank drawn from the other 20
    assert res.best_metrics["bank_patches"] == 20 and res.calibration["method"] == "normal-tail"
    # the paper's RD stays available for normal-only sets, on request
    rd = train(
        none,
        None,
        _cfg(scorer="rd", input_px=32, epochs=1, batch_size=8),
        tmp_path / "rd.pt",
        none.fingerprint(),
    )
    assert not rd.warnings or "knn" not in rd.warnings[0]
    assert load_model(tmp_path / "rd.pt", device="cpu").kind == "rd"


def test_auto_keeps_the_linear_head_below_the_ensemble_threshold_and_ensemble_round_trips(
    tmp_path, pcam_small
) -> None:
    """8 tumour patches (< ENSEMBLE_MIN_TUMOUR_PATCHES): ``auto`` fits the linear head alone;
    ``ensemble`` stores both members, the checkpoint rebuilds them and scores as the training
    measured, on validation and by cross-validation."""
    from qupath_rkd.constants import ENSEMBLE_MIN_TUMOUR_PATCHES, MLP_HIDDEN

    assert TrainConfig().head == "auto" and ENSEMBLE_MIN_TUMOUR_PATCHES > 8
    tr, va = _sets(pcam_small)
    auto = train(tr, va, _cfg(head="auto"), tmp_path / "auto.pt", tr.fingerprint())
    assert auto.best_metrics["head"] == "linear" and "head_auroc" not in auto.best_metrics
    assert load_model(tmp_path / "auto.pt", device="cpu").net.mlp is None
    ens = train(tr, va, _cfg(head="ensemble"), tmp_path / "ens.pt", tr.fingerprint())
    m = ens.best_metrics
    assert m["head"] == "ensemble" and set(m["head_auroc"]) == {"linear", "ensemble"}
    assert m["head_auroc"]["linear"] == pytest.approx(auto.best_metrics["val_auroc"], abs=1e-9)
    assert m["val_auroc"] == pytest.approx(m["head_auroc"]["ensemble"], abs=1e-9)
    obj, _ = read_checkpoint(tmp_path / "ens.pt")
    assert obj["config"]["mlp_hidden"] == MLP_HIDDEN and obj["config"]["head"] == "ensemble"
    model = load_model(tmp_path / "ens.pt", device="cpu")
    assert model.net.mlp is not None
    scores, _ = model.score_images(_images(va))
    assert auroc(va.labels, scores) == pytest.approx(m["val_auroc"], abs=1e-4)
    events: list = []
    cv = train(
        tr,
        None,
        _cfg(head="ensemble"),
        tmp_path / "cv.pt",
        tr.fingerprint(),
        progress=events.append,
    )
    assert cv.best_metrics["head"] == "ensemble" and cv.selected_by == "cv_auroc"
    checks = [e for e in events if e.task == "checking the ensemble (5-fold CV)"]
    assert checks[-1].finished and checks[-1].done == 5
    assert cv.best_metrics["val_auroc"] == pytest.approx(
        cv.best_metrics["head_auroc"]["ensemble"], abs=0.15
    )


def test_the_network_follows_the_head_kept_whatever_mlp_hidden_came_in(
    tmp_path, pcam_small
) -> None:
    """Regression: a config with mlp_hidden > 0 and a linear head kept built the network with a
    perceptron and then refused the linear fit; the trainer now rebuilds it from the head kept."""
    tr, va = _sets(pcam_small)
    res = train(tr, va, _cfg(head="linear", mlp_hidden=64), tmp_path / "l.pt", tr.fingerprint())
    assert res.best_metrics["head"] == "linear"
    obj, _ = read_checkpoint(tmp_path / "l.pt")
    assert obj["config"]["mlp_hidden"] == 0
    assert load_model(tmp_path / "l.pt", device="cpu").net.mlp is None


def test_validation_labels_ranked_backwards_give_a_warning_not_inverted_probabilities(
    tmp_path, pcam_small
) -> None:
    """Regression: a negative Platt slope (held-out scores that rank tumour below normal)
    turned every probability of the model around. Then the normal tail calibrated it, which
    put almost every tile below the candidate floor (an empty heatmap in the active-learning
    simulation); now the head's own class-balanced probability does."""
    tr, _ = _sets(pcam_small)
    swapped = PatchFolderDataset([pcam_small["valid_tumor"]], [pcam_small["valid_normal"]])
    res = train(tr, swapped, _cfg(), tmp_path / "m.pt", tr.fingerprint())
    assert res.best_metrics["val_auroc"] < 0.5
    assert res.calibration["method"] == "head"
    assert (res.calibration["a"], res.calibration["b"]) == (1.0, 0.0)
    assert any("rank tumour below normal" in w for w in res.warnings)
    model = load_model(tmp_path / "m.pt", device="cpu")
    scores, probs = model.score_images(_images(tr))
    np.testing.assert_allclose(probs, 1.0 / (1.0 + np.exp(-scores)), rtol=1e-5, atol=1e-6)
    # the model itself is fine: the right labels rank its scores the right way, and its own
    # probability puts its training classes on either side of 0.5 (not all near 0)
    assert auroc(tr.labels, scores) > 0.9
    labels = np.asarray(tr.labels)
    assert np.median(probs[labels == LABEL_TUMOR]) > 0.5 > np.median(probs[labels == LABEL_NORMAL])
