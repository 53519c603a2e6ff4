"""Shared pytest fixtures and the skipping rules for `gpu` and `qupath` tests.

Real data: the few small real files the tests read (slides, Camelyon16 annotations, a QuPath
0.5.1 project, a few PatchCamelyon patches) are committed under ``tests/data/`` (sources and
licences in ``tests/data/README.md``), so the suite passes on a fresh clone. The project's full
data set, ``../shared/data`` beside the checkout, is only for tests that need more (fixture
``shared_data``); they skip without it. ``QUPATH_RKD_SHARED_DATA=DIR`` points at another copy,
or hides it (``QUPATH_RKD_SHARED_DATA=/nonexistent``) to check what a fresh clone sees.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
SHARED_DATA = Path(os.environ.get("QUPATH_RKD_SHARED_DATA") or REPO.parent / "shared" / "data")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


#: What a test reads that a fresh clone may lack: these fixtures, and the examples' own data.
_DATA_FIXTURES = {"real_data", "shared_data"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--real-data-only",
        action="store_true",
        help="run only the tests that read real data files (fixtures real_data, shared_data, "
        "and the examples): with QUPATH_RKD_SHARED_DATA=/nonexistent, what a fresh clone checks",
    )


def _reads_real_data(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & _DATA_FIXTURES) or item.path.name == "test_examples.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--real-data-only"):
        kept = [item for item in items if _reads_real_data(item)]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    # Markers, not keywords: a test in tests/qupath/ has the keyword "qupath" (its folder's
    # name) without being marked, and must not be skipped for want of a QuPath installation.
    need_gpu = any(item.get_closest_marker("gpu") for item in items)
    need_qupath = any(item.get_closest_marker("qupath") for item in items)
    gpu_ok = _cuda_available() if need_gpu else True
    from qupath_rkd.qupath.backends.paquo_backend import paquo_available

    qupath_ok, qupath_why = paquo_available() if need_qupath else (True, "")
    for item in items:
        if item.get_closest_marker("gpu") and not gpu_ok:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if item.get_closest_marker("qupath") and not qupath_ok:
            item.add_marker(pytest.mark.skip(reason=f"needs QuPath ({qupath_why})"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real files committed for the tests (``tests/data/``, see its README.md)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's full data set (``../shared/data``); a test asking for it skips without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"needs {SHARED_DATA}, the project's shared data set (not in a fresh clone; the "
            "files under tests/data/ are enough for every other test)"
        )
    return SHARED_DATA


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


def pytest_configure(config: pytest.Config) -> None:
    """Session- and module-scoped fixtures train too: give the whole run a private feature
    cache before any of them (never the user's ~/.cache/qupath-rkd, and never one that an
    earlier run warmed, which would make a fixture's model differ from a test's retrain)."""
    import tempfile

    os.environ["QUPATH_RKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="qupath-rkd-test-cache-")


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Every test gets its own empty feature cache (never the user's ~/.cache/qupath-rkd)."""
    monkeypatch.setenv("QUPATH_RKD_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
