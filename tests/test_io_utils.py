"""Atomic writes: content, no temporary files left behind, and ordinary file modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qupath_rkd.io_utils import atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_json(target, {"b": 1, "a": [1.5]})
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    """Regression: files were created 0600 by mkstemp, unreadable to other users of a shared
    project folder."""
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.geojson", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.json"
    target.write_text("precious")
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})  # NaN is not JSON
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
