"""Tiles read from whole-slide images as torch map-style datasets, and the one per-process
slide-handle helper they share (:class:`SlideHandles`).

- :class:`SlideTileDataset` (sync's training set): labelled tiles of many slides; items are
  ``(image: np.ndarray (tile_px, tile_px, 3) uint8, label: int)`` as the trainer expects (see
  ``docs/architecture.md``); ``labels`` holds every label as an int64 array.
- :class:`TileDataset` (inference): the tiles of one slide; items are ``(index, tile)``.

Tiles are read on demand with :meth:`qupath_rkd.slides.Slide.read_tile`; each process
(DataLoader workers included) opens its own slide handles, lazily, and never ships one to
another process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qupath_rkd.errors import DataError, QupathRkdError

if TYPE_CHECKING:
    import torch

    from qupath_rkd.slides.reader import Slide

logger = logging.getLogger(__name__)


class SlideHandles:
    """Open slides of this process, by path, opened lazily; a forked or unpickled copy starts
    empty (an OpenSlide handle is never shared across processes).

    Args:
        slide_mpp: per-slide µm/px overrides (``{path: mpp}``) for slides without it in their
            metadata, passed to :func:`qupath_rkd.slides.open_slide`.
    """

    def __init__(self, slide_mpp: Mapping[str, float | None] | None = None) -> None:
        self.slide_mpp = dict(slide_mpp or {})
        self._handles: dict[str, Slide] = {}
        self._pid = os.getpid()

    def get(self, path: str) -> Slide:
        """This process's handle of ``path`` (opened on first use)."""
        if self._pid != os.getpid():  # forked worker: never share handles across processes
            self._handles = {}
            self._pid = os.getpid()
        handle = self._handles.get(path)
        if handle is None:
            from qupath_rkd.slides import open_slide

            handle = open_slide(path, mpp=self.slide_mpp.get(path))
            self._handles[path] = handle
        return handle

    def close(self) -> None:
        """Close every slide handle this process opened."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


class SlideTileDataset:
    """Labelled tiles of whole-slide images.

    Args:
        tiles: ``(slide_path, x_px, y_px, label)`` per tile; ``(x_px, y_px)`` is the tile's
            top-left corner in level-0 pixels, QuPath's frame.
        tile_px: side of the returned image in pixels.
        tile_mpp: µm/px at which tiles are read (the tile covers ``tile_px * tile_mpp`` µm).
        slide_mpp: per-slide µm/px overrides (``{path: mpp}``) for slides without it in their
            metadata (QuPath's pixel calibration).

    Raises:
        DataError: ``tiles`` is empty.
    """

    def __init__(
        self,
        tiles: Sequence[tuple[str | os.PathLike[str], int, int, int]],
        *,
        tile_px: int,
        tile_mpp: float,
        slide_mpp: dict[str, float] | None = None,
    ) -> None:
        if len(tiles) == 0:
            raise DataError("no labelled tiles to read")
        self.paths = [str(Path(t[0])) for t in tiles]
        self.xy_px = np.asarray([(int(t[1]), int(t[2])) for t in tiles], dtype=np.int64)
        self.labels = np.asarray([int(t[3]) for t in tiles], dtype=np.int64)
        self.tile_px = int(tile_px)
        self.tile_mpp = float(tile_mpp)
        self.slide_mpp = dict(slide_mpp or {})
        self._handles = SlideHandles(self.slide_mpp)

    def __len__(self) -> int:
        return len(self.labels)

    def _slide(self, path: str) -> Slide:
        return self._handles.get(path)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path = self.paths[index]
        x_px, y_px = (int(v) for v in self.xy_px[index])
        image = self._slide(path).read_tile(x_px, y_px, self.tile_px, self.tile_mpp)
        return image, int(self.labels[index])

    def subset(self, indices: Sequence[int] | np.ndarray) -> SlideTileDataset:
        """A dataset of the given items (same reading parameters)."""
        indices = np.asarray(indices, dtype=np.int64)
        tiles = [
            (self.paths[i], int(self.xy_px[i, 0]), int(self.xy_px[i, 1]), int(self.labels[i]))
            for i in indices
        ]
        return SlideTileDataset(
            tiles, tile_px=self.tile_px, tile_mpp=self.tile_mpp, slide_mpp=self.slide_mpp
        )

    def close(self) -> None:
        """Close every slide handle this process opened."""
        self._handles.close()


class TileDataset:
    """Map-style dataset of tiles of one slide; each process opens its own slide handle.

    Items are ``(index, tile)``: ``tile`` is a ``(tile_px, tile_px, 3)`` uint8 tensor read at
    ``tile_mpp`` from level-0 top-left ``xy_px[index]``.
    """

    def __init__(
        self,
        slide_path: Path,
        xy_px: np.ndarray,
        tile_px: int,
        tile_mpp: float,
        slide_mpp: float | None,
    ) -> None:
        self.slide_path = slide_path
        self.xy_px = xy_px
        self.tile_px = tile_px
        self.tile_mpp = tile_mpp
        self.slide_mpp = slide_mpp
        self._handles = SlideHandles({str(slide_path): slide_mpp})

    def open(self) -> Slide:
        """This process's slide handle (opened by ``worker_init_fn`` in each worker)."""
        return self._handles.get(str(self.slide_path))

    def close(self) -> None:
        self._handles.close()

    def __len__(self) -> int:
        return int(self.xy_px.shape[0])

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        import torch

        from qupath_rkd.errors import SlideReadError

        slide = self.open()
        x, y = self.xy_px[index]
        try:
            tile = slide.read_tile(float(x), float(y), self.tile_px, self.tile_mpp)
        except QupathRkdError:
            raise
        except Exception as exc:  # OpenSlideError, OSError: the file broke while being read
            raise SlideReadError(
                f"{self.slide_path}: reading the tile at x={int(x)}, y={int(y)} failed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                hint="the file may be incomplete, corrupt or on a connection that dropped",
            ) from exc
        return index, torch.from_numpy(tile)


def split_by_label(
    labels: np.ndarray, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of item indices into (train, valid), seeded.

    Each class keeps at least one item for training; a class with a single item goes to
    training only. ``valid_fraction`` 0 gives an empty validation set.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        idx = idx[rng.permutation(len(idx))]
        n_valid = round(len(idx) * valid_fraction)
        n_valid = min(n_valid, len(idx) - 1)
        valid.append(idx[:n_valid])
        train.append(idx[n_valid:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))
