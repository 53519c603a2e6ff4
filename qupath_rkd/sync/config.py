"""Layered configuration of ``qupath-rkd sync``.

Three layers, later ones win:

1. the packaged defaults (:data:`SCHEMA` below, one entry per key with its meaning);
2. the project's ``<project>/qupath-rkd/config.toml`` (only the keys a user wants to change);
3. command-line overrides (``--set section.key=value`` and the dedicated flags).

:func:`load_config` merges them into a :class:`SyncConfig` that remembers where each value came
from, so ``qupath-rkd config PROJECT`` can print what is in effect and why. Unknown sections or
keys and values of the wrong type are :class:`~qupath_rkd.errors.ConfigError` (a typo must not be
silently ignored). Values are plain TOML types: strings, integers, floats, booleans, lists of
strings and (``images.mpp``) a table of numbers; ``"auto"`` stands for "let the tool decide"
where a key allows it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from qupath_rkd.constants import (
    DEFAULT_ALPHA,
    DEFAULT_EXTENT_RATIO,
    DEFAULT_GAMMA,
    DEFAULT_INFERENCE_BATCH,
    DEFAULT_MIN_LESION_UM,
    DEFAULT_MIN_TISSUE_FRACTION,
    DEFAULT_SCORER,
    DEFAULT_SLIDE_SCORE,
    DEFAULT_SLIDE_TTA_VIEWS,
    DEFAULT_SMOOTH_SIGMA_UM,
    DEFAULT_SYNC_HEAD,
    DEFAULT_SYNC_RD_LR,
    DEFAULT_SYNC_RD_STEPS,
    DEFAULT_TARGET_FP_PER_SLIDE,
    DEFAULT_TEACHER,
    DEFAULT_TRAIN_BATCH,
    HEADS,
    MIN_TILE_PX,
    PCAM_MPP,
    PCAM_PATCH_PX,
    PROJECT_SUBDIR,
    SCORERS,
    SLIDE_SCORE_RULES,
    TEACHER_NAMES,
)
from qupath_rkd.errors import ConfigError
from qupath_rkd.io_utils import atomic_write_text
from qupath_rkd.suggest.config import DEFAULT_SIGNAL, SIGNALS

logger = logging.getLogger(__name__)

#: File name of the project's configuration inside ``<project>/qupath-rkd/``.
CONFIG_FILENAME = "config.toml"
#: Name of the source of a packaged default.
SOURCE_DEFAULT = "default"
#: Name of the source of a command-line override.
SOURCE_CLI = "command line"


@dataclass(frozen=True)
class Key:
    """One configuration key: its default, its type and what it means.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``list[str]``, ``float|auto``,
    ``int|auto``, ``choice`` (then ``choices`` lists the allowed strings) and
    ``dict[str,float]`` (a TOML table of numbers; ``minimum``/``maximum`` bound each number).
    """

    default: Any
    kind: str
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


#: Every key, by section. Sections group what invalidates what: ``classes`` and ``labels``
#: change the labelled set (its hash), ``training`` the model, ``inference`` the predictions.
SCHEMA: dict[str, dict[str, Key]] = {
    "classes": {
        "tumor": Key(["Tumor"], "list[str]", "annotation classes that mark tumour"),
        "normal": Key(["Normal"], "list[str]", "annotation classes that mark normal tissue"),
        "ignore": Key(["Ignore*"], "list[str]", "classes whose tiles are never used"),
        "region": Key(
            ["Region*"], "list[str]", "classes that restrict where to predict (if any are drawn)"
        ),
    },
    "labels": {
        "tile_px": Key(
            PCAM_PATCH_PX, "int", "side of a training tile in pixels", minimum=MIN_TILE_PX
        ),
        "mpp": Key(PCAM_MPP, "float", "µm/px at which tiles are read", minimum=0.05),
        "tumor_min_overlap": Key(
            0.5,
            "float",
            "a tile is tumour when at least this fraction lies in tumour",
            minimum=0.0,
            maximum=1.0,
        ),
        "normal_max_tumor_overlap": Key(
            0.0,
            "float",
            "a normal tile may touch tumour by at most this fraction",
            minimum=0.0,
            maximum=1.0,
        ),
        "normal_min_overlap": Key(
            0.5,
            "float",
            "a tile is normal when at least this fraction lies in normal regions",
            minimum=0.0,
            maximum=1.0,
        ),
        "ignore_max_overlap": Key(
            0.0,
            "float",
            "a tile overlapping ignore regions by more than this is not used",
            minimum=0.0,
            maximum=1.0,
        ),
        "stride_px": Key("auto", "int|auto", "grid step of training tiles (auto: tile_px)"),
        "min_tissue_fraction": Key(
            DEFAULT_MIN_TISSUE_FRACTION,
            "float",
            "tiles with less tissue are not used",
            minimum=0.0,
            maximum=1.0,
        ),
        "max_tiles_per_class": Key(
            2000, "int", "at most this many tiles of each class (seeded sample)", minimum=1
        ),
        "seed": Key(0, "int", "seed of the tile sample", minimum=0),
    },
    "training": {
        "scorer": Key(
            DEFAULT_SCORER,
            "choice",
            "head: supervised head on the teacher's features (measured best; see head); rd: the "
            "paper's reverse distillation",
            choices=SCORERS,
        ),
        "head": Key(
            DEFAULT_SYNC_HEAD,
            "choice",
            "head scorer: linear (measured best on whole slides), or ensemble (the linear logit "
            "averaged with a small perceptron's; better on patches); auto: the ensemble from 50 "
            "tumour tiles on unless cross-validation over the annotated regions scores it lower",
            choices=HEADS,
        ),
        "teacher": Key(
            DEFAULT_TEACHER,
            "choice",
            "frozen ImageNet teacher (lite1/lite2: head only)",
            choices=TEACHER_NAMES,
        ),
        "teacher_weights": Key(
            "", "str", "local file of teacher weights (torchvision teachers, offline use)"
        ),
        "input_px": Key(
            "auto",
            "int|auto",
            "side of the teacher's input in pixels; tiles are resized to it (auto: the "
            "teacher's own, 96 for efficientnet_lite0)",
            minimum=32,
        ),
        "steps": Key(DEFAULT_SYNC_RD_STEPS, "int", "rd: optimiser steps", minimum=1),
        "batch_size": Key(DEFAULT_TRAIN_BATCH, "int", "tiles per step", minimum=1),
        "lr": Key(DEFAULT_SYNC_RD_LR, "float", "rd: Adam learning rate", minimum=0.0),
        "alpha": Key(
            DEFAULT_ALPHA, "float", "focal-loss weight of normal tiles", minimum=0.0, maximum=1.0
        ),
        "gamma": Key(DEFAULT_GAMMA, "float", "focal-loss focusing parameter", minimum=0.0),
        "balance_batches": Key(
            True, "bool", "half tumour, half normal tiles in every batch (when both exist)"
        ),
        "valid_fraction": Key(
            0.2,
            "float",
            "rd: share of labelled tiles held out for model selection (the head holds out whole "
            "slides, or annotated regions, by cross-validation instead)",
            minimum=0.0,
            maximum=0.9,
        ),
        "seed": Key(0, "int", "seed of training", minimum=0),
    },
    "inference": {
        "tta_views": Key(
            DEFAULT_SLIDE_TTA_VIEWS,
            "int",
            "dihedral views a head model averages per tile (1, 2, 4, 8; 8 costs 8x the time)",
            minimum=1,
            maximum=8,
        ),
        "stride_px": Key(
            "auto",
            "int|auto",
            "tile stride in pixels (auto: half the tile size; the tile size: 4x faster)",
        ),
        "batch_size": Key(DEFAULT_INFERENCE_BATCH, "int", "tiles per forward pass", minimum=1),
        "threshold": Key(
            "auto",
            "float|auto",
            "lesion seed threshold (auto: from tumour-free images and Normal annotations, "
            "else the model's)",
            minimum=0.0,
            maximum=1.0,
        ),
        "min_lesion_um": Key(
            DEFAULT_MIN_LESION_UM,
            "float",
            "lesions with a shorter major axis are dropped (µm)",
            minimum=0.0,
        ),
        "smooth_um": Key(
            DEFAULT_SMOOTH_SIGMA_UM,
            "float",
            "Gaussian sigma (µm) of the heatmap smoothing before lesions (0: none)",
            minimum=0.0,
        ),
        "extent_ratio": Key(
            DEFAULT_EXTENT_RATIO,
            "float",
            "hysteresis: a lesion extends over cells >= this × the threshold (1: one threshold)",
            minimum=0.01,
            maximum=1.0,
        ),
        "target_fp_per_slide": Key(
            DEFAULT_TARGET_FP_PER_SLIDE,
            "float",
            "auto threshold: at most this many false lesions per tumour-free slide (tumour-free "
            "images and Normal annotations)",
            minimum=0.0,
        ),
        "slide_score": Key(
            DEFAULT_SLIDE_SCORE,
            "choice",
            "slide score rule",
            choices=SLIDE_SCORE_RULES,
        ),
        "heatmap_tiles": Key(True, "bool", "also write the heatmap as scored tile objects"),
    },
    "sync": {
        "backend": Key(
            "auto", "choice", "how to talk to QuPath", choices=("auto", "paquo", "geojson")
        ),
        "device": Key("auto", "str", "torch device: auto, cpu, cuda, cuda:1, mps"),
        "slide_root": Key("", "str", "folder searched for slides that moved"),
        "num_workers": Key(0, "int", "data-loading worker processes", minimum=0),
        "torch_threads": Key(
            0,
            "int",
            "torch threads while scoring slides (0 = the cores); the scores' last bits depend "
            "on it: 1 gives the bytes of a [cluster] run",
            minimum=0,
        ),
    },
    "cluster": {
        "scheduler": Key(
            "",
            "str",
            "predict on a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (slides at the same "
            "path on every worker; needs the 'cluster' extra)",
        ),
        "local_workers": Key(
            0, "int", "predict on a local Dask cluster of this many worker processes", minimum=0
        ),
        "connect_timeout_s": Key(
            10.0, "float", "seconds to wait for the scheduler", minimum=0.1, maximum=3600.0
        ),
    },
    "suggest": {
        "enabled": Key(
            True, "bool", "after predicting, suggest where to annotate next (in QuPath)"
        ),
        "per_slide": Key(3, "int", "at most this many suggested regions per slide", minimum=0),
        "per_project": Key(20, "int", "at most this many in the whole project", minimum=0),
        "region_um": Key(
            1000.0, "float", "side of a suggested region's square window (µm)", minimum=10.0
        ),
        "signal": Key(
            DEFAULT_SIGNAL,
            "choice",
            "how regions are ranked (mixed: uncertainty_diversity and top_probability picks in "
            "turn; uncertainty_diversity: near the threshold and unlike "
            "anything labelled; tumour_first: the most probable tumour until the labelled "
            "tumour forms 5 regions, then uncertainty_diversity; random and top_probability "
            "are baselines)",
            choices=SIGNALS,
        ),
        "seed": Key(0, "int", "seed of the random signal", minimum=0),
    },
    "images": {
        "mpp": Key(
            {},
            "dict[str,float]",
            "level-0 µm/px by QuPath image name, for slides whose file and QuPath record none "
            '(e.g. {"LN-01.svs" = 0.25}; 0.25 at 40x, 0.5 at 20x)',
            minimum=0.01,
            maximum=100.0,
        ),
    },
}

#: Sections whose values decide the model (their hash is stored with it). ``images`` is in
#: neither tuple: a µm/px override counts only for its own image (the runner folds it into the
#: training data key and into that image's prediction key), so setting one for an image to
#: predict does not retrain, and projects without overrides keep their hashes.
MODEL_SECTIONS: tuple[str, ...] = ("classes", "labels", "training")
#: Sections whose values decide the predictions made with a given model.
PREDICTION_SECTIONS: tuple[str, ...] = ("inference",)


@dataclass
class SyncConfig:
    """The configuration in effect: ``values[section][key]`` and where each came from.

    Attributes:
        values: section -> key -> value (plain TOML types, validated).
        sources: section -> key -> source (``"default"``, the config file's path, or
            ``"command line"``).
        project_file: the project's config file (may not exist).
    """

    values: dict[str, dict[str, Any]]
    sources: dict[str, dict[str, str]]
    project_file: Path | None = None
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def get(self, dotted: str) -> Any:
        """The value of ``"section.key"``."""
        section, key = _split_key(dotted)
        return self.values[section][key]

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section's values."""
        if name not in self.values:
            raise ConfigError(f"unknown configuration section {name!r}")
        return dict(self.values[name])

    def digest(self, sections: Iterable[str]) -> str:
        """sha256 (hex) of the canonical JSON of the given sections: same values, same hash."""
        payload = {name: self.values[name] for name in sorted(sections)}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def rows(self) -> list[tuple[str, Any, str]]:
        """``(section.key, value, source)`` for every key, in schema order."""
        out: list[tuple[str, Any, str]] = []
        for section, keys in SCHEMA.items():
            for key in keys:
                out.append(
                    (f"{section}.{key}", self.values[section][key], self.sources[section][key])
                )
        return out

    def to_toml(self, *, only_non_default: bool = False) -> str:
        """The configuration as TOML text (what a ``config.toml`` with these values holds)."""
        lines: list[str] = []
        for section, keys in SCHEMA.items():
            body = []
            for key, spec in keys.items():
                value = self.values[section][key]
                if only_non_default and value == spec.default:
                    continue
                body.append(f"# {spec.help}")
                body.append(f"{key} = {toml_value(value)}")
            if body:
                if lines:
                    lines.append("")
                lines.append(f"[{section}]")
                lines.extend(body)
        return "\n".join(lines) + "\n"


