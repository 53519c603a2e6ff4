"""Issue 9, point 4: no entry ID or image name can make sync write (even a temporary file)
outside the folder meant for it: ``.pending/`` for staged files, the exchange folders for
annotations and predictions, the project for committed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, snapshot

from qupath_rkd.cli import cli
from qupath_rkd.errors import ProjectError
from qupath_rkd.qupath.backends.base import ExchangeLayout
from qupath_rkd.sync.commit import PENDING_DIRNAME, Transaction, recover

BAD_IDS = ["../evil", "../../evil", "a/b", "/tmp/evil", "..", ".", "", "a\\b", "a\0b", "1/../2"]


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "outer" / "project"
    (project / "qupath-rkd").mkdir(parents=True)
    return project


@pytest.mark.parametrize("entry_id", BAD_IDS)
def test_staging_refuses_entry_ids_that_leave_pending(tmp_path: Path, entry_id: str) -> None:
    project = _project(tmp_path)
    tx = Transaction(project)
    tx.begin()
    before = snapshot(tmp_path)
    if any(c in entry_id for c in "/\\\0"):
        with pytest.raises(ProjectError, match="not a plain file name"):
            tx.stage_entry(entry_id, [])
    else:  # "entry-..json" and the like: a plain name inside .pending, harmless
        tx.stage_entry(entry_id, [])
        assert [p.parent for p in tmp_path.rglob("entry-*")] == [tx.pending]
        for path in tx.pending.iterdir():
            path.unlink()
    with pytest.raises(ProjectError, match="not a plain file name"):
        tx.stage_bytes(entry_id, b"x", "qupath-rkd/x")
    with pytest.raises(ProjectError, match="not a plain file name"):
        tx.staged_path(entry_id)
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        PENDING_DIRNAME,
        "outer",
        "project",
        "qupath-rkd",
    ]


@pytest.mark.parametrize("target", ["../evil.json", "/tmp/evil.json", "a/../../evil.json"])
def test_commit_targets_stay_inside_the_project(tmp_path: Path, target: str) -> None:
    project = _project(tmp_path)
    tx = Transaction(project)
    tx.begin()
    tx.stage_bytes("m.bin", b"x", "qupath-rkd/m.bin")
    with pytest.raises(ProjectError, match="not a path inside the project"):
        tx.set_json(target, {})
    with pytest.raises(ProjectError, match="not a path inside the project"):
        tx.add_move("m.bin", target)


def test_a_crafted_commit_record_writes_nothing_outside(tmp_path: Path) -> None:
    """A commit record on disk (read back by recovery) naming paths outside is refused."""
    project = _project(tmp_path)
    pending = project / "qupath-rkd" / PENDING_DIRNAME
    pending.mkdir()
    (pending / "m.bin").write_bytes(b"x")
    record = {
        "moves": [{"staged": "m.bin", "target": "../../evil.bin", "backup": False}],
        "entries": [],
        "json": {"../evil.json": {}},
        "digests_into": None,
    }
    (pending / "commit.json").write_text(json.dumps(record))
    with pytest.raises(ProjectError):
        recover(project)
    assert not list(tmp_path.rglob("evil*"))


@pytest.mark.parametrize("entry_id", [*BAD_IDS, "1.5", "-1", "٣"])
def test_exchange_files_only_for_whole_number_ids(tmp_path: Path, entry_id: str) -> None:
    layout = ExchangeLayout(tmp_path / "qupath-rkd")
    for method in (layout.annotations_file, layout.predictions_file, layout.predictions_backup):
        with pytest.raises(ProjectError, match="not a whole number"):
            method(entry_id)
    assert layout.predictions_file("12") == tmp_path / "qupath-rkd" / "predictions" / "12.geojson"


@pytest.mark.parametrize("name", ["../../evil", "/tmp/evil.tif", "a/../../b", "..", "x\\..\\y"])
def test_image_names_never_become_paths(synced_copy: Path, name: str) -> None:
    """An image name is only shown, never a path: a sync with a path-like name writes
    nothing outside the project and names no file after it."""
    qpproj = synced_copy / "project.qpproj"
    data = json.loads(qpproj.read_text())
    data["images"][3]["imageName"] = name
    qpproj.write_text(json.dumps(data, indent=2))
    outside = synced_copy.parent.parent
    before = snapshot(outside, skip=(f"{synced_copy.parent.name}/project/",))
    args = [arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", str(synced_copy), *args])
    assert result.exit_code == 0, result.output
    assert snapshot(outside, skip=(f"{synced_copy.parent.name}/project/",)) == before
    assert not [p for p in outside.rglob("*evil*")]
    report = json.loads((synced_copy / "qupath-rkd" / "report.json").read_text())
    assert name in [row["image_name"] for row in report["slides"]]
