"""Open whole-slide images and read tiles at a physical resolution (µm/px).

Coordinates are level-0 ``(x, y)`` pixels in **QuPath's frame**: for slides whose OpenSlide
properties carry ``openslide.bounds-x/y`` (e.g. MRXS), QuPath crops the image to the bounds
rectangle, so QuPath x = OpenSlide x − bounds-x. Every public method here takes and returns
QuPath-frame coordinates; the conversion happens only in :meth:`Slide._to_openslide`.

Resolution policy (documented in the README): a tile may be requested at a µm/px *coarser* than
level 0 (it is read from the best pyramid level and downsampled with antialiasing), or up to 1 %
finer (rounding in scanner metadata). Anything finer is refused with
:class:`~qupath_rkd.errors.ResolutionError`: upsampling invents no detail, and a model trained
at 0.5 µm/px should not silently see 0.25 µm/px stretched pixels.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from qupath_rkd.errors import (
    ResolutionError,
    SlideNotFoundError,
    SlideReadError,
    TileOutOfBoundsError,
    UnknownResolutionError,
)

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

#: A requested µm/px may be this much finer than level 0 (scanner metadata rounding).
MPP_TOLERANCE = 0.01
#: Chunk side (pixels at the read level) used to build thumbnails without loading a level whole.
_THUMB_CHUNK_PX = 4096
_BACKGROUND_RGB = (255, 255, 255)
#: Level-0 µm/px outside this range is not a microscope's: e.g. 352.8 µm/px is the 72 dpi that
#: many TIFF writers put in by default. Such metadata is treated as unknown.
PLAUSIBLE_MPP_RANGE = (0.02, 100.0)
#: Files whose implausible pixel size was already reported (once per file and process).
_WARNED_IMPLAUSIBLE: set[str] = set()


def _mpp_from_properties(props: dict[str, str], name: str = "slide") -> tuple[float, float] | None:
    """Level-0 µm/px (x, y) from OpenSlide properties, or None when unknown.

    Uses ``openslide.mpp-x/y`` first, then the TIFF resolution tags (``tiff.XResolution`` with
    ``tiff.ResolutionUnit`` in centimetres or inches). An implausible value (e.g. a TIFF
    writer's 72 dpi default) is treated as unknown, with one warning per file (``name``).
    """

    def _positive(value: str | None) -> float | None:
        try:
            number = float(value) if value is not None else math.nan
        except ValueError:
            return None
        return number if math.isfinite(number) and number > 0 else None

    def _plausible(mpp_x: float, mpp_y: float) -> tuple[float, float] | None:
        low, high = PLAUSIBLE_MPP_RANGE
        if low <= mpp_x <= high and low <= mpp_y <= high:
            return mpp_x, mpp_y
        if name not in _WARNED_IMPLAUSIBLE:
            _WARNED_IMPLAUSIBLE.add(name)
            logger.warning(
                "%s: ignoring the pixel size in its metadata (%.4g × %.4g µm/px: not a "
                "microscope's, likely a TIFF writer's default 72 dpi); give the slide's level-0 "
                "µm/px with --slide-mpp",
                name,
                mpp_x,
                mpp_y,
            )
        return None

    mpp_x = _positive(props.get("openslide.mpp-x"))
    mpp_y = _positive(props.get("openslide.mpp-y"))
    if mpp_x and mpp_y:
        return _plausible(mpp_x, mpp_y)
    unit = props.get("tiff.ResolutionUnit", "").lower()
    um_per_unit = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
    res_x = _positive(props.get("tiff.XResolution"))
    res_y = _positive(props.get("tiff.YResolution"))
    if um_per_unit and res_x and res_y:
        return _plausible(um_per_unit / res_x, um_per_unit / res_y)
    return None


class Slide:
    """A whole-slide image opened with OpenSlide, with a known (or unknown) µm/px.

    Use :func:`open_slide` to create one. A ``Slide`` is a context manager; it is not shared
    between processes (each DataLoader worker opens its own).

    Attributes:
        path: the file.
        format: OpenSlide's vendor string (``aperio``, ``generic-tiff``, ``mirax``, ...).
        width_px, height_px: level-0 size in QuPath's frame (the bounds rectangle if any).
        bounds_offset_px: OpenSlide level-0 ``(x, y)`` of QuPath's origin; ``(0, 0)`` without
            bounds.
        level_count, level_dimensions, level_downsamples: the pyramid, as OpenSlide reports it
            (dimensions of the whole OpenSlide image, not cropped to bounds).
    """

    def __init__(self, path: Path, handle: Any, mpp_override: float | None) -> None:
        self.path = path
        self._osr = handle
        props = dict(handle.properties)
        self.properties: dict[str, str] = props
        self.format: str = props.get("openslide.vendor", "unknown")
        self.level_count: int = int(handle.level_count)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(handle.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(handle.level_downsamples)
        width0, height0 = self.level_dimensions[0]
        bx = int(props.get("openslide.bounds-x", 0) or 0)
        by = int(props.get("openslide.bounds-y", 0) or 0)
        self.bounds_offset_px: tuple[int, int] = (bx, by)
        self.width_px: int = int(props.get("openslide.bounds-width", width0) or width0)
        self.height_px: int = int(props.get("openslide.bounds-height", height0) or height0)
        if mpp_override is not None:
            if not (math.isfinite(mpp_override) and mpp_override > 0):
                raise ResolutionError(
                    f"{path}: µm/px override {mpp_override!r} is not a positive number",
                    hint="pass e.g. --slide-mpp 0.25",
                )
            self._mpp_xy: tuple[float, float] | None = (mpp_override, mpp_override)
            self.mpp_source = "override"
        else:
            self._mpp_xy = _mpp_from_properties(props, str(self.path))
            self.mpp_source = "metadata" if self._mpp_xy else "unknown"

    # -- resolution -------------------------------------------------------------------------
    @property
    def mpp_or_none(self) -> float | None:
        """Level-0 µm/px (mean of x and y), or None when unknown."""
        if self._mpp_xy is None:
            return None
        return (self._mpp_xy[0] + self._mpp_xy[1]) / 2.0

    @property
    def mpp_xy(self) -> tuple[float, float]:
        """Level-0 µm/px along x and y; raises UnknownResolutionError when unknown."""
        if self._mpp_xy is None:
            raise UnknownResolutionError(
                f"{self.path}: the slide's metadata has no pixel size (µm/px)",
                hint="pass --slide-mpp, e.g. --slide-mpp 0.25 (check the scanner's objective)",
            )
        return self._mpp_xy

    @property
    def mpp(self) -> float:
        """Level-0 µm/px (mean of x and y); raises UnknownResolutionError when unknown."""
        mpp_x, mpp_y = self.mpp_xy
        return (mpp_x + mpp_y) / 2.0

    def downsample_for(self, mpp: float) -> float:
        """Level-0 pixels per output pixel when reading at ``mpp`` µm/px.

        Raises ResolutionError when ``mpp`` is finer than level 0 beyond the tolerance.
        """
        if not (math.isfinite(mpp) and mpp > 0):
            raise ResolutionError(f"{self.path}: target µm/px {mpp!r} is not a positive number")
        downsample = mpp / self.mpp
        if downsample < 1.0 - MPP_TOLERANCE:
            raise ResolutionError(
                f"{self.path}: {mpp:g} µm/px is finer than the slide's level 0 "
                f"({self.mpp:g} µm/px); upsampling would invent detail",
                hint=f"use a target of at least {self.mpp:g} µm/px",
            )
        return max(downsample, 1.0)

    def best_level(self, downsample: float) -> int:
        """Index of the coarsest pyramid level whose downsample does not exceed ``downsample``."""
        best = 0
        for index, level_ds in enumerate(self.level_downsamples):
            if level_ds <= downsample * (1.0 + 1e-6):
                best = index
        return best

    # -- reading ----------------------------------------------------------------------------
    def _to_openslide(self, x_px: float, y_px: float) -> tuple[float, float]:
        """QuPath-frame level-0 (x, y) -> OpenSlide level-0 (x, y)."""
        return x_px + self.bounds_offset_px[0], y_px + self.bounds_offset_px[1]

    def _read_rgb(self, level: int, x0_os: int, y0_os: int, w: int, h: int) -> Image.Image:
        """RGB PIL image of a level's region; (x0_os, y0_os) in OpenSlide level-0 pixels."""
        from PIL import Image

        region = self._osr.read_region((x0_os, y0_os), level, (w, h))
        alpha = np.asarray(region.getchannel("A"))
        if alpha.min() == 255:
            return region.convert("RGB")
        background = Image.new("RGB", region.size, _BACKGROUND_RGB)
        background.paste(region, mask=region.getchannel("A"))
        return background

    def read_region_px(
        self, x_px: float, y_px: float, width_px: float, height_px: float, out_size: tuple[int, int]
    ) -> np.ndarray:
        """Read a level-0 rectangle and resample it to ``out_size`` = (width, height).

        Args:
            x_px, y_px: top-left, level-0 pixels in QuPath's frame (may be fractional).
            width_px, height_px: size of the rectangle in level-0 pixels.
            out_size: output (width, height) in pixels.

        Returns:
            ``np.ndarray`` of shape (out_h, out_w, 3), dtype uint8, RGB. The rectangle is read
            from the coarsest level that still has at least the output's resolution and resized
            with a Lanczos filter (antialiased); at downsample 1 with integer coordinates the
            pixels are returned exactly as stored.
        """
        from PIL import Image

        out_w, out_h = out_size
        eps = 1e-6
        if (
            x_px < -eps
            or y_px < -eps
            or x_px + width_px > self.width_px + eps
            or y_px + height_px > self.height_px + eps
        ):
            raise TileOutOfBoundsError(
                f"{self.path}: region x={x_px:g}, y={y_px:g}, {width_px:g}×{height_px:g} px lies "
                f"outside the slide (0, 0, {self.width_px}×{self.height_px} px)",
                hint="request tiles inside the slide; tile_grid() only yields such tiles",
            )
        downsample = min(width_px / out_w, height_px / out_h)
        level = self.best_level(downsample)
        level_ds = self.level_downsamples[level]
        ox, oy = self._to_openslide(x_px, y_px)
        # Integer-aligned window at the read level that contains the requested rectangle.
        lx0 = math.floor(ox / level_ds + eps)
        ly0 = math.floor(oy / level_ds + eps)
        lx1 = math.ceil((ox + width_px) / level_ds - eps)
        ly1 = math.ceil((oy + height_px) / level_ds - eps)
        level_w, level_h = self.level_dimensions[level]
        lx1, ly1 = min(lx1, level_w), min(ly1, level_h)
        win_w, win_h = max(lx1 - lx0, 1), max(ly1 - ly0, 1)
        image = self._read_rgb(level, round(lx0 * level_ds), round(ly0 * level_ds), win_w, win_h)
        # the requested rectangle inside the window (clamped: a level's size is rounded down)
        box = (
            min(max(ox / level_ds - lx0, 0.0), win_w),
            min(max(oy / level_ds - ly0, 0.0), win_h),
            min((ox + width_px) / level_ds - lx0, float(win_w)),
            min((oy + height_px) / level_ds - ly0, float(win_h)),
        )
        exact = (
            abs(box[0]) < eps
            and abs(box[1]) < eps
            and abs(box[2] - out_w) < eps
            and abs(box[3] - out_h) < eps
            and image.size == (out_w, out_h)
        )
        if not exact:
            image = image.resize((out_w, out_h), Image.Resampling.LANCZOS, box=box)
        return np.array(image, dtype=np.uint8)  # a writable copy

    def read_tile(self, x_px: float, y_px: float, size_px: int, mpp: float) -> np.ndarray:
        """A square tile of ``size_px`` pixels at ``mpp`` µm/px.

        Args:
            x_px, y_px: top-left corner, level-0 pixels in QuPath's frame.
            size_px: output side in pixels (at the target resolution).
            mpp: target µm/px; the tile covers ``size_px * mpp / slide.mpp`` level-0 pixels.

        Returns:
            ``np.ndarray`` (size_px, size_px, 3) uint8 RGB.

        Raises:
            TileOutOfBoundsError: the tile is not inside the slide.
            ResolutionError: ``mpp`` is finer than level 0.
            UnknownResolutionError: the slide's µm/px is unknown and was not given.
        """
        side_level0 = size_px * self.downsample_for(mpp)
        return self.read_region_px(x_px, y_px, side_level0, side_level0, (size_px, size_px))

    def thumbnail(self, max_px: int = 2048) -> tuple[np.ndarray, float]:
        """A downsampled RGB image of the whole slide (QuPath's frame).

        Reads the best level in chunks so memory stays bounded even for single-level slides.

        Returns:
            (image (h, w, 3) uint8, downsample) where ``downsample`` is level-0 pixels per
            thumbnail pixel (the same along x and y).
        """
        downsample = max(self.width_px, self.height_px) / float(max_px)
        downsample = max(downsample, 1.0)
        return self.render(downsample), downsample

    def render(self, downsample: float) -> np.ndarray:
        """The whole slide (QuPath's frame) at ``downsample`` level-0 px per output px.

        Returns ``np.ndarray`` (ceil(h / downsample), ceil(w / downsample), 3) uint8.
        """
        from PIL import Image

        out_w = max(1, math.ceil(self.width_px / downsample))
        out_h = max(1, math.ceil(self.height_px / downsample))
        out = Image.new("RGB", (out_w, out_h), _BACKGROUND_RGB)
        level = self.best_level(downsample)
        level_ds = self.level_downsamples[level]
        # chunk = a square of output pixels whose source is at most _THUMB_CHUNK_PX at the level
        chunk_out = max(1, int(_THUMB_CHUNK_PX * level_ds / downsample))
        for oy in range(0, out_h, chunk_out):
            for ox in range(0, out_w, chunk_out):
                cw, ch = min(chunk_out, out_w - ox), min(chunk_out, out_h - oy)
                x0, y0 = ox * downsample, oy * downsample
                w0 = min(cw * downsample, self.width_px - x0)
                h0 = min(ch * downsample, self.height_px - y0)
                cw_eff = max(1, round(w0 / downsample))
                ch_eff = max(1, round(h0 / downsample))
                piece = self.read_region_px(x0, y0, w0, h0, (cw_eff, ch_eff))
                out.paste(Image.fromarray(piece), (ox, oy))
        return np.asarray(out, dtype=np.uint8)

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the OpenSlide handle."""
        if self._osr is not None:
            self._osr.close()
            self._osr = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = self.mpp_or_none
        mpp_text = f"{mpp:.4g} µm/px" if mpp else "unknown µm/px"
        return (
            f"Slide({str(self.path)!r}, {self.format}, {self.width_px}×{self.height_px} px, "
            f"{self.level_count} levels, {mpp_text})"
        )


def open_slide(path: str | os.PathLike[str], mpp: float | None = None) -> Slide:
    """Open a whole-slide image with OpenSlide.

    Args:
        path: the slide file (any format OpenSlide reads, including generic tiled TIFF).
        mpp: level-0 µm/px to use instead of (or in the absence of) the metadata.

    Raises:
        SlideNotFoundError: the path does not exist or is a directory.
        SlideReadError: OpenSlide cannot read the file.
        ResolutionError: ``mpp`` is not a positive number.
    """
    slide_path = Path(path)
    if not slide_path.exists():
        raise SlideNotFoundError(
            f"{slide_path}: no such file",
            hint="check the path (and the slide root of a moved project)",
        )
    if slide_path.is_dir():
        raise SlideNotFoundError(
            f"{slide_path}: is a directory, not a slide file",
            hint="pass the slide file itself (for MRXS, the .mrxs file next to the folder)",
        )
    import openslide

    try:
        handle = openslide.OpenSlide(str(slide_path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideReadError(
            f"{slide_path}: cannot read this file as a whole-slide image "
            f"({exc or 'unsupported format'})",
            hint="convert it to a pyramidal TIFF/SVS that OpenSlide reads "
            "(e.g. QuPath's OME-TIFF export or vips tiffsave --tile --pyramid)",
        ) from exc
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideReadError(
            f"{slide_path}: cannot read this slide ({exc})",
            hint="the file may be corrupt or incomplete; re-export or re-copy it",
        ) from exc
    return Slide(slide_path, handle, mpp)
