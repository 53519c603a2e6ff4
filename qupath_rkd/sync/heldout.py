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

Except when the image holds most of a class's labelled tiles (more than
:data:`DOMINANT_SHARE`: the one tumour-free slide of a young project holds nearly all its normal
tiles). A head fitted without all of them is another, weaker model: on the active-learning
benchmark's round 1 it scored the tumour-free slide above every held-out tumour, and the
threshold it set found no lesion at all (docs/benchmarks.md, "Sync's operating point on held-out
bands and whole slides"). Such an image's tiles are split into :data:`HELD_OUT_BANDS` vertical
bands of equal tile counts, and each band's cells are scored by a head fitted without that
band's tiles (:class:`BandFolds`): every tile is still scored by a head that never saw it, and
each head keeps three quarters of the image. Bands, not a random split, so that a tile's
immediate neighbours (the same tissue) are mostly left out with it.

The head is linear, so the fold head's logit of a tile averaged over the test-time views is its
logit of the view-averaged features, which :func:`~qupath_rkd.inference.predict_slide` returns
from the trunk pass it makes anyway (:attr:`~qupath_rkd.inference.predict.InferenceConfig.
return_features`): no tile is read twice. The fold logits are computed on the client in float64
from those ``(N, D)`` features, so one process and a Dask cluster give the same bytes. They are
held for the negative sources' slides only, while the operating point is chosen: ``N × D × 2``
bytes with one view (float16; 5,328 dims: 1.1 GB for 100,000 tiles), twice that with more.

An image stays in-sample (and the operating point says so) when removing its tiles leaves no
tumour or no normal tile to fit on and its bands cannot be held out either (a project whose
only tumour outline lies on that image, within one band),
for RD models (no convex refit: the trunk is trained too), for the one-class ``knn`` model (a
project without tumour tiles; its bank holds tiles of these images, so its operating point is
in-sample and says so), and for checkpoints that do not record their L2 strength. An image
that gave no training tile is out-of-sample already.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
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
#: every source scored out-of-sample, at least one (an image holding most of a class's
#: labelled tiles) by heads fitted without each band of its own tiles (:class:`BandFolds`)
HELD_OUT_FOLDS = "held-out-folds"
#: a heatmap's ``meta["held_out"]`` when scored by :class:`BandFolds`
HELD_OUT_BANDS_META = "within-image-bands"


#: An image holding more than this share of a class's labelled tiles is not left out whole:
#: the head fitted without it would be another model (on the active-learning benchmark's round 1
#: the one tumour-free slide held 89-100 % of the normal tiles, and its fold head put the
#: threshold above every held-out tumour); its own tiles are held out band by band instead.
#: Not lower: bands keep the image's own look (stain, tissue) in every fold head, so they are
#: optimistic about other slides. The demo's tumour-free LN-02 holds 64 % of the normal tiles;
#: held out whole it set 0.627 and the held-out tumour-free LN-05 kept no false lesion, band by
#: band 0.449 and LN-05 got one (docs/benchmarks.md, "Sync's operating point on held-out bands").
DOMINANT_SHARE = 0.75
#: Bands of a dominant image's tiles (:func:`band_folds`).
HELD_OUT_BANDS = 4


@dataclass(frozen=True)
class BandFolds:
    """Heads fitted without one vertical band of an image's labelled tiles each.

    Attributes:
        edges_x_px: ``(B - 1,)`` ascending level-0 x edges; a tile whose top-left x is ``>=``
            edge ``i - 1`` and ``<`` edge ``i`` is in band ``i``.
        fits: ``B`` heads; head ``i`` was fitted on every training row but band ``i``'s.
    """

    edges_x_px: np.ndarray
    fits: list[HeadFit | EnsembleFit]

    def band_of(self, x_px: np.ndarray) -> np.ndarray:
        """``(N,)`` band of tiles whose top-left level-0 x is ``x_px`` ``(N,)``."""
        return np.searchsorted(self.edges_x_px, np.asarray(x_px, dtype=np.float64), side="right")


@dataclass
class HeldOutHeads:
    """Heads fitted without one image each.

    Attributes:
        fits: slide path (``str``, as in the labelled set's items) → the head fitted on every
            training row except those of that slide's tiles, or, for an image holding more
            than :data:`DOMINANT_SHARE` of a class's tiles, the heads fitted without each band
            of its tiles (:class:`BandFolds`).
        in_sample: slide path → why its heatmap stays the final model's (one phrase).
        l2: the L2 strength used (the final model's), ``None`` when unknown.
    """

    fits: dict[str, HeadFit | EnsembleFit | BandFolds] = field(default_factory=dict)
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
    item_label = np.asarray([item.label for item in labelled.items])
    item_x = np.asarray([item.x_px for item in labelled.items], dtype=np.float64)
    ensemble = model.net.mlp is not None

    def fit_rows(mask: np.ndarray) -> HeadFit | EnsembleFit | str:
        # the same kind of head as the final model (the ensemble's fold has both members), or
        # why none can be fitted on these rows
        x, y, _index = feats.rows(mask)
        for label, name in ((LABEL_TUMOR, "tumour"), (LABEL_NORMAL, "normal")):
            if not (y == label).any():
                return name
        linear = fit_head(x, y, l2)
        return fit_ensemble(x, y, linear, seed=cfg.seed) if ensemble else linear

    with ProgressTask(progress, "held-out heads", len(wanted), "fit") as task:
        for path in wanted:
            own = item_slide == path
            if dominant_share(item_label, own) > DOMINANT_SHARE:
                bands = band_folds(own, item_x, fit_rows)
                if bands is not None:
                    out.fits[path] = bands
                    task.advance(1)
                    continue
            fit = fit_rows(~own)
            if isinstance(fit, str):
                out.in_sample[path] = f"without its tiles no {fit} tile remains"
            else:
                out.fits[path] = fit
            task.advance(1)
    return out


def dominant_share(labels: np.ndarray, own: np.ndarray) -> float:
    """The largest share of a class's labelled tiles that lie on one image: ``own`` ``(N,)``
    bool marks the image's among the ``(N,)`` tile ``labels``; 0 for an image without any."""
    shares = [
        float((own & (labels == c)).sum()) / int((labels == c).sum())
        for c in (LABEL_TUMOR, LABEL_NORMAL)
        if (labels == c).any()
    ]
    return max(shares, default=0.0)


def band_folds(
    own: np.ndarray,
    x_px: np.ndarray,
    fit_rows: Callable[[np.ndarray], HeadFit | EnsembleFit | str],
    n_bands: int = HELD_OUT_BANDS,
) -> BandFolds | None:
    """Heads fitted without each of ``n_bands`` vertical bands of one image's labelled tiles.

    Args:
        own: ``(N,)`` bool, the image's labelled tiles among all ``N``.
        x_px: ``(N,)`` level-0 x of each tile's top-left (the image's frame).
        fit_rows: ``(N,) bool mask → head`` fitted on the rows of those tiles, or the name of
            the class they lack (``str``).
        n_bands: bands, of equal tile counts (edges at the quantiles of the image's tile x).

    Returns:
        The folds, or ``None`` when the image has fewer than 2 tiles per band or a fold would
        lack a class (the caller falls back to leaving the whole image out).
    """
    xs = x_px[own]
    if xs.size < 2 * n_bands:
        return None
    edges = np.unique(np.quantile(xs, np.arange(1, n_bands) / n_bands))
    band = np.full(own.shape, -1)
    band[own] = np.searchsorted(edges, xs, side="right")
    fits = []
    for b in range(edges.size + 1):
        fit = fit_rows(band != b)
        if isinstance(fit, str):
            return None
        fits.append(fit)
    return BandFolds(edges_x_px=edges, fits=fits)


def held_out_logits(fit: HeadFit | EnsembleFit, features: np.ndarray) -> np.ndarray:
    """``(N,)`` float32 raw scores of the fold head ``fit`` for ``(N, D)`` view-averaged tile
    features (float16 or float32; :attr:`SlidePrediction.tile_features`): its logits, in
    float64 then rounded to float32 as the final model's raw scores are."""
    return np.asarray(fit.logits(np.asarray(features, dtype=np.float32)), dtype=np.float32)


def held_out_heatmap(
    pred: SlidePrediction, fit: HeadFit | EnsembleFit | BandFolds, model: TrainedModel
) -> Heatmap:
    """``pred``'s heatmap with every scored tile's probability from the fold head ``fit``
    (its logit of the tile's features, through ``model``'s calibration; with
    :class:`BandFolds`, each tile's from the head fitted without the band its top-left x lies
    in); NaN off tissue as before. ``pred`` must carry ``tile_features`` (predicted with
    ``return_features``)."""
    if len(pred.tiles) == 0:
        return pred.heatmap
    if pred.tile_features is None:
        raise ValueError(f"{pred.slide_path.name}: predicted without its tile features")
    if isinstance(fit, BandFolds):
        band = fit.band_of(pred.tiles.xy_px[:, 0])
        logits = np.zeros(len(pred.tiles), dtype=np.float32)
        for b, head in enumerate(fit.fits):
            at = band == b
            if at.any():
                logits[at] = held_out_logits(head, pred.tile_features[at])
        how = HELD_OUT_BANDS_META
    else:
        logits = held_out_logits(fit, pred.tile_features)
        how = HELD_OUT_LOO
    probability = np.asarray(model.calibrate(logits), dtype=np.float32)
    heat = np.full(pred.heatmap.shape, np.nan, dtype=np.float32)
    heat[pred.tiles.rc[:, 0], pred.tiles.rc[:, 1]] = probability
    meta: dict[str, Any] = {**pred.heatmap.meta, "held_out": how}
    return dataclasses.replace(pred.heatmap, probability=heat, meta=meta)


def without_features(pred: SlidePrediction) -> SlidePrediction:
    """``pred`` without its tile features (memory), as a prediction made without them."""
    if pred.tile_features is None and not pred.config.return_features:
        return pred
    config = dataclasses.replace(pred.config, return_features=False)
    return dataclasses.replace(pred, tile_features=None, config=config)


def held_out_summary(
    held_out: Sequence[str],
    in_sample: dict[str, str],
    not_trained: Sequence[str],
    banded: Sequence[str] = (),
) -> tuple[str, str]:
    """``(held_out value, note)`` of the operating point from the image names scored by a
    fold head (``held_out``), by band folds of their own tiles (``banded``), kept in-sample
    (name → why) and never trained on."""
    parts = []
    if held_out:
        parts.append(
            f"{', '.join(held_out)} scored by heads fitted without their labelled tiles "
            "(leave one image out)"
        )
    if banded:
        parts.append(
            f"{', '.join(banded)} scored band by band, each band by a head fitted without that "
            f"band's labelled tiles ({'each holds' if len(banded) > 1 else 'it holds'} most of "
            "a class's tiles: a head fitted without all of them would be another model)"
        )
    if in_sample:
        parts.append(
            "in-sample (the final model, trained on them): "
            + "; ".join(f"{name} ({why})" for name, why in in_sample.items())
        )
    if not_trained:
        parts.append(f"{', '.join(not_trained)} not in training (out-of-sample)")
    if in_sample and (held_out or banded):
        value = HELD_OUT_PARTLY
    elif in_sample:
        value = HELD_OUT_IN_SAMPLE
    elif banded:
        value = HELD_OUT_FOLDS
    elif held_out:
        value = HELD_OUT_LOO
    else:
        value = HELD_OUT_NOT_TRAINED
    return value, "; ".join(parts)
