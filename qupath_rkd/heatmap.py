"""The heatmap: calibrated tumour probability on a slide's tile grid, and its files.

Pure numpy (no torch), so ``lesions/`` and ``evaluation/`` can use it without loading a model.

Coordinate frames. The array is indexed ``(row, col)``. A slide is addressed in level-0 ``(x, y)``
pixels of QuPath's frame. Grid cell ``(r, c)`` is the tile whose top-left corner is
``origin_xy_px + (c, r) * stride_level0_px`` and whose side is ``tile_level0_px``. Its value sits at
the **tile centre**, and the area a cell stands for (its *footprint*, used for lesion polygons and
measurement maps) is the ``stride_level0_px`` square centred there, which is the tile itself when
tiles do not overlap. :func:`cell_to_level0_xy` is the one function that converts between the two
frames; everything else calls it.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qupath_rkd.errors import QupathRkdError
from qupath_rkd.io_utils import atomic_write_bytes, json_bytes

logger = logging.getLogger(__name__)

#: Version of the heatmap JSON sidecar (bump when its meaning changes).
HEATMAP_FORMAT_VERSION = 1


class HeatmapFileError(QupathRkdError, ValueError):
    """A heatmap ``.npy`` / ``.json`` pair is missing or inconsistent."""


def cell_to_level0_xy(
    rows: np.ndarray | float,
    cols: np.ndarray | float,
    *,
    origin_xy_px: tuple[float, float],
    stride_level0_px: float,
    tile_level0_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 ``(x, y)`` of grid positions given as (possibly fractional) ``(row, col)``.

    The pixel-centre convention lives here and only here: integer ``(r, c)`` maps to the centre of
    tile ``(r, c)``; ``(r - 0.5, c - 0.5)`` maps to the top-left corner of that cell's footprint
    (the ``stride_level0_px`` square centred on the tile centre).

    Args:
        rows, cols: arrays (any matching shape) of grid row and column positions.
        origin_xy_px: level-0 ``(x, y)`` of the top-left corner of tile ``(0, 0)``.
        stride_level0_px: level-0 pixels between neighbouring tiles.
        tile_level0_px: level-0 side of one tile.

    Returns:
        ``(x, y)`` arrays of level-0 pixel coordinates (float64), same shape as the inputs.
    """
    half = 0.5 * float(tile_level0_px)
    x = float(origin_xy_px[0]) + half + np.asarray(cols, dtype=np.float64) * stride_level0_px
    y = float(origin_xy_px[1]) + half + np.asarray(rows, dtype=np.float64) * stride_level0_px
    return x, y


