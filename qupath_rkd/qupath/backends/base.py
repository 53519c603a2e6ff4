"""The interface every QuPath backend implements, and the exchange folder's layout.

Exchange folder (``<project>/qupath-rkd/``, :data:`~qupath_rkd.constants.PROJECT_SUBDIR`)::

    annotations/<entryID>.geojson   written by groovy/export_annotations.groovy (QuPath's own
                                    GeoJSON of the image's annotations, FeatureCollection)
    annotations/manifest.json       written by the same script: {"format", "formatVersion",
                                    "qupathVersion", "images": [{"entryID", "imageName", "uri",
                                    "uris", "pixelWidthMicrons", "pixelHeightMicrons", "width",
                                    "height", "metadata", "annotations": "<entryID>.geojson",
                                    "nAnnotations", "exportedAt"}, ...]} (the Python writer of
                                    the same format: :class:`ManifestImage`,
                                    :func:`write_manifest`; the demo uses it)
    predictions/<entryID>.geojson   written by qupath-rkd (detections named "qupath-rkd …"),
                                    read by groovy/import_predictions.groovy
    predictions/<entryID>.geojson.bak   the previous predictions, kept as a backup

Coordinates in every file: level-0 ``(x, y)`` pixels of the image in QuPath's frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from qupath_rkd.errors import AnnotationError, ProjectError, ProjectReadOnlyError
from qupath_rkd.io_utils import atomic_write_bytes, atomic_write_json
from qupath_rkd.outputs import SLIDE_VALUES_SUFFIX, SUBMISSION_DIR
from qupath_rkd.qupath.geojson import QupathObject
from qupath_rkd.qupath.project import ImageEntry, Project

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_ENTRY_ID",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMAT_VERSION",
    "MANIFEST_IMAGES",
    "MANIFEST_METADATA",
    "AnnotationSet",
    "ExchangeLayout",
    "ManifestImage",
    "PredictionWrite",
    "ProjectBackend",
    "read_manifest",
    "replace_with_backup",
    "write_manifest",
]

#: ``format`` field of ``annotations/manifest.json`` (informative; readers key on ``images``).
MANIFEST_FORMAT = "qupath-rkd-annotations"
#: ``formatVersion`` field of ``annotations/manifest.json``.
MANIFEST_FORMAT_VERSION = 1
#: Key of the list of image records in ``manifest.json``.
MANIFEST_IMAGES = "images"
#: Keys of an image record that qupath-rkd reads (the export script writes more).
MANIFEST_ENTRY_ID = "entryID"
MANIFEST_METADATA = "metadata"


@dataclass(frozen=True)
class ExchangeLayout:
    """Paths inside ``<project>/qupath-rkd/`` (nothing is created by building one)."""

    root: Path

    @classmethod
    def for_project(cls, project: Project) -> ExchangeLayout:
        """The layout of ``project``'s exchange folder."""
        return cls(project.exchange_dir)

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def manifest_path(self) -> Path:
        """``annotations/manifest.json``, written by the Groovy export script."""
        return self.annotations_dir / "manifest.json"

    def annotations_file(self, entry_id: str) -> Path:
        return self.annotations_dir / f"{_plain_entry_id(entry_id)}.geojson"

    def predictions_file(self, entry_id: str) -> Path:
        return self.predictions_dir / f"{_plain_entry_id(entry_id)}.geojson"

    def slide_values_file(self, entry_id: str) -> Path:
        """The image's slide-level values for QuPath (``qupath_rkd.outputs``)."""
        return self.predictions_dir / f"{_plain_entry_id(entry_id)}{SLIDE_VALUES_SUFFIX}"

    def candidates_file(self, entry_id: str) -> Path:
        """The image's Camelyon16 candidate list (``prob,X,Y`` lines; what ``predict`` writes
        to ``camelyon16/<slide>.csv``), which ``evaluate`` scores."""
        return self.predictions_dir / SUBMISSION_DIR / f"{_plain_entry_id(entry_id)}.csv"

    def predictions_backup(self, entry_id: str) -> Path:
        return self.predictions_dir / f"{_plain_entry_id(entry_id)}.geojson.bak"


