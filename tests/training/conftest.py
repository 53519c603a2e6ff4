"""Small folders of real PatchCamelyon patches for training and CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _copy(src: Path, dst: Path, n: int, offset: int = 0) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.jpg"))[offset : offset + n]:
        shutil.copy(path, dst / path.name)


@pytest.fixture(scope="session")
def pcam_small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``train_normal`` (24), ``train_tumor`` (8), ``valid_normal`` (12), ``valid_tumor`` (12)."""
    root = tmp_path_factory.mktemp("pcam_small")
    pcam = shared_data / "pcam"
    dirs = {
        "train_normal": (pcam / "train" / "0", 24),
        "train_tumor": (pcam / "train" / "1", 8),
        "valid_normal": (pcam / "valid" / "0", 12),
        "valid_tumor": (pcam / "valid" / "1", 12),
    }
    out = {}
    for name, (src, n) in dirs.items():
        _copy(src, root / name, n, offset=100)
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
