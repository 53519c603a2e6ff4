"""The out-of-domain check (issue 11, point 8): the training tiles' feature reference travels in
the checkpoint, older checkpoints still load and predict (the check says it is not available),
and a slide of foreign tissue is flagged while a lymph-node one is not."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from qupath_rkd.model.ood import OodReference, fit_reference, slide_ood


def _feats(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """``(n, d)`` features on a 3-dimensional subspace plus a little noise (+ ``shift``
    off the subspace)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(d, 3)))[0].T
    x = rng.normal(size=(n, 3)) @ basis * 5 + rng.normal(size=(n, d)) * 0.3
    if shift:
        x = x + rng.normal(size=(n, d)) * shift
    return x.astype(np.float32)


def test_fit_is_deterministic_and_far_tiles_lie_beyond_the_held_out_threshold() -> None:
    train = _feats(200, 40, seed=0)
    a, b = fit_reference(train, k=8, seed=3), fit_reference(train, k=8, seed=3)
    assert np.array_equal(a.components, b.components) and a.tile_threshold == b.tile_threshold
    assert a.n_held == 40 and a.n_fit == 160 and a.k == 8
    near = a.distances(_feats(300, 40, seed=1))
    far = a.distances(_feats(300, 40, seed=2, shift=2.0))
    # about 5 % of fresh in-domain tiles beyond the held-out 95th percentile; all foreign ones
    assert (near > a.tile_threshold).mean() < 0.15
    assert (far > a.tile_threshold).mean() > 0.95
    # numpy and torch give the same distances
    x = _feats(5, 40, seed=4)
    assert np.allclose(a.distances(torch.from_numpy(x)).numpy(), a.distances(x), rtol=1e-4)
    assert slide_ood(a, far).flagged and not slide_ood(a, near).flagged
    empty = slide_ood(a, np.zeros(0))
    assert empty.available and empty.far_fraction is None and not empty.flagged


def test_a_malformed_reference_is_refused() -> None:
    ref = fit_reference(_feats(40, 10, seed=0), k=4)
    payload = ref.to_payload()
    back = OodReference.from_payload(payload)
    assert np.array_equal(back.mean, ref.mean) and back.tile_threshold == ref.tile_threshold
    with pytest.raises(ValueError, match="malformed"):
        OodReference.from_payload({k: v for k, v in payload.items() if k != "components"})
    with pytest.raises(ValueError, match="newer"):
        OodReference.from_payload({**payload, "version": 99})


def _head_checkpoint(path: Path, reference: bool) -> Path:
    """A head model (random trunk weights, 32 px input) written with or without a reference."""
    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.training.config import TrainConfig

    cfg = TrainConfig(
        scorer="head",
        input_px=32,
        teacher_random_weights_for_tests=True,
        mpp=1.944,
        tta_views=1,
    ).resolved()
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    dim = int(net.head.weight.shape[0])
    payload = fit_reference(_feats(60, dim, seed=0), k=4).to_payload() if reference else None
    save_checkpoint(
        path, net, cfg, Calibration("logistic", 1.0, 0.0, 5, 5), "h", ood_reference=payload
    )
    return path


def test_the_reference_round_trips_through_a_checkpoint_and_the_content_id_is_stable(
    tmp_path: Path,
) -> None:
    from qupath_rkd.model.checkpoint import read_checkpoint
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.sync.runner import _content_id

    a = _head_checkpoint(tmp_path / "a.pt", reference=True)
    b = _head_checkpoint(tmp_path / "b.pt", reference=True)
    payload, _ = read_checkpoint(a)  # weights_only=True
    assert set(payload["ood_reference"]) >= {"mean", "scale", "components", "tile_threshold"}
    model = load_model(a, device="cpu")
    ref = model.ood_reference
    assert ref is not None and "ood_reference" not in model.info
    stored = OodReference.from_payload(payload["ood_reference"])
    assert np.array_equal(ref.components, stored.components)
    # sync's model ID: the same content gives the same ID; another reference another ID
    assert _content_id(a) == _content_id(b)
    c = tmp_path / "c.pt"
    payload["ood_reference"]["mean"] = payload["ood_reference"]["mean"] + 1
    torch.save(payload, c)
    assert _content_id(c) != _content_id(a)


