"""`sync` on a local Dask cluster (issue 14): the predictions, report and state are the bytes
of a one-process sync at one torch thread; an unreachable scheduler changes nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sync_helpers import FAST, snapshot

pytest.importorskip("distributed")

#: Predictions made again (a changed inference setting), without retraining.
AGAIN = {"inference.min_lesion_um": 100.0}


def _sync(project: Path, **values: object):
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import run_sync

    return run_sync(project, load_config(project, {**FAST, **AGAIN, **values}))


def test_sync_on_a_local_cluster_gives_the_bytes_of_one_process(
    synced: Path, tmp_path: Path
) -> None:
    from sync_helpers import copy_demo

    one = copy_demo(synced.parent, tmp_path / "one" / "demo")
    two = copy_demo(synced.parent, tmp_path / "two" / "demo")
    first = _sync(one, **{"sync.torch_threads": 1})
    second = _sync(two, **{"cluster.local_workers": 2})
    assert not first.trained and not second.trained
    assert len(first.predicted) == len(second.predicted) == 4, second.slides
    sub = "qupath-rkd"
    a = snapshot(one / sub, skip=("sync.lock", "backup", "model", "annotations"))
    b = snapshot(two / sub, skip=("sync.lock", "backup", "model", "annotations"))
    assert [k for k in a if k.startswith("predictions/")], a
    assert a == b  # annotations/: its manifest names the copy's own slide paths


def test_sync_with_an_unreachable_scheduler_writes_nothing(synced_copy: Path) -> None:
    from click.testing import CliRunner

    from qupath_rkd.cli import cli

    before = snapshot(synced_copy.parent)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    args = ["sync", str(synced_copy), "--scheduler", address, "--set",
            "cluster.connect_timeout_s=1"]  # fmt: skip
    for key, value in {**FAST, **AGAIN}.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert address in result.output and "cannot reach" in result.output
    assert snapshot(synced_copy.parent) == before