def _plain_entry_id(entry_id: str) -> str:
    """``entry_id`` when it is a whole number in ASCII digits (what QuPath writes, and what
    :mod:`qupath_rkd.qupath.project` accepts), so that an exchange file (and the temporary
    file written next to it) can only lie directly in its folder; else :class:`ProjectError`."""
    if not (isinstance(entry_id, str) and entry_id.isascii() and entry_id.isdigit()):
        raise ProjectError(
            f"entry ID {str(entry_id)[:60]!r} is not a whole number: it cannot name an "
            "exchange file",
            hint="entry IDs must be the whole numbers QuPath writes in project.qpproj",
        )
    return entry_id


@dataclass(frozen=True)
class AnnotationSet:
    """The annotations of one image as a backend read them.

    Attributes:
        entry_id: the image's entry ID.
        objects: annotation objects (level-0 px, QuPath frame shifted by the entry's
            ``bounds_offset_px`` into the slide layer's frame). Objects qupath-rkd created
            are left out.
        exported: ``False`` when the image has no annotation export yet (GeoJSON backend:
            no file and no manifest record), so "no annotations" and "never exported" differ.
        source: the file read (GeoJSON backend) or ``None``.
        sha256: hash of what was read (file bytes, or the canonical JSON for paquo); ``None``
            when nothing was exported. Use it to notice changed labels.
        repairs: one line per repaired geometry.
        metadata: the entry's metadata: ``project.qpproj``'s, plus keys only the export
            manifest has (the project file wins on conflicts).
    """

    entry_id: str
    objects: list[QupathObject]
    exported: bool
    source: Path | None = None
    sha256: str | None = None
    repairs: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionWrite:
    """What :meth:`ProjectBackend.write_predictions` did."""

    entry_id: str
    path: Path | None
    written: bool
    backup: Path | None = None
    n_features: int = 0


@runtime_checkable
class ProjectBackend(Protocol):
    """How qupath-rkd reads annotations from and writes predictions into a QuPath project."""

    #: ``"geojson"`` or ``"paquo"``.
    kind: str
    project: Project

    def images(self) -> list[ImageEntry]:
        """The project's images (entries), in the project's order."""
        ...

    def read_annotations(self, entry: ImageEntry) -> AnnotationSet:
        """The annotations of one image; raises ``AnnotationError`` on unusable input."""
        ...

    def write_predictions(
        self, entry: ImageEntry, features: Sequence[Mapping[str, Any]]
    ) -> PredictionWrite:
        """Replace this tool's predictions for one image with ``features`` (from
        :func:`~qupath_rkd.qupath.geojson.make_feature`, level-0 px in the slide layer's frame),
        atomically, keeping the previous ones as a backup until the new ones are complete.
        Identical content is not rewritten. Pathologists' objects are never touched."""
        ...

    def describe(self) -> str:
        """One line saying where annotations come from and where predictions go."""
        ...


