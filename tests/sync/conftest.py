"""A small demo project (real PCam mosaics), built once per session and copied per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_helpers import FAST, SMALL_SLIDES, copy_demo

from qupath_rkd.demo import DemoProject, build_demo_project


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    root = tmp_path_factory.mktemp("small-demo") / "demo"
    return build_demo_project(root, width_px=1536, height_px=1280, specs=SMALL_SLIDES)


@pytest.fixture
def project(small_demo: DemoProject, tmp_path: Path) -> Path:
    """A fresh copy of the small demo (slides and project moved together)."""
    return copy_demo(small_demo.root, tmp_path / "demo")


@pytest.fixture(scope="session")
def synced(small_demo: DemoProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo after one complete sync (its project folder)."""
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import run_sync

    root = tmp_path_factory.mktemp("synced") / "demo"
    copy_demo(small_demo.root, root)
    outcome = run_sync(root / "project", load_config(root / "project", dict(FAST)))
    assert outcome.trained and outcome.exit_code == 0, outcome.slides
    return root / "project"


@pytest.fixture
def synced_copy(synced: Path, tmp_path: Path) -> Path:
    """A fresh copy of the synced small demo (its project folder)."""
    return copy_demo(synced.parent, tmp_path / "demo")
