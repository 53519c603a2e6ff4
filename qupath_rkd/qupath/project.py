"""Read a QuPath project (``project.qpproj``, QuPath 0.2–0.6) without QuPath.

``project.qpproj`` is JSON: ``version``, ``uri`` (where the project file was when QuPath last
saved it), and ``images``: entries with ``entryID``, ``imageName``, ``randomizedName``,
``metadata`` (string → string, editable in QuPath's project pane) and ``serverBuilder``
(``builderType`` ``"uri"`` with ``providerClassName``, ``uri``, ``args`` and, since 0.3-ish,
``metadata`` holding width, height, pyramid levels and ``pixelCalibration``; wrapper builders
such as ``rotated`` or ``pyramidize`` nest another ``builder``). ``data/<entryID>/server.json``
repeats the builder and metadata and is the fallback for sizes and µm/px.

Image paths of a moved project are resolved in this order (see :func:`open_project`):
the stored URI → the same place relative to the project's previous location (the project's
stored ``uri``) → ``slide_root`` (by file name, searched recursively) → unresolved; then
:meth:`Project.check_slides` raises one error listing every missing file.
``project.qpproj`` is never written, except by :func:`update_uris` when the user asks
(``--update-uris``).

Coordinates: sizes are level-0 pixels of the image as QuPath shows it (QuPath's frame).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote, unquote, urlparse

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import (
    MissingSlidesError,
    ProjectError,
    ProjectFormatError,
    ProjectNotFoundError,
)
from qupath_rkd.io_utils import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "FRAME_CHANGING_BUILDERS",
    "PROJECT_FILE",
    "ImageEntry",
    "Project",
    "UriChange",
    "file_uri",
    "open_project",
    "reconcile_with_slide",
    "update_uris",
    "uri_to_path",
]

PROJECT_FILE = "project.qpproj"

#: Server builders whose pixel coordinates differ from the underlying file's: geometry from
#: such an entry cannot be mapped onto the slide file without QuPath.
FRAME_CHANGING_BUILDERS: frozenset[str] = frozenset({"rotated", "affine", "cropped", "sparse"})

_WINDOWS_DRIVE = re.compile(r"^/?([A-Za-z]):[/\\]")


@dataclass(frozen=True)
class ImageEntry:
    """One image of a QuPath project.

    Attributes:
        entry_id: QuPath's ``entryID`` as a string (names ``data/<id>/`` and the exchange files).
        name: ``imageName`` as shown in QuPath.
        uri: the stored URI of the image file (the first one for composite builders).
        uris: every URI the server builder refers to.
        path: the image file found on this machine, or ``None`` (see ``path_source``).
        path_source: how ``path`` was found: ``"stored"``, ``"relative"`` (same place relative
            to the project's previous location), ``"slide_root"``, or ``None`` when missing.
        stored_path: the file path the stored URI names (for messages), or ``None``.
        builder_type: ``serverBuilder.builderType`` (``"uri"``, ``"rotated"``, ...).
        provider: ``providerClassName`` (OpenSlide, Bio-Formats, ...), or ``None``.
        args: provider arguments (Bio-Formats has ``--series N``).
        width_px, height_px: level-0 size in QuPath's frame, or ``None`` if not recorded.
        mpp: level-0 µm/px (mean of pixel width and height), ``None`` if uncalibrated.
        metadata: the entry's metadata map (string → string).
        data_dir: ``<project>/data/<entryID>``.
        bounds_offset_px: ``(dx, dy)`` added to this entry's QuPath coordinates to get the
            slide layer's coordinates (:mod:`qupath_rkd.slides`, which crops OpenSlide bounds
            as QuPath's OpenSlide server does). ``(0, 0)`` unless :func:`reconcile_with_slide`
            found that QuPath shows the slide uncropped (e.g. through Bio-Formats).
        randomized_name: QuPath's ``randomizedName`` (a UUID), if any.
    """

    entry_id: str
    name: str
    uri: str | None
    uris: tuple[str, ...] = ()
    path: Path | None = None
    path_source: str | None = None
    stored_path: str | None = None
    builder_type: str = "uri"
    provider: str | None = None
    args: tuple[str, ...] = ()
    width_px: int | None = None
    height_px: int | None = None
    mpp: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None
    bounds_offset_px: tuple[int, int] = (0, 0)
    randomized_name: str | None = None

    @property
    def is_openslide(self) -> bool:
        """True when QuPath opens this image with its OpenSlide server."""
        return bool(self.provider) and "openslide" in str(self.provider).lower()

    @property
    def is_bioformats(self) -> bool:
        """True when QuPath opens this image with Bio-Formats."""
        return bool(self.provider) and "bioformats" in str(self.provider).lower()

    @property
    def changes_frame(self) -> bool:
        """True when QuPath shows the image rotated/cropped/transformed (unsupported)."""
        return self.builder_type in FRAME_CHANGING_BUILDERS

    @property
    def found(self) -> bool:
        """True when the image file was found on this machine."""
        return self.path is not None


@dataclass(frozen=True)
class UriChange:
    """A stored image URI that :func:`update_uris` rewrites (or would rewrite)."""

    entry_id: str
    name: str
    old_uri: str
    new_uri: str


@dataclass
class Project:
    """A QuPath project read from disk (nothing is written by reading).

    Attributes:
        path: the project folder.
        qpproj_path: ``<path>/project.qpproj``.
        version: the QuPath version that wrote it (``"0.5.1"``), or ``None``.
        stored_uri: where the project file was when QuPath saved it (its ``uri``), or ``None``.
        entries: the images, in the project's order.
        slide_root: the folder searched for images not found elsewhere, or ``None``.
        raw: the parsed ``project.qpproj``.
    """

    path: Path
    qpproj_path: Path
    version: str | None
    stored_uri: str | None
    entries: list[ImageEntry]
    slide_root: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def exchange_dir(self) -> Path:
        """``<project>/qupath-rkd``: the folder qupath-rkd owns."""
        return self.path / PROJECT_SUBDIR

    @property
    def moved(self) -> bool:
        """True when the project file is no longer where QuPath last saved it."""
        prev = uri_to_path(self.stored_uri) if self.stored_uri else None
        return prev is not None and str(prev) != str(self.qpproj_path)

    def entry(self, entry_id: str | int) -> ImageEntry:
        """The entry with this ``entryID``; raises :class:`ProjectError` if there is none."""
        key = str(entry_id)
        for e in self.entries:
            if e.entry_id == key:
                return e
        raise ProjectError(
            f"{self.qpproj_path}: no image with entry ID {key}",
            hint=f"known IDs: {', '.join(e.entry_id for e in self.entries) or 'none'}",
        )

    def missing_slides(self) -> list[ImageEntry]:
        """Entries whose image file was not found."""
        return [e for e in self.entries if e.path is None]

    def check_slides(self, entries: Iterable[ImageEntry] | None = None) -> None:
        """Raise :class:`MissingSlidesError` listing every missing image file (one line)."""
        chosen = list(entries) if entries is not None else self.entries
        missing = [e for e in chosen if e.path is None]
        if not missing:
            return
        listed = "; ".join(f"{e.name} ({e.stored_path or e.uri or 'no URI'})" for e in missing)
        hint = (
            "pass --slide-root DIR (the folder holding the slides; searched recursively)"
            if self.slide_root is None
            else f"none of these is under --slide-root {self.slide_root}; check the folder"
        )
        raise MissingSlidesError(
            f"{self.qpproj_path}: {len(missing)} of {len(chosen)} image file(s) not found: "
            f"{listed}",
            hint=hint,
            missing=[(e.name, e.stored_path or e.uri or "") for e in missing],
        )


# --- URIs ---------------------------------------------------------------------------------
def uri_to_path(uri: str | None) -> PurePath | None:
    """The file path a QuPath ``file:`` URI names, or ``None`` for other schemes.

    Percent-encoding is decoded (``%20``, UTF-8 non-ASCII). Windows URIs
    (``file:/D:/slides/a.svs``) give a :class:`PureWindowsPath`; others a POSIX path.
    """
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme.lower() != "file":
        if parsed.scheme == "" and uri.startswith("/"):
            return PurePosixPath(uri)
        if len(parsed.scheme) == 1:  # "D:\\slides\\a.svs" parsed as scheme "d"
            return PureWindowsPath(uri)
        return None
    raw = unquote(parsed.path)
    if parsed.netloc and parsed.netloc.lower() != "localhost":
        return PureWindowsPath(f"//{parsed.netloc}{raw}")  # UNC share
    if _WINDOWS_DRIVE.match(raw):
        return PureWindowsPath(raw.lstrip("/"))
    return PurePosixPath(raw)


def file_uri(path: Path) -> str:
    """A ``file:`` URI as QuPath (Java's ``File.toURI``) writes it: ``file:/a/b%20c.svs``."""
    posix = Path(path).absolute().as_posix()
    if not posix.startswith("/"):
        posix = "/" + posix  # Windows drive
    return "file:" + quote(posix, safe="/:()!$&'*+,;=@~-._")


def _relative_parts(base_dir: PurePath, target: PurePath) -> list[str] | None:
    """``target`` relative to ``base_dir`` as path parts (with ``..``), or ``None``."""
    if type(base_dir) is not type(target):
        return None
    if isinstance(base_dir, PureWindowsPath):
        if base_dir.drive.lower() != target.drive.lower():
            return None
        a = [p.lower() for p in base_dir.parts]
        b_orig = list(target.parts)
        b = [p.lower() for p in b_orig]
    else:
        a = list(base_dir.parts)
        b_orig = list(target.parts)
        b = b_orig
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    if common == 0:
        return None
    return [".."] * (len(a) - common) + b_orig[common:]


def _name_key(name: str) -> str:
    """A file name compared case- and Unicode-form-insensitively (macOS writes NFD names)."""
    return unicodedata.normalize("NFC", name).casefold()


def _existing_file(path: Path) -> Path | None:
    """``path`` if it is a file, else the same path in the other Unicode normal form."""
    if path.is_file():
        return path
    for form in ("NFC", "NFD"):
        other = Path(unicodedata.normalize(form, str(path)))
        if other != path and other.is_file():
            return other
    return None


class _SlideRootIndex:
    """File name → paths under a slide root, built once on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, list[Path]] | None = None

    def find(self, name: str) -> Path | None:
        direct = _existing_file(self.root / name)
        if direct is not None:
            return direct
        if self._index is None:
            self._index = {}
            for dirpath, _dirs, files in os.walk(self.root):
                for f in files:
                    self._index.setdefault(_name_key(f), []).append(Path(dirpath) / f)
        hits = sorted(self._index.get(_name_key(name), []))
        if len(hits) > 1:
            logger.warning(
                "%d files named %s under %s; using %s", len(hits), name, self.root, hits[0]
            )
        return hits[0] if hits else None


def _resolve(
    stored: PurePath | None,
    previous_dir: PurePath | None,
    project_dir: Path,
    index: _SlideRootIndex | None,
) -> tuple[Path | None, str | None]:
    """Find an image file: stored path → relative to the previous location → slide root."""
    if stored is None:
        return None, None
    native = isinstance(stored, PureWindowsPath) == (os.name == "nt")
    if native:
        found = _existing_file(Path(stored))
        if found is not None:
            return found, "stored"
    if previous_dir is not None:
        rel = _relative_parts(previous_dir, stored)
        if rel is not None:
            candidate = _existing_file(Path(os.path.normpath(project_dir.joinpath(*rel))))
            if candidate is not None:
                return candidate, "relative"
    if index is not None:
        hit = index.find(stored.name)
        if hit is not None:
            return hit, "slide_root"
    return None, None


# --- parsing ------------------------------------------------------------------------------
def _collect_uris(builder: Any) -> list[str]:
    """Every ``uri`` in a (possibly nested) server builder, in order, searching every value
    recursively as QuPath does (wrappers nest ``builder``, ``builders``, ``regions``...)."""
    out: list[str] = []
    if isinstance(builder, Mapping):
        uri = builder.get("uri")
        if isinstance(uri, str):
            out.append(uri)
        for key, value in builder.items():
            if key != "uri" and isinstance(value, (Mapping, list)):
                out.extend(_collect_uris(value))
    elif isinstance(builder, list):
        for item in builder:
            out.extend(_collect_uris(item))
    return out


def _innermost(builder: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``uri`` builder inside wrappers (for provider and args)."""
    cur: Any = builder
    for _ in range(16):
        if not isinstance(cur, Mapping) or cur.get("builderType", "uri") == "uri":
            break
        nxt = cur.get("builder")
        if nxt is None and isinstance(cur.get("builders"), list) and cur["builders"]:
            nxt = cur["builders"][0]
        if nxt is None:
            break
        cur = nxt
    return cur if isinstance(cur, Mapping) else {}


_UNIT_TO_UM = {
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "mm": 1000.0,
    "nm": 0.001,
}


def _mpp_from(metadata: Mapping[str, Any] | None) -> float | None:
    """µm/px from a QuPath ``pixelCalibration`` (``None`` when in pixels or absent)."""
    if not isinstance(metadata, Mapping):
        return None
    cal = metadata.get("pixelCalibration")
    if not isinstance(cal, Mapping):
        return None
    values = []
    for key in ("pixelWidth", "pixelHeight"):
        item = cal.get(key)
        if not isinstance(item, Mapping):
            return None
        unit = str(item.get("unit", "")).strip()
        scale = _UNIT_TO_UM.get(unit)
        raw = item.get("value")
        if raw is None:
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None
        if scale is None or not value > 0:
            return None
        values.append(value * scale)
    return sum(values) / 2.0


def _size_from(metadata: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    if not isinstance(metadata, Mapping):
        return None, None
    try:
        return int(metadata["width"]), int(metadata["height"])
    except (KeyError, TypeError, ValueError):
        return None, None


def _read_server_json(data_dir: Path) -> Mapping[str, Any] | None:
    path = data_dir / "server.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s is unreadable (%s); ignoring it", path, exc)
        return None
    return data if isinstance(data, Mapping) else None


def _load_qpproj(qpproj: Path) -> dict[str, Any]:
    backup = qpproj.with_name(qpproj.name + ".backup")
    restore = (
        f"restore it from {backup.name} (QuPath's backup) or from your own copy"
        if backup.is_file()
        else "restore it from a backup copy"
    )
    try:
        text = qpproj.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ProjectFormatError(f"{qpproj}: not a text file", hint=restore) from None
    except PermissionError:
        raise ProjectError(
            f"{qpproj}: permission denied", hint="make the project file readable"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProjectFormatError(
            f"{qpproj}: corrupt project file ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint=restore,
        ) from None
    except RecursionError:
        raise ProjectFormatError(
            f"{qpproj}: corrupt project file (JSON nested too deeply)", hint=restore
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images", []), list):
        raise ProjectFormatError(
            f"{qpproj}: not a QuPath project file (no 'images' list)", hint=restore
        )
    return data


def _parse_entry(
    raw: Any,
    i: int,
    project_dir: Path,
    qpproj: Path,
    previous_dir: PurePath | None,
    index: _SlideRootIndex | None,
) -> ImageEntry:
    if not isinstance(raw, Mapping):
        raise ProjectFormatError(
            f"{qpproj}: image {i} is not an object", hint="restore the project file from a backup"
        )
    entry_id = raw.get("entryID")
    if entry_id is None:  # QuPath 0.1 had no IDs; fall back to the position
        entry_id = i + 1
    # QuPath writes a whole number; anything else (a string, "../x", a float, a list) would
    # name other files than QuPath's, or files outside the project
    if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id < 0:
        plain = isinstance(entry_id, (str, int, float))
        shown = repr(entry_id)[:60] if plain else f"of type {type(entry_id).__name__}"
        raise ProjectFormatError(
            f"{qpproj}: image {i} ({raw.get('imageName')!r}) has entryID {shown}, "
            "not the whole number QuPath writes",
            hint="restore the project file from a backup, or remove and re-add the image in QuPath",
        )
    builder = raw.get("serverBuilder")
    if builder is None and isinstance(raw.get("path"), str):  # QuPath 0.1 form
        builder = {"builderType": "uri", "uri": raw["path"]}
    if not isinstance(builder, Mapping):
        raise ProjectFormatError(
            f"{qpproj}: image {i} ({raw.get('imageName')!r}) has no serverBuilder",
            hint="re-add the image in QuPath",
        )
    uris = _collect_uris(builder)
    inner = _innermost(builder)
    data_dir = project_dir / "data" / str(entry_id)
    meta = builder.get("metadata") or inner.get("metadata")
    width, height = _size_from(meta)
    mpp = _mpp_from(meta)
    if width is None or mpp is None:
        server = _read_server_json(data_dir)
        if server is not None:
            smeta = server.get("metadata") or (server.get("builder") or {}).get("metadata")
            if width is None:
                width, height = _size_from(smeta)
            if mpp is None:
                mpp = _mpp_from(smeta)
    stored = uri_to_path(uris[0]) if uris else None
    path, source = _resolve(stored, previous_dir, project_dir, index)
    name = raw.get("imageName") or (stored.name if stored else f"image {entry_id}")
    metadata = raw.get("metadata") or {}
    return ImageEntry(
        entry_id=str(entry_id),
        name=str(name),
        uri=uris[0] if uris else None,
        uris=tuple(uris),
        path=path,
        path_source=source,
        stored_path=str(stored) if stored is not None else None,
        builder_type=str(builder.get("builderType", "uri")),
        provider=inner.get("providerClassName"),
        args=tuple(str(a) for a in (inner.get("args") or [])),
        width_px=width,
        height_px=height,
        mpp=mpp,
        metadata={str(k): str(v) for k, v in metadata.items()}
        if isinstance(metadata, Mapping)
        else {},
        data_dir=data_dir,
        randomized_name=raw.get("randomizedName"),
    )


def _project_file(path: Path) -> Path:
    if not path.exists():
        raise ProjectNotFoundError(
            f"{path}: no such file or folder",
            hint="give the folder that holds project.qpproj",
        )
    if path.is_dir():
        qpproj = path / PROJECT_FILE
        if not qpproj.is_file():
            others = sorted(p.name for p in path.glob("*.qpproj"))
            if len(others) == 1:
                return path / others[0]
            raise ProjectNotFoundError(
                f"{path}: not a QuPath project (no {PROJECT_FILE} in it)",
                hint="give the folder QuPath created with File > Project > Create project",
            )
        return qpproj
    if path.suffix != ".qpproj":
        raise ProjectNotFoundError(
            f"{path}: not a QuPath project (expected a folder or a .qpproj file)",
            hint="give the folder that holds project.qpproj",
        )
    return path


def open_project(
    path: str | os.PathLike[str], slide_root: str | os.PathLike[str] | None = None
) -> Project:
    """Read a QuPath 0.2–0.6 project; never writes anything.

    Args:
        path: the project folder or its ``project.qpproj``.
        slide_root: a folder searched (by file name, recursively) for images found neither at
            their stored path nor relative to the project's previous location.

    Missing image files do not raise here (their entries have ``path=None``); call
    :meth:`Project.check_slides` for the error listing all of them.

    Raises:
        ProjectNotFoundError: ``path`` is not a project.
        ProjectFormatError: ``project.qpproj`` is corrupt or not a QuPath project file.
        ProjectError: ``slide_root`` is not a folder.
    """
    qpproj = _project_file(Path(os.path.abspath(path)))
    project_dir = qpproj.parent
    data = _load_qpproj(qpproj)
    root: Path | None = None
    if slide_root is not None:
        root = Path(os.path.abspath(slide_root))
        if not root.is_dir():
            raise ProjectError(
                f"--slide-root {root}: not a folder", hint="give the folder holding the slides"
            )
    stored_uri = data.get("uri") if isinstance(data.get("uri"), str) else None
    prev_file = uri_to_path(stored_uri)
    previous_dir = prev_file.parent if prev_file is not None else None
    index = _SlideRootIndex(root) if root is not None else None
    entries = [
        _parse_entry(raw, i, project_dir, qpproj, previous_dir, index)
        for i, raw in enumerate(data.get("images", []))
    ]
    seen: set[str] = set()
    for e in entries:
        if e.entry_id in seen:
            raise ProjectFormatError(
                f"{qpproj}: entry ID {e.entry_id} appears twice",
                hint="restore the project file from a backup",
            )
        seen.add(e.entry_id)
    project = Project(
        path=project_dir,
        qpproj_path=qpproj,
        version=str(data["version"]) if data.get("version") is not None else None,
        stored_uri=stored_uri,
        entries=entries,
        slide_root=root,
        raw=data,
    )
    found = sum(e.found for e in entries)
    logger.info(
        "%s: QuPath %s project, %d images (%d found)", qpproj, project.version, len(entries), found
    )
    return project


# --- the bounds offset --------------------------------------------------------------------
def reconcile_with_slide(
    entry: ImageEntry,
    *,
    slide_width_px: int,
    slide_height_px: int,
    bounds_offset_px: tuple[int, int] = (0, 0),
    full_size_px: tuple[int, int] | None = None,
) -> ImageEntry:
    """Check an entry's size against the slide as :mod:`qupath_rkd.slides` opens it.

    Args:
        slide_width_px, slide_height_px: the slide's level-0 size in the slide layer's frame
            (OpenSlide's bounds rectangle when the file has ``openslide.bounds-*``).
        bounds_offset_px: the slide's OpenSlide bounds ``(x, y)`` (``Slide.bounds_offset_px``).
        full_size_px: OpenSlide's uncropped level-0 size, when it differs.

    Returns:
        ``entry`` with ``bounds_offset_px`` set: ``(0, 0)`` when QuPath and the slide layer
        agree (OpenSlide provider, both cropped), ``(-bx, -by)`` when QuPath shows the slide
        uncropped (its size equals ``full_size_px``), so that
        ``slide coordinate = QuPath coordinate + entry.bounds_offset_px``.

    Raises:
        ProjectError: the sizes match neither way (wrong file, or an unsupported transform).
    """
    if entry.changes_frame:
        raise ProjectError(
            f"image {entry.name!r} (entry {entry.entry_id}) is shown {entry.builder_type} in "
            "QuPath; its coordinates cannot be mapped onto the slide file",
            hint="add the original image to the project without rotation/cropping",
        )
    if entry.width_px is None or entry.height_px is None:
        return replace(entry, bounds_offset_px=(0, 0))
    q = (entry.width_px, entry.height_px)
    if q == (slide_width_px, slide_height_px):
        return replace(entry, bounds_offset_px=(0, 0))
    if full_size_px is not None and q == tuple(full_size_px):
        return replace(
            entry, bounds_offset_px=(-int(bounds_offset_px[0]), -int(bounds_offset_px[1]))
        )
    raise ProjectError(
        f"image {entry.name!r} (entry {entry.entry_id}) is {q[0]}x{q[1]} px in QuPath but "
        f"{entry.path} is {slide_width_px}x{slide_height_px} px",
        hint="the file found is not the one QuPath used; check --slide-root or the project's URIs",
    )


# --- --update-uris ------------------------------------------------------------------------
def _replace_uris(obj: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(obj, dict):
        return {
            k: (
                mapping.get(v, v)
                if k == "uri" and isinstance(v, str)
                else _replace_uris(v, mapping)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_replace_uris(v, mapping) for v in obj]
    return obj


def update_uris(project: Project, *, dry_run: bool = False) -> list[UriChange]:
    """Rewrite the stored URIs of images found elsewhere (``--update-uris``).

    Only entries whose file was found ``relative`` to the previous location or under the
    slide root change. ``project.qpproj`` is copied to ``project.qpproj.qupath-rkd.bak``
    first and then replaced atomically; nothing else in it changes. Call it only when the
    user asked for it, and never while QuPath has the project open (QuPath would overwrite it).

    Returns:
        The changes made (or that would be made with ``dry_run=True``).
    """
    changes = [
        UriChange(e.entry_id, e.name, e.uri, file_uri(e.path))
        for e in project.entries
        if e.path is not None and e.uri is not None and e.path_source in {"relative", "slide_root"}
    ]
    if dry_run or not changes:
        return changes
    data = _load_qpproj(project.qpproj_path)
    by_id = {c.entry_id: c for c in changes}
    for raw in data.get("images", []):
        change = by_id.get(str(raw.get("entryID")))
        if change is not None and "serverBuilder" in raw:
            raw["serverBuilder"] = _replace_uris(
                raw["serverBuilder"], {change.old_uri: change.new_uri}
            )
    backup = project.qpproj_path.with_name(project.qpproj_path.name + ".qupath-rkd.bak")
    try:
        shutil.copy2(project.qpproj_path, backup)
        atomic_write_text(project.qpproj_path, json.dumps(data, indent=2, ensure_ascii=False))
    except PermissionError:
        raise ProjectError(
            f"{project.qpproj_path}: cannot write (permission denied)",
            hint="make the project folder writable, or run without --update-uris",
        ) from None
    logger.info("%s: updated %d image URIs (backup %s)", project.qpproj_path, len(changes), backup)
    return changes


def entries_by_id(entries: Sequence[ImageEntry]) -> dict[str, ImageEntry]:
    """Entries keyed by ``entry_id``."""
    return {e.entry_id: e for e in entries}