def replace_with_backup(target: Path, data: bytes, backup: Path) -> tuple[bool, Path | None]:
    """Write ``data`` to ``target`` atomically, keeping the old content in ``backup``.

    Order: (1) if ``target`` already holds ``data``, nothing is written; (2) the old file is
    copied to ``backup`` atomically; (3) ``data`` replaces ``target`` atomically. A kill at any
    point leaves ``target`` either old or new, never partial, and the old content is in
    ``backup`` before the new one appears. Returns ``(written, backup or None)``.

    Raises:
        ProjectReadOnlyError: the folder cannot be written.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.read_bytes() if target.is_file() else None
        if old == data:
            return False, None
        kept: Path | None = None
        if old is not None:
            atomic_write_bytes(backup, old)
            kept = backup
        atomic_write_bytes(target, data)
        return True, kept
    except PermissionError as exc:
        raise ProjectReadOnlyError(
            f"{exc.filename or target}: permission denied",
            hint="make the project folder writable (qupath-rkd writes only into its qupath-rkd/ "
            "folder)",
        ) from None


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Records of ``annotations/manifest.json`` keyed by entry ID (``{}`` if absent).

    Raises:
        AnnotationError: the manifest exists but is not the JSON the export script writes.
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(
            f"{path}: not JSON ({exc})",
            hint="run groovy/export_annotations.groovy again (Run for project)",
        ) from None
    if not isinstance(data, Mapping) or not isinstance(data.get(MANIFEST_IMAGES), (Mapping, list)):
        raise AnnotationError(
            f"{path}: not a qupath-rkd manifest (no 'images')",
            hint="run groovy/export_annotations.groovy again (Run for project)",
        )
    images = data[MANIFEST_IMAGES]
    records = images.values() if isinstance(images, Mapping) else images
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        key = rec.get(MANIFEST_ENTRY_ID, rec.get("entry_id"))
        if key is not None:
            out[str(key)] = dict(rec)
    return out


@dataclass(frozen=True)
class ManifestImage:
    """One image record of ``annotations/manifest.json``, as groovy/export_annotations.groovy
    writes it (:meth:`to_json` gives its keys and order; ``tests/groovy`` compares them with
    the script's).

    Attributes:
        entry_id: the image's entry ID (whole number as text).
        image_name: the entry's name in QuPath.
        uris: the image server's URIs (``file:`` URIs); the first is the record's ``uri``.
        pixel_width_um / pixel_height_um: level-0 µm/px (x, y), ``None`` when uncalibrated.
        width_px / height_px: level-0 size in QuPath's frame.
        metadata: the entry's metadata (key -> text).
        n_annotations: annotation objects written to the image's GeoJSON file.
        exported_at: ISO-8601 UTC time of the export; ``None`` = now.
    """

    entry_id: str
    image_name: str
    uris: tuple[str, ...]
    pixel_width_um: float | None
    pixel_height_um: float | None
    width_px: int
    height_px: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    n_annotations: int = 0
    exported_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict with the Groovy script's keys."""
        exported_at = self.exported_at or datetime.now(timezone.utc).isoformat().replace(
            "+00:00", "Z"
        )
        return {
            MANIFEST_ENTRY_ID: str(self.entry_id),
            "imageName": self.image_name,
            "uri": self.uris[0] if self.uris else None,
            "uris": list(self.uris),
            "pixelWidthMicrons": self.pixel_width_um,
            "pixelHeightMicrons": self.pixel_height_um,
            "width": int(self.width_px),
            "height": int(self.height_px),
            MANIFEST_METADATA: {str(k): str(v) for k, v in self.metadata.items()},
            "annotations": ExchangeLayout(Path()).annotations_file(str(self.entry_id)).name,
            "nAnnotations": int(self.n_annotations),
            "exportedAt": exported_at,
        }


def _entry_id_order(entry_id: str) -> tuple[int, int, str]:
    """The Groovy script's ``compareIds``: whole numbers in numeric order, others after."""
    return (0, int(entry_id), "") if entry_id.isdigit() else (1, 0, entry_id)


def write_manifest(path: Path, images: Sequence[ManifestImage], *, qupath_version: str) -> Path:
    """Write ``annotations/manifest.json`` atomically in the format the Groovy export writes
    (records sorted by entry ID as the script sorts them); returns ``path``."""
    records = sorted(
        (image.to_json() for image in images), key=lambda r: _entry_id_order(r[MANIFEST_ENTRY_ID])
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "formatVersion": MANIFEST_FORMAT_VERSION,
        "qupathVersion": qupath_version,
        MANIFEST_IMAGES: records,
    }
    return atomic_write_json(path, manifest)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
