"""Shared pytest fixtures and the skipping rules for `gpu` and `qupath` tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _qupath_available() -> tuple[bool, str]:
    try:
        from paquo.jpype_backend import find_qupath
    except Exception as exc:  # paquo missing or broken
        return False, f"paquo unusable: {exc}"
    try:
        find_qupath()
    except Exception as exc:
        return False, f"no QuPath installation: {exc}"
    return True, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Markers, not keywords: a test in tests/qupath/ has the keyword "qupath" (its folder's
    # name) without being marked, and must not be skipped for want of a QuPath installation.
    need_gpu = any(item.get_closest_marker("gpu") for item in items)
    need_qupath = any(item.get_closest_marker("qupath") for item in items)
    gpu_ok = _cuda_available() if need_gpu else True
    qupath_ok, qupath_why = _qupath_available() if need_qupath else (True, "")
    for item in items:
        if item.get_closest_marker("gpu") and not gpu_ok:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if item.get_closest_marker("qupath") and not qupath_ok:
            item.add_marker(pytest.mark.skip(reason=f"needs QuPath ({qupath_why})"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real data folder (../shared/data); tests that need it fail without it."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"{SHARED_DATA} is missing: tests need the project's shared data beside the checkout"
        )
    return SHARED_DATA
