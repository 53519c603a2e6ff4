"""Checkpoints: round trip through load_model, weights_only loading, refusals."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from qupath_rkd.errors import CheckpointError, DeviceError
from qupath_rkd.model.calibration import Calibration
from qupath_rkd.model.checkpoint import save_checkpoint
from qupath_rkd.model.scorer import TrainedModel, build_network, load_model
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import read_image

CAL = Calibration("logistic", 4.0, -10.0, 5, 5)


def _cfg(**kw) -> TrainConfig:
    base = {
        "scorer": "rd",
        "teacher": "efficientnet_lite0",
        "input_px": 64,
        "teacher_random_weights_for_tests": True,
        "mpp": 0.972,
    }
    base.update(kw)
    return TrainConfig(**base).resolved()


def _images(pcam_small, n: int = 4) -> np.ndarray:
    paths = sorted(pcam_small["valid_tumor"].glob("*.jpg"))[:n]
    return np.stack([read_image(p) for p in paths])


def test_round_trip_scores_identically(tmp_path, pcam_small) -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    path = tmp_path / "m.pt"
    model_id = save_checkpoint(path, net, cfg, CAL, "hash123", {"val_auroc": 0.7})
    model = load_model(path, device="cpu")
    assert model_id == model.model_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (model.teacher, model.input_px, model.mpp, model.threshold) == (
        "efficientnet_lite0",
        64,
        0.972,
        0.5,
    )
    assert model.config["input_px"] == 64 and model.info["dataset_hash"] == "hash123"
    assert model.info["torch_version"] == str(torch.__version__)

    images = _images(pcam_small)  # 96 px patches -> resized to 64
    scores, probs = model.score_images(images)
    x = model.preprocess(torch.from_numpy(images))
    assert tuple(x.shape) == (4, 3, 64, 64)
    with torch.no_grad():
        from qupath_rkd.model import anomaly_map, patch_scores

        t, s = net(x)
        expected = patch_scores(anomaly_map(t, s, 64, 4.0)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    np.testing.assert_allclose(probs, CAL.apply(scores), rtol=1e-6)
    assert scores.dtype == np.float32 and probs.dtype == np.float32
    # raw_scores + calibrate is the streaming path: same numbers
    np.testing.assert_allclose(model.calibrate(model.raw_scores(x).numpy()), probs, rtol=1e-5)


def test_checkpoint_loads_with_weights_only(tmp_path) -> None:
    cfg = _cfg()
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_network(cfg), cfg, CAL, "h")
    obj = torch.load(path, weights_only=True)
    assert obj["teacher"] == "efficientnet_lite0" and "state_dict" in obj


def test_refuses_a_checkpoint_for_another_architecture(tmp_path) -> None:
    cfg = _cfg(shortcut="conv1x1")
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_network(cfg), cfg, CAL, "h")
    obj = torch.load(path, weights_only=True)
    obj["config"]["shortcut"] = "conv3x3"  # weights of one architecture, config of another
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(path, device="cpu")


def test_refuses_another_teacher_and_newer_format_and_unknown_teacher(tmp_path) -> None:
    cfg = _cfg()
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_network(cfg), cfg, CAL, "h")
    with pytest.raises(CheckpointError, match="efficientnet_lite0"):
        load_model(path, device="cpu", expected_teacher="wide_resnet50_2")
    obj = torch.load(path, weights_only=True)
    obj["format_version"] = 99
    torch.save(obj, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format 99"):
        load_model(tmp_path / "newer.pt", device="cpu")
    obj["format_version"] = 1
    obj["config"]["teacher"] = "vit_huge"
    torch.save(obj, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="cannot build"):
        load_model(tmp_path / "unknown.pt", device="cpu")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_refuses_garbage_and_arbitrary_pickles(tmp_path) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "garbage.pt", device="cpu")
    buf = io.BytesIO()
    torch.save({"format": "qupath-rkd-model", "x": _Evil()}, buf, pickle_module=pickle)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pt", device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_device_error(tmp_path) -> None:
    cfg = _cfg()
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_network(cfg), cfg, CAL, "h")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        load_model(path, device="cuda")


def _older_copy(
    new: Path, old: Path, drop: tuple[str, ...], format_version: int | None = None
) -> tuple[TrainedModel, TrainedModel]:
    """Write ``old``: the checkpoint ``new`` as an older version wrote it (the config ``drop``
    keys missing; ``format_version`` if given). Returns both loaded, ``old`` first."""
    payload = torch.load(new, weights_only=True)
    if format_version is not None:
        payload["format_version"] = format_version
    for key in drop:
        del payload["config"][key]
    buf = io.BytesIO()
    torch.save(payload, buf)
    old.write_bytes(buf.getvalue())
    return load_model(old, device="cpu"), load_model(new, device="cpu")


def test_a_format_1_checkpoint_from_before_the_head_loads_as_rd(tmp_path, pcam_small) -> None:
    """Checkpoints written before the head scorer (format 1, no ``scorer`` in the config) keep
    loading, as the RD models they are, and score as before."""
    cfg = _cfg()
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    new = tmp_path / "new.pt"
    save_checkpoint(new, net, cfg, CAL, "h")
    model, current = _older_copy(
        new, tmp_path / "old.pt", ("scorer", "tta_views", "rare_views", "cv_folds"), 1
    )
    assert model.kind == "rd" and model.tta_views == 1
    images = _images(pcam_small)
    np.testing.assert_array_equal(model.score_images(images)[0], current.score_images(images)[0])


def test_a_head_checkpoint_from_before_the_pooling_field_loads_as_mean_centre(
    tmp_path, pcam_small
) -> None:
    """Head checkpoints written before the trunk's pooling was recorded pooled every tap as
    mean + centre mean; they load with that pooling and score as before."""
    cfg = _cfg(scorer="head", pooling="mean_centre")
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    with torch.no_grad():
        net.head.weight.normal_()  # type: ignore[union-attr]
    new = tmp_path / "new.pt"
    save_checkpoint(new, net, cfg, CAL, "h")
    model, current = _older_copy(new, tmp_path / "old.pt", ("pooling",))
    assert model.kind == "head"
    images = _images(pcam_small)
    np.testing.assert_array_equal(model.score_images(images)[0], current.score_images(images)[0])


def test_a_head_checkpoint_round_trips(tmp_path, pcam_small) -> None:
    """A head model (the default) saved and loaded scores identically, in format 2."""
    cfg = _cfg(scorer="head", tta_views=4)
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    with torch.no_grad():
        net.head.weight.normal_()  # type: ignore[union-attr]
    path = tmp_path / "h.pt"
    save_checkpoint(path, net, cfg, CAL, "h")
    model = load_model(path, device="cpu")
    assert model.kind == "head" and model.tta_views == 4
    images = _images(pcam_small)
    x = model.preprocess(torch.from_numpy(images))
    from qupath_rkd.features.views import view_list

    with torch.no_grad():
        want = net(x, view_list(4)).numpy()
    np.testing.assert_allclose(model.score_images(images)[0], want, rtol=1e-5, atol=1e-5)