def test_an_older_checkpoint_without_the_reference_loads_and_predicts(
    tmp_path: Path, real_data: Path
) -> None:
    from qupath_rkd.inference import predict_slide
    from qupath_rkd.inference.predict import InferenceConfig
    from qupath_rkd.model.scorer import load_model

    model = load_model(_head_checkpoint(tmp_path / "old.pt", reference=False), device="cpu")
    assert model.ood_reference is None
    pred = predict_slide(
        real_data / "slides" / "cmu-1-small-region.svs",
        model,
        config=InferenceConfig(num_workers=0, tile_px=32),
    )
    assert len(pred.tiles) > 0 and pred.ood is not None and not pred.ood.available
    assert pred.ood.note is not None and "out-of-domain check: not available" in pred.ood.note
    assert "retrain" in pred.ood.note
    assert pred.ood.as_dict()["out_of_domain"] is False


def test_an_rd_model_says_the_check_is_not_available_for_rd(tmp_path: Path) -> None:
    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network, load_model
    from qupath_rkd.training.config import TrainConfig

    cfg = TrainConfig(scorer="rd", input_px=32, teacher_random_weights_for_tests=True).resolved()
    net = build_network(cfg).eval()
    save_checkpoint(tmp_path / "rd.pt", net, cfg, Calibration("logistic", 1.0, 0.0, 5, 5), "h")
    model = load_model(tmp_path / "rd.pt", device="cpu")
    assert model.ood_reference is None
    assert model.ood_unavailable_reason() == "not available for --scorer rd models"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> Path:
    """A head model of real ImageNet features trained on the 56 PCam patches of
    tests/data/pcam-small (view 0 only: fast)."""
    from qupath_rkd.training.config import TrainConfig
    from qupath_rkd.training.datasets import PatchFolderDataset
    from qupath_rkd.training.trainer import train

    d = real_data / "pcam-small"
    ds = PatchFolderDataset(
        [d / "train_normal", d / "valid_normal"], [d / "train_tumor", d / "valid_tumor"]
    )
    out = tmp_path_factory.mktemp("ood") / "model.pt"
    cfg = TrainConfig(input_px=96, device="cpu", seed=0, mpp=0.972, tta_views=1, rare_views=1)
    train(ds, None, cfg, out, ds.fingerprint())
    return out


def test_foreign_tissue_is_flagged_and_lymph_node_tissue_is_not(
    trained: Path, real_data: Path, tmp_path: Path
) -> None:
    """Skin (cmu-1, 0.499 µm/px) and a head-and-neck carcinoma (tcga; no µm/px in the file:
    read as 0.25) are flagged; a semi-real slide of PCam patches (the demo's, none of them
    trained on) is not. The flag reaches predict's run output and slide_scores.csv."""
    from click.testing import CliRunner

    from qupath_rkd.cli import cli
    from qupath_rkd.demo import LesionSpec, build_semireal_slide, demo_patch_dirs
    from qupath_rkd.model.scorer import load_model

    normal, tumour = demo_patch_dirs()
    lymph = build_semireal_slide(
        tmp_path / "lymph.tif",
        normal_dir=normal,
        tumor_dir=tumour,
        width_px=1200,
        height_px=1000,
        lesions=[LesionSpec((600.0, 500.0), 350.0)],
        seed=1,
        max_patches=300,
    ).path
    skin = real_data / "slides" / "cmu-1-small-region.svs"
    head_neck = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    assert load_model(trained, device="cpu").ood_reference is not None
    out = tmp_path / "out"
    common = ["--out", str(out), "--device", "cpu", "--workers", "0"]
    first = CliRunner().invoke(cli, ["predict", str(trained), str(lymph), str(skin), *common])
    assert first.exit_code == 0, first.output
    # --slide-mpp replaces what a file says: only for the file that says nothing
    second = CliRunner().invoke(
        cli, ["predict", str(trained), str(head_neck), "--slide-mpp", "0.25", *common]
    )
    assert second.exit_code == 0, second.output
    lines = {
        line.split(":")[0].split()[-1]: line
        for line in first.output.splitlines()
        if line.startswith("done")
    }
    assert "far tiles" in lines["lymph"] and "OUT OF DOMAIN" not in lines["lymph"]
    assert "OUT OF DOMAIN: far tiles" in lines["cmu-1-small-region"]
    assert "OUT OF DOMAIN (1 slide(s)" in first.output and "cmu-1-small-region" in first.output
    assert "OUT OF DOMAIN (1 slide(s)" in second.output
    with (out / "slide_scores.csv").open(encoding="utf-8") as fh:
        rows = {r["slide"]: r for r in csv.DictReader(fh)}
    assert rows["lymph"]["out_of_domain"] == "false"
    assert float(rows["lymph"]["ood_far_fraction"]) < 0.25
    for slide in ("cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"):
        assert rows[slide]["out_of_domain"] == "true", rows[slide]
        assert float(rows[slide]["ood_far_fraction"]) > 0.25