def config_path(project_dir: str | Path) -> Path:
    """``<project>/qupath-rkd/config.toml``."""
    return Path(project_dir) / PROJECT_SUBDIR / CONFIG_FILENAME


def defaults() -> SyncConfig:
    """The packaged defaults alone."""
    values = {
        s: {k: copy.deepcopy(spec.default) for k, spec in keys.items()}
        for s, keys in SCHEMA.items()
    }
    sources = {s: dict.fromkeys(keys, SOURCE_DEFAULT) for s, keys in SCHEMA.items()}
    return SyncConfig(values=values, sources=sources)


def load_config(
    project_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
) -> SyncConfig:
    """Merge defaults → ``<project>/qupath-rkd/config.toml`` → ``overrides``.

    Args:
        project_dir: the QuPath project folder (``None``: defaults and overrides only).
        overrides: ``{"section.key": value}``; string values are parsed as TOML values when
            they parse (so ``"50"`` is the integer 50) and kept as strings otherwise.
        config_file: read this file instead of the project's.

    Raises:
        ConfigError: the file is not valid TOML, or names an unknown key, or a value has the
            wrong type or is out of range.
    """
    config = defaults()
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
    elif project_dir is not None:
        path = config_path(project_dir)
    config.project_file = path
    if path is not None and path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}", hint="fix or delete the file"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        for section, table in data.items():
            if section not in SCHEMA:
                raise ConfigError(
                    f"{path}: unknown section [{section}]",
                    hint=f"known sections: {', '.join(SCHEMA)}",
                )
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {section} must be a table ([{section}])")
            for key, raw in table.items():
                _set(config, f"{section}.{key}", raw, str(path))
    for dotted, raw in (overrides or {}).items():
        value = parse_cli_value(raw) if isinstance(raw, str) else raw
        _set(config, dotted, value, SOURCE_CLI)
    _check_cluster(config)
    return config


