"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every output of qupath-rkd goes through these: the bytes go to a temporary file in the same
folder, are flushed and fsync'ed, then ``os.replace`` swaps it in (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    The folder must exist. On any error the temporary file is removed and ``path`` is
    untouched.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 & ~umask)
            # so that QuPath run by a colleague, or a shared project folder, can read it
            os.fchmod(fh.fileno(), 0o666 & ~_current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any, *, indent: int | None = 2) -> bytes:
    """The UTF-8 bytes :func:`atomic_write_json` writes for ``obj`` (sorted keys, so identical
    content gives identical bytes; a final newline)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys, so identical content gives identical bytes)."""
    return atomic_write_bytes(path, json_bytes(obj, indent=indent))
