"""A small demo project (real PCam mosaics), built once per session and copied per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_helpers import SMALL_SLIDES, copy_demo

from qupath_rkd.demo import DemoProject, build_demo_project


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    root = tmp_path_factory.mktemp("small-demo") / "demo"
    return build_demo_project(root, width_px=1536, height_px=1280, specs=SMALL_SLIDES)


@pytest.fixture
def project(small_demo: DemoProject, tmp_path: Path) -> Path:
    """A fresh copy of the small demo (slides and project moved together)."""
    return copy_demo(small_demo.root, tmp_path / "demo")