def _check_cluster(config: SyncConfig) -> None:
    """``[cluster]``: a well-formed scheduler address, or local workers, not both (one-line
    :class:`ConfigError` naming where the values came from)."""
    from qupath_rkd.cluster.spec import cluster_spec

    section = config.sources["cluster"]
    given = sorted({section["scheduler"], section["local_workers"]} - {SOURCE_DEFAULT})
    cluster_spec(
        config.get("cluster.scheduler"),
        config.get("cluster.local_workers"),
        connect_timeout_s=float(config.get("cluster.connect_timeout_s")),
        where=f"cluster.scheduler / cluster.local_workers (from {', '.join(given) or 'defaults'})",
    )


def parse_cli_value(text: str) -> Any:
    """Parse ``text`` as a TOML value (``50``, ``0.5``, ``true``, ``["A", "B"]``, ``"x"``).

    Bare words that are not TOML (``cpu``, ``Tumor``) are kept as strings; a comma-separated
    bare list (``Tumor,Metastasis``) is split into a list of strings.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if "," in text:
            return [part.strip() for part in text.split(",") if part.strip()]
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["training.steps=50", ...]`` -> ``{"training.steps": "50", ...}`` (values unparsed)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def write_config(project_dir: str | Path, config: SyncConfig, *, only_non_default: bool) -> Path:
    """Write ``config`` to ``<project>/qupath-rkd/config.toml`` atomically; returns the path."""
    path = config_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# qupath-rkd configuration (see `qupath-rkd config PROJECT` for what is in effect)\n\n"
    )
    atomic_write_text(path, header + config.to_toml(only_non_default=only_non_default))
    return path


def toml_value(value: Any) -> str:
    """One value as TOML text (strings, ints, floats, bools and lists of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{value} cannot be written to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = ", ".join(
            f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()
        )
        return "{" + (f" {items} " if items else "") + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


# --- internals ----------------------------------------------------------------------------
def _split_key(dotted: str) -> tuple[str, str]:
    section, _, key = dotted.partition(".")
    if not key or section not in SCHEMA or key not in SCHEMA[section]:
        import difflib

        known = [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys]
        close = difflib.get_close_matches(dotted, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"unknown configuration key {dotted!r}",
            hint=hint + "`qupath-rkd config` lists every key",
        )
    return section, key


def _set(config: SyncConfig, dotted: str, raw: Any, source: str) -> None:
    section, key = _split_key(dotted)
    spec = SCHEMA[section][key]
    value = _validate(spec, raw, f"{dotted} (from {source})")
    config.values[section][key] = value
    config.sources[section][key] = source


def _validate(spec: Key, raw: Any, where: str) -> Any:
    checks: dict[str, Callable[[Any], Any]] = {
        "str": _as_str,
        "int": _as_int,
        "float": _as_float,
        "bool": _as_bool,
        "list[str]": _as_list_of_str,
        "choice": _as_str,
        "float|auto": lambda v: "auto" if v == "auto" else _as_float(v),
        "int|auto": lambda v: "auto" if v == "auto" else _as_int(v),
        "dict[str,float]": _as_dict_of_float,
    }
    try:
        value = checks[spec.kind](raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if spec.kind == "choice" and value not in spec.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
    numbers = list(value.items()) if isinstance(value, dict) else [("", value)]
    for name, number in numbers:
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            continue
        at = f"{where}[{name!r}]" if name else where
        if spec.minimum is not None and number < spec.minimum:
            raise ConfigError(f"{at}: {number} is below the minimum {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise ConfigError(f"{at}: {number} is above the maximum {spec.maximum}")
    return value


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number, got {v!r}")
    value = float(v)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {v!r}")
    return value


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


def _as_dict_of_float(v: Any) -> dict[str, float]:
    if not isinstance(v, dict):
        raise TypeError(f'expected a table such as {{"LN-01.svs" = 0.25}}, got {v!r}')
    return {str(k): _as_float(x) for k, x in v.items()}


def _as_list_of_str(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError(f"expected a list of strings, got {v!r}")
    return list(v)