@dataclass(frozen=True)
class Heatmap:
    """Calibrated tumour probability on a slide's tile grid.

    Attributes:
        probability: ``(rows, cols)`` float32 in [0, 1]; NaN where no tile was scored (no tissue).
        origin_xy_px: level-0 ``(x, y)`` of the top-left corner of tile ``(0, 0)`` (QuPath frame).
        stride_level0_px: level-0 pixels between neighbouring tiles (grid spacing).
        tile_level0_px: level-0 side of one tile.
        mpp: level-0 µm/px of the slide (so level-0 pixels convert to µm).
        meta: free-form provenance (model id, tile µm/px, config); saved in the JSON sidecar.
    """

    probability: np.ndarray
    origin_xy_px: tuple[float, float]
    stride_level0_px: float
    tile_level0_px: float
    mpp: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probability.ndim != 2:
            raise ValueError(f"heatmap must be 2-D (rows, cols), got {self.probability.shape}")
        if not (self.stride_level0_px > 0 and self.tile_level0_px > 0 and self.mpp > 0):
            raise ValueError("stride, tile size and mpp of a heatmap must be positive")

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the grid."""
        return (int(self.probability.shape[0]), int(self.probability.shape[1]))

    @property
    def cell_um(self) -> float:
        """Side of one cell footprint in µm (the heatmap's µm per heatmap pixel)."""
        return float(self.stride_level0_px * self.mpp)

    def to_level0_xy(
        self, rows: np.ndarray | float, cols: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 ``(x, y)`` of grid ``(row, col)`` positions; see :func:`cell_to_level0_xy`."""
        return cell_to_level0_xy(
            rows,
            cols,
            origin_xy_px=self.origin_xy_px,
            stride_level0_px=self.stride_level0_px,
            tile_level0_px=self.tile_level0_px,
        )

    def cell_at(self, x_px: np.ndarray, y_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid ``(row, col)`` (int64) whose footprint holds level-0 points ``(x, y)``.

        The inverse of :meth:`to_level0_xy` for footprints; may fall outside the grid.
        """
        x0, y0 = self.to_level0_xy(-0.5, -0.5)  # top-left of cell (0, 0)'s footprint
        col = np.floor((np.asarray(x_px, np.float64) - x0) / self.stride_level0_px)
        row = np.floor((np.asarray(y_px, np.float64) - y0) / self.stride_level0_px)
        return row.astype(np.int64), col.astype(np.int64)

    # --- files --------------------------------------------------------------------------
    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.npy`` (the probability array) and ``<stem>.json`` (geometry + meta).

        Both are written atomically; the JSON is written last so its presence marks a complete
        pair. Returns ``(npy_path, json_path)``.
        """
        stem = Path(stem)
        npy_path = stem.with_name(stem.name + ".npy")
        json_path = stem.with_name(stem.name + ".json")
        npy_bytes, json_bytes_ = self.file_bytes(npy_path.name)
        atomic_write_bytes(npy_path, npy_bytes)
        atomic_write_bytes(json_path, json_bytes_)
        return npy_path, json_path

    def file_bytes(self, npy_name: str) -> tuple[bytes, bytes]:
        """The bytes :meth:`save` writes: ``(.npy file, .json file)``; the JSON names the
        array file ``npy_name`` (``"heatmap.npy"``: the name beside it, no folder)."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.probability, dtype=np.float32), allow_pickle=False)
        meta = {
            "format_version": HEATMAP_FORMAT_VERSION,
            "array": npy_name,
            "array_axes": ["row", "col"],
            "value": "calibrated tumour probability (NaN = not scored)",
            "shape_rows_cols": list(self.shape),
            "origin_xy_px": [float(v) for v in self.origin_xy_px],
            "stride_level0_px": float(self.stride_level0_px),
            "tile_level0_px": float(self.tile_level0_px),
            "mpp": float(self.mpp),
            "cell_um": self.cell_um,
            "value_at": "tile centre: x = origin_x + tile/2 + col*stride (level-0 px)",
            "meta": _jsonable(self.meta),
        }
        return buf.getvalue(), json_bytes(meta)

    @classmethod
    def load(cls, stem_or_json: str | Path) -> Heatmap:
        """Read a heatmap written by :meth:`save` (give the stem or the ``.json`` path)."""
        p = Path(stem_or_json)
        json_path = p if p.suffix == ".json" else p.with_name(p.name + ".json")
        try:
            info = json.loads(json_path.read_text(encoding="utf-8"))
            array = np.load(json_path.with_name(info["array"]), allow_pickle=False)
        except (OSError, KeyError, ValueError) as exc:
            raise HeatmapFileError(f"cannot read heatmap {json_path}: {exc}") from exc
        if list(array.shape) != list(info["shape_rows_cols"]):
            raise HeatmapFileError(
                f"heatmap {json_path}: array shape {array.shape} does not match its JSON "
                f"{info['shape_rows_cols']}"
            )
        return cls(
            probability=array.astype(np.float32, copy=False),
            origin_xy_px=(float(info["origin_xy_px"][0]), float(info["origin_xy_px"][1])),
            stride_level0_px=float(info["stride_level0_px"]),
            tile_level0_px=float(info["tile_level0_px"]),
            mpp=float(info["mpp"]),
            meta=dict(info.get("meta") or {}),
        )


def _jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and paths to plain JSON types (recursively)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
