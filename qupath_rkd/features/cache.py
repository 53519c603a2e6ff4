"""An on-disk cache of pooled trunk features, shared by every run on this machine.

The trunk is frozen, so a tile's features depend only on the trunk (name, weights, pooled
layout), the tile's pixels at the network input size and the dihedral view. Those make the key:

- the *space* — sha256 of the trunk name, the sha256 of its weights, the layout version and the
  input side in pixels (:func:`feature_space`);
- the *tile* — blake2b of the tile's ``(S, S, 3)`` uint8 pixels as fed to the network (so the
  slide, the position and the µm/px a tile was read at are all in it: the same tissue read at
  another scale is other pixels);
- the *view* (0-7, :mod:`qupath_rkd.features.views`).

Values are float16 ``(D,)`` vectors. Every feature the head sees goes through float16, whether
it came from the cache or was just computed, so a run gives the same model with a cold or a
warm cache.

Storage: one SQLite file (``$QUPATH_RKD_CACHE_DIR/features.sqlite``, default
``$XDG_CACHE_HOME/qupath-rkd`` or ``~/.cache/qupath-rkd``), safe to delete at any time (it is
rebuilt as needed) and bounded: when it grows past ``max_bytes`` the least recently used rows are
dropped down to 90 %. ``QUPATH_RKD_CACHE_DIR=off`` disables it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from qupath_rkd.constants import LEGACY_POOLING

logger = logging.getLogger(__name__)

CACHE_ENV = "QUPATH_RKD_CACHE_DIR"
DEFAULT_MAX_BYTES = 4 * 1024**3


def default_cache_dir() -> Path | None:
    """Where the cache lives (``None`` when ``QUPATH_RKD_CACHE_DIR=off``)."""
    env = os.environ.get(CACHE_ENV, "")
    if env.lower() in ("off", "none", "0"):
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qupath-rkd"


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over the names, shapes and bytes of a module's state dict (sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def feature_space(
    trunk_name: str,
    weights_sha256: str,
    layout_version: int,
    input_px: int,
    pooling: str = LEGACY_POOLING,
) -> str:
    """The key of one feature space (what must match for two features to be the same).

    ``pooling`` enters the key except for :data:`~qupath_rkd.constants.LEGACY_POOLING`, the
    only pooling before it was recorded, so caches written then stay valid."""
    text = f"{trunk_name}|{weights_sha256}|layout{layout_version}|{input_px}px"
    if pooling != LEGACY_POOLING:
        text += f"|{pooling}"
    return hashlib.sha256(text.encode()).hexdigest()


def tile_key(tile: np.ndarray) -> bytes:
    """blake2b (16 bytes) of a ``(S, S, 3)`` uint8 tile's shape and pixels."""
    a = np.ascontiguousarray(tile)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(a.tobytes())
    return h.digest()


class FeatureCache:
    """Feature vectors by ``(space, tile key, view)`` in one SQLite file.

    A cache that cannot be opened or written (read-only disk, a damaged file) logs one warning
    and behaves as empty: the cache speeds runs up, it never stops one.
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(folder) / "features.sqlite"
        self.max_bytes = int(max_bytes)
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS features (space TEXT, tile BLOB, view INTEGER, "
                "vec BLOB, used REAL, PRIMARY KEY (space, tile, view))"
            )
            db.commit()
            self._db = db
        except sqlite3.Error as exc:
            logger.warning("feature cache %s unusable (%s): running without it", self.path, exc)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def get(self, space: str, keys: Sequence[bytes], view: int, dim: int) -> dict[int, np.ndarray]:
        """Cached vectors of ``keys`` in ``view``: ``{position in keys: (dim,) float16}``."""
        if self._db is None or not keys:
            return {}
        found: dict[int, np.ndarray] = {}
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):  # a tile may repeat (byte-identical patches)
            where.setdefault(k, []).append(i)
        try:
            for start in range(0, len(keys), 500):
                chunk = list(dict.fromkeys(keys[start : start + 500]))
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT tile, vec FROM features WHERE space=? AND view=? "
                    f"AND tile IN ({marks})",
                    [space, view, *chunk],
                ).fetchall()
                for tile, vec in rows:
                    v = np.frombuffer(vec, dtype=np.float16)
                    if v.shape == (dim,):
                        for i in where.get(bytes(tile), []):
                            found[i] = v
            if found:
                now = time.time()
                self._db.executemany(
                    "UPDATE features SET used=? WHERE space=? AND tile=? AND view=?",
                    [(now, space, k, view) for k in {keys[i] for i in found}],
                )
                self._db.commit()
        except sqlite3.Error as exc:
            self._disable(exc)
            return {}
        return found

    def put(self, space: str, items: Iterable[tuple[bytes, np.ndarray]], view: int) -> None:
        """Store ``(tile key, (D,) vector)`` pairs of ``view`` (as float16)."""
        if self._db is None:
            return
        now = time.time()
        rows = [
            (space, key, view, np.asarray(vec, dtype=np.float16).tobytes(), now)
            for key, vec in items
        ]
        try:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?,?)", rows)
            self._db.commit()
            self._evict()
        except sqlite3.Error as exc:
            self._disable(exc)

    def size_bytes(self) -> int:
        """Bytes of stored vectors."""
        if self._db is None:
            return 0
        row = self._db.execute("SELECT COALESCE(SUM(LENGTH(vec)), 0) FROM features").fetchone()
        return int(row[0])

    def _evict(self) -> None:
        assert self._db is not None
        total = self.size_bytes()
        if total <= self.max_bytes:
            return
        target = int(0.9 * self.max_bytes)
        rows = self._db.execute(
            "SELECT rowid, LENGTH(vec) FROM features ORDER BY used ASC"
        ).fetchall()
        drop: list[tuple[int]] = []
        for rowid, n in rows:
            if total <= target:
                break
            drop.append((rowid,))
            total -= int(n)
        self._db.executemany("DELETE FROM features WHERE rowid=?", drop)
        self._db.commit()
        logger.info("feature cache %s: dropped %d least recently used rows", self.path, len(drop))

    def _disable(self, exc: Exception) -> None:
        logger.warning("feature cache %s failed (%s): running without it", self.path, exc)
        try:
            if self._db is not None:
                self._db.close()
        finally:
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_default_cache() -> FeatureCache | None:
    """The machine's shared cache (:func:`default_cache_dir`), or ``None`` when disabled."""
    folder = default_cache_dir()
    return None if folder is None else FeatureCache(folder)
