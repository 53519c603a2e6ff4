"""The project lock: a second sync is refused; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qupath_rkd.errors import LockError
from qupath_rkd.sync.lock import ProjectLock, pid_alive


def test_second_lock_is_refused_with_the_owner_named(tmp_path: Path) -> None:
    with ProjectLock(tmp_path) as first:
        assert first.path.is_file()
        with pytest.raises(LockError) as info:
            ProjectLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in info.value.one_line()
        assert str(first.path) in info.value.one_line()
    assert not first.path.exists()
    with ProjectLock(tmp_path):  # free again
        pass


def test_lock_of_a_dead_process_is_stale_and_taken_over(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(proc.stdout)
    assert not pid_alive(dead_pid)
    lock = ProjectLock(tmp_path)
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname()}))
    with lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_held_by_another_live_process_is_refused(tmp_path: Path) -> None:
    code = (
        "import sys, time; from qupath_rkd.sync.lock import ProjectLock\n"
        "with ProjectLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"pid {proc.pid}"):
            ProjectLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()
    with ProjectLock(tmp_path):  # killed owner -> stale -> taken over
        pass


def test_lock_from_another_host_is_not_taken_over(tmp_path: Path) -> None:
    lock = ProjectLock(tmp_path)
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(json.dumps({"pid": 1, "host": "some-other-host"}))
    with pytest.raises(LockError, match="some-other-host"):
        lock.acquire()
