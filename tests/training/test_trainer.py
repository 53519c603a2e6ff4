"""The trainer on real PatchCamelyon patches (tiny: a few steps at 32-64 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import ConfigError, DataError
from qupath_rkd.model.scorer import load_model
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import ArrayDataset, PatchFolderDataset
from qupath_rkd.training.trainer import BalancedBatchSampler, swapped_labels_warning, train


def _sets(pcam_small):
    tr = PatchFolderDataset([pcam_small["train_normal"]], [pcam_small["train_tumor"]])
    va = PatchFolderDataset([pcam_small["valid_normal"]], [pcam_small["valid_tumor"]])
    return tr, va


def _arrays(ds) -> ArrayDataset:
    return ArrayDataset(np.stack([ds[i][0] for i in range(len(ds))]), ds.labels)


def _cfg(**kw) -> TrainConfig:
    base = {
        "scorer": "rd",
        "teacher": "efficientnet_lite0",
        "input_px": 32,
        "epochs": 2,
        "batch_size": 8,
        "device": "cpu",
        "seed": 3,
    }
    base.update(kw)
    return TrainConfig(**base)


class Interrupting(ArrayDataset):
    """Raises KeyboardInterrupt (as Ctrl-C would) at the ``after``-th item read."""

    def __init__(self, base: ArrayDataset, after: int) -> None:
        super().__init__(base.images, base.labels)
        self.after, self.reads = after, 0

    def __getitem__(self, index: int):
        self.reads += 1
        if self.reads > self.after:
            raise KeyboardInterrupt
        return super().__getitem__(index)


def test_train_writes_a_calibrated_checkpoint_that_scores(tmp_path, pcam_small) -> None:
    tr, va = _sets(pcam_small)
    out = tmp_path / "m.pt"
    res = train(tr, va, _cfg(input_px=64, mpp=0.972), out, tr.fingerprint())
    assert res.n_train == {"normal": 24, "tumor": 8} and res.n_valid == {"normal": 12, "tumor": 12}
    assert res.selected_by == "auroc" and len(res.history) == 2
    assert res.best_metrics == max(res.history, key=lambda r: r["val_auroc"])
    assert res.calibration["method"] == "logistic"
    assert not res.interrupted and not (tmp_path / "m.pt.resume").exists()
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in res.history)
    model = load_model(out, device="cpu")
    assert model.model_id == res.model_id and model.mpp == 0.972
    assert model.info["dataset_hash"] == tr.fingerprint()
    scores, probs = model.score_images(np.stack([va[i][0] for i in range(len(va))]))
    assert np.isfinite(scores).all() and ((probs >= 0) & (probs <= 1)).all()
    assert scores.min() >= 0.0 and scores.max() <= 6.0
    # the validation AUROC recorded is the one of the stored model on the validation set
    from qupath_rkd.model.calibration import auroc

    assert auroc(va.labels, scores) == pytest.approx(res.best_metrics["val_auroc"], abs=1e-6)


def test_training_is_reproducible_on_cpu_and_seed_matters(tmp_path, pcam_small) -> None:
    tr, va = (_arrays(d) for d in _sets(pcam_small))
    cfg = _cfg(epochs=1, select_by="loss")
    r1 = train(tr, va, cfg, tmp_path / "a.pt", "h")
    r2 = train(tr, va, cfg, tmp_path / "b.pt", "h")
    r3 = train(tr, va, _cfg(epochs=1, select_by="loss", seed=4), tmp_path / "c.pt", "h")
    sd = [torch.load(tmp_path / f"{n}.pt", weights_only=True)["state_dict"] for n in "abc"]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert r1.history[0]["val_loss"] == r2.history[0]["val_loss"]
    assert not all(torch.equal(sd[0][k], sd[2][k]) for k in sd[0] if k.startswith("student."))
    assert r3.history[0]["val_loss"] != r1.history[0]["val_loss"]


def _check_progress(events: list) -> None:
    """RD training sends one task over every step of every epoch (epoch, loss, last validation
    AUROC beside it) and a task per validation."""
    steps = [e for e in events if e.task == "training RD"]
    assert steps[0].done == 0 and steps[0].total == 8 and steps[0].unit == "step"  # 2 x 32 / 8
    assert [e.done for e in steps] == sorted(e.done for e in steps)
    assert steps[-1].finished and steps[-1].done == 8
    assert [e.finished for e in steps].count(True) == 1
    first_auc = next(i for i, e in enumerate(steps) if "val AUROC" in e.info)
    assert steps[first_auc].done == 4 and steps[first_auc].info["epoch"] == "1/2"
    assert steps[-1].info["epoch"] == "2/2" and steps[-1].info["loss"] > 0
    valid = [e for e in events if e.task == "validation"]
    assert [e.done for e in valid if e.finished] == [24, 24]  # once per epoch, 24 patches each


def test_ctrl_c_leaves_a_usable_checkpoint_and_resume_matches_an_uninterrupted_run(
    tmp_path, pcam_small
) -> None:
    tr, va = (_arrays(d) for d in _sets(pcam_small))
    events: list = []
    full = train(tr, va, _cfg(), tmp_path / "full.pt", "h", progress=events.append)
    _check_progress(events)

    # Ctrl-C during epoch 2 (epoch 1 reads 32 training items), after its first step
    out = tmp_path / "cut.pt"
    cut = train(Interrupting(tr, after=32 + 10), va, _cfg(), out, "h")
    assert cut.interrupted and len(cut.history) == 1
    assert (tmp_path / "cut.pt.resume").exists()
    load_model(out, device="cpu")  # usable
    events.clear()
    resumed = train(tr, va, _cfg(), out, "h", resume=True, progress=events.append)
    steps = [e for e in events if e.task == "training RD"]
    assert steps[0].done == 4 + 1 and steps[-1].done == 8 and steps[-1].finished  # resumed
    assert not resumed.interrupted and not (tmp_path / "cut.pt.resume").exists()
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in full.history]
    assert [r["val_auroc"] for r in resumed.history] == [r["val_auroc"] for r in full.history]

    # Ctrl-C before the first validation: still a usable checkpoint
    early = train(Interrupting(tr, after=12), va, _cfg(), tmp_path / "early.pt", "h")
    assert early.interrupted
    assert load_model(tmp_path / "early.pt", device="cpu").calibration.method == "logistic"


def test_resume_refuses_other_settings_or_data(tmp_path, pcam_small) -> None:
    tr, va = (_arrays(d) for d in _sets(pcam_small))
    out = tmp_path / "m.pt"
    train(Interrupting(tr, after=40), va, _cfg(), out, "h")
    from qupath_rkd.errors import CheckpointError

    with pytest.raises(CheckpointError, match="lr"):
        train(tr, va, _cfg(lr=0.1), out, "h", resume=True)
    with pytest.raises(CheckpointError, match="changed"):
        train(tr, va, _cfg(), out, "other-hash", resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tr, va, _cfg(), tmp_path / "never.pt", "h", resume=True)


def test_one_class_without_validation_keeps_last_and_calibrates_on_normal_tail(
    tmp_path, pcam_small
) -> None:
    tr = PatchFolderDataset([pcam_small["train_normal"]])
    res = train(tr, None, _cfg(epochs=1), tmp_path / "m.pt", "h")
    assert res.selected_by == "last" and res.calibration["method"] == "normal-tail"
    assert any("no validation set" in w for w in res.warnings)


def test_unreadable_and_malformed_images_are_skipped_and_counted_once(tmp_path, pcam_small) -> None:
    import shutil

    normal = tmp_path / "normal"
    shutil.copytree(pcam_small["train_normal"], normal)
    (normal / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    tr = PatchFolderDataset([normal])
    assert len(tr) == 25
    res = train(tr, None, _cfg(epochs=2), tmp_path / "m.pt", "h")
    assert res.skipped_unreadable == 1
    assert any("1 unreadable" in w for w in res.warnings)

    good = PatchFolderDataset([pcam_small["train_normal"]])
    images = [good[i][0] for i in range(24)] + [np.zeros((96, 96), np.uint8)]  # greyscale 2-D
    res = train(
        ArrayDataset(images, np.zeros(25, int)), None, _cfg(epochs=1), tmp_path / "n.pt", "h"
    )
    assert res.skipped_unreadable == 1


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        ([LABEL_TUMOR] * 4, DataError, "no normal"),
        ([LABEL_NORMAL, -1, LABEL_NORMAL, LABEL_NORMAL], DataError, "labels other than"),
        ([LABEL_NORMAL], DataError, "at least 2"),
    ],
)
def test_bad_training_sets_are_clear_errors(tmp_path, labels, error, match) -> None:
    images = np.zeros((len(labels), 32, 32, 3), np.uint8)
    with pytest.raises(error, match=match):
        train(ArrayDataset(images, labels), None, _cfg(), tmp_path / "m.pt", "h")


def test_bad_config_is_a_config_error(tmp_path) -> None:
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="multiple of 32"):
        train(ArrayDataset(images, [0] * 4), None, _cfg(input_px=50), tmp_path / "m.pt", "h")


def test_balanced_batches_are_half_tumour() -> None:
    labels = np.array([LABEL_NORMAL] * 90 + [LABEL_TUMOR] * 3)
    batches = list(BalancedBatchSampler(labels, 8, seed=0))
    assert len(batches) == 93 // 8
    for b in batches:
        assert (labels[b] == LABEL_TUMOR).sum() == 4 and len(b) == 8


def test_swapped_folders_warning() -> None:
    assert swapped_labels_warning(0.31) is not None and "swapped" in swapped_labels_warning(0.31)
    assert swapped_labels_warning(0.5) is None and swapped_labels_warning(float("nan")) is None
    assert "normal patches only" in swapped_labels_warning(0.44, n_train_tumor=0)
