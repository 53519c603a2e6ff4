"""Real checkpoints and semi-real slides (mosaics of real PCam patches) for inference tests.

The model is a real RD network written by ``save_checkpoint`` and read by ``load_model``; its
teacher has random weights (no download, fast), so its scores say nothing about tumour: these
tests check the streaming, geometry, files and failure handling, not detection quality.
Tiles are 32 px at 1.944 µm/px (2× coarser than the 0.972 µm/px slides) to keep CPU time low.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MODEL_MPP = 1.944
INPUT_PX = 32


def make_checkpoint(
    path: Path,
    *,
    mpp: float | None = MODEL_MPP,
    nan: bool = False,
    tile_px: int | None = None,
    calibration: tuple[float, float] = (4.0, -10.0),
    normal_mosaics: dict | None = None,
) -> Path:
    """A real RD checkpoint (random teacher); ``calibration``: ``(a, b)`` of
    ``p = sigmoid(a * score + b)``; ``normal_mosaics``: a payload of
    :class:`~qupath_rkd.model.normal_mosaics.NormalMosaics` to store."""
    import torch

    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.training.config import TrainConfig

    cfg = TrainConfig(
        scorer="rd",
        teacher="efficientnet_lite0",
        input_px=INPUT_PX,
        teacher_random_weights_for_tests=True,
        mpp=mpp,
        tile_px=tile_px,
    ).resolved()
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    if nan:  # a damaged checkpoint: one decoder weight tensor is NaN
        _name, param = next(
            (n, p) for n, p in net.named_parameters() if "decoder" in n or "student" in n
        )
        with torch.no_grad():
            param.fill_(float("nan"))
    save_checkpoint(
        path,
        net,
        cfg,
        Calibration("logistic", *calibration, 5, 5),
        "test-hash",
        normal_mosaics=normal_mosaics,
    )
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "rd.pt")


@pytest.fixture(scope="session")
def model(model_path: Path):
    from qupath_rkd.model.scorer import load_model

    return load_model(model_path, device="cpu")


@pytest.fixture(scope="session")
def semireal(tmp_path_factory: pytest.TempPathFactory):
    """A 1200 × 900 px semi-real slide at 0.972 µm/px with one ~450 µm lesion."""
    from qupath_rkd.demo import LesionSpec, build_semireal_slide, demo_patch_dirs

    normal, tumour = demo_patch_dirs()
    folder = tmp_path_factory.mktemp("slides")
    return build_semireal_slide(
        folder / "semireal_a.tif",
        normal_dir=normal,
        tumor_dir=tumour,
        width_px=1200,
        height_px=900,
        lesions=[LesionSpec((600.0, 450.0), 450.0)],
        seed=3,
        max_patches=300,
    )


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide of bare glass (no tissue)."""
    from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs

    normal, tumour = demo_patch_dirs()
    folder = tmp_path_factory.mktemp("blank")
    return build_semireal_slide(
        folder / "blank.tif",
        normal_dir=normal,
        tumor_dir=tumour,
        width_px=640,
        height_px=480,
        tissue_fraction=0.0,
        max_patches=10,
    ).path


def median_threshold(probability: np.ndarray) -> float:
    """A threshold that splits the tiles in two (so lesions exist for an untrained model)."""
    finite = probability[np.isfinite(probability)]
    return float(np.median(finite))
