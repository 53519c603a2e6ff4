"""Bad input to `qupath-rkd sync`: one line, non-zero exit, nothing written or lost."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, snapshot
from sync_helpers import one_error_line as _one_error_line

from qupath_rkd.cli import cli
from qupath_rkd.sync.lock import ProjectLock


def _sync(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sync", *args])
    return result.exit_code, result.output


def _fast() -> list[str]:
    return [arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")]


def test_not_a_project(tmp_path: Path) -> None:
    code, out = _sync(str(tmp_path))
    assert code != 0
    assert "project" in _one_error_line(out).lower()


def test_concurrent_sync_is_refused_and_nothing_changes(project: Path) -> None:
    before = snapshot(project.parent)
    with ProjectLock(project):
        code, out = _sync(str(project), *_fast())
    assert code != 0
    line = _one_error_line(out)
    assert "another qupath-rkd sync is running" in line and f"pid {os.getpid()}" in line
    assert snapshot(project.parent) == before


def _rewrite_annotations(project: Path, keep_tumour: bool, flags: bool) -> None:
    folder = project / "qupath-rkd" / "annotations"
    manifest = json.loads((folder / "manifest.json").read_text())
    for record in manifest["images"]:
        if not flags:
            record["metadata"] = {}
        if not keep_tumour:
            (folder / f"{record['entryID']}.geojson").write_text(
                '{"type": "FeatureCollection", "features": []}'
            )
    (folder / "manifest.json").write_text(json.dumps(manifest))
    # the flags are also in project.qpproj (QuPath's entry metadata)
    qpproj = project / "project.qpproj"
    data = json.loads(qpproj.read_text())
    if not flags:
        for image in data["images"]:
            image["metadata"] = {}
    qpproj.write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize(
    ("keep_tumour", "needle"),
    [(False, "no tumour and no normal tiles"), (True, "only tumour tiles")],
)
def test_missing_labels_are_one_clear_error(project: Path, keep_tumour: bool, needle: str) -> None:
    _rewrite_annotations(project, keep_tumour=keep_tumour, flags=False)
    before = snapshot(project.parent)
    code, out = _sync(str(project), *_fast())
    assert code != 0
    assert needle in _one_error_line(out)
    assert snapshot(project.parent) == before
    assert not (project / "qupath-rkd" / "sync.lock").exists()


def test_dry_run_writes_nothing(project: Path) -> None:
    before = snapshot(project.parent)
    code, out = _sync(str(project), "--dry-run", *_fast())
    assert code == 0, out
    assert "would train a model: no model yet" in out
    assert out.count("would predict") == 4
    assert snapshot(project.parent) == before


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[Path]:
    """``folder`` made read-only: file modes for a normal user; for root (which ignores
    modes) a read-only bind mount of it, or a skip where mounting is not allowed."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for path in paths:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True)
    if mounted.returncode != 0:
        view.rmdir()
        pytest.skip("running as root and cannot bind-mount a read-only copy")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, check=False
        )
        if ro.returncode != 0:
            pytest.skip("running as root and cannot remount read-only")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)
        view.rmdir()


def test_read_only_project_is_one_error_and_unchanged(project: Path) -> None:
    root = project.parent
    before = snapshot(root)
    with _read_only(root) as ro_root:
        code, out = _sync(str(ro_root / "project"), *_fast())
        assert code != 0
        assert "not writable" in _one_error_line(out)
        # a dry run reads only, so it still works on a read-only project
        code, out = _sync(str(ro_root / "project"), "--dry-run", *_fast())
        assert code == 0, out
    assert snapshot(root) == before


def test_missing_slide_is_one_error_listing_it(project: Path) -> None:
    (project.parent / "slides" / "C.tif").unlink()
    before = snapshot(project.parent)
    code, out = _sync(str(project), *_fast())
    assert code != 0
    line = _one_error_line(out)
    assert "C.tif" in line and "--slide-root" in line
    assert snapshot(project.parent) == before


def test_corrupt_annotation_file_is_one_error_and_untouched(project: Path) -> None:
    annotations = project / "qupath-rkd" / "annotations" / "1.geojson"
    annotations.write_text('{"type": "FeatureCollection", "features": [')
    before = snapshot(project.parent)
    code, out = _sync(str(project), *_fast())
    assert code != 0
    assert "not JSON" in _one_error_line(out)
    assert snapshot(project.parent) == before
