"""What the last ``sync`` did, and what is stale now.

``<project>/qupath-rkd/state.json`` records the model (its id, the labelled-set hash and the
hash of the configuration it was trained with) and, per image entry, what its predictions were
made from (model id, prediction-config hash, a fingerprint of the slide file and of the region
annotations) and the sha256 of the file that was written. A decision function compares that
record with the present and returns the reason something must be redone, or ``None``:

- the model is retrained when there is no model file, when it is not the recorded one, or when
  the labelled-set hash or the model configuration changed;
- an image is predicted again when its prediction file is missing or differs from what was
  written, or when the model, the prediction configuration, the slide file or its region
  annotations changed.

Everything here is pure bookkeeping: no torch, no slides opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import ProjectError
from qupath_rkd.io_utils import atomic_write_json

logger = logging.getLogger(__name__)

STATE_FILENAME = "state.json"
STATE_VERSION = 1
#: Bytes read from each end of a slide file for its fingerprint.
_FINGERPRINT_BYTES = 1 << 20


@dataclass
class ModelRecord:
    """The model the last sync trained or reused.

    Attributes:
        model_id: sha256 of the checkpoint file.
        dataset_hash: hash of the labelled set it was trained on.
        config_hash: hash of the configuration sections that decide the model.
        path: checkpoint path relative to ``<project>/qupath-rkd/``.
        warnings: the trainer's one-line warnings about this model (shown on every sync that
            uses it, and in ``report.json``); left out of ``state.json`` when there are none.
    """

    model_id: str
    dataset_hash: str
    config_hash: str
    path: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = vars(self).copy()
        if not out["warnings"]:
            del out["warnings"]  # so a state.json written before warnings existed stays equal
        return out


@dataclass
class PredictionRecord:
    """What one entry's predictions were made from, and the file that was written."""

    model_id: str
    config_hash: str
    slide_fingerprint: str
    region_hash: str
    output_sha256: str | None
    #: what the report shows: ``tumor_score``, ``lesions``, ``lesion_area_mm2``
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyncState:
    """The contents of ``state.json``."""

    model: ModelRecord | None = None
    predictions: dict[str, PredictionRecord] = field(default_factory=dict)
    #: the operating point in use (``OperatingPoint.as_dict()`` + ``"key"``: what it was chosen
    #: on, see :func:`qupath_rkd.sync.operating.operating_key`), ``None`` before the first one
    operating_point: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "model": None if self.model is None else self.model.to_json(),
            "predictions": {k: vars(v).copy() for k, v in sorted(self.predictions.items())},
        }
        if self.operating_point is not None:
            data["operating_point"] = dict(self.operating_point)
        return data

    @classmethod
    def from_json(cls, data: Any) -> SyncState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown state format")
        model = data.get("model")
        preds = data.get("predictions") or {}
        return cls(
            model=None if model is None else ModelRecord(**model),
            predictions={str(k): PredictionRecord(**v) for k, v in preds.items()},
            operating_point=data.get("operating_point") or None,
        )


def state_path(project_dir: str | Path) -> Path:
    """``<project>/qupath-rkd/state.json``."""
    return Path(project_dir) / PROJECT_SUBDIR / STATE_FILENAME


def load_state(project_dir: str | Path) -> SyncState:
    """Read ``state.json``; a missing or unreadable one is an empty state (everything stale).

    An unreadable state only costs time (the next sync redoes its work), so it is logged, not
    raised.
    """
    path = state_path(project_dir)
    try:
        return SyncState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return SyncState()
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable %s (%s): everything will be redone", path, exc)
        return SyncState()


def save_state(project_dir: str | Path, state: SyncState) -> None:
    """Write ``state.json`` atomically (sorted keys: same state, same bytes)."""
    path = state_path(project_dir)
    try:
        atomic_write_json(path, state.to_json())
    except OSError as exc:
        raise ProjectError(f"cannot write {path}: {exc.strerror or exc}") from exc


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def slide_fingerprint(path: str | Path) -> str:
    """A cheap identity of a slide file: its size and the sha256 of its first and last MiB.

    Independent of the file's name, place and modification time (a moved or copied project
    keeps its predictions); a replaced or re-scanned slide changes it.
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            fh.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            digest.update(fh.read(_FINGERPRINT_BYTES))
    return digest.hexdigest()


def model_stale_reason(
    state: SyncState,
    model_file: Path,
    dataset_hash: str,
    config_hash: str,
    *,
    model_id: str | None = None,
) -> str | None:
    """Why the model must be trained, or ``None`` when the recorded one can be reused.

    ``model_id`` is the ID of ``model_file`` as the caller computes it (default: its
    sha256); ``None`` with an existing file counts as "not the recorded one"."""
    record = state.model
    if not model_file.is_file():
        return "no model yet"
    if record is None:
        return "no record of how the model was made"
    if (model_id if model_id is not None else file_sha256(model_file)) != record.model_id:
        return "the model file is not the one this tool wrote"
    if record.dataset_hash != dataset_hash:
        return "the labels changed"
    if record.config_hash != config_hash:
        return "the training configuration changed"
    return None


def prediction_stale_reason(
    state: SyncState,
    entry_key: str,
    output_file: Path | None,
    *,
    model_id: str,
    config_hash: str,
    slide_fp: str,
    region_hash: str,
) -> str | None:
    """Why an entry must be predicted again, or ``None`` when its predictions are current.

    ``output_file`` is the prediction file the backend writes (``None`` for a backend
    without files, e.g. paquo: then only the recorded inputs are compared).
    """
    record = state.predictions.get(entry_key)
    if record is None or (output_file is not None and not output_file.is_file()):
        return "no predictions yet"
    if (
        output_file is not None
        and record.output_sha256 is not None
        and file_sha256(output_file) != record.output_sha256
    ):
        return "the prediction file was changed outside qupath-rkd"
    if record.model_id != model_id:
        return "the model changed"
    if record.config_hash != config_hash:
        return "the prediction configuration changed"
    if record.slide_fingerprint != slide_fp:
        return "the slide file changed"
    if record.region_hash != region_hash:
        return "the region annotations changed"
    return None
