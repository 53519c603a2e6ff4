"""How annotation classes and per-image flags become tile labels: the ``classes`` and ``labels``
sections of ``<project>/qupath-rkd/config.toml`` (see :mod:`qupath_rkd.sync.config`).

Class patterns are matched case-sensitively (QuPath class names are) with shell wildcards
(``Ignore*`` matches ``Ignore``, ``Ignore*`` and ``Ignore artefact``). A derived class
(``Tumor: Positive``) matches when its full name or its first part matches. When a class
matches several roles the first of ignore → tumour → normal → region wins.

Per-image flags live in the QuPath project entry's metadata (project pane › right click ›
Edit metadata…; strings): :data:`TUMOR_FREE_KEY` = ``true`` — all tissue of the slide is
normal; :data:`FULLY_ANNOTATED_KEY` = ``true`` — every tumour is outlined, so tissue outside
the tumour annotations is normal (as on Camelyon16's tumour slides). ``true``/``yes``/``1``
and ``false``/``no``/``0`` are accepted, any case.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from qupath_rkd.constants import (
    DEFAULT_MIN_TISSUE_FRACTION,
    MIN_TILE_PX,
    PCAM_MPP,
    PCAM_PATCH_PX,
    TOOL_TAG,
)
from qupath_rkd.errors import ConfigError

__all__ = [
    "FULLY_ANNOTATED_KEY",
    "ROLES",
    "TUMOR_FREE_KEY",
    "ClassMapping",
    "LabelConfig",
    "SlideFlags",
    "slide_flags",
]

#: Entry metadata key: the slide has no tumour (all its tissue is normal).
TUMOR_FREE_KEY: Final[str] = "qupath-rkd.tumor-free"
#: Entry metadata key: every tumour on the slide is outlined (the rest of the tissue is normal).
FULLY_ANNOTATED_KEY: Final[str] = "qupath-rkd.fully-annotated"

#: The roles a class can have.
ROLES: Final[tuple[str, ...]] = ("ignore", "tumor", "normal", "region")

_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off", ""}


def _str_tuple(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(
        f"[classes] {key} must be a list of class names, got {value!r}",
        hint=f'e.g. {key} = ["Tumor"] in qupath-rkd/config.toml',
    )


@dataclass(frozen=True)
class ClassMapping:
    """Which annotation classes mean tumour, normal, ignore and region (the ``classes`` section).

    Attributes:
        tumor: classes whose annotations outline tumour (default ``Tumor``).
        normal: classes whose annotations outline normal tissue (default ``Normal``).
        ignore: classes whose tiles are never used (default ``Ignore*``).
        region: classes that restrict where to predict (default ``Region*``); when a slide has
            such annotations, tiles labelled normal by a slide flag also come only from them.
    """

    tumor: tuple[str, ...] = ("Tumor",)
    normal: tuple[str, ...] = ("Normal",)
    ignore: tuple[str, ...] = ("Ignore*",)
    region: tuple[str, ...] = ("Region*",)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> ClassMapping:
        """From the ``classes`` section (a plain dict); missing keys keep their defaults.

        Raises:
            ConfigError: an unknown key or a value that is not a list of names.
        """
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"[classes] unknown key(s) {', '.join(unknown)}",
                hint=f"known keys: {', '.join(sorted(known))}",
            )
        return cls(**{k: _str_tuple(v, k) for k, v in section.items()})

    def to_dict(self) -> dict[str, list[str]]:
        """Plain-JSON form (for hashes and reports)."""
        return {k: list(v) for k, v in asdict(self).items()}

    def role(self, class_name: str | None) -> str | None:
        """``"ignore"``, ``"tumor"``, ``"normal"``, ``"region"`` or ``None`` (unused class).

        A class of qupath-rkd's own (its name starts with ``qupath-rkd``, e.g. the
        suggestions' ``qupath-rkd: annotate next``) has no role whatever the patterns say, so
        such an object is never a label, even when it comes back as an annotation.
        """
        if not class_name or class_name.startswith(TOOL_TAG):
            return None
        names = [class_name]
        first = class_name.split(":")[0].strip()
        if first != class_name:
            names.append(first)
        for role in ROLES:
            patterns: tuple[str, ...] = getattr(self, role)
            if any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns):
                return role
        return None


@dataclass(frozen=True)
class LabelConfig:
    """How tiles are cut and labelled (the ``labels`` section).

    A tile's *overlap* with a role is the fraction of its area inside that role's annotations
    (level-0 geometry; tumour minus normal islands drawn inside it). Rules, in order:

    1. overlap with ignore > ``ignore_max_overlap`` → ignore;
    2. tumour overlap ≥ ``tumor_min_overlap`` → tumour;
    3. tumour overlap > ``normal_max_tumor_overlap`` → ignore (ambiguous border tile);
    4. normal overlap ≥ ``normal_min_overlap`` → normal;
    5. slide flagged tumour-free or fully annotated → normal;
    6. otherwise unlabelled (not used).

    Attributes:
        tile_px: tile side in pixels at ``mpp``.
        mpp: µm/px at which tiles are read (the model's input resolution).
        stride_px: grid step in pixels at ``mpp`` (``None``, ``"auto"`` in the config file:
            ``tile_px``).
        tumor_min_overlap, normal_max_tumor_overlap, normal_min_overlap,
        ignore_max_overlap: the fractions above, in [0, 1].
        min_tissue_fraction: tiles with less tissue (tissue mask) are not used.
        max_tiles_per_class: at most this many tiles of each class in the set (seeded sample).
        seed: seed of that sample.
    """

    tile_px: int = PCAM_PATCH_PX
    mpp: float = PCAM_MPP
    stride_px: int | None = None
    tumor_min_overlap: float = 0.5
    normal_max_tumor_overlap: float = 0.0
    normal_min_overlap: float = 0.5
    ignore_max_overlap: float = 0.0
    min_tissue_fraction: float = DEFAULT_MIN_TISSUE_FRACTION
    max_tiles_per_class: int | None = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "tumor_min_overlap",
            "normal_max_tumor_overlap",
            "normal_min_overlap",
            "ignore_max_overlap",
            "min_tissue_fraction",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(
                    f"[labels] {name} = {value!r} is not a fraction in [0, 1]",
                    hint=f"set {name} between 0 and 1 in qupath-rkd/config.toml",
                )
        if self.tumor_min_overlap <= self.normal_max_tumor_overlap:
            raise ConfigError(
                f"[labels] tumor_min_overlap ({self.tumor_min_overlap}) must be greater than "
                f"normal_max_tumor_overlap ({self.normal_max_tumor_overlap})",
                hint="otherwise a tile could be both tumour and normal",
            )
        if not isinstance(self.tile_px, int) or self.tile_px < MIN_TILE_PX:
            raise ConfigError(
                f"[labels] tile_px = {self.tile_px!r} must be an integer ≥ {MIN_TILE_PX}"
            )
        if self.stride_px is not None and (
            not isinstance(self.stride_px, int) or self.stride_px < 1
        ):
            raise ConfigError(f"[labels] stride_px = {self.stride_px!r} must be a positive integer")
        if not isinstance(self.mpp, (int, float)) or not self.mpp > 0:
            raise ConfigError(f"[labels] mpp = {self.mpp!r} must be a positive number")
        if self.max_tiles_per_class is not None and (
            not isinstance(self.max_tiles_per_class, int) or self.max_tiles_per_class < 1
        ):
            raise ConfigError(
                f"[labels] max_tiles_per_class = {self.max_tiles_per_class!r} must be ≥ 1"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> LabelConfig:
        """From the ``labels`` section (a plain dict); missing keys keep their defaults.

        Raises:
            ConfigError: an unknown key or an out-of-range value.
        """
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"[labels] unknown key(s) {', '.join(unknown)}",
                hint=f"known keys: {', '.join(sorted(known))}",
            )
        if section.get("stride_px") == "auto":  # sync's config spelling of "same as tile_px"
            section["stride_px"] = None
        if "mpp" in section and isinstance(section["mpp"], int):
            section["mpp"] = float(section["mpp"])
        return cls(**section)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for hashes and reports)."""
        return asdict(self)


@dataclass(frozen=True)
class SlideFlags:
    """Per-image flags read from the entry metadata."""

    tumor_free: bool = False
    fully_annotated: bool = False


def _flag(metadata: Mapping[str, str], key: str, where: str) -> bool:
    raw = metadata.get(key)
    if raw is None:
        return False
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"{where}: metadata {key} = {raw!r} is neither true nor false",
        hint=f"set {key} to true or false in QuPath's project pane (Edit metadata)",
    )


def slide_flags(metadata: Mapping[str, str] | None, *, where: str = "image") -> SlideFlags:
    """The tumour-free / fully-annotated flags of an image from its entry metadata.

    Raises:
        ConfigError: a flag holds something other than true/false (names the image).
    """
    metadata = metadata or {}
    return SlideFlags(
        tumor_free=_flag(metadata, TUMOR_FREE_KEY, where),
        fully_annotated=_flag(metadata, FULLY_ANNOTATED_KEY, where),
    )
