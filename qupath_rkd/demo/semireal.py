"""Semi-real whole-slide images: mosaics of real PatchCamelyon patches with known lesions.

A semi-real slide is **a mosaic**, not a scanned slide: real H&E lymph-node patches (96 px at
about 0.972 µm/px) are laid edge to edge over an irregular tissue shape on white glass; inside
irregular lesion polygons of chosen sizes the pixels come from a second mosaic of real tumour
patches. The ground truth is therefore exact: tumour pixels are those inside the lesion
polygons. It is written as a pyramidal tiled TIFF (reduced-resolution pages with
``subfiletype=1`` and resolution tags) that OpenSlide reads as ``generic-tiff``.

Used by the tests, the demo and the benchmarks. A small subset of real PCam patches ships in
the package (:func:`demo_patch_dirs`) so the demo works without ``../shared``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qupath_rkd.constants import PCAM_MPP, PCAM_PATCH_PX
from qupath_rkd.errors import DataError

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
_GLASS_RGB = (242, 241, 244)
_TIFF_TILE_PX = 256
_STRIP_ROWS = 1024


def demo_patch_dirs() -> tuple[Path, Path]:
    """(normal_dir, tumor_dir): the real PCam patches shipped inside the package."""
    root = Path(__file__).resolve().parents[1] / "data" / "pcam_demo"
    normal, tumor = root / "normal", root / "tumor"
    if not normal.is_dir() or not tumor.is_dir():
        raise DataError(
            f"{root}: the packaged demo patches are missing",
            hint="reinstall qupath-rkd (pip install --force-reinstall qupath-rkd)",
        )
    return normal, tumor


@dataclass(frozen=True)
class LesionSpec:
    """A lesion to draw: centre in level-0 (x, y) pixels and its mean diameter in µm."""

    centre_xy_px: tuple[float, float]
    diameter_um: float


@dataclass
class SemiRealSlide:
    """A written semi-real slide and its ground truth.

    Attributes:
        path: the pyramidal TIFF.
        mpp: level-0 µm/px.
        width_px, height_px: level-0 size.
        lesions: tumour lesion polygons, level-0 (x, y) pixels.
        tissue: the tissue outline, level-0 (x, y) pixels.
    """

    path: Path
    mpp: float
    width_px: int
    height_px: int
    lesions: list[Any] = field(default_factory=list)
    tissue: Any = None

    def lesions_geojson(self, class_name: str = "Tumor") -> dict[str, Any]:
        """The lesions as a QuPath GeoJSON FeatureCollection of annotations."""
        from qupath_rkd.qupath.geojson import make_feature

        features = [
            make_feature(
                polygon,
                object_type="annotation",
                class_name=class_name,
                color=(200, 0, 0),
                name=f"lesion {index + 1}",
            )
            for index, polygon in enumerate(self.lesions)
        ]
        return {"type": "FeatureCollection", "features": features}

    def lesions_camelyon16(self) -> dict[str, Any]:
        """The lesions in the Camelyon16 JSON layout (as NCRF converted the official XML).

        ``positive`` holds every outline, ``negative`` every hole (non-tumour island), in this
        slide's level-0 px (``self.mpp`` µm/px, not Camelyon16's 0.243: ``qupath-rkd evaluate``
        takes the µm/px from the prediction's heatmap metadata or ``--slide-mpp``).
        """
        positive: list[dict[str, Any]] = []
        negative: list[dict[str, Any]] = []
        for polygon in self.lesions:
            for part in getattr(polygon, "geoms", [polygon]):
                positive.append(
                    {
                        "name": f"_{len(positive)}",
                        "vertices": [[round(x, 2), round(y, 2)] for x, y in part.exterior.coords],
                    }
                )
                for hole in part.interiors:
                    negative.append(
                        {
                            "name": f"_{len(negative)}",
                            "vertices": [[round(x, 2), round(y, 2)] for x, y in hole.coords],
                        }
                    )
        return {"positive": positive, "negative": negative}


def _load_patches(folder: Path, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Real patches from a folder -> (n, 96, 96, 3) uint8 (other sizes are resized)."""
    from PIL import Image

    if not folder.is_dir():
        raise DataError(f"{folder}: patch folder not found", hint="pass a folder of PCam patches")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"{folder}: no image patches found", hint="pass a folder of .jpg/.png patches"
        )
    if limit is not None and len(files) > limit:
        files = [files[i] for i in sorted(rng.choice(len(files), size=limit, replace=False))]
    patches = np.empty((len(files), PCAM_PATCH_PX, PCAM_PATCH_PX, 3), dtype=np.uint8)
    for index, path in enumerate(files):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (PCAM_PATCH_PX, PCAM_PATCH_PX):
                rgb = rgb.resize((PCAM_PATCH_PX, PCAM_PATCH_PX), Image.Resampling.LANCZOS)
            patches[index] = np.asarray(rgb)
    return patches


