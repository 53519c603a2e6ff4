"""The all-or-nothing write-back: staged files, a commit point, recovery after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qupath_rkd.errors import ProjectError
from qupath_rkd.sync.commit import (
    FAULT_ENV,
    Transaction,
    ensure_writable,
    recover,
)

_SCRIPT = """
import sys
from pathlib import Path
from qupath_rkd.sync.commit import Transaction
project = Path(sys.argv[1])
tx = Transaction(project)
tx.begin()
for key in ("1", "2", "3"):
    tx.stage_bytes(f"{key}.geojson", f"new {key}".encode(), f"qupath-rkd/predictions/{key}.geojson")
tx.set_json("qupath-rkd/state.json", {"generation": "new"})
tx.commit()
"""


def _old_project(project: Path) -> dict[str, bytes]:
    pred = project / "qupath-rkd" / "predictions"
    pred.mkdir(parents=True)
    for key in ("1", "2", "3"):
        (pred / f"{key}.geojson").write_bytes(f"old {key}".encode())
    (project / "qupath-rkd" / "state.json").write_text(json.dumps({"generation": "old"}))
    annotations = project / "qupath-rkd" / "annotations"
    annotations.mkdir()
    (annotations / "1.geojson").write_bytes(b'{"drawn": "by a pathologist"}')
    return _snapshot(project)


def _snapshot(project: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted((project / "qupath-rkd").rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and "/.pending" not in f"/{rel}" and "/backup/" not in f"/{rel}":
            out[rel] = path.read_bytes()
    return out


def _generation(snapshot: dict[str, bytes]) -> str:
    preds = {snapshot[f"qupath-rkd/predictions/{k}.geojson"].split()[0] for k in "123"}
    state = json.loads(snapshot["qupath-rkd/state.json"])["generation"]
    assert len(preds) == 1, f"mixed predictions: {snapshot}"
    assert preds == {state.encode()}, "state does not describe the predictions"
    return state


@pytest.mark.parametrize(
    "point",
    ["before-commit", "after-commit-record", "move-0", "move-2", "before-json", "before-cleanup"],
)
def test_kill_at_any_point_leaves_before_or_after(tmp_path: Path, point: str) -> None:
    before = _old_project(tmp_path)
    env = {**os.environ, FAULT_ENV: point}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env)
    assert proc.returncode == -9  # really killed
    action = recover(tmp_path)
    assert action is not None
    after = _snapshot(tmp_path)
    generation = _generation(after)
    expected = "old" if point == "before-commit" else "new"
    assert generation == expected
    if generation == "old":
        assert after == before
    assert after["qupath-rkd/annotations/1.geojson"] == before["qupath-rkd/annotations/1.geojson"]
    assert not (tmp_path / "qupath-rkd" / ".pending").exists()
    assert recover(tmp_path) is None  # nothing left to do


def test_commit_backs_up_what_it_replaces(tmp_path: Path) -> None:
    _old_project(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)])
    assert proc.returncode == 0
    assert _generation(_snapshot(tmp_path)) == "new"
    backup = tmp_path / "qupath-rkd" / "backup" / "predictions"
    assert sorted(p.read_bytes() for p in backup.iterdir()) == [b"old 1", b"old 2", b"old 3"]


def test_aborted_transaction_changes_nothing(tmp_path: Path) -> None:
    before = _old_project(tmp_path)
    tx = Transaction(tmp_path)
    tx.begin()
    tx.stage_bytes("1.geojson", b"new 1", "qupath-rkd/predictions/1.geojson")
    tx.abort()
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_project_is_refused_before_any_work(tmp_path: Path) -> None:
    project = tmp_path / "ro"
    project.mkdir()
    project.chmod(0o555)
    try:
        with pytest.raises(ProjectError, match="not writable"):
            ensure_writable(project)
    finally:
        project.chmod(0o755)
