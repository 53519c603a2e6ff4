"""Fixtures for the training tests (``pcam_small`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on the shared 2-core CI machine, several busy processes plus torch's
    default of one thread per core oversubscribe the CPU (measured 12x slower steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
