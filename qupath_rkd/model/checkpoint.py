"""The checkpoint format: write a trained network, read a checkpoint's envelope back.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values (it loads
with ``weights_only=True``): the weights of the whole network *including the frozen teacher*
(so it scores offline, whatever weights the teacher came from), the full training config, the
calibration, package and torch versions, the teacher name, the µm/px of the training patches
and the hash of the training set. ``model_id`` is the sha256 of the file. Loading it as a scorer
is :func:`qupath_rkd.model.scorer.load_model`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from qupath_rkd import __version__
from qupath_rkd.constants import LEGACY_POOLING
from qupath_rkd.errors import CheckpointError
from qupath_rkd.io_utils import atomic_write_bytes
from qupath_rkd.model.calibration import Calibration

logger = logging.getLogger(__name__)

FORMAT = "qupath-rkd-model"
#: 2: the supervised-head scorer (``config.scorer == "head"``); format-1 files are RD models
FORMAT_VERSION = 2


class NetworkConfig(Protocol):
    """The fields of a training config that building, saving and running the network read
    (``qupath_rkd.training.config.TrainConfig`` has them; so has :class:`StoredConfig`)."""

    @property
    def teacher(self) -> str: ...
    @property
    def teacher_weights(self) -> str | None: ...
    @property
    def teacher_random_weights_for_tests(self) -> bool: ...
    @property
    def shortcut(self) -> str: ...
    @property
    def input_px(self) -> int | None: ...
    @property
    def mpp(self) -> float | None: ...
    @property
    def score_reduction(self) -> str: ...
    @property
    def sigma_px(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def amp(self) -> bool: ...
    @property
    def channels_last(self) -> bool: ...
    @property
    def scorer(self) -> str: ...
    @property
    def tta_views(self) -> int: ...
    @property
    def pooling(self) -> str: ...
    @property
    def mlp_hidden(self) -> int: ...
    @property
    def knn_bank_size(self) -> int: ...
    @property
    def knn_tap(self) -> int: ...
    @property
    def knn_pool_cells(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StoredConfig:
    """A checkpoint's stored training config, read as the :class:`NetworkConfig` fields.

    :meth:`from_dict` raises ``KeyError`` when a field is missing (every checkpoint of format 1
    stores them all); :meth:`to_dict` gives the stored dict back.
    """

    teacher: str
    teacher_weights: str | None
    teacher_random_weights_for_tests: bool
    shortcut: str
    input_px: int | None
    mpp: float | None
    score_reduction: str
    sigma_px: float
    threshold: float
    amp: bool
    channels_last: bool
    scorer: str = "rd"
    tta_views: int = 1
    pooling: str = LEGACY_POOLING
    mlp_hidden: int = 0
    knn_bank_size: int = 0
    knn_tap: int = 1
    knn_pool_cells: int = 1
    stored: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoredConfig:
        names = (
            "teacher",
            "teacher_weights",
            "teacher_random_weights_for_tests",
            "shortcut",
            "input_px",
            "mpp",
            "score_reduction",
            "sigma_px",
            "threshold",
            "amp",
            "channels_last",
        )
        # format 1 predates the head scorer: its models are RD, scored on the tile itself
        return cls(
            **{name: d[name] for name in names},
            scorer=str(d.get("scorer", "rd")),
            tta_views=int(d.get("tta_views", 1)),
            # checkpoints before the pooling was recorded pooled every tap as mean + centre mean
            pooling=str(d.get("pooling", LEGACY_POOLING)),
            # checkpoints before the ensemble head hold the linear head alone
            mlp_hidden=int(d.get("mlp_hidden", 0)),
            # checkpoints before the one-class kNN scorer hold no bank
            knn_bank_size=int(d.get("knn_bank_size", 0)),
            knn_tap=int(d.get("knn_tap", 1)),
            knn_pool_cells=int(d.get("knn_pool_cells", 1)),
            stored=dict(d),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.stored)


def _plain(value: Any) -> Any:
    """Make metadata safe for ``weights_only`` loading (floats, ints, str, lists, dicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, (str, bool)):
        return value
    return str(value)


def _input_px(net: torch.nn.Module, config: NetworkConfig) -> int:
    """The network's input side: the config's, else (RD) the teacher's default."""
    from qupath_rkd.model.rd import ReverseDistillation

    if config.input_px:
        return int(config.input_px)
    if isinstance(net, ReverseDistillation):
        return int(net.spec.default_input_px)
    raise CheckpointError(
        f"no input size for a {type(net).__name__}",
        hint="save the resolved config (TrainConfig.resolved() sets input_px)",
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    net: torch.nn.Module,
    config: NetworkConfig,
    calibration: Calibration,
    dataset_hash: str,
    metrics: dict[str, Any] | None = None,
    ood_reference: dict[str, Any] | None = None,
    normal_mosaics: dict[str, Any] | None = None,
) -> str:
    """Write the checkpoint atomically; returns its sha256 (the ``model_id``).

    ``normal_mosaics``: the payload of the held-out normal mosaics
    (:meth:`qupath_rkd.model.normal_mosaics.NormalMosaics.to_payload`), stored under
    ``normal_mosaics``; ``predict`` sets its operating point on them.

    ``ood_reference``: the out-of-domain reference's payload
    (:meth:`qupath_rkd.model.ood.OodReference.to_payload`), stored under ``ood_reference``;
    checkpoints without it load as before (the check then says it is not available)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "torch_version": str(torch.__version__),
        "teacher": config.teacher,
        "input_px": _input_px(net, config),
        "mpp": config.mpp,
        "config": _plain(config.to_dict()),
        "dataset_hash": str(dataset_hash),
        "calibration": calibration.to_dict(),
        "threshold": float(config.threshold),
        "metrics": _plain(metrics or {}),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "state_dict": {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()},
    }
    if ood_reference is not None:
        payload["ood_reference"] = ood_reference
    if normal_mosaics is not None:
        payload["normal_mosaics"] = normal_mosaics
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """Load and check the checkpoint's envelope; returns ``(payload, sha256)``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model file {p} not found")
    data = p.read_bytes()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{p} is not a readable qupath-rkd checkpoint ({type(exc).__name__})",
            hint="train one with `qupath-rkd train-patches` or `qupath-rkd sync`",
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a qupath-rkd model checkpoint")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p} was written by qupath-rkd {obj.get('package_version')} (checkpoint format "
            f"{version}); this is qupath-rkd {__version__} (format {FORMAT_VERSION})",
            hint="upgrade qupath-rkd or retrain the model",
        )
    if obj.get("package_version") != __version__:
        logger.warning(
            "%s was written by qupath-rkd %s; this is %s (same checkpoint format, loading it)",
            p,
            obj.get("package_version"),
            __version__,
        )
    return obj, hashlib.sha256(data).hexdigest()
