"""The scorer: build the network, preprocess patches, load a checkpoint as a
:class:`TrainedModel` (the interface other stages use). The file format is
:mod:`qupath_rkd.model.checkpoint`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qupath_rkd import __version__
from qupath_rkd.constants import IMAGENET_MEAN, IMAGENET_STD, KNN_BANK_SIZE, SCORERS
from qupath_rkd.errors import CheckpointError, DataError, ModelError
from qupath_rkd.features.trunk import TRUNKS, build_trunk
from qupath_rkd.features.views import view_list
from qupath_rkd.model.anomaly_map import anomaly_map, patch_scores
from qupath_rkd.model.calibration import Calibration
from qupath_rkd.model.checkpoint import NetworkConfig, StoredConfig, read_checkpoint
from qupath_rkd.model.device import amp_dtype, resolve_device
from qupath_rkd.model.head import HeadNetwork
from qupath_rkd.model.local_knn import LocalKnnNetwork
from qupath_rkd.model.normal_mosaics import PAYLOAD_KEY as MOSAICS_PAYLOAD_KEY
from qupath_rkd.model.normal_mosaics import NormalMosaics
from qupath_rkd.model.ood import PAYLOAD_KEY as OOD_PAYLOAD_KEY
from qupath_rkd.model.ood import OodReference
from qupath_rkd.model.rd import ReverseDistillation
from qupath_rkd.model.teachers import build_teacher

logger = logging.getLogger(__name__)


def build_network(
    config: NetworkConfig, *, weights_from_checkpoint: bool = False
) -> ReverseDistillation | HeadNetwork | LocalKnnNetwork:
    """The untrained network for ``config`` (pretrained weights unless
    ``weights_from_checkpoint``, in which case a checkpoint will overwrite every weight):
    the RD network (``config.scorer == "rd"``), the frozen trunk with its linear head
    (``"head"``) or with an empty memory bank of ``knn_bank_size`` rows (``"knn"``)."""
    random = weights_from_checkpoint or config.teacher_random_weights_for_tests
    if config.scorer in ("head", "knn"):
        trunk = build_trunk(
            config.teacher,
            None if weights_from_checkpoint else config.teacher_weights,
            pooling=config.pooling,
            random_weights_for_tests=random,
        )
        if config.scorer == "knn":
            return LocalKnnNetwork(
                trunk,
                int(config.knn_bank_size) or KNN_BANK_SIZE,
                tap=int(config.knn_tap),
                pool_cells=int(config.knn_pool_cells),
            )
        return HeadNetwork(trunk, trunk.dim, mlp_hidden=int(config.mlp_hidden))
    teacher = build_teacher(
        config.teacher,
        None if weights_from_checkpoint else config.teacher_weights,
        random_weights_for_tests=weights_from_checkpoint or config.teacher_random_weights_for_tests,
    )
    return ReverseDistillation(teacher, shortcut=config.shortcut)


def resize_255(x: torch.Tensor, size_px: int) -> torch.Tensor:
    """``(B, 3, H, W)`` float in [0, 255] -> ``(B, 3, size_px, size_px)``, bilinear with
    antialiasing, rounded to whole grey levels: resizing one image or a batch, before or after
    collation, gives the same pixels, so training and scoring see identical inputs."""
    x = F.interpolate(
        x, size=(size_px, size_px), mode="bilinear", align_corners=False, antialias=True
    )
    return x.round().clamp(0, 255)


def resize_uint8(image: torch.Tensor, size_px: int) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(size_px, size_px, 3)`` uint8 via :func:`resize_255`."""
    if image.shape[0] == size_px and image.shape[1] == size_px:
        return image
    x = resize_255(image.permute(2, 0, 1)[None].float(), size_px)
    return x[0].permute(1, 2, 0).to(torch.uint8)


