"""A lock file that keeps two ``qupath-rkd sync`` runs off the same project.

The lock is ``<project>/qupath-rkd/sync.lock``, created with ``O_CREAT | O_EXCL`` (atomic on
every local file system) and holding the owner's pid, host and start time as JSON. A second
sync finds it and stops with a :class:`~qupath_rkd.errors.LockError` that names the owner. A
lock left by a process that died (same host, pid no longer running) is stale: it is removed
and taken over, with a warning in the log. A lock from another host is never taken over
automatically (its pid means nothing here); the message says how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import LockError, ProjectError

logger = logging.getLogger(__name__)

LOCK_FILENAME = "sync.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class ProjectLock:
    """Context manager holding ``<project>/qupath-rkd/sync.lock``.

    Args:
        project_dir: the QuPath project folder.
        command: what holds the lock (shown to whoever is refused).

    Raises (on enter):
        LockError: another live process holds the lock.
        ProjectError: the project's ``qupath-rkd`` folder cannot be written.
    """

    def __init__(self, project_dir: str | Path, command: str = "sync") -> None:
        self.path = Path(project_dir) / PROJECT_SUBDIR / LOCK_FILENAME
        self.command = command
        self._held = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockError`."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(
                f"cannot create {self.path.parent}: {exc.strerror or exc}",
                hint="the project folder must be writable",
            ) from exc
        for _ in range(3):
            if self._try_create():
                self._held = True
                return
            owner = self._read_owner()
            if owner is None:
                # Being written right now by its owner, or empty after a crash: look again.
                time.sleep(0.05)
                if self._read_owner() is None and self._age_s() > 5.0:
                    logger.warning("removing an empty lock file %s", self.path)
                    self._remove_stale()
                continue
            if owner.get("host") == socket.gethostname() and not pid_alive(
                int(owner.get("pid", -1))
            ):
                logger.warning(
                    "removing a stale lock of pid %s (no longer running): %s",
                    owner.get("pid"),
                    self.path,
                )
                self._remove_stale(int(owner.get("pid", -1)))
                continue
            raise LockError(
                f"another qupath-rkd {owner.get('command', 'sync')} is running on this project "
                f"(pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')})",
                hint=f"wait for it to finish; if it is not running, delete {self.path}",
            )
        raise LockError(f"could not take the lock {self.path}", hint="try again")

    def release(self) -> None:
        """Remove the lock if this object holds it."""
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False

    def __enter__(self) -> ProjectLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # --- internals ------------------------------------------------------------------------
    def _try_create(self) -> bool:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise ProjectError(
                f"cannot write {self.path}: {exc.strerror or exc}",
                hint="the project folder must be writable",
            ) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info))
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _read_owner(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"pid": -1, "host": socket.gethostname()}  # gone: treat as stale, retry
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _age_s(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _remove_stale(self, stale_pid: int | None = None) -> None:
        # Rename, then check what was renamed: if two processes judged the same lock stale and
        # the other one has meanwhile created a fresh lock, this puts that fresh lock back.
        grave = self.path.with_name(f".{LOCK_FILENAME}.stale.{os.getpid()}")
        try:
            os.replace(self.path, grave)
        except FileNotFoundError:
            return
        if stale_pid is not None:
            try:
                moved = json.loads(grave.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                moved = {}
            if isinstance(moved, dict) and moved.get("pid") not in (stale_pid, None):
                with contextlib.suppress(OSError):
                    os.link(grave, self.path)  # fails if yet another lock exists: fine
        with contextlib.suppress(FileNotFoundError):
            grave.unlink()
