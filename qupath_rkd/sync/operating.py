"""Sync's operating point: the seed threshold from the project's tumour-free knowledge.

What the pathologist said is tumour-free: images whose entry metadata has
``qupath-rkd.tumor-free = true`` (:data:`qupath_rkd.labels.TUMOR_FREE_KEY`); on images marked
``qupath-rkd.fully-annotated = true``, all tissue away from the tumour annotations (cells whose
tile does not touch them); and every ``Normal``-class annotation (``[classes] normal``) on the
other images. Their heatmaps go to
:func:`qupath_rkd.lesions.operating_point.choose_operating_point`; with none, the model's
calibrated threshold is used (the fallback).

Normal outlines are not a sample of normal tissue: they are drawn where the model needed
teaching (a false lesion, a suggestion of ``qupath-rkd: annotate next``). Counted as their
share of a slide, one false lesion in a small hard region reads as many per slide, and the
threshold climbs above the true lesions (the active-learning benchmark, docs/benchmarks.md:
lesion FROC at sync's operating point 0.41-0.69 with them, 0.74-0.79 without). So when a
tumour-free or fully annotated slide is known, the rate is measured on those alone
(:func:`representative`); the normal outlines still train the model, and they set the rate only
where nothing else is known. ``inference.threshold`` set to a number bypasses all
this (method ``given``). Images whose tiles trained the model are scored out-of-sample, by
heads fitted without them (:mod:`qupath_rkd.sync.heldout`).

:func:`negative_sources` and :func:`operating_key` are pure bookkeeping; the key enters the
prediction-config hash, so changing what is tumour-free (a flag, a normal outline, a tumour-free
slide file) predicts every image again with the new threshold, and nothing else does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions.operating_point import NegativeHeatmap


@dataclass(frozen=True)
class NegativeSource:
    """Where an image is known to be tumour-free.

    Attributes:
        entry_id: QuPath entry ID.
        tumor_free: the whole slide is tumour-free.
        normal: the union of its normal annotations (level-0 px, shapely), ``None`` when the
            whole slide counts (``tumor_free``) or it is fully annotated.
        tumor: on a fully-annotated slide, the union of its tumour annotations (level-0 px;
            possibly empty): everything else is normal.
    """

    entry_id: str
    tumor_free: bool
    normal: Any = None
    tumor: Any = None

    @property
    def fully_annotated(self) -> bool:
        """Whether the slide is normal everywhere outside ``tumor``."""
        return self.tumor is not None


def negative_sources(
    entries: Sequence[Any], annotation_sets: Mapping[str, Any], classes: Mapping[str, Any]
) -> dict[str, NegativeSource]:
    """The images (by entry ID) with tumour-free knowledge: flagged slides and normal regions.

    Args:
        entries: the project's image entries (``entry_id``, ``metadata``, ``width_px`` ...).
        annotation_sets: entry ID → the annotations a backend read (``objects``, ``metadata``).
        classes: the ``[classes]`` section.
    """
    from qupath_rkd.labels.config import ClassMapping, slide_flags
    from qupath_rkd.labels.tiles import role_geometry

    mapping = ClassMapping.from_config(classes)
    out: dict[str, NegativeSource] = {}
    for entry in entries:
        aset = annotation_sets.get(entry.entry_id)
        if aset is None:
            continue
        metadata = dict(getattr(aset, "metadata", None) or entry.metadata or {})
        flags = slide_flags(metadata, where=f"image {entry.name!r}")
        if flags.tumor_free:
            out[entry.entry_id] = NegativeSource(entry.entry_id, True)
            continue
        roles = role_geometry(
            list(aset.objects), mapping, width_px=entry.width_px, height_px=entry.height_px
        )
        if flags.fully_annotated:
            out[entry.entry_id] = NegativeSource(entry.entry_id, False, None, roles.tumor)
        elif not roles.normal.is_empty and roles.normal.area > 0:
            out[entry.entry_id] = NegativeSource(entry.entry_id, False, roles.normal)
    return out


def operating_key(sources: Mapping[str, NegativeSource], fingerprints: Mapping[str, str]) -> str:
    """sha256 of what the operating point is chosen on: each source's entry, flag, normal
    geometry and slide fingerprint (``fingerprints``: entry ID → :func:`slide_fingerprint`).

    v2: the heatmaps are held out (:mod:`qupath_rkd.sync.heldout`), so a project synced
    before is predicted again once, at the held-out operating point. v3: the threshold may go
    below the calibrated one (:data:`~qupath_rkd.lesions.operating_point.
    MIN_SLIDES_BELOW_CALIBRATED`), so such a project is predicted again once more. v4: an image
    holding most of a class's labelled tiles is held out band by band
    (:class:`~qupath_rkd.sync.heldout.BandFolds`), not whole, and normal outlines beside a
    tumour-free or fully annotated slide no longer count (:func:`representative`)."""
    digest = hashlib.sha256(b"operating-point-v4")
    for entry_id in sorted(sources):
        src = sources[entry_id]
        normal = b"" if src.normal is None else src.normal.wkb
        tumor = b"-" if src.tumor is None else src.tumor.wkb
        digest.update(f"\n{entry_id}|{src.tumor_free}|{fingerprints.get(entry_id, '')}|".encode())
        digest.update(hashlib.sha256(normal).digest() + hashlib.sha256(tumor).digest())
    return digest.hexdigest()


def normal_mask(heatmap: Heatmap, normal: Any) -> np.ndarray:
    """``(rows, cols)`` bool: cells whose centre (level-0 px) lies in the ``normal`` geometry."""
    import shapely

    rows, cols = heatmap.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    x, y = heatmap.to_level0_xy(rr, cc)
    return np.asarray(shapely.contains_xy(normal, x, y), dtype=bool)


def away_from_tumor_mask(heatmap: Heatmap, tumor: Any) -> np.ndarray:
    """``(rows, cols)`` bool: cells whose tile (``tile_level0_px`` square around the cell
    centre) does not touch ``tumor`` (level-0 px); all cells when ``tumor`` is empty."""
    if tumor is None or tumor.is_empty:
        return np.ones(heatmap.shape, dtype=bool)
    # a tile touches the tumour when its centre is within half a tile (Chebyshev) of it
    grown = tumor.buffer(0.5 * heatmap.tile_level0_px, cap_style="square", join_style="mitre")
    return ~normal_mask(heatmap, grown)


def negative_heatmap(source: NegativeSource, heatmap: Heatmap, name: str) -> NegativeHeatmap:
    """The heatmap of a tumour-free slide, of a fully-annotated slide away from its tumour,
    or of a slide cut to its normal regions."""
    if source.tumor_free:
        mask = None
    elif source.fully_annotated:
        mask = away_from_tumor_mask(heatmap, source.tumor)
    else:
        mask = normal_mask(heatmap, source.normal)
    return NegativeHeatmap(heatmap, mask, name)


def representative(
    negatives: Sequence[tuple[NegativeSource, NegativeHeatmap]],
) -> tuple[list[NegativeHeatmap], list[str]]:
    """The negatives the false-lesion rate is measured on, and the names of those left out.

    The tumour-free and fully annotated slides when there is one (normal outlines are where
    the model needed teaching, not a sample of normal tissue: module doc); else every one.

    Args:
        negatives: ``(source, its heatmap)`` per image with tumour-free knowledge.
    """
    whole = [neg for src, neg in negatives if src.tumor_free or src.fully_annotated]
    if not whole:
        return [neg for _src, neg in negatives], []
    left = [neg.name for src, neg in negatives if not (src.tumor_free or src.fully_annotated)]
    return whole, left