def irregular_polygon(
    centre_xy: tuple[float, float],
    radius: float,
    rng: np.random.Generator,
    *,
    roughness: float = 0.18,
    vertices: int = 72,
) -> Any:
    """A smooth irregular (star-shaped) shapely Polygon around ``centre_xy``.

    The radius varies with angle as ``radius * (1 + Σ_k a_k sin(kθ + φ_k))`` for k = 2..5.
    """
    from shapely.geometry import Polygon

    theta = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += (
            rng.uniform(-roughness, roughness)
            / (k - 1)
            * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
        )
    r = radius * np.clip(r, 0.5, 1.6)
    xs = centre_xy[0] + r * np.cos(theta)
    ys = centre_xy[1] + r * np.sin(theta)
    return Polygon(np.stack([xs, ys], axis=1))


def _rasterise(polygons: Sequence[Any], x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Boolean (height, width) mask of pixels whose centre is inside any polygon.

    Pixel (r, c) of the strip is level-0 pixel (x0 + c, y0 + r) with centre (x0+c+0.5, y0+r+0.5).
    The polygons should not overlap. Parts are drawn largest outline first, so a polygon lying
    in another's hole (a tumour island inside a non-tumour island) is not erased by that hole.
    """
    from PIL import Image, ImageDraw
    from shapely.geometry import Polygon

    image = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(image)
    strip = _box(x0, y0, width, height)
    parts = [
        part
        for polygon in polygons
        if not polygon.is_empty and polygon.intersects(strip)
        for part in getattr(polygon, "geoms", [polygon])
    ]
    parts.sort(key=lambda part: -Polygon(part.exterior).area)
    for part in parts:
        # PIL fills pixel (c, r) when its centre-ish lies inside; shift by -0.5 for centres
        ring = [(x - x0 - 0.5, y - y0 - 0.5) for x, y in part.exterior.coords]
        draw.polygon(ring, fill=1)
        for hole in part.interiors:
            draw.polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in hole.coords], fill=0)
    return np.asarray(image, dtype=bool)


def _box(x0: int, y0: int, width: int, height: int) -> Any:
    from shapely.geometry import box

    return box(x0, y0, x0 + width, y0 + height)


class _Mosaic:
    """Deterministic assignment of a random patch (and orientation) to every 96 px grid cell."""

    def __init__(self, patches: np.ndarray, rows: int, cols: int, rng: np.random.Generator) -> None:
        self.patches = patches
        self.index = rng.integers(0, len(patches), size=(rows, cols))
        self.orientation = rng.integers(0, 8, size=(rows, cols))

    def render(self, y0: int, height: int, width: int) -> np.ndarray:
        """Rows [y0, y0 + height) of the mosaic, all columns: (height, width, 3) uint8."""
        p = self.patches.shape[1]
        out = np.empty((height, width, 3), dtype=np.uint8)
        for row in range(y0 // p, (y0 + height - 1) // p + 1):
            ry0 = max(row * p, y0)
            ry1 = min((row + 1) * p, y0 + height)
            for col in range((width - 1) // p + 1):
                patch = self.patches[self.index[row, col]]
                k = int(self.orientation[row, col])
                patch = np.rot90(patch, k % 4)
                if k >= 4:
                    patch = patch[:, ::-1]
                cx1 = min((col + 1) * p, width)
                out[ry0 - y0 : ry1 - y0, col * p : cx1] = patch[
                    ry0 - row * p : ry1 - row * p, : cx1 - col * p
                ]
        return out


def _place_lesions(
    tissue: Any,
    specs: Sequence[LesionSpec] | None,
    n_lesions: int,
    diameters_um: Sequence[float],
    mpp: float,
    rng: np.random.Generator,
) -> list[Any]:
    from shapely.geometry import Point

    lesions: list[Any] = []
    if specs is not None:
        for spec in specs:
            radius_px = spec.diameter_um / mpp / 2.0
            lesions.append(irregular_polygon(spec.centre_xy_px, radius_px, rng))
        return lesions
    for index in range(n_lesions):
        diameter_um = float(diameters_um[index % len(diameters_um)])
        radius_px = diameter_um / mpp / 2.0
        inner = tissue.buffer(-radius_px * 1.3)
        if inner.is_empty:
            raise DataError(
                f"a lesion of {diameter_um:g} µm does not fit in the tissue",
                hint="make the slide larger",
            )
        for _ in range(200):
            minx, miny, maxx, maxy = inner.bounds
            cx, cy = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            candidate = irregular_polygon((cx, cy), radius_px, rng)
            if inner.contains(Point(cx, cy)) and all(
                candidate.distance(o) > radius_px * 0.5 for o in lesions
            ):
                lesions.append(candidate)
                break
        else:
            raise DataError(
                f"could not place {n_lesions} lesions without overlap",
                hint="use fewer or smaller lesions",
            )
    return lesions


def _resize_patches(patches: np.ndarray, cell_px: int) -> np.ndarray:
    """Resize (n, p, p, 3) patches to (n, cell_px, cell_px, 3) with a Lanczos filter."""
    from PIL import Image

    out = np.empty((len(patches), cell_px, cell_px, 3), dtype=np.uint8)
    for index, patch in enumerate(patches):
        resized = Image.fromarray(patch).resize((cell_px, cell_px), Image.Resampling.LANCZOS)
        out[index] = np.asarray(resized)
    return out


def _downsample2(image: np.ndarray) -> np.ndarray:
    """Box-filter downsample by 2 (antialiased): (h, w, 3) -> (ceil(h/2), ceil(w/2), 3)."""
    h, w = image.shape[:2]
    padded = image
    if h % 2 or w % 2:
        padded = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    acc = (
        padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, 3)
        .astype(np.uint16)
        .sum(axis=(1, 3))
    )
    return ((acc + 2) // 4).astype(np.uint8)


def _downsample_level(level: np.ndarray, path: Path) -> np.ndarray:
    """Halve a (h, w, 3) level into a new memory-mapped array, strip by strip (bounded memory)."""
    height, width = level.shape[:2]
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=((height + 1) // 2, (width + 1) // 2, 3)
    )
    for y0 in range(0, height, _STRIP_ROWS):
        out[y0 // 2 : (min(y0 + _STRIP_ROWS, height) + 1) // 2] = _downsample2(
            np.asarray(level[y0 : y0 + _STRIP_ROWS])
        )
    return out


def _tiles(level: np.ndarray) -> Iterator[np.ndarray]:
    t = _TIFF_TILE_PX
    height, width = level.shape[:2]
    for y in range(0, height, t):
        for x in range(0, width, t):
            tile = np.full((t, t, 3), 255, dtype=np.uint8)
            part = level[y : y + t, x : x + t]
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile


def build_semireal_slide(
    path: str | os.PathLike[str],
    *,
    normal_dir: str | os.PathLike[str],
    tumor_dir: str | os.PathLike[str],
    width_px: int,
    height_px: int,
    lesions: Sequence[LesionSpec] | None = None,
    n_lesions: int = 0,
    lesion_polygons: Sequence[Any] | None = None,
    tissue: Any | None = None,
    lesion_diameters_um: Sequence[float] = (1000.0,),
    tissue_fraction: float = 0.6,
    mpp: float = PCAM_MPP,
    seed: int = 0,
    max_patches: int | None = 2000,
    compression: str = "jpeg",
    jpeg_quality: int = 90,
    min_level_px: int = 512,
) -> SemiRealSlide:
    """Write a semi-real pyramidal TIFF slide (a mosaic of real patches) and return its truth.

    Args:
        path: output ``.tif`` file (written atomically).
        normal_dir, tumor_dir: folders of real normal / tumour patches (e.g. PCam ``0`` / ``1``).
        width_px, height_px: level-0 size.
        lesions: explicit lesions (centre in level-0 px, diameter in µm); or ``n_lesions``
            placed at random inside the tissue with diameters cycling ``lesion_diameters_um``.
        lesion_polygons: or explicit lesion geometry (shapely polygons in level-0 px, holes
            allowed), e.g. real Camelyon16 lesions from :mod:`.camelyon_lesions`; they must lie
            inside the tissue.
        tissue: explicit tissue geometry (level-0 px, holes allowed: fat, tears); default an
            irregular blob covering about ``tissue_fraction`` of the slide.
        tissue_fraction: approximate share of the slide covered by tissue (0 gives a blank slide).
        mpp: level-0 µm/px written to the resolution tags. At PCam's own 0.972 (the default)
            the patches' pixels are stored unchanged; at another µm/px each patch is resized
            to keep its physical size (e.g. 384 px at 0.243 µm/px, blurrier than a real scan).
        seed: everything random comes from this seed.
        max_patches: at most this many patches are read from each folder.
        compression: ``"jpeg"`` (small files, lossy) or ``"zlib"`` / ``"none"`` (lossless: level 0
            equals the rendered pixels exactly; used by the tests).
        min_level_px: reduced levels are added (each half the previous) until the longer side is
            below this.

    Returns:
        The :class:`SemiRealSlide` with its lesion polygons (level-0 px).
    """
    import tifffile
    from shapely.geometry import Polygon

    out_path = Path(path)
    rng = np.random.default_rng(seed)
    normal = _load_patches(Path(normal_dir), max_patches, rng)
    tumour = (
        _load_patches(Path(tumor_dir), max_patches, rng)
        if (lesions or n_lesions or lesion_polygons)
        else normal[:1]
    )

    if tissue is None and tissue_fraction > 0:
        # an ellipse-like irregular blob whose area is about tissue_fraction of the slide
        radius = math.sqrt(tissue_fraction * width_px * height_px / math.pi)
        blob = irregular_polygon((width_px / 2, height_px / 2), radius, rng, roughness=0.12)
        # stretch to the slide's aspect ratio and clip to the slide
        from shapely import affinity

        aspect = width_px / height_px
        blob = affinity.scale(blob, xfact=math.sqrt(aspect), yfact=1 / math.sqrt(aspect))
        tissue = blob.intersection(
            Polygon([(0, 0), (width_px, 0), (width_px, height_px), (0, height_px)])
        )
    elif tissue is None:
        tissue = Polygon()
    if lesion_polygons is not None:
        lesion_polygons = [p for p in lesion_polygons if not p.is_empty]
        cover = tissue.buffer(1e-6)
        outside = [k for k, p in enumerate(lesion_polygons) if not cover.covers(p)]
        if outside:
            raise DataError(
                f"{len(outside)} lesion polygon(s) lie partly outside the tissue "
                f"(first: #{outside[0]}); their truth would not match the pixels",
                hint="make the tissue cover every lesion",
            )
    else:
        lesion_polygons = (
            _place_lesions(tissue, lesions, n_lesions, lesion_diameters_um, mpp, rng)
            if not tissue.is_empty
            else []
        )

    cell_px = max(8, round(PCAM_PATCH_PX * PCAM_MPP / mpp))
    if cell_px != PCAM_PATCH_PX:
        normal, tumour = _resize_patches(normal, cell_px), _resize_patches(tumour, cell_px)
    grid_rows, grid_cols = (height_px - 1) // cell_px + 1, (width_px - 1) // cell_px + 1
    normal_mosaic = _Mosaic(normal, grid_rows, grid_cols, rng)
    tumour_mosaic = _Mosaic(tumour, grid_rows, grid_cols, rng)
    noise_rng = np.random.default_rng(seed + 1)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".semireal-") as tmp:
        level0 = np.lib.format.open_memmap(
            os.path.join(tmp, "level0.npy"),
            mode="w+",
            dtype=np.uint8,
            shape=(height_px, width_px, 3),
        )
        for y0 in range(0, height_px, _STRIP_ROWS):
            rows = min(_STRIP_ROWS, height_px - y0)
            strip = np.empty((rows, width_px, 3), dtype=np.uint8)
            strip[:] = _GLASS_RGB
            strip = np.clip(
                strip.astype(np.int16)
                + noise_rng.integers(-3, 4, size=(rows, width_px, 1), dtype=np.int16),
                0,
                255,
            ).astype(np.uint8)
            in_tissue = _rasterise([tissue], 0, y0, width_px, rows)
            if in_tissue.any():
                strip[in_tissue] = normal_mosaic.render(y0, rows, width_px)[in_tissue]
                in_lesion = _rasterise(lesion_polygons, 0, y0, width_px, rows) & in_tissue
                if in_lesion.any():
                    strip[in_lesion] = tumour_mosaic.render(y0, rows, width_px)[in_lesion]
            level0[y0 : y0 + rows] = strip
        levels: list[np.ndarray] = [level0]
        while max(levels[-1].shape[:2]) >= 2 * min_level_px:
            levels.append(_downsample_level(levels[-1], Path(tmp) / f"level{len(levels)}.npy"))

        tmp_tif = Path(tmp) / "slide.tif"
        resolution = (1e4 / mpp, 1e4 / mpp)
        codec = None if compression == "none" else compression
        options: dict[str, Any] = {
            "tile": (_TIFF_TILE_PX, _TIFF_TILE_PX),
            "photometric": "rgb",
            "compression": codec,
            "resolution": resolution,
            "resolutionunit": "CENTIMETER",
            "dtype": np.uint8,
        }
        if codec == "jpeg":
            options["compressionargs"] = {"level": jpeg_quality}
        with tifffile.TiffWriter(tmp_tif, bigtiff=level0.nbytes > 2**31) as writer:
            for index, level in enumerate(levels):
                scale = 2**index
                writer.write(
                    _tiles(level),
                    shape=level.shape,
                    subfiletype=1 if index else 0,
                    description="qupath-rkd semi-real slide: a mosaic of real PatchCamelyon patches"
                    if index == 0
                    else None,
                    **{**options, "resolution": (resolution[0] / scale, resolution[1] / scale)},
                )
        del levels, level0
        os.replace(tmp_tif, out_path)
    logger.info(
        "wrote %s (%d×%d px, %d lesions)", out_path, width_px, height_px, len(lesion_polygons)
    )
    return SemiRealSlide(
        path=out_path,
        mpp=mpp,
        width_px=width_px,
        height_px=height_px,
        lesions=lesion_polygons,
        tissue=tissue,
    )
