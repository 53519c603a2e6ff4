"""Sync's operating point: the seed threshold from the project's tumour-free knowledge.

What the pathologist said is tumour-free: images whose entry metadata has
``qupath-rkd.tumor-free = true`` (:data:`qupath_rkd.labels.TUMOR_FREE_KEY`), and every
``Normal``-class annotation (``[classes] normal``) on the other images. Their heatmaps go to
:func:`qupath_rkd.lesions.operating_point.choose_operating_point`; with none, the model's
calibrated threshold is used (the fallback). ``inference.threshold`` set to a number bypasses all
this (method ``given``).

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
            whole slide counts (``tumor_free``) or it has none.
    """

    entry_id: str
    tumor_free: bool
    normal: Any = None


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
        if not roles.normal.is_empty and roles.normal.area > 0:
            out[entry.entry_id] = NegativeSource(entry.entry_id, False, roles.normal)
    return out


def operating_key(sources: Mapping[str, NegativeSource], fingerprints: Mapping[str, str]) -> str:
    """sha256 of what the operating point is chosen on: each source's entry, flag, normal
    geometry and slide fingerprint (``fingerprints``: entry ID → :func:`slide_fingerprint`)."""
    digest = hashlib.sha256(b"operating-point-v1")
    for entry_id in sorted(sources):
        src = sources[entry_id]
        geom = b"" if src.normal is None else src.normal.wkb
        digest.update(f"\n{entry_id}|{src.tumor_free}|{fingerprints.get(entry_id, '')}|".encode())
        digest.update(hashlib.sha256(geom).digest())
    return digest.hexdigest()


def normal_mask(heatmap: Heatmap, normal: Any) -> np.ndarray:
    """``(rows, cols)`` bool: cells whose centre (level-0 px) lies in the ``normal`` geometry."""
    import shapely

    rows, cols = heatmap.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    x, y = heatmap.to_level0_xy(rr, cc)
    return np.asarray(shapely.contains_xy(normal, x, y), dtype=bool)


def negative_heatmap(source: NegativeSource, heatmap: Heatmap, name: str) -> NegativeHeatmap:
    """The heatmap of a tumour-free slide, or of a slide cut to its normal regions."""
    mask = None if source.tumor_free else normal_mask(heatmap, source.normal)
    return NegativeHeatmap(heatmap, mask, name)
