"""The GeoJSON exchange backend: files in ``<project>/qupath-rkd/`` (always available).

Annotations come from ``annotations/<entryID>.geojson`` written inside QuPath by
``groovy/export_annotations.groovy``; predictions go to ``predictions/<entryID>.geojson`` that
``groovy/import_predictions.groovy`` imports. See :mod:`qupath_rkd.qupath.backends.base`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qupath_rkd.errors import AnnotationError
from qupath_rkd.qupath.backends.base import (
    MANIFEST_METADATA,
    AnnotationSet,
    ExchangeLayout,
    PredictionWrite,
    read_manifest,
    replace_with_backup,
    sha256_bytes,
)
from qupath_rkd.qupath.geojson import features_to_json, parse_features
from qupath_rkd.qupath.project import ImageEntry, Project

logger = logging.getLogger(__name__)

__all__ = ["GeojsonBackend"]


class GeojsonBackend:
    """Reads and writes the exchange folder of one project (never ``project.qpproj``)."""

    kind = "geojson"

    def __init__(self, project: Project) -> None:
        self.project = project
        self.layout = ExchangeLayout.for_project(project)
        self._manifest: dict[str, dict[str, Any]] | None = None

    def describe(self) -> str:
        return (
            f"GeoJSON exchange folder {self.layout.root} (export annotations with "
            "groovy/export_annotations.groovy, import predictions with "
            "groovy/import_predictions.groovy)"
        )

    def manifest(self) -> dict[str, dict[str, Any]]:
        """The export manifest's records keyed by entry ID (read once)."""
        if self._manifest is None:
            self._manifest = read_manifest(self.layout.manifest_path)
        return self._manifest

    def images(self) -> list[ImageEntry]:
        return list(self.project.entries)

    def read_annotations(self, entry: ImageEntry) -> AnnotationSet:
        """Annotations of ``entry`` from ``annotations/<entryID>.geojson``.

        Geometry is shifted by ``entry.bounds_offset_px`` into the slide layer's frame.
        Detections/tiles that qupath-rkd created are left out. The file is never modified.

        ``exported`` is False when the file does not exist (never exported, or deleted after
        the export); the export script writes an empty collection for an image without
        annotations, so only that file means "no annotations".

        Raises:
            AnnotationError: the file is not a regular file (a folder, a device, a dangling
                link), cannot be read, is not JSON, not GeoJSON, or has a classification
                without colour (the message names the file and the feature).
        """
        path = self.layout.annotations_file(entry.entry_id)
        record = self.manifest().get(entry.entry_id)
        # project.qpproj is the live state (QuPath saves entry metadata there when it is
        # edited); the manifest only fills keys the project file lacks.
        metadata: dict[str, str] = {}
        if record is not None and isinstance(record.get(MANIFEST_METADATA), Mapping):
            metadata.update({str(k): str(v) for k, v in record[MANIFEST_METADATA].items()})
        metadata.update(entry.metadata)
        if not path.exists() and not path.is_symlink():
            # never exported, or its export was deleted (the manifest may still list it)
            return AnnotationSet(entry.entry_id, [], exported=False, metadata=metadata)
        data = _read_export(path)
        try:
            parsed = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise AnnotationError(
                f"{path}: not a text file ({exc.reason})",
                hint=_EXPORT_AGAIN,
            ) from None
        except json.JSONDecodeError as exc:
            raise AnnotationError(
                f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                hint=_EXPORT_AGAIN,
            ) from None
        except RecursionError:
            raise AnnotationError(
                f"{path}: JSON nested too deeply to be QuPath's GeoJSON", hint=_EXPORT_AGAIN
            ) from None
        shift = (float(entry.bounds_offset_px[0]), float(entry.bounds_offset_px[1]))
        objects = parse_features(parsed, source=str(path), shift_px=shift)
        kept = [o for o in objects if not o.is_tool_object]
        repairs = [f"{path} feature {o.index}: {o.repair}" for o in kept if o.repair]
        return AnnotationSet(
            entry_id=entry.entry_id,
            objects=kept,
            exported=True,
            source=path,
            sha256=sha256_bytes(data),
            repairs=repairs,
            metadata=metadata,
        )

    def write_predictions(
        self, entry: ImageEntry, features: Sequence[Mapping[str, Any]]
    ) -> PredictionWrite:
        """Write ``predictions/<entryID>.geojson`` atomically, previous one kept as ``.bak``.

        ``features`` are in the slide layer's frame; they are shifted back by the entry's
        ``bounds_offset_px`` into QuPath's frame. Identical content is not rewritten.
        """
        shift = (-float(entry.bounds_offset_px[0]), -float(entry.bounds_offset_px[1]))
        text = features_to_json(features, shift_px=shift)
        target = self.layout.predictions_file(entry.entry_id)
        written, backup = replace_with_backup(
            target, text.encode("utf-8"), self.layout.predictions_backup(entry.entry_id)
        )
        if written:
            logger.info("%s: wrote %d features", target, len(features))
        return PredictionWrite(entry.entry_id, target, written, backup, len(features))


_EXPORT_AGAIN = "run groovy/export_annotations.groovy again for this image"


def _read_export(path: Path) -> bytes:
    """The bytes of an annotation export that exists (or is a link); only a regular file is
    read (never a folder, a device such as ``/dev/zero`` or a named pipe).

    Raises:
        AnnotationError: not a regular file, or unreadable (one line naming it).
    """
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            what = f"a link to {os.readlink(path)}, which does not exist"
        elif path.is_dir():
            what = "a folder"
        else:
            what = "not a regular file"
        raise AnnotationError(f"{path}: the annotation export is {what}", hint=_EXPORT_AGAIN)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AnnotationError(
            f"{path}: the annotation export cannot be read ({exc.strerror or exc})",
            hint=_EXPORT_AGAIN,
        ) from None
