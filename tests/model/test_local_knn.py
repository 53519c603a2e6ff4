"""The one-class local texture kNN (qupath_rkd.model.local_knn) and its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_rkd.constants import KNN_POOL_CELLS, KNN_TAP, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.features.trunk import build_trunk
from qupath_rkd.model.checkpoint import read_checkpoint
from qupath_rkd.model.local_knn import LocalKnnNetwork, sample_bank
from qupath_rkd.model.scorer import load_model
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import ArrayDataset, PatchFolderDataset
from qupath_rkd.training.trainer import train


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_tap_computes_the_same_map_as_taps(name: str) -> None:
    trunk = build_trunk(name, random_weights_for_tests=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        every = trunk.taps(x)
        for index in range(len(every)):
            assert torch.equal(trunk.tap(x, index), every[index]), index
    assert every[0].shape[-1] == 16 and every[1].shape[-1] == 8  # strides 4 and 8


@pytest.mark.parametrize(("tap", "pool", "side"), [(1, 1, 8), (0, 3, 16)])
def test_distance_is_zero_for_the_banks_own_features_and_grows_away_from_them(
    tap: int, pool: int, side: int
) -> None:
    torch.manual_seed(0)
    net = LocalKnnNetwork(build_trunk("efficientnet_lite0"), 4, tap=tap, pool_cells=pool)
    x = torch.randn(3, 3, 64, 64)
    local = net.local_features(x)
    assert local.shape[:3] == (3, side, side)
    net.set_bank(local[:1].reshape(-1, local.shape[-1]))
    d = net.distances(x)
    assert d.shape == (3, side, side)
    # every position of image 0 is in the bank (0 up to the rounding of cdist's matmul form)
    assert float(d[0].max()) < 0.01 * min(float(d[1].mean()), float(d[2].mean()))
    scores = net(x, views=[0])
    assert scores.shape == (3,) and torch.allclose(scores, d.mean(dim=(1, 2)))
    # the views average: the tile's own rotation is scored against the same bank
    assert net(x, views=[0, 1]).shape == (3,)


def test_sample_bank_is_a_seeded_subset() -> None:
    local = torch.arange(40.0).reshape(20, 2)
    a, b, c = sample_bank(local, 5, 0), sample_bank(local, 5, 0), sample_bank(local, 5, 1)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (5, 2)
    assert sample_bank(local, 50, 0).shape == (20, 2)  # never more rows than there are


def test_knn_training_calibrates_on_valid_and_round_trips(tmp_path, pcam_small) -> None:
    """Real ImageNet Lite0 on real PCam patches: the bank from the train normals, Platt on the
    validation patches; the checkpoint rebuilds the same bank and scores as measured."""
    tr = PatchFolderDataset([pcam_small["train_normal"]], [pcam_small["train_tumor"]])
    va = PatchFolderDataset([pcam_small["valid_normal"]], [pcam_small["valid_tumor"]])
    cfg = TrainConfig(scorer="knn", device="cpu", seed=0, mpp=0.972, knn_bank_size=3000)
    events: list = []
    res = train(tr, va, cfg, tmp_path / "k.pt", tr.fingerprint(), progress=events.append)
    assert [t for t in dict.fromkeys(e.task for e in events)] == ["memory bank", "validation"]
    assert "8 tumour training patches were not used" in res.warnings[0]
    assert res.calibration["method"] == "logistic" and res.n_valid == {"normal": 12, "tumor": 12}
    m = res.best_metrics
    assert m["bank_rows"] == 3000 and m["bank_patches"] == 24  # all 24 normals, no hold-out
    obj, _ = read_checkpoint(tmp_path / "k.pt")
    assert obj["config"]["knn_bank_size"] == 3000 and obj["config"]["tta_views"] == 1
    assert (obj["config"]["knn_tap"], obj["config"]["knn_pool_cells"]) == (KNN_TAP, KNN_POOL_CELLS)
    model = load_model(tmp_path / "k.pt", device="cpu")
    assert model.kind == "knn" and tuple(model.net.bank.shape) == (3000, 40)  # Lite0 stride 8
    images = np.stack([va[i][0] for i in range(len(va))])
    scores, probs = model.score_images(images)
    from qupath_rkd.model.calibration import auroc

    assert auroc(va.labels, scores) == pytest.approx(m["val_auroc"], abs=1e-6)
    assert np.all((probs >= 0) & (probs <= 1)) and model.ood_unavailable_reason()


def test_knn_without_normal_patches_is_a_clear_error(tmp_path) -> None:
    from qupath_rkd.errors import DataError

    images = np.zeros((4, 96, 96, 3), np.uint8)
    ds = ArrayDataset(images, np.full(4, LABEL_TUMOR))
    with pytest.raises(DataError, match="no normal patches"):
        train(ds, None, TrainConfig(scorer="knn", device="cpu"), tmp_path / "x.pt", "h")
    assert not (tmp_path / "x.pt").exists()  # nothing written


def test_the_calibration_hold_out_takes_whole_regions_when_there_are_some() -> None:
    from qupath_rkd.training.knn_trainer import split_holdout

    normals = np.arange(100)
    held, rest = split_holdout(normals, None, seed=0)
    assert len(held) == 20 and set(held) | set(rest) == set(normals) and not set(held) & set(rest)
    groups = np.repeat(np.arange(10), 10)  # 10 regions of 10 tiles
    held, rest = split_holdout(normals, groups, seed=0)
    held_regions, rest_regions = set(groups[held]), set(groups[rest])
    assert not held_regions & rest_regions  # no region on both sides
    assert len(held) == 20 and len(held_regions) == 2
    one = np.zeros(100, int)  # a single region: tiles, as without groups
    assert len(split_holdout(normals, one, seed=0)[0]) == 20
    assert len(split_holdout(normals, None, seed=0, enabled=False)[0]) == 0
    assert len(split_holdout(np.arange(5), None, seed=0)[0]) == 0  # too few to hold any out


def test_knn_training_skips_and_counts_malformed_images(tmp_path, pcam_small) -> None:
    good = PatchFolderDataset([pcam_small["train_normal"]])
    images = [good[i][0] for i in range(24)] + [np.zeros((96, 96), np.uint8)]  # greyscale 2-D
    ds = ArrayDataset(images, np.full(25, LABEL_NORMAL))
    events: list = []
    cfg = TrainConfig(scorer="knn", device="cpu", seed=0, mpp=0.972, knn_bank_size=500)
    res = train(ds, None, cfg, tmp_path / "k.pt", ds.fingerprint(), progress=events.append)
    assert res.skipped_unreadable == 1 and "1 unreadable" in res.warnings[0]
    ends = [e for e in events if e.finished]
    assert all(e.done == e.total for e in ends)  # the skipped item counts as seen
    assert load_model(tmp_path / "k.pt", device="cpu").net.bank.shape[0] == 500


def test_knn_validation_ranked_backwards_falls_back_with_a_warning(tmp_path, pcam_small) -> None:
    """Regression: the kNN trainer fell back to the normal tail on swapped validation folders
    without telling the user (only the head trainer warned)."""
    tr = PatchFolderDataset([pcam_small["train_normal"]])
    swapped = PatchFolderDataset([pcam_small["valid_tumor"]], [pcam_small["valid_normal"]])
    cfg = TrainConfig(scorer="knn", device="cpu", seed=0, mpp=0.972, knn_bank_size=500)
    res = train(tr, swapped, cfg, tmp_path / "k.pt", tr.fingerprint())
    if res.best_metrics["val_auroc"] >= 0.5:
        pytest.fail(f"the swapped folders did not rank backwards: {res.best_metrics}")
    assert res.calibration["method"] == "normal-tail" and res.calibration["a"] > 0
    assert any("rank tumour below normal" in w and "swapped" in w for w in res.warnings)
