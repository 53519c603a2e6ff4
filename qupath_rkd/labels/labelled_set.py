"""Annotations × tile grids → the labelled set (hashed), with a per-slide summary.

The labelled set is torch-free: :attr:`LabelledSet.items` is a list of
``(slide_path, x_px, y_px, label)`` (level-0 top-left of the tile, QuPath's frame;
``LABEL_TUMOR`` / ``LABEL_NORMAL``) that :class:`qupath_rkd.slides.tiles_dataset.SlideTileDataset`
reads at :attr:`LabelledSet.tile_mpp` with tiles of :attr:`LabelledSet.tile_px`.
:attr:`LabelledSet.sha256` changes exactly when the tiles, their labels, the class mapping or
the label config change (it does not depend on where the project or the slides are), so sync
knows when to retrain.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from qupath_rkd.constants import LABEL_IGNORE, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import DataError, ProjectError, QupathRkdError, SlideError
from qupath_rkd.labels.config import ClassMapping, LabelConfig, SlideFlags, slide_flags
from qupath_rkd.labels.tiles import LABEL_UNLABELLED, RoleGeometry, label_tiles, role_geometry
from qupath_rkd.qupath.geojson import QupathObject

if TYPE_CHECKING:
    from qupath_rkd.qupath.backends import AnnotationSet
    from qupath_rkd.qupath.project import ImageEntry

logger = logging.getLogger(__name__)

__all__ = [
    "HASH_VERSION",
    "GridFn",
    "LabelledSet",
    "SlideInput",
    "SlideLabels",
    "TileItem",
    "assemble_labelled_set",
    "build_labelled_set",
    "label_slide",
    "slide_grid",
]

#: Bump when the hashed content's definition changes (forces retraining once).
HASH_VERSION = 1


class TileItem(NamedTuple):
    """One labelled tile: the slide file and the tile's level-0 top-left, QuPath's frame."""

    slide_path: str
    x_px: int
    y_px: int
    label: int


@dataclass(frozen=True)
class SlideInput:
    """What labelling needs from one image.

    Attributes:
        entry_id: QuPath entry ID (identifies the slide in the hash and the summary).
        name: image name (for messages and the summary).
        slide_path: the slide file, or ``None`` when it was not found.
        annotations: the image's objects (level-0 px in the slide layer's frame).
        metadata: the entry metadata (per-image flags).
        width_px, height_px: image size in QuPath (to check annotations lie on it), or ``None``.
        mpp: QuPath's µm/px for the image (used when the file has none), or ``None``.
        source: where the annotations came from (for messages).
    """

    entry_id: str
    name: str
    slide_path: Path | None
    annotations: Sequence[QupathObject] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    width_px: int | None = None
    height_px: int | None = None
    mpp: float | None = None
    source: str = "annotations"

    @classmethod
    def from_entry(cls, entry: ImageEntry, annotations: AnnotationSet) -> SlideInput:
        """From a :class:`~qupath_rkd.qupath.project.ImageEntry` and the
        :class:`~qupath_rkd.qupath.backends.AnnotationSet` a backend read for it."""
        source = annotations.source
        return cls(
            entry_id=str(entry.entry_id),
            name=str(entry.name),
            slide_path=entry.path,
            annotations=list(annotations.objects),
            metadata=dict(annotations.metadata or entry.metadata),
            width_px=entry.width_px,
            height_px=entry.height_px,
            mpp=entry.mpp,
            source=str(source) if source else f"image {entry.name!r}",
        )


@dataclass(frozen=True)
class SlideLabels:
    """Every candidate tile of one slide with its label.

    Attributes:
        xy_px: (N, 2) int64 level-0 top-left of each tile on tissue.
        labels: (N,) int8 (``LABEL_TUMOR``, ``LABEL_NORMAL``, ``LABEL_IGNORE``,
            ``LABEL_UNLABELLED``).
        tile_level0_px: tile side in level-0 px.
        flags: the slide's tumour-free / fully-annotated flags.
        n_annotations: annotations that label something (tumour, normal, ignore, region).
        notes: repairs and clippings, one line each.
    """

    entry_id: str
    name: str
    slide_path: Path | None
    xy_px: np.ndarray
    labels: np.ndarray
    tile_level0_px: float
    flags: SlideFlags
    n_annotations: int
    notes: tuple[str, ...] = ()

    def count(self, label: int) -> int:
        return int(np.count_nonzero(self.labels == label))


#: ``grid_fn(slide_input, config) -> (xy_px (N, 2) int64, tile_level0_px)``: the tissue tiles.
GridFn = Callable[[SlideInput, LabelConfig], tuple[np.ndarray, float]]


def slide_grid(inp: SlideInput, config: LabelConfig) -> tuple[np.ndarray, float]:
    """Tissue tiles of a slide with :func:`qupath_rkd.slides.tile_grid` (opens the slide).

    Raises:
        ProjectError: the slide was not found or its size differs from QuPath's.
        SlideError: the slide cannot be read or has no µm/px (and QuPath has none either).
    """
    from qupath_rkd.slides import open_slide, tile_grid

    if inp.slide_path is None:
        raise ProjectError(
            f"image {inp.name!r} (entry {inp.entry_id}): slide file not found",
            hint="pass --slide-root DIR (the folder holding the slides)",
        )
    with open_slide(inp.slide_path) as probe:
        file_mpp = probe.mpp_or_none
    has_mpp = file_mpp is not None
    if file_mpp is not None and inp.mpp is not None and abs(file_mpp / inp.mpp - 1.0) > 0.01:
        logger.warning(
            "image %r (entry %s): the file says %.4f µm/px, QuPath %.4f µm/px; using the file's",
            inp.name,
            inp.entry_id,
            file_mpp,
            inp.mpp,
        )
    with open_slide(inp.slide_path, mpp=None if has_mpp else inp.mpp) as slide:
        if (
            inp.width_px is not None
            and inp.height_px is not None
            and (slide.width_px, slide.height_px) != (inp.width_px, inp.height_px)
        ):
            raise ProjectError(
                f"image {inp.name!r} (entry {inp.entry_id}) is {inp.width_px}x{inp.height_px} px "
                f"in QuPath but {inp.slide_path} is {slide.width_px}x{slide.height_px} px",
                hint="the file found is not the one QuPath used; check --slide-root",
            )
        grid = tile_grid(
            slide,
            config.tile_px,
            config.mpp,
            stride_px=config.stride_px,
            min_tissue_fraction=config.min_tissue_fraction,
        )
        return np.asarray(grid.xy_px, dtype=np.int64), float(grid.tile_level0_px)


def _empty(inp: SlideInput, flags: SlideFlags, roles: RoleGeometry | None) -> SlideLabels:
    return SlideLabels(
        entry_id=inp.entry_id,
        name=inp.name,
        slide_path=inp.slide_path,
        xy_px=np.zeros((0, 2), dtype=np.int64),
        labels=np.zeros(0, dtype=np.int8),
        tile_level0_px=0.0,
        flags=flags,
        n_annotations=roles.n_used if roles else 0,
        notes=roles.notes if roles else (),
    )


def label_slide(
    inp: SlideInput,
    classes: ClassMapping,
    config: LabelConfig,
    *,
    grid_fn: GridFn | None = None,
) -> SlideLabels:
    """Label the tissue tiles of one slide. A slide with no labelling annotation and no flag
    is not opened (it contributes nothing).

    Raises:
        AnnotationError: an annotation lies outside the image.
        ConfigError: a metadata flag is neither true nor false.
        DataError: a slide marked tumour-free has tumour annotations.
        ProjectError, SlideError: the slide cannot be used (from ``grid_fn``).
    """
    where = f"image {inp.name!r} (entry {inp.entry_id})"
    flags = slide_flags(inp.metadata, where=where)
    roles = role_geometry(
        inp.annotations,
        classes,
        width_px=inp.width_px,
        height_px=inp.height_px,
        source=inp.source,
    )
    if flags.tumor_free and not roles.tumor.is_empty:
        raise DataError(
            f"{where} is marked tumour-free but has tumour annotations",
            hint="remove the qupath-rkd.tumor-free flag or the tumour annotations in QuPath",
        )
    nothing = roles.tumor.is_empty and roles.normal.is_empty
    if nothing and not (flags.tumor_free or flags.fully_annotated):
        return _empty(inp, flags, roles)
    xy, tile0 = (grid_fn or slide_grid)(inp, config)
    labelled = label_tiles(xy, tile0, roles, config, flags)
    logger.info(
        "%s: %d tumour, %d normal, %d ignored of %d tissue tiles",
        where,
        labelled.count(LABEL_TUMOR),
        labelled.count(LABEL_NORMAL),
        labelled.count(LABEL_IGNORE),
        len(xy),
    )
    return SlideLabels(
        entry_id=inp.entry_id,
        name=inp.name,
        slide_path=inp.slide_path,
        xy_px=np.asarray(xy, dtype=np.int64).reshape(-1, 2),
        labels=labelled.labels,
        tile_level0_px=float(tile0),
        flags=flags,
        n_annotations=roles.n_used,
        notes=roles.notes,
    )


def _id_key(entry_id: str) -> tuple[int, str]:
    return (int(entry_id), "") if entry_id.isdigit() else (1 << 62, entry_id)


@dataclass(frozen=True)
class LabelledSet:
    """The tiles training uses, where they came from, and a hash of it all.

    Attributes:
        items: used tiles ``(slide_path, x_px, y_px, label)``, tumour and normal only, sorted
            by slide (entry ID) then row then column; at most ``max_tiles_per_class`` of each
            class (seeded sample).
        slides: per-slide candidate tiles and labels (every slide given, in entry-ID order).
        tile_px, tile_mpp: how to read each tile (side in pixels at µm/px); ``tile_mpp`` is
            ``config.mpp`` (the ``[labels] mpp`` key).
        classes, config: what produced the labels.
        sha256: hex digest of the above (see module docstring).
        slide_mpp: QuPath's µm/px per slide path (for files without it).
    """

    items: list[TileItem]
    slides: list[SlideLabels]
    tile_px: int
    tile_mpp: float
    classes: ClassMapping
    config: LabelConfig
    sha256: str
    slide_mpp: dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """(len(items),) int64 labels."""
        return np.asarray([it.label for it in self.items], dtype=np.int64)

    def count(self, label: int) -> int:
        """Used tiles with ``label``."""
        return sum(1 for it in self.items if it.label == label)

    def summary_rows(self) -> list[dict[str, str | int]]:
        """One row per slide: candidate counts per class and the tiles used."""
        used: dict[str, dict[int, int]] = {}
        by_path = {str(s.slide_path): s.entry_id for s in self.slides}
        for it in self.items:
            eid = by_path.get(it.slide_path, "")
            used.setdefault(eid, {}).setdefault(it.label, 0)
            used[eid][it.label] += 1
        rows: list[dict[str, str | int]] = []
        for s in self.slides:
            flag = (
                "tumour-free"
                if s.flags.tumor_free
                else ("fully annotated" if s.flags.fully_annotated else "")
            )
            u = used.get(s.entry_id, {})
            rows.append(
                {
                    "entry_id": s.entry_id,
                    "image": s.name,
                    "flag": flag,
                    "annotations": s.n_annotations,
                    "tumor": s.count(LABEL_TUMOR),
                    "normal": s.count(LABEL_NORMAL),
                    "ignored": s.count(LABEL_IGNORE),
                    "unlabelled": s.count(LABEL_UNLABELLED),
                    "used_tumor": u.get(LABEL_TUMOR, 0),
                    "used_normal": u.get(LABEL_NORMAL, 0),
                }
            )
        return rows

    def summary(self) -> str:
        """A plain-text table of tiles per class per slide (printed before training)."""
        rows = self.summary_rows()
        head = ["ID", "image", "flag", "annot.", "tumour", "normal", "ignored", "used T", "used N"]
        keys = [
            "entry_id",
            "image",
            "flag",
            "annotations",
            "tumor",
            "normal",
            "ignored",
            "used_tumor",
            "used_normal",
        ]
        table = [head] + [[str(r[k]) for k in keys] for r in rows]
        table.append(
            [
                "",
                "total",
                "",
                str(sum(int(r["annotations"]) for r in rows)),
                *[str(sum(int(r[k]) for r in rows)) for k in keys[4:]],
            ]
        )
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines = []
        for n, row in enumerate(table):
            cells = [
                row[i].ljust(widths[i]) if i in (1, 2) else row[i].rjust(widths[i])
                for i in range(len(head))
            ]
            lines.append("  ".join(cells).rstrip())
            if n == 0 or n == len(table) - 2:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(
            f"tiles of {self.tile_px} px at {self.tile_mpp:g} µm/px; "
            f"labelled set {self.sha256[:12]}"
        )
        return "\n".join(lines)

    def check_trainable(self) -> None:
        """Raise :class:`DataError` unless there are normal tiles (tumour tiles optional:
        normal-only trains the one-class texture kNN, :mod:`qupath_rkd.model.local_knn`)."""
        n_tumor, n_normal = self.count(LABEL_TUMOR), self.count(LABEL_NORMAL)
        if n_tumor == 0 and n_normal == 0:
            raise DataError(
                "no tumour and no normal tiles: nothing to train on",
                hint="outline tumour with class Tumor and mark tumour-free slides "
                "(metadata qupath-rkd.tumor-free = true) or draw Normal annotations, then "
                "export the annotations again",
            )
        if n_normal == 0:
            raise DataError(
                f"only tumour tiles ({n_tumor}) and no normal tiles",
                hint="mark a slide tumour-free (metadata qupath-rkd.tumor-free = true), mark an "
                "annotated slide fully annotated (qupath-rkd.fully-annotated = true), or draw "
                "Normal annotations",
            )


def _sample(items: list[TileItem], label: int, limit: int | None, seed: int) -> list[TileItem]:
    chosen = [it for it in items if it.label == label]
    if limit is None or len(chosen) <= limit:
        return chosen
    rng = np.random.default_rng([seed, label + 10])
    keep = np.sort(rng.choice(len(chosen), size=limit, replace=False))
    return [chosen[i] for i in keep]


def _hash(
    slides: Sequence[SlideLabels],
    used: Sequence[TileItem],
    classes: ClassMapping,
    config: LabelConfig,
) -> str:
    h = hashlib.sha256()
    header = {
        "hash_version": HASH_VERSION,
        "classes": classes.to_dict(),
        "config": config.to_dict(),
    }
    h.update(json.dumps(header, sort_keys=True).encode("utf-8"))
    path_to_id = {str(s.slide_path): s.entry_id for s in slides}
    for s in slides:
        rows = [it for it in used if path_to_id.get(it.slide_path) == s.entry_id]
        arr = np.asarray([(it.x_px, it.y_px, it.label) for it in rows], dtype="<i8").reshape(-1, 3)
        h.update(f"\n{s.entry_id}\t{s.tile_level0_px!r}\t{len(arr)}\n".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def assemble_labelled_set(
    slides: Sequence[SlideLabels],
    classes: ClassMapping,
    config: LabelConfig,
    *,
    slide_mpp: Mapping[str, float] | None = None,
    require_trainable: bool = True,
) -> LabelledSet:
    """Combine per-slide labels into the labelled set (sample, sort, hash).

    Raises:
        DataError: with ``require_trainable``, no normal tiles (see
            :meth:`LabelledSet.check_trainable`); two slides share one file.
    """
    ordered = sorted(slides, key=lambda s: _id_key(s.entry_id))
    paths = [str(s.slide_path) for s in ordered if s.slide_path is not None and len(s.labels)]
    if len(paths) != len(set(paths)):
        dup = sorted({p for p in paths if paths.count(p) > 1})
        raise DataError(
            f"several project entries use the same slide file: {', '.join(dup)}",
            hint="remove the duplicate images from the QuPath project",
        )
    candidates: list[TileItem] = []
    for s in ordered:
        if s.slide_path is None:
            continue
        keep = (s.labels == LABEL_TUMOR) | (s.labels == LABEL_NORMAL)
        xy = s.xy_px[keep]
        lab = s.labels[keep]
        order = np.lexsort((xy[:, 0], xy[:, 1])) if len(xy) else np.zeros(0, dtype=np.int64)
        path = str(s.slide_path)
        candidates.extend(TileItem(path, int(xy[i, 0]), int(xy[i, 1]), int(lab[i])) for i in order)
    chosen = set(
        _sample(candidates, LABEL_TUMOR, config.max_tiles_per_class, config.seed)
        + _sample(candidates, LABEL_NORMAL, config.max_tiles_per_class, config.seed)
    )
    used = [it for it in candidates if it in chosen]
    labelled = LabelledSet(
        items=used,
        slides=list(ordered),
        tile_px=config.tile_px,
        tile_mpp=float(config.mpp),
        classes=classes,
        config=config,
        sha256=_hash(ordered, used, classes, config),
        slide_mpp=dict(slide_mpp or {}),
    )
    if require_trainable:
        labelled.check_trainable()
    return labelled


def build_labelled_set(
    inputs: Sequence[SlideInput],
    classes: ClassMapping,
    config: LabelConfig,
    *,
    grid_fn: GridFn | None = None,
    require_trainable: bool = True,
    failed: dict[str, QupathRkdError] | None = None,
) -> LabelledSet:
    """Label every slide and assemble the labelled set (see :func:`label_slide`).

    Args:
        failed: when given, a slide whose file cannot be used (missing, unreadable, not the
            size QuPath shows: ``ProjectError`` / ``SlideError``) is left out and its error
            stored here by entry ID, so the other slides go on. Bad annotations and flags
            still raise: they are the user's input to fix.
    """
    slides = []
    for inp in inputs:
        try:
            slides.append(label_slide(inp, classes, config, grid_fn=grid_fn))
        except (ProjectError, SlideError) as exc:
            if failed is None:
                raise
            logger.warning("image %r (entry %s) left out: %s", inp.name, inp.entry_id, exc)
            failed[inp.entry_id] = exc
    slide_mpp = {
        str(inp.slide_path): float(inp.mpp)
        for inp in inputs
        if inp.slide_path is not None and inp.mpp is not None
    }
    return assemble_labelled_set(
        slides, classes, config, slide_mpp=slide_mpp, require_trainable=require_trainable
    )