def preprocess_batch(
    batch: Tensor, input_px: int, device: torch.device, channels_last: bool = False
) -> Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, input_px, input_px)`` float32, ImageNet-normalised.

    Resized (bilinear, antialiased) when ``H, W != input_px``.
    """
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise DataError(f"expected a (B, H, W, 3) uint8 batch, got shape {tuple(batch.shape)}")
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (input_px, input_px):
        x = resize_255(x, input_px)
    x = x.div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class TrainedModel:
    """A trained model ready to score patches (the interface other stages use).

    Three kinds (``kind``): ``"head"``, the supervised linear head on the frozen trunk's pooled
    features, its raw score the logit averaged over ``tta_views`` dihedral views; ``"rd"``, the
    paper's reverse-distillation anomaly score (mean or max of the anomaly map), unchanged;
    ``"knn"``, the one-class local texture distance (:mod:`qupath_rkd.model.local_knn`),
    averaged over ``tta_views`` views.

    Attributes:
        teacher: teacher name. input_px: network input side. mpp: µm/px of the training patches
        (None when unknown). tile_px: their side in pixels at ``mpp`` (resized to ``input_px``).
        model_id: sha256 of the checkpoint file. config: the training config as a dict.
        device: where it runs. threshold: default probability threshold. calibration: the
        fitted :class:`Calibration`. info: the rest of the checkpoint's metadata.
    """

    def __init__(
        self,
        net: ReverseDistillation | HeadNetwork | LocalKnnNetwork,
        config: NetworkConfig,
        calibration: Calibration,
        threshold: float,
        model_id: str,
        device: torch.device,
        info: dict[str, Any] | None = None,
        ood_reference: OodReference | None = None,
        normal_mosaics: NormalMosaics | None = None,
    ) -> None:
        self.net = net.eval()
        self._cfg = config
        self.teacher: str = config.teacher
        self.kind: str = config.scorer
        self.tta_views: int = int(config.tta_views)
        if config.input_px:
            self.input_px: int = int(config.input_px)
        elif isinstance(net, ReverseDistillation):
            self.input_px = int(net.spec.default_input_px)
        else:
            self.input_px = TRUNKS[config.teacher]
        self.mpp: float | None = config.mpp
        self.config: dict[str, Any] = config.to_dict()
        #: side in pixels at ``mpp`` of a training tile (resized to ``input_px``): slides are
        #: read with the same field of view. Checkpoints before it record none: ``input_px``.
        self.tile_px: int = int(self.config.get("tile_px") or self.input_px)
        self.model_id = model_id
        self.device = device
        self.threshold = float(threshold)
        self.calibration = calibration
        self.score_reduction = config.score_reduction
        self.sigma_px = config.sigma_px
        self.info = info or {}
        self._amp = amp_dtype(device) if config.amp else None
        #: the training tiles' feature reference of the out-of-domain check
        #: (:mod:`qupath_rkd.model.ood`); ``None`` for RD models and older checkpoints
        self.ood_reference: OodReference | None = ood_reference
        #: heatmaps of mosaics of held-out normal training patches, on which ``predict`` sets
        #: the operating point (:mod:`qupath_rkd.training.normal_mosaics`); ``None`` for models
        #: of sync, RD and kNN models and older checkpoints
        self.normal_mosaics: NormalMosaics | None = normal_mosaics

    def ood_unavailable_reason(self) -> str | None:
        """Why this model cannot run the out-of-domain check (``None`` when it can)."""
        if self.ood_reference is not None:
            return None
        if self.kind in ("rd", "knn"):
            return f"not available for --scorer {self.kind} models"
        return "the model was trained before qupath-rkd stored its training features; retrain it"

    def preprocess(self, batch: Tensor) -> Tensor:
        """``(B, H, W, 3)`` uint8 tensor -> ``(B, 3, input_px, input_px)`` on :attr:`device`."""
        return preprocess_batch(batch, self.input_px, self.device, self._cfg.channels_last)

    def anomaly_maps(self, x: Tensor) -> Tensor:
        """Preprocessed ``(B, 3, S, S)`` -> anomaly maps ``(B, S, S)`` float32 (0 = normal).

        RD models only (a head model scores whole tiles)."""
        if not isinstance(self.net, ReverseDistillation):
            raise ModelError("this model is a supervised head: it has no anomaly map")
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type, dtype=self._amp or torch.bfloat16, enabled=self._amp is not None
            ),
        ):
            t, s = self.net(x)
        return anomaly_map(t, s, self.input_px, self.sigma_px)

    def raw_scores(self, x: Tensor, tta_views: int | None = None) -> Tensor:
        """Preprocessed ``(B, 3, S, S)`` -> raw patch scores ``(B,)`` float32: the head's logit
        (mean over ``tta_views`` dihedral views, ``None`` = :attr:`tta_views`), or the RD score
        in [0, 6]. Higher = more tumour."""
        if isinstance(self.net, (HeadNetwork, LocalKnnNetwork)):
            with torch.inference_mode():
                return self.net(x, view_list(tta_views or self.tta_views)).float()
        return patch_scores(self.anomaly_maps(x), self.score_reduction)

    def scores_distances_features(
        self, x: Tensor, tta_views: int | None = None, *, features: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """:meth:`raw_scores` of preprocessed ``(B, 3, S, S)``; with an out-of-domain reference
        each tile's ``(B,)`` feature distance from the training tiles
        (:meth:`OodReference.distances`, ``None`` without one); and with ``features`` (head
        models only) each tile's ``(B, D)`` float32 pooled features averaged over the views
        (:meth:`HeadNetwork.logits_with_features`, same trunk pass; ``None`` otherwise)."""
        if isinstance(self.net, HeadNetwork) and (features or self.ood_reference is not None):
            with torch.inference_mode():
                logits, first, mean = self.net.logits_with_features(
                    x, view_list(tta_views or self.tta_views)
                )
                distances = (
                    self.ood_reference.distances(first) if self.ood_reference is not None else None
                )
                return logits.float(), distances, mean if features else None
        return self.raw_scores(x, tta_views), None, None

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores -> probabilities of tumour in [0, 1] (float32)."""
        return self.calibration.apply(scores)

    def score_images(
        self, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(B, H, W, 3)`` uint8 images -> ``(scores (B,), probabilities (B,))`` float32.

        A list of arrays of different sizes is accepted too (each is resized to ``input_px``).
        """
        n = len(images)
        scores = np.empty(n, dtype=np.float32)
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            if isinstance(chunk, np.ndarray):
                batch = torch.from_numpy(np.ascontiguousarray(chunk))
            else:
                batch = torch.stack(
                    [
                        resize_uint8(torch.from_numpy(np.ascontiguousarray(a)), self.input_px)
                        for a in chunk
                    ]
                )
            if batch.dtype != torch.uint8:
                raise DataError(f"images must be uint8, got {batch.dtype}")
            scores[start : start + len(batch)] = (
                self.raw_scores(self.preprocess(batch)).float().cpu().numpy()
            )
        return scores, self.calibrate(scores)

    def __repr__(self) -> str:
        return (
            f"TrainedModel(kind={self.kind!r}, teacher={self.teacher!r}, "
            f"input_px={self.input_px}, mpp={self.mpp}, "
            f"device={self.device}, model_id={self.model_id[:12]})"
        )


def load_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "auto",
    expected_teacher: str | None = None,
) -> TrainedModel:
    """Load a checkpoint as a :class:`TrainedModel` on ``device`` (``auto`` = CUDA if present).

    Raises:
        CheckpointError: unreadable file, newer format, unknown teacher, a teacher other than
            ``expected_teacher``, or weights that do not fit the architecture this version
            builds from the stored config.
        DeviceError: ``device`` not available.
    """
    obj, model_id = read_checkpoint(path)
    try:
        config = StoredConfig.from_dict(dict(obj["config"]))
        calibration = Calibration.from_dict(dict(obj["calibration"]))
        state = obj["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} lacks {exc} (damaged or from another tool)") from exc
    if config.scorer not in SCORERS:
        raise CheckpointError(f"{path} holds a scorer of kind {config.scorer!r}, unknown here")
    if expected_teacher is not None and config.teacher != expected_teacher:
        raise CheckpointError(
            f"{path} was trained with the {config.teacher} teacher, not {expected_teacher}"
        )
    try:
        net = build_network(config, weights_from_checkpoint=True)
    except ModelError as exc:
        raise CheckpointError(
            f"{path} was made for an architecture this version cannot build: {exc.message}"
        ) from exc
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        example = (missing + unexpected + bad)[0]
        raise CheckpointError(
            f"{path} was made for another architecture than {config.teacher} "
            f"(shortcut {config.shortcut}) as built by qupath-rkd {__version__}: "
            f"{len(missing)} tensors missing, {len(unexpected)} unexpected, {len(bad)} with "
            f"other shapes (e.g. {example!r})",
            hint="retrain the model with this version",
        )
    net.load_state_dict(state, strict=True)
    dev = resolve_device(device)
    net = net.to(dev).eval()
    if dev.type == "cuda" and config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    skip = ("state_dict", "config", "calibration", OOD_PAYLOAD_KEY, MOSAICS_PAYLOAD_KEY)
    info = {k: v for k, v in obj.items() if k not in skip}
    reference = None
    if obj.get(OOD_PAYLOAD_KEY) is not None and config.scorer == "head":
        try:
            reference = OodReference.from_payload(obj[OOD_PAYLOAD_KEY])
        except ValueError as exc:  # the scores still hold; only the check is lost
            logger.warning("%s: out-of-domain check not available: %s", path, exc)
        dim = int(net.head.weight.shape[0]) if isinstance(net, HeadNetwork) else -1
        if reference is not None and reference.mean.shape[0] != dim:
            logger.warning("%s: out-of-domain reference of another feature size: ignored", path)
            reference = None
    mosaics = None
    if obj.get(MOSAICS_PAYLOAD_KEY) is not None:
        try:
            mosaics = NormalMosaics.from_payload(obj[MOSAICS_PAYLOAD_KEY])
        except ValueError as exc:  # the scores still hold; predict falls back to 0.5
            logger.warning("%s: normal mosaics not usable: %s", path, exc)
    return TrainedModel(
        net,
        config,
        calibration,
        float(obj.get("threshold", config.threshold)),
        model_id,
        dev,
        info,
        ood_reference=reference,
        normal_mosaics=mosaics,
    )
