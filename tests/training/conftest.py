"""Small folders of real PatchCamelyon patches for training and CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pcam_small(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``train_normal`` (24), ``train_tumor`` (8), ``valid_normal`` (12), ``valid_tumor`` (12):
    fresh copies of tests/data/pcam-small (real PCam patches from train/ and valid/)."""
    root = tmp_path_factory.mktemp("pcam_small")
    out = {}
    for name, n in (
        ("train_normal", 24),
        ("train_tumor", 8),
        ("valid_normal", 12),
        ("valid_tumor", 12),
    ):
        shutil.copytree(real_data / "pcam-small" / name, root / name)
        assert len(list((root / name).glob("*.jpg"))) == n
        out[name] = root / name
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on the shared 2-core CI machine, several busy processes plus torch's
    default of one thread per core oversubscribe the CPU (measured 12x slower steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
