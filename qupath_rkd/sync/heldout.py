"""Out-of-sample heatmaps of sync's negative sources: leave one image out, as a pathologist can.

Sync chooses its operating point on the heatmaps of what the user said is tumour-free
(:mod:`qupath_rkd.sync.operating`). Those slides and regions are usually also training tiles
(labelled normal), so the final model's heatmap of them is in-sample: their false-lesion rate is
optimistic and the threshold too low. Here each such image is scored by a head fitted **without
that image's labelled tiles** — the same features (through the feature cache: a second
extraction of the training tiles is cache hits), the same training rows
(:func:`qupath_rkd.training.head_trainer.training_features`), the same L2 strength the final
model chose — and its logits go through the final model's calibration. Nothing but what the
user gave is used: the other images' labels.

The head is linear, so the fold head's logit of a tile averaged over the test-time views is its
logit of the view-averaged features, which :func:`~qupath_rkd.inference.predict_slide` returns
from the trunk pass it makes anyway (:attr:`~qupath_rkd.inference.predict.InferenceConfig.
return_features`): no tile is read twice. The fold logits are computed on the client in float64
from those ``(N, D)`` features, so one process and a Dask cluster give the same bytes. They are
held for the negative sources' slides only, while the operating point is chosen: ``N × D × 2``
bytes with one view (float16; 5,328 dims: 1.1 GB for 100,000 tiles), twice that with more.

An image stays in-sample (and the operating point says so) when removing its tiles leaves no
tumour or no normal tile to fit on (a project whose only tumour outlines lie on that image),
for RD models (no convex refit: the trunk is trained too), for the one-class ``knn`` model (a
project without tumour tiles; its bank holds tiles of these images, so its operating point is
in-sample and says so), and for checkpoints that do not record their L2 strength. An image
that gave no training tile is out-of-sample already.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from qupath_rkd.features.cache import FeatureCache
    from qupath_rkd.heatmap import Heatmap
    from qupath_rkd.inference.predict import SlidePrediction
    from qupath_rkd.labels import LabelledSet
    from qupath_rkd.model.head import EnsembleFit, HeadFit
    from qupath_rkd.model.scorer import TrainedModel
    from qupath_rkd.progress import ProgressCallback
    from qupath_rkd.training.config import TrainConfig

#: ``held_out`` of the operating point: every source scored out-of-sample, at least one of
#: them by a head fitted without its image
HELD_OUT_LOO = "leave-one-image-out"
#: no source's tiles trained the model: the final model's heatmaps are out-of-sample already
HELD_OUT_NOT_TRAINED = "not-in-training"
#: every source whose tiles trained the model was scored by the final model
HELD_OUT_IN_SAMPLE = "in-sample"
#: some sources held out, others in-sample (the note names them)
HELD_OUT_PARTLY = "partly-in-sample"


@dataclass
class HeldOutHeads:
    """Heads fitted without one image each.

    Attributes:
        fits: slide path (``str``, as in the labelled set's items) → the head fitted on every
            training row except those of that slide's tiles.
        in_sample: slide path → why its heatmap stays the final model's (one phrase).
        l2: the L2 strength used (the final model's), ``None`` when unknown.
    """

    fits: dict[str, HeadFit | EnsembleFit] = field(default_factory=dict)
    in_sample: dict[str, str] = field(default_factory=dict)
    l2: float | None = None


def model_l2(model: TrainedModel) -> float | None:
    """The L2 strength the final head was fitted with (its checkpoint's ``metrics.l2``), or
    ``None`` (an RD model, or a checkpoint that does not record it)."""
    metrics = model.info.get("metrics") if isinstance(model.info, dict) else None
    value = metrics.get("l2") if isinstance(metrics, dict) else None
    if model.kind != "head" or value is None:
        return None
    return float(value)


def held_out_heads(
    labelled: LabelledSet,
    slide_paths: Sequence[str],
    model: TrainedModel,
    train_config: TrainConfig,
    *,
    cache: FeatureCache | str | None = "default",
    progress: ProgressCallback | None = None,
) -> HeldOutHeads:
    """Fit, for each slide of ``slide_paths`` whose tiles are in ``labelled``, the head without
    them (leave one image out).

    Args:
        labelled: the labelled set the final model was trained on.
        slide_paths: the slides (``str`` paths, as in ``labelled.items``) to hold out; those
            without a labelled tile are skipped (their heatmap is out-of-sample already).
        model: the final model (a head model: its trunk extracts, its L2 is reused).
        train_config: the configuration it was trained with (resolved here): ``input_px``,
            ``rare_views``, ``batch_size``, ``num_workers`` of the extraction.
        cache: the feature cache (``"default"``: the machine's; ``None``: none).
        progress: the extraction's ``features`` / ``tumour views`` tasks and one
            ``held-out heads`` task (fits).

    Returns:
        :class:`HeldOutHeads`; a slide whose removal leaves no tumour or no normal row is in
        ``in_sample``; with an RD model or an unknown L2, every slide is.
    """
    from qupath_rkd.features.cache import open_default_cache
    from qupath_rkd.model.head import HeadNetwork, fit_ensemble, fit_head
    from qupath_rkd.progress import ProgressTask
    from qupath_rkd.slides.tiles_dataset import SlideTileDataset
    from qupath_rkd.training.head_trainer import training_features

    trained = {item.slide_path for item in labelled.items}
    wanted = sorted({str(p) for p in slide_paths} & trained)
    l2 = model_l2(model)
    out = HeldOutHeads(l2=l2)
    if not wanted:
        return out
    if not isinstance(model.net, HeadNetwork) or l2 is None:
        why = (
            f"{model.kind} scorer: no held-out refit"
            if model.kind != "head"
            else "the model records no L2 strength (retrain it)"
        )
        out.in_sample = dict.fromkeys(wanted, why)
        return out
    if cache == "default":
        cache = open_default_cache()
    assert not isinstance(cache, str)
    cfg = train_config.resolved()
    dataset = SlideTileDataset(
        labelled.items,
        tile_px=int(labelled.tile_px),
        tile_mpp=float(labelled.tile_mpp),
        slide_mpp=labelled.slide_mpp,
    )
    # a torch map-style dataset by protocol, as the trainer takes it (sync.runner._as_dataset)
    tiles = cast("Dataset[tuple[np.ndarray, int]]", dataset)
    feats = training_features(model.net, tiles, cfg, model.device, cache, progress)
    item_slide = np.asarray([item.slide_path for item in labelled.items], dtype=object)
    with ProgressTask(progress, "held-out heads", len(wanted), "fit") as task:
        for path in wanted:
            x, y, _index = feats.rows(item_slide != path)
            if not (y == LABEL_TUMOR).any() or not (y == LABEL_NORMAL).any():
                missing = "tumour" if not (y == LABEL_TUMOR).any() else "normal"
                out.in_sample[path] = f"without its tiles no {missing} tile remains"
            else:
                linear = fit_head(x, y, l2)
                # the same kind of head as the final model: the ensemble's fold has both members
                out.fits[path] = (
                    linear if model.net.mlp is None else fit_ensemble(x, y, linear, seed=cfg.seed)
                )
            task.advance(1)
    return out


def held_out_logits(fit: HeadFit | EnsembleFit, features: np.ndarray) -> np.ndarray:
    """``(N,)`` float32 raw scores of the fold head ``fit`` for ``(N, D)`` view-averaged tile
    features (float16 or float32; :attr:`SlidePrediction.tile_features`): its logits, in
    float64 then rounded to float32 as the final model's raw scores are."""
    return np.asarray(fit.logits(np.asarray(features, dtype=np.float32)), dtype=np.float32)


def held_out_heatmap(
    pred: SlidePrediction, fit: HeadFit | EnsembleFit, model: TrainedModel
) -> Heatmap:
    """``pred``'s heatmap with every scored tile's probability from the fold head ``fit``
    (its logit of the tile's features, through ``model``'s calibration); NaN off tissue as
    before. ``pred`` must carry ``tile_features`` (predicted with ``return_features``)."""
    if len(pred.tiles) == 0:
        return pred.heatmap
    if pred.tile_features is None:
        raise ValueError(f"{pred.slide_path.name}: predicted without its tile features")
    probability = np.asarray(
        model.calibrate(held_out_logits(fit, pred.tile_features)), dtype=np.float32
    )
    heat = np.full(pred.heatmap.shape, np.nan, dtype=np.float32)
    heat[pred.tiles.rc[:, 0], pred.tiles.rc[:, 1]] = probability
    meta: dict[str, Any] = {**pred.heatmap.meta, "held_out": HELD_OUT_LOO}
    return dataclasses.replace(pred.heatmap, probability=heat, meta=meta)


def without_features(pred: SlidePrediction) -> SlidePrediction:
    """``pred`` without its tile features (memory), as a prediction made without them."""
    if pred.tile_features is None and not pred.config.return_features:
        return pred
    config = dataclasses.replace(pred.config, return_features=False)
    return dataclasses.replace(pred, tile_features=None, config=config)


def held_out_summary(
    held_out: Sequence[str], in_sample: dict[str, str], not_trained: Sequence[str]
) -> tuple[str, str]:
    """``(held_out value, note)`` of the operating point from the image names scored by a
    fold head (``held_out``), kept in-sample (name → why) and never trained on."""
    parts = []
    if held_out:
        parts.append(
            f"{', '.join(held_out)} scored by heads fitted without their labelled tiles "
            "(leave one image out)"
        )
    if in_sample:
        parts.append(
            "in-sample (the final model, trained on them): "
            + "; ".join(f"{name} ({why})" for name, why in in_sample.items())
        )
    if not_trained:
        parts.append(f"{', '.join(not_trained)} not in training (out-of-sample)")
    if in_sample and held_out:
        value = HELD_OUT_PARTLY
    elif in_sample:
        value = HELD_OUT_IN_SAMPLE
    elif held_out:
        value = HELD_OUT_LOO
    else:
        value = HELD_OUT_NOT_TRAINED
    return value, "; ".join(parts)
