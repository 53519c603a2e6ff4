"""A FROC curve as a PNG, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from qupath_rkd.evaluation.camelyon16 import FROC_FPS_PER_SLIDE, FROCResult
from qupath_rkd.io_utils import atomic_write_bytes

_W, _H = 720, 520
_LEFT, _RIGHT, _TOP, _BOTTOM = 80, 30, 50, 70
_X_MIN_FP, _X_MAX_FP = 0.125, 16.0  # log2 axis around the 0.25-8 FP range


def _x_of(fp: float) -> float:
    fp = min(max(fp, _X_MIN_FP), _X_MAX_FP)
    frac = (math.log2(fp) - math.log2(_X_MIN_FP)) / (math.log2(_X_MAX_FP) - math.log2(_X_MIN_FP))
    return _LEFT + frac * (_W - _LEFT - _RIGHT)


def _y_of(sens: float) -> float:
    return _H - _BOTTOM - sens * (_H - _TOP - _BOTTOM)


def froc_png(result: FROCResult, title: str = "Camelyon16 lesion FROC") -> bytes:
    """PNG bytes: sensitivity vs average FPs per slide (log2 axis), the six operating points
    marked, and the FROC score in the title."""
    img = Image.new("RGB", (_W, _H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    # axes and grid
    for s in np.linspace(0, 1, 6):
        y = _y_of(float(s))
        d.line([(_LEFT, y), (_W - _RIGHT, y)], fill=(225, 225, 225))
        d.text((_LEFT - 40, y - 6), f"{s:.1f}", fill="black", font=font)
    for fp in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16):
        x = _x_of(fp)
        d.line([(x, _TOP), (x, _H - _BOTTOM)], fill=(225, 225, 225))
        d.text((x - 12, _H - _BOTTOM + 8), f"{fp:g}", fill="black", font=font)
    d.rectangle([(_LEFT, _TOP), (_W - _RIGHT, _H - _BOTTOM)], outline="black")
    d.text((_W // 2 - 90, _H - 30), "average false positives per slide", fill="black", font=font)
    d.text((10, _TOP - 30), "sensitivity", fill="black", font=font)
    d.text((_LEFT, 12), f"{title}: FROC score {result.score:.3f}", fill="black", font=font)
    # the curve as the score reads it: linear in FPs between the points (np.interp), drawn
    # with sub-steps so that straight segments bend correctly on the log axis
    fps = result.fps_per_slide[::-1]
    sens = result.sensitivity[::-1]
    pts: list[tuple[float, float]] = []
    for k in range(fps.size - 1):
        for f in np.linspace(fps[k], fps[k + 1], 24):
            s = float(np.interp(f, fps, sens)) if fps[k + 1] > fps[k] else float(sens[k + 1])
            pts.append((_x_of(float(f)), _y_of(s)))
    if len(pts) >= 2:
        d.line(pts, fill=(31, 119, 180), width=2)
    for fp in FROC_FPS_PER_SLIDE:
        s = result.sensitivity_at[fp]
        x, y = _x_of(fp), _y_of(s)
        d.ellipse([(x - 4, y - 4), (x + 4, y + 4)], outline=(214, 39, 40), width=2)
        d.text((x + 6, y - 16), f"{s:.2f}", fill=(214, 39, 40), font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_froc_png(
    path: str | Path, result: FROCResult, title: str = "Camelyon16 lesion FROC"
) -> Path:
    """Write :func:`froc_png` atomically; returns the path."""
    return atomic_write_bytes(path, froc_png(result, title))
