"""The paquo backend: reads and writes the project's object hierarchies in-process.

paquo starts a JVM with QuPath's jars when ``paquo.projects`` (or any module that imports
``paquo.java``) is imported, and raises ``ValueError("no valid qupath installation found")``
without QuPath; so everything paquo is imported inside :func:`paquo_available` and the
methods below, never at module import. Written against paquo 0.7–0.9's API:
``QuPathProject(path, mode)``, ``image.entry_id``, ``image.hierarchy.to_geojson()``,
``hierarchy.detections`` / ``add_detection`` / ``add_tile``, ``hierarchy.no_autoflush()``,
``QuPathPathClass(name, color, parent)``, ``project.save()``.

Facts that bite: measurement values must be Python floats; in writable modes loading a
hierarchy opens the slide (slow); ``entry.save()`` silently skips images whose file is not
reachable (we refuse those entries first); names cannot contain ``:``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from qupath_rkd.errors import BackendUnavailableError, ProjectError
from qupath_rkd.qupath.backends.base import AnnotationSet, PredictionWrite
from qupath_rkd.qupath.geojson import is_tool_object, parse_features
from qupath_rkd.qupath.project import ImageEntry, Project

logger = logging.getLogger(__name__)

__all__ = ["PaquoBackend", "paquo_available"]


def paquo_available() -> tuple[bool, str]:
    """Whether paquo can find a QuPath installation, without starting a JVM: the one probe, used
    by ``get_backend(kind="auto")`` and ``qupath-rkd doctor`` alike.

    Asks paquo's own finder with paquo's public settings (``paquo.settings``: the
    ``PAQUO_QUPATH_DIR`` environment variable, ``.paquo.toml``, the defaults). Returns
    ``(True, "found at <QuPath folder>")`` or ``(False, one-line reason and fix)``.
    """
    try:
        from paquo import settings
        from paquo.jpype_backend import find_qupath
    except Exception as exc:  # paquo missing or broken
        return False, f"paquo is not usable ({type(exc).__name__}: {exc}); pip install paquo"
    try:
        qupath_dir, *_ = find_qupath(
            qupath_dir=settings.qupath_dir or None,
            qupath_search_dirs=settings.qupath_search_dirs,
            qupath_search_dir_regex=settings.qupath_search_dir_regex,
            qupath_search_conda=settings.qupath_search_conda,
            qupath_prefer_conda=settings.qupath_prefer_conda,
            java_opts=settings.java_opts,
            jvm_path_override=settings.jvm_path_override or None,
        )
    except Exception as exc:
        return False, (
            f"paquo found no QuPath installation ({exc}); set PAQUO_QUPATH_DIR=/path/to/QuPath "
            "(or run `paquo get_qupath --install-path DIR 0.5.1`) to use it"
        )
    return True, f"found at {qupath_dir}"


def _path_class(class_name: str, color: Sequence[int] | None) -> Any:
    from paquo.classes import QuPathPathClass

    parts = [p.strip() for p in class_name.split(":") if p.strip()]
    parent = None
    for k, part in enumerate(parts):
        rgb = (
            (int(color[0]), int(color[1]), int(color[2]))
            if (color is not None and k == len(parts) - 1)
            else None
        )
        parent = QuPathPathClass(part, color=rgb, parent=parent)
    return parent


class PaquoBackend:
    """Reads annotations from and writes detections into the QuPath project through paquo."""

    kind = "paquo"

    def __init__(self, project: Project) -> None:
        ok, why = paquo_available()
        if not ok:
            raise BackendUnavailableError(why, hint="use --backend geojson")
        self.project = project

    def describe(self) -> str:
        return f"paquo (in-process QuPath) on {self.project.qpproj_path}"

    def images(self) -> list[ImageEntry]:
        return list(self.project.entries)

    def _image(self, qp: Any, entry: ImageEntry) -> Any:
        for image in qp.images:
            if str(image.entry_id) == entry.entry_id:
                return image
        raise ProjectError(
            f"{self.project.qpproj_path}: paquo sees no image with entry ID {entry.entry_id}",
            hint="reopen the project in QuPath and save it",
        )

    def read_annotations(self, entry: ImageEntry) -> AnnotationSet:
        """Annotations of ``entry`` from its saved hierarchy (``data.qpdata``), read-only."""
        from paquo.projects import QuPathProject

        with QuPathProject(self.project.qpproj_path, mode="r") as qp:
            image = self._image(qp, entry)
            features = image.hierarchy.to_geojson()
            metadata = {str(k): str(v) for k, v in dict(image.metadata).items()}
        canonical = json.dumps(features, sort_keys=True, separators=(",", ":")).encode("utf-8")
        shift = (float(entry.bounds_offset_px[0]), float(entry.bounds_offset_px[1]))
        source = f"{self.project.qpproj_path} entry {entry.entry_id}"
        objects = [
            o
            for o in parse_features(features, source=source, shift_px=shift)
            if not o.is_tool_object
        ]
        merged = dict(entry.metadata)
        merged.update(metadata)
        return AnnotationSet(
            entry_id=entry.entry_id,
            objects=objects,
            exported=True,
            source=None,
            sha256=hashlib.sha256(canonical).hexdigest(),
            repairs=[f"{source} feature {o.index}: {o.repair}" for o in objects if o.repair],
            metadata=merged,
        )

    def write_predictions(
        self, entry: ImageEntry, features: Sequence[Mapping[str, Any]]
    ) -> PredictionWrite:
        """Replace this tool's detections in the image's hierarchy and save the project.

        The previous ``data/<id>/data.qpdata`` is copied to ``data.qpdata.qupath-rkd.bak`` first.
        Refuses images whose file is not reachable (paquo would silently skip them).
        """
        import shapely.affinity
        from paquo.projects import QuPathProject
        from shapely.geometry import shape

        if entry.path is None or entry.path_source != "stored":
            raise ProjectError(
                f"image {entry.name!r}: paquo can only save images at their stored path "
                f"({entry.stored_path})",
                hint="run with --update-uris first, or use --backend geojson",
            )
        dx, dy = -float(entry.bounds_offset_px[0]), -float(entry.bounds_offset_px[1])
        with QuPathProject(self.project.qpproj_path, mode="r+") as qp:
            image = self._image(qp, entry)
            hierarchy = image.hierarchy
            with hierarchy.no_autoflush():
                old = [d for d in hierarchy.detections if is_tool_object("detection", d.name)]
                for d in old:
                    hierarchy.detections.discard(d)
                for feat in features:
                    props = feat.get("properties", {})
                    geom = shapely.affinity.translate(shape(feat["geometry"]), dx, dy)
                    cls = props.get("classification")
                    path_class = None
                    if cls:
                        name = cls.get("name") or ": ".join(cls.get("names", []))
                        path_class = _path_class(name, cls.get("color"))
                    ms = {str(k): float(v) for k, v in (props.get("measurements") or {}).items()}
                    add = (
                        hierarchy.add_tile
                        if props.get("objectType") == "tile"
                        else hierarchy.add_detection
                    )
                    obj = add(geom, path_class, ms)
                    if props.get("name"):
                        obj.name = str(props["name"]).replace(":", " ")
            backup = None
            data_file = entry.data_dir / "data.qpdata" if entry.data_dir else None
            if data_file is not None and data_file.is_file():
                backup = data_file.with_name("data.qpdata.qupath-rkd.bak")
                shutil.copy2(data_file, backup)
            image.save()
        return PredictionWrite(entry.entry_id, data_file, True, backup, len(features))
