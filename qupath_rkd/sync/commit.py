"""All-or-nothing write-back: a killed ``sync`` leaves the project as before it or after it.

Everything a sync produces (a new model, the new predictions of every image, ``state.json``
and ``report.json``) is first written to ``<project>/qupath-rkd/.pending/``, which no reader
looks at. When all of it is there, ``.pending/commit.json`` is written atomically: that single
``os.replace`` is the commit point. Only then is it put in place: staged files are moved with
``os.replace``; each image's predictions are handed to the backend's ``write_predictions``
(atomic per file, previous file kept as ``.bak``, identical content not rewritten);
``state.json`` and ``report.json`` come last (with the digest of each prediction file the
backend wrote), then ``.pending`` is removed.

:func:`recover` runs at the start of every sync (under the lock): a ``.pending`` folder
without ``commit.json`` is an interrupted sync and is discarded (the project stays as it was
before); one with ``commit.json`` is a sync interrupted while putting things in place and is
finished (the project becomes what that sync produced). Each step is idempotent, so recovery
can itself be interrupted and run again.

Pathologists' annotation files are never among the targets: only the tool's model, its
prediction files (through the backend) and its own state files are ever replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import ProjectError, ProjectReadOnlyError
from qupath_rkd.io_utils import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

PENDING_DIRNAME = ".pending"
COMMIT_FILENAME = "commit.json"
BACKUP_DIRNAME = "backup"

#: Test hook: ``QUPATH_RKD_FAULT=<point>`` kills the process (SIGKILL) at that point, so the
#: tests can prove that a kill anywhere leaves the project before-or-after. Unset in real use.
FAULT_ENV = "QUPATH_RKD_FAULT"

#: Writes one image's predictions: ``(entry_id, features) -> sha256 of what is now stored``
#: (``None`` when the backend has no file to hash, e.g. paquo).
EntryWriter = Callable[[str, Sequence[Mapping[str, Any]]], "str | None"]


def plain_file_name(name: str, folder: Path) -> Path:
    """``folder / name`` when ``name`` is one plain file name (so the path, and any
    temporary file written next to it, lies directly inside ``folder``).

    Raises:
        ProjectError: ``name`` is empty, ``.`` or ``..``, or holds a path separator or a NUL
            character: it would address a file outside ``folder``.
    """
    bad = (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(c in name for c in ("/", "\\", "\0"))
        or Path(name).is_absolute()
    )
    if bad or (folder / name).parent != folder:
        raise ProjectError(
            f"internal error: {name!r} is not a plain file name inside {folder}",
            hint="entry IDs must be the whole numbers QuPath writes in project.qpproj",
        )
    return folder / name


def _inside(project_dir: Path, target: str) -> Path:
    """``project_dir / target`` when ``target`` is a relative path that stays inside
    ``project_dir`` (no ``..`` part, not absolute); else :class:`ProjectError`."""
    rel = Path(target)
    if rel.is_absolute() or ".." in rel.parts or "\0" in target or not rel.parts:
        raise ProjectError(
            f"internal error: {target!r} is not a path inside the project {project_dir}",
            hint=f"delete {project_dir / PROJECT_SUBDIR / PENDING_DIRNAME} and sync again",
        )
    return project_dir / rel


def _relative(project_dir: Path, target: str | Path) -> Path:
    """``target`` (absolute, or relative to ``project_dir``) as a path relative to
    ``project_dir`` that stays inside it; else :class:`ProjectError`."""
    rel = Path(target)
    if rel.is_absolute():
        try:
            rel = rel.relative_to(project_dir)
        except ValueError:
            rel = Path("..") / rel  # outside the project: refused just below
    _inside(project_dir, rel.as_posix())
    return rel


def fault_point(name: str) -> None:
    """Kill this process right here when ``$QUPATH_RKD_FAULT`` names this point (tests only)."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and wanted == name:
        import signal

        logger.debug("fault injection: killing the process at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Move:
    """One file the commit puts in place.

    Attributes:
        staged: name of the staged file inside ``.pending``.
        target: path relative to the project folder where it goes.
        backup: whether the file it replaces is copied to ``backup/`` first.
    """

    staged: str
    target: str
    backup: bool = True


@dataclass
class Transaction:
    """A sync's pending writes. Stage files, then :meth:`commit`.

    Args:
        project_dir: the QuPath project folder.
    """

    project_dir: Path
    moves: list[Move] = field(default_factory=list)
    entries: list[dict[str, str]] = field(default_factory=list)
    json_outputs: dict[str, Any] = field(default_factory=dict)
    #: ``(json target, path of keys)``: the dict at that place receives
    #: ``{entry_id: {"output_sha256": digest}}`` merged in after the entries are written.
    digests_into: tuple[str, list[str]] | None = None

    def __post_init__(self) -> None:
        self.project_dir = Path(self.project_dir)
        self.tool_dir = self.project_dir / PROJECT_SUBDIR
        self.pending = self.tool_dir / PENDING_DIRNAME

    def begin(self) -> None:
        """Create an empty ``.pending`` folder (after :func:`recover`)."""
        if self.pending.exists():
            shutil.rmtree(self.pending)
        self.pending.mkdir(parents=True)

    def staged_path(self, name: str) -> Path:
        """Where to write a staged file called ``name`` (one plain file name)."""
        return plain_file_name(name, self.pending)

    def stage_bytes(
        self, name: str, data: bytes, target: str | Path, *, backup: bool = True
    ) -> Path:
        """Stage ``data``; at commit it replaces ``<project>/<target>``."""
        path = atomic_write_bytes(plain_file_name(name, self.pending), data)
        self.add_move(name, target, backup=backup)
        return path

    def add_move(self, name: str, target: str | Path, *, backup: bool = True) -> None:
        """Register an already staged file ``.pending/<name>`` to go to ``<project>/<target>``."""
        rel = _relative(self.project_dir, target)
        if not plain_file_name(name, self.pending).is_file():
            raise ProjectError(f"internal error: {name} was not staged")
        self.moves.append(Move(staged=name, target=rel.as_posix(), backup=backup))

    def stage_entry(self, entry_id: str, features: Sequence[Mapping[str, Any]]) -> None:
        """Stage one image's new predictions (GeoJSON features, as for ``write_predictions``);
        staging an image again replaces what was staged for it."""
        name = f"entry-{entry_id}.json"
        atomic_write_json(plain_file_name(name, self.pending), list(features), indent=None)
        record = {"entry_id": entry_id, "staged": name}
        if record not in self.entries:
            self.entries.append(record)

    def staged_features(self, entry_id: str) -> list[dict[str, Any]] | None:
        """What is staged for one image (``None``: nothing)."""
        if {"entry_id": entry_id, "staged": f"entry-{entry_id}.json"} not in self.entries:
            return None
        path = plain_file_name(f"entry-{entry_id}.json", self.pending)
        return list(json.loads(path.read_text(encoding="utf-8")))

    def set_json(self, target: str | Path, obj: Any) -> None:
        """Write ``obj`` as JSON to ``<project>/<target>`` at commit, after the moves,
        unless the file already holds exactly this content."""
        rel = _relative(self.project_dir, target)
        self.json_outputs[rel.as_posix()] = obj

    def commit(self, writer: EntryWriter | None = None) -> None:
        """Write the commit record (the point of no return), then apply it.

        Args:
            writer: writes one image's staged predictions (required when any were staged).
        """
        if self.entries and writer is None:
            raise ProjectError("internal error: predictions staged without a writer")
        fault_point("before-commit")
        record = {
            "moves": [vars(m) for m in self.moves],
            "entries": self.entries,
            "json": self.json_outputs,
            "digests_into": self.digests_into,
        }
        atomic_write_json(self.pending / COMMIT_FILENAME, record)
        fault_point("after-commit-record")
        _apply(self.project_dir, record, writer)

    def abort(self) -> None:
        """Discard everything staged."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.pending)


def recover(project_dir: str | Path, writer: EntryWriter | None = None) -> str | None:
    """Finish or discard what an interrupted sync left; returns what was done, or ``None``.

    Args:
        writer: writes one image's staged predictions (the project's backend); without one,
            a committed sync that staged predictions is left for a later call.
    """
    pending = Path(project_dir) / PROJECT_SUBDIR / PENDING_DIRNAME
    if not pending.exists():
        return None
    record_file = pending / COMMIT_FILENAME
    if record_file.is_file():
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # cannot happen with atomic writes; be safe
            logger.warning("unreadable %s (%s): discarding the interrupted sync", record_file, exc)
        else:
            if record.get("entries") and writer is None:
                return None
            _apply(Path(project_dir), record, writer)
            return "finished the write-back of an interrupted sync"
    shutil.rmtree(pending)
    return "discarded the unfinished work of an interrupted sync"


def _apply(project_dir: Path, record: dict[str, Any], writer: EntryWriter | None) -> None:
    """Move every staged file into place (backing up what it replaces), hand every staged
    image's predictions to ``writer``, then write the JSON files and remove ``.pending``.
    Safe to run again after an interruption."""
    tool_dir = project_dir / PROJECT_SUBDIR
    pending = tool_dir / PENDING_DIRNAME
    for index, move in enumerate(record["moves"]):
        staged = plain_file_name(move["staged"], pending)
        target = _inside(project_dir, move["target"])
        if not staged.exists():
            continue  # moved already by an earlier, interrupted apply
        target.parent.mkdir(parents=True, exist_ok=True)
        if move.get("backup", True) and target.is_file():
            backup = tool_dir / BACKUP_DIRNAME / Path(move["target"]).relative_to(PROJECT_SUBDIR)
            backup.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(backup, target.read_bytes())
        fault_point(f"move-{index}")
        os.replace(staged, target)
    digests: dict[str, str | None] = {}
    for index, item in enumerate(record.get("entries", [])):
        features = json.loads(plain_file_name(item["staged"], pending).read_text(encoding="utf-8"))
        fault_point(f"entry-{index}")
        assert writer is not None
        digests[item["entry_id"]] = writer(item["entry_id"], features)
    fault_point("before-json")
    outputs = record["json"]
    if record.get("digests_into") and digests:
        rel, keys = record["digests_into"]
        place = outputs[rel]
        for key in keys:
            place = place[key]
        for entry_id, digest in digests.items():
            place.setdefault(entry_id, {})["output_sha256"] = digest
    for rel, obj in outputs.items():
        _write_json_if_changed(_inside(project_dir, rel), obj)
    fault_point("before-cleanup")
    shutil.rmtree(pending, ignore_errors=True)


def _write_json_if_changed(path: Path, obj: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")) == obj:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def ensure_writable(project_dir: str | Path) -> None:
    """Raise :class:`ProjectError` unless qupath-rkd can write into the project.

    Checked before any work so a read-only project fails at once, with nothing written.
    """
    tool_dir = Path(project_dir) / PROJECT_SUBDIR
    where = tool_dir if tool_dir.exists() else Path(project_dir)
    probe = where / f".qupath-rkd-write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ProjectReadOnlyError(
            f"the project folder is not writable: {where} ({exc.strerror or exc})",
            hint="make it writable or copy the project somewhere you can write",
        ) from exc
