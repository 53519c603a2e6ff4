"""Two backends, one interface (:class:`ProjectBackend`): the GeoJSON exchange folder and paquo.

``get_backend(project, kind)`` picks one: ``"geojson"`` (always available; what CI tests end to
end), ``"paquo"`` (needs a QuPath installation paquo can find; raises otherwise) or ``"auto"``
(paquo when it finds QuPath, else the exchange folder, with a one-line note saying why).
"""

from __future__ import annotations

import logging

from qupath_rkd.errors import ConfigError
from qupath_rkd.qupath.backends.base import (
    AnnotationSet,
    ExchangeLayout,
    PredictionWrite,
    ProjectBackend,
    read_manifest,
    replace_with_backup,
)
from qupath_rkd.qupath.backends.geojson_backend import GeojsonBackend
from qupath_rkd.qupath.project import Project

logger = logging.getLogger(__name__)

__all__ = [
    "BACKEND_KINDS",
    "AnnotationSet",
    "ExchangeLayout",
    "GeojsonBackend",
    "PredictionWrite",
    "ProjectBackend",
    "get_backend",
    "read_manifest",
    "replace_with_backup",
]

BACKEND_KINDS = ("auto", "paquo", "geojson")


def get_backend(project: Project, kind: str = "auto") -> tuple[ProjectBackend, str]:
    """The backend to use for ``project`` and a one-line note saying which and why.

    Raises:
        ConfigError: ``kind`` is not one of :data:`BACKEND_KINDS`.
        BackendUnavailableError: ``kind="paquo"`` and paquo cannot find QuPath.
    """
    if kind not in BACKEND_KINDS:
        raise ConfigError(
            f"unknown backend {kind!r}", hint=f"use one of: {', '.join(BACKEND_KINDS)}"
        )
    if kind == "geojson":
        backend = GeojsonBackend(project)
        return backend, f"backend: {backend.describe()}"
    from qupath_rkd.qupath.backends.paquo_backend import PaquoBackend, paquo_available

    if kind == "paquo":
        backend_p = PaquoBackend(project)
        return backend_p, f"backend: {backend_p.describe()}"
    ok, why = paquo_available()
    if ok:
        backend_p = PaquoBackend(project)
        return backend_p, f"backend: {backend_p.describe()}"
    backend = GeojsonBackend(project)
    return backend, f"backend: GeoJSON exchange folder {backend.layout.root} ({why})"
