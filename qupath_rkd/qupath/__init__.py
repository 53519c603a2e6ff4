"""The QuPath bridge: project reader, QuPath GeoJSON, backends (GeoJSON exchange | paquo).

Geometry is in level-0 ``(x, y)`` pixels of the image as QuPath shows it. Nothing here starts a
JVM or imports paquo (the paquo backend imports it when chosen).
"""

from __future__ import annotations

from qupath_rkd.qupath.backends import AnnotationSet, ProjectBackend, get_backend
from qupath_rkd.qupath.geojson import (
    QupathObject,
    make_feature,
    qupath_import_problems,
    read_geojson,
    write_geojson,
)
from qupath_rkd.qupath.project import ImageEntry, Project, open_project, update_uris

__all__ = [
    "AnnotationSet",
    "ImageEntry",
    "Project",
    "ProjectBackend",
    "QupathObject",
    "get_backend",
    "make_feature",
    "open_project",
    "qupath_import_problems",
    "read_geojson",
    "update_uris",
    "write_geojson",
]
