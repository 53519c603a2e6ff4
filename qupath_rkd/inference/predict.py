"""Streaming whole-slide inference: tissue tiles → model → calibrated heatmap → lesions.

The slide's tissue grid is streamed through the model in batches. Tiles are read by DataLoader
workers, each of which opens its own slide handle in ``worker_init_fn`` (OpenSlide handles are
not shared across processes); the main process only runs the model, so reading overlaps with
compute. Memory holds one batch per worker in flight plus ``O(N)`` small arrays for the ``N``
tile positions and scores: it does not grow with the slide's pixel count. On CUDA the model runs
in mixed precision with channels-last input (as configured in the checkpoint) and batches are
copied from pinned memory.

Frames: tile positions are level-0 ``(x, y)`` px in QuPath's frame; the heatmap is ``(row, col)``
on the tile grid; :func:`qupath_rkd.heatmap.cell_to_level0_xy` converts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from qupath_rkd.constants import (
    DEFAULT_INFERENCE_BATCH,
    DEFAULT_MIN_LESION_UM,
    DEFAULT_MIN_TISSUE_FRACTION,
    DEFAULT_SLIDE_STRIDE_FRACTION,
    DEFAULT_SLIDE_TTA_VIEWS,
)
from qupath_rkd.errors import ModelError, QupathRkdError, ResolutionError, UnknownResolutionError
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.lesions import Lesion
from qupath_rkd.lesions.burden import TumourBurden, tumour_burden
from qupath_rkd.lesions.pipeline import find_lesions
from qupath_rkd.lesions.postprocess import (
    DEFAULT_EXTENT_RATIO,
    DEFAULT_SMOOTH_SIGMA_UM,
    PostProcessing,
)
from qupath_rkd.lesions.slide_score import DEFAULT_SLIDE_SCORE, SLIDE_SCORE_RULES, slide_score
from qupath_rkd.model.ood import OodResult, not_available, slide_ood
from qupath_rkd.progress import ProgressCallback, ProgressTask
from qupath_rkd.slides.tiles_dataset import TileDataset

if TYPE_CHECKING:
    import torch
    from shapely.geometry.base import BaseGeometry
    from torch.utils.data import DataLoader

    from qupath_rkd.model.scorer import TrainedModel
    from qupath_rkd.slides import Slide, TileGrid

logger = logging.getLogger(__name__)

#: How the slide score is made (see :mod:`qupath_rkd.lesions.slide_score`).
SLIDE_SCORES = SLIDE_SCORE_RULES


class NonFiniteScoresError(ModelError, ValueError):
    """The model produced NaN or infinite scores."""


def default_num_workers() -> int:
    """Tile-reading workers when none are asked for: cores - 1, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


#: Enters :meth:`InferenceConfig.key`: outputs written before lesions became one object each,
#: outlined on tile edges, are predicted again instead of being kept as done.
LESION_OUTLINE_VERSION = "one-object-tile-edges"


#: Renamed fields -> the name outputs on disk record them by (keys, ``run.json``,
#: ``done.json``): unchanged, so outputs written before the rename are still found done.
RECORDED_NAMES: dict[str, str] = {"tile_mpp": "mpp", "min_major_axis_um": "min_lesion_um"}


@dataclass(frozen=True)
class InferenceConfig:
    """What defines a prediction (everything here enters the skip-if-done key).

    Attributes:
        tile_mpp: µm/px at which tiles are read; ``None`` = the model's training µm/px.
        tile_px: tile side in pixels at ``tile_mpp``; ``None`` = the model's training tile side
            (:attr:`TrainedModel.tile_px`; resized to its input size).
        stride_px: grid step in pixels at ``tile_mpp``; ``None`` = half the tile side
            (:data:`DEFAULT_SLIDE_STRIDE_FRACTION`, filled in by :meth:`resolved`; ``tile_px`` is
            the grid without overlap, 4x fewer tiles). FW-RD's dense grid is 64 px at level 0
            (0.243 µm/px): ``stride_px=16`` at 0.972 µm/px.
        min_tissue_fraction: a tile is scored when at least this share of it is tissue.
        threshold: seed threshold of the lesions (the operating point); ``None`` = the model's
            calibrated default. ``predict --tumor-free`` sets it from tumour-free slides
            (:mod:`qupath_rkd.lesions.operating_point`).
        slide_score: a rule of :data:`qupath_rkd.lesions.slide_score.SLIDE_SCORE_RULES`;
            default ``max_smoothed`` (the highest value of the smoothed heatmap).
        min_major_axis_um: lesions whose major axis is under this are dropped (ITC limit).
        smooth_sigma_um: Gaussian sigma (µm) of the heatmap smoothing before lesions; 0 = none.
        extent_ratio: hysteresis: a lesion extends over cells ``>= extent_ratio × threshold``
            connected to a cell ``>= threshold``; 1 = a single threshold.
        extent_cap: the extent threshold is never above this calibrated probability; ``None``
            = the model's calibrated threshold (filled in by :meth:`resolved`): an operating
            point above it picks which lesions are reported, not how far they extend
            (:mod:`qupath_rkd.lesions.postprocess`).
        simplify_um: lesion outline tolerance in µm; outlines always follow tile edges, so every
            value gives the same outline (see :func:`qupath_rkd.lesions.extract_lesions`).
        slide_mpp: level-0 µm/px of the slide when its metadata has none.
        tta_views: dihedral views (rotations, mirror) averaged per tile by a head model (1, 2,
            4 or 8; RD models score the tile itself). 1 by default on slides: 8 views cost 8
            times the scoring time, and at a stride below the tile neighbouring tiles already
            overlap; patches (``score-patches``) use the model's own (8).
        batch_size, num_workers: streaming (do not change results, so not in the key).
            ``num_workers=None`` (default): one fewer than the CPU cores, at most 8 (0 on one
            core): on 2 cores the one reader keeps the model fed (docs/benchmarks.md).
        torch_threads: torch intra-op threads while tiles are scored; ``None`` = torch's own
            (the cores). Not in the key, but the scores' last float32 bits depend on it (and
            on ``batch_size``): a Dask worker scores with 1 (:mod:`qupath_rkd.cluster`), so
            ``torch_threads=1`` here gives its bytes.
        return_features: also return every scored tile's pooled trunk features
            (:attr:`SlidePrediction.tile_features`; head models only): sync's held-out operating
            point scores a training slide with heads fitted without it
            (:mod:`qupath_rkd.sync.heldout`). Changes no result, so not in the key or records.
    """

    tile_mpp: float | None = None
    tile_px: int | None = None
    stride_px: int | None = None
    min_tissue_fraction: float = DEFAULT_MIN_TISSUE_FRACTION
    threshold: float | None = None
    slide_score: str = DEFAULT_SLIDE_SCORE
    min_major_axis_um: float = DEFAULT_MIN_LESION_UM
    smooth_sigma_um: float = DEFAULT_SMOOTH_SIGMA_UM
    extent_ratio: float = DEFAULT_EXTENT_RATIO
    extent_cap: float | None = None
    simplify_um: float | None = None
    slide_mpp: float | None = None
    tta_views: int = DEFAULT_SLIDE_TTA_VIEWS
    batch_size: int = DEFAULT_INFERENCE_BATCH
    num_workers: int | None = None
    torch_threads: int | None = None
    return_features: bool = False

    def __post_init__(self) -> None:
        if self.tta_views not in (1, 2, 4, 8):
            raise ValueError(f"tta_views must be 1, 2, 4 or 8, not {self.tta_views}")
        if self.slide_score not in SLIDE_SCORES:
            raise ValueError(f"slide_score must be one of {SLIDE_SCORES}, not {self.slide_score!r}")
        if self.batch_size < 1 or (self.num_workers is not None and self.num_workers < 0):
            raise ValueError("batch_size must be >= 1 and num_workers >= 0")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError("torch_threads must be >= 1")
        self.post_processing()  # validates smoothing, extent ratio and minimum size

    def post_processing(self) -> PostProcessing:
        """The lesion post-processing of this configuration."""
        return PostProcessing(
            smooth_sigma_um=float(self.smooth_sigma_um),
            extent_ratio=float(self.extent_ratio),
            min_major_axis_um=float(self.min_major_axis_um),
            extent_cap=None if self.extent_cap is None else float(self.extent_cap),
        )

    def resolved(self, model: TrainedModel) -> InferenceConfig:
        """A copy with the model's defaults filled in; raises when the tile µm/px is unknown."""
        tile_mpp = self.tile_mpp if self.tile_mpp is not None else model.mpp
        if tile_mpp is None:
            raise ResolutionError(
                f"model {model.model_id[:12]} records no µm/px and none was given",
                hint="pass --tile-mpp with the µm/px of the patches the model was trained on",
            )
        tile_px = self.tile_px if self.tile_px is not None else int(model.tile_px)
        stride_px = (
            self.stride_px
            if self.stride_px is not None
            else max(1, round(tile_px * DEFAULT_SLIDE_STRIDE_FRACTION))
        )
        threshold = self.threshold if self.threshold is not None else float(model.threshold)
        workers = self.num_workers if self.num_workers is not None else default_num_workers()
        return dataclasses.replace(
            self,
            tile_mpp=float(tile_mpp),
            tile_px=tile_px,
            stride_px=stride_px,
            threshold=threshold,
            extent_cap=self.extent_cap if self.extent_cap is not None else float(model.threshold),
            num_workers=workers,
        )

    def as_record(self) -> dict[str, Any]:
        """The fields under the names the skip-if-done keys, ``run.json`` and ``done.json``
        have always recorded (:data:`RECORDED_NAMES`), so earlier outputs stay valid."""
        fields = dataclasses.asdict(self)
        fields.pop("return_features")  # what is returned, not what is predicted
        return {RECORDED_NAMES.get(k, k): v for k, v in fields.items()}

    def key(self, model_id: str) -> str:
        """sha256 of the model id and every field that changes the outputs."""
        fields = self.as_record()
        for streaming_only in ("batch_size", "num_workers", "torch_threads"):
            fields.pop(streaming_only)
        fields["lesion_outline"] = LESION_OUTLINE_VERSION
        text = json.dumps({"model_id": model_id, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def heatmap_key(self, model_id: str) -> str:
        """sha256 of the model id and the fields that change the heatmap itself (the tile grid,
        tissue, views); the threshold, the slide score and the lesion post-processing do not."""
        record = self.as_record()
        fields = {
            name: record[name]
            for name in ("mpp", "tile_px", "stride_px", "min_tissue_fraction", "slide_mpp")
        }  # recorded names: "mpp" is tile_mpp
        fields["tta_views"] = self.tta_views
        text = json.dumps({"model_id": model_id, "heatmap": fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TileScores:
    """Every scored tile of a slide.

    Attributes:
        xy_px: ``(N, 2)`` int64 level-0 top-left ``(x, y)``, QuPath frame.
        rc: ``(N, 2)`` int64 grid ``(row, col)``.
        tile_level0_px: tile side in level-0 pixels.
        score: ``(N,)`` float32 raw model score.
        probability: ``(N,)`` float32 calibrated tumour probability.
    """

    xy_px: np.ndarray
    rc: np.ndarray
    tile_level0_px: float
    score: np.ndarray
    probability: np.ndarray

    def __len__(self) -> int:
        return int(self.xy_px.shape[0])


@dataclass
class SlidePrediction:
    """Everything predicted for one slide.

    Attributes:
        slide_path: the slide.
        heatmap: calibrated probability on the tile grid (NaN off tissue), not smoothed.
        slide_score: one number per slide (see :attr:`InferenceConfig.slide_score`);
            ``None`` when no tile was scored (no tissue, see ``note``).
        lesions: lesions, highest probability first (found on ``smoothed``).
        tiles: the scored tiles.
        note: why the result is empty or unusual (e.g. no tissue), else ``None``.
        config: the resolved configuration used.
        model_id: sha256 of the model checkpoint.
        slide_mpp: level-0 µm/px of the slide.
        slide_size_px: level-0 ``(width, height)``, QuPath frame.
        seconds: wall time of the prediction.
        smoothed: the heatmap the lesions were found on (``heatmap`` when not smoothed).
        burden: predicted tumour area (mm²) and largest lesion's major axis (µm) + category.
        positive: slide-level call at the operating point (any lesion).
        ood: the out-of-domain check (:mod:`qupath_rkd.model.ood`): the share of tissue tiles
            far from the training tiles' features and whether the slide is flagged; ``None``
            for predictions made before it.
        tile_features: with :attr:`InferenceConfig.return_features` and a head model, the
            ``(N, D)`` pooled trunk features of the scored tiles (in ``tiles`` order), averaged
            over the ``tta_views`` views (float16 with one view, exactly what the head sees;
            float32 with more); else ``None``.
    """

    slide_path: Path
    heatmap: Heatmap
    slide_score: float | None
    lesions: list[Lesion]
    tiles: TileScores
    note: str | None
    config: InferenceConfig
    model_id: str
    slide_mpp: float
    slide_size_px: tuple[int, int]
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    smoothed: Heatmap | None = None
    burden: TumourBurden | None = None
    positive: bool = False
    ood: OodResult | None = None
    tile_features: np.ndarray | None = None


# --- tile streaming -----------------------------------------------------------------------
def _worker_init(_worker_id: int) -> None:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    if info is not None:
        import torch as _torch

        _torch.set_num_threads(1)  # readers decode; the model owns the cores
        if isinstance(info.dataset, TileDataset):
            info.dataset.open()


def tile_loader(
    dataset: TileDataset, batch_size: int, num_workers: int, pin_memory: bool
) -> DataLoader[tuple[int, torch.Tensor]]:
    """DataLoader yielding ``(indices (B,), tiles (B, H, W, 3) uint8)`` in grid order."""
    from torch.utils.data import DataLoader, Dataset

    # a map-style dataset by protocol (__len__, __getitem__), not a subclass of torch's
    # Dataset, so that slides/ imports no torch
    tiles = cast("Dataset[tuple[int, torch.Tensor]]", dataset)
    return DataLoader(
        tiles,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        pin_memory=pin_memory,
        prefetch_factor=2 if num_workers > 0 else None,
        persistent_workers=False,
    )


def score_tiles(
    model: TrainedModel,
    dataset: TileDataset,
    *,
    batch_size: int,
    num_workers: int,
    progress: ProgressCallback | None = None,
    tta_views: int | None = None,
    task: str = "tiles",
    features: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Every tile of ``dataset`` scored, in its order: raw model scores ``(N,)`` float32
    (``tta_views``: views per tile for a head model, ``None`` = the model's own); each tile's
    ``(N,)`` float32 out-of-domain feature distance when the model has a reference, else
    ``None``; and with ``features`` (head models) each tile's ``(N, D)`` pooled features
    averaged over the views, else ``None``: float16 with one view (exact: the head sees its
    features rounded to float16; half the memory of a large slide's), float32 with more. One
    trunk pass gives all three (:meth:`TrainedModel.scores_distances_features`).

    ``progress`` gets task ``task``: tiles scored of ``N``, unit ``tile``, after each batch.

    Raises:
        NonFiniteScoresError: the model returned NaN or infinite scores (names the model).
    """
    import torch

    n = len(dataset)
    scores = np.full(n, np.nan, dtype=np.float32)
    distances = np.full(n, np.nan, dtype=np.float32) if model.ood_reference is not None else None
    feats: np.ndarray | None = None
    if n == 0:
        return scores, distances, feats
    loader = tile_loader(dataset, batch_size, num_workers, pin_memory=model.device.type == "cuda")
    bar = ProgressTask(progress, task, total=n, unit="tile")
    with torch.inference_mode(), _worker_errors_as_one_line(), bar:
        for indices, tiles in loader:
            raw_t, dist_t, feat_t = model.scores_distances_features(
                model.preprocess(tiles), tta_views, features=features
            )
            raw = raw_t.float().cpu().numpy()
            bad = ~np.isfinite(raw)
            if bad.any():
                first = int(indices[int(np.argmax(bad))])
                x, y = dataset.xy_px[first]
                raise NonFiniteScoresError(
                    f"model {model.model_id[:12]} ({model.teacher}) gave {int(bad.sum())} "
                    f"non-finite score(s) on {dataset.slide_path.name}, first at tile x={x}, y={y}",
                    hint="the checkpoint is damaged or was trained into NaN; retrain it",
                )
            scores[indices.numpy()] = raw
            if distances is not None and dist_t is not None:
                distances[indices.numpy()] = dist_t.float().cpu().numpy()
            if feat_t is not None:
                if feats is None:
                    one_view = (tta_views or model.tta_views) == 1
                    dtype = np.float16 if one_view else np.float32
                    feats = np.full((n, int(feat_t.shape[1])), np.nan, dtype=dtype)
                feats[indices.numpy()] = feat_t.float().cpu().numpy().astype(feats.dtype)
            bar.advance(len(indices))
    dataset.close()
    return scores, distances, feats


@contextlib.contextmanager
def _worker_errors_as_one_line() -> Iterator[None]:
    """Re-raise our errors from DataLoader workers with their own message, not the worker's
    whole traceback (which torch folds into the message)."""
    try:
        yield
    except QupathRkdError as exc:
        if "Original Traceback" not in exc.message:
            raise
        lines = [line for line in exc.message.strip().splitlines() if line.strip()]
        last = lines[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
        raise type(exc)(message) from exc


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block (``None``: unchanged)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- one slide ----------------------------------------------------------------------------
def slide_score_of(probability: np.ndarray, how: str, threshold: float) -> float | None:
    """The slide score from tile probabilities ``(N,)`` alone: ``max`` or ``mean_above``
    (FW-RD); the other rules need the heatmap and lesions (:func:`apply_threshold`).

    ``None`` when no tile was scored (no tissue): there is nothing to call benign or tumour,
    and a 0 would read as "benign".
    """
    if how not in ("max", "mean_above"):
        raise ValueError(f"slide_score_of takes max or mean_above, not {how!r}")
    return slide_score(how, raw=probability, smoothed=None, lesions=(), threshold=threshold)


def apply_threshold(pred: SlidePrediction, threshold: float) -> SlidePrediction:
    """The same prediction with lesions, slide score and call at another seed ``threshold``
    (no tile is scored again): how ``predict --tumor-free`` moves the operating point."""
    cfg = dataclasses.replace(pred.config, threshold=float(threshold))
    heatmap = dataclasses.replace(pred.heatmap, meta={**pred.heatmap.meta, "threshold": threshold})
    t0 = time.perf_counter()
    found = find_lesions(
        heatmap, float(threshold), cfg.post_processing(), simplify_um=cfg.simplify_um
    )
    score = slide_score(
        cfg.slide_score,
        raw=heatmap.probability,
        smoothed=found.smoothed.probability,
        lesions=found.lesions,
        threshold=float(threshold),
    )
    return dataclasses.replace(
        pred,
        config=cfg,
        heatmap=heatmap,
        smoothed=found.smoothed,
        lesions=found.lesions,
        slide_score=score,
        burden=tumour_burden(found.lesions),
        positive=bool(found.lesions),
        timings={**pred.timings, "lesions_s": time.perf_counter() - t0},
    )


def _check_resolution(slide: Slide, model: TrainedModel, tile_mpp: float) -> None:
    try:
        slide.downsample_for(tile_mpp)
    except ResolutionError as exc:
        raise ResolutionError(
            f"model {model.model_id[:12]} reads tiles at {tile_mpp:g} µm/px but {slide.path.name} "
            f"has {slide.mpp:g} µm/px at level 0: it would have to be upsampled "
            f"{slide.mpp / tile_mpp:.2f}×",
            hint="use a slide scanned at the model's magnification or higher, or a model "
            "trained at a coarser µm/px",
        ) from exc


def predict_slide(
    slide_path: str | Path,
    model: TrainedModel,
    *,
    tile_mpp: float | None = None,
    stride_px: int | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    region: BaseGeometry | None = None,
    config: InferenceConfig | None = None,
    progress: ProgressCallback | None = None,
) -> SlidePrediction:
    """Heatmap, slide score and lesions of one slide.

    Args:
        slide_path: any slide OpenSlide reads.
        model: a loaded model (:func:`qupath_rkd.model.scorer.load_model`).
        tile_mpp, stride_px, batch_size, num_workers: shortcuts that override ``config``'s fields.
        region: optional shapely geometry (level-0 px, QuPath frame); only tiles whose centre
            lies inside it are scored.
        config: everything else (:class:`InferenceConfig`); defaults from the model.
        progress: gets task ``tiles <slide file name>`` (tiles scored of all, unit ``tile``)
            after each batch (:mod:`qupath_rkd.progress`).

    Returns:
        A :class:`SlidePrediction`. A slide with no tissue gives an empty result with a note.

    Raises:
        SlideError: the slide cannot be opened or read (incl. unknown µm/px).
        ResolutionError: neither the model nor ``tile_mpp`` gives the tile µm/px, or the slide is
            coarser than the model's µm/px.
        NonFiniteScoresError: the model produced NaN/inf.
    """
    from qupath_rkd.slides import open_slide, tile_grid

    started = time.perf_counter()
    base = config or InferenceConfig()
    cfg = dataclasses.replace(
        base,
        tile_mpp=base.tile_mpp if tile_mpp is None else tile_mpp,
        stride_px=base.stride_px if stride_px is None else stride_px,
        batch_size=base.batch_size if batch_size is None else batch_size,
        num_workers=base.num_workers if num_workers is None else num_workers,
    ).resolved(model)
    assert cfg.tile_mpp is not None and cfg.tile_px is not None and cfg.threshold is not None
    path = Path(slide_path)
    timings: dict[str, float] = {}
    with open_slide(path, mpp=cfg.slide_mpp) as slide:
        try:
            slide_mpp = slide.mpp
        except UnknownResolutionError as exc:
            raise UnknownResolutionError(
                exc.message,
                hint="pass --slide-mpp with the slide's level-0 µm/px",
            ) from exc
        _check_resolution(slide, model, cfg.tile_mpp)
        t0 = time.perf_counter()
        grid: TileGrid = tile_grid(
            slide,
            cfg.tile_px,
            cfg.tile_mpp,
            stride_px=cfg.stride_px,
            min_tissue_fraction=cfg.min_tissue_fraction,
            region=region,
        )
        timings["grid_s"] = time.perf_counter() - t0
        size = (slide.width_px, slide.height_px)
    note = None
    if len(grid) == 0:
        note = (
            "no tissue found: nothing scored"
            if region is None
            else "no tissue tile inside the given region: nothing scored"
        )
        logger.info("%s: %s", path.name, note)
    t0 = time.perf_counter()
    dataset = TileDataset(path, grid.xy_px, cfg.tile_px, cfg.tile_mpp, cfg.slide_mpp)
    with torch_threads(cfg.torch_threads):
        scores, distances, tile_feats = score_tiles(
            model,
            dataset,
            batch_size=cfg.batch_size,
            num_workers=int(cfg.num_workers or 0),
            progress=progress,
            tta_views=cfg.tta_views,
            task=f"tiles {path.name}",
            features=cfg.return_features,
        )
    timings["score_s"] = time.perf_counter() - t0
    probability = (
        np.asarray(model.calibrate(scores), dtype=np.float32)
        if scores.size
        else np.zeros(0, np.float32)
    )
    rows, cols = grid.grid_shape
    heat = np.full((rows, cols), np.nan, dtype=np.float32)
    if len(grid):
        heat[grid.rc[:, 0], grid.rc[:, 1]] = probability
    heatmap = Heatmap(
        probability=heat,
        origin_xy_px=(0.0, 0.0),
        stride_level0_px=float(grid.stride_level0_px),
        tile_level0_px=float(grid.tile_level0_px),
        mpp=float(slide_mpp),
        meta={
            "model_id": model.model_id,
            "tile_mpp": cfg.tile_mpp,
            "tile_px": cfg.tile_px,
            "stride_px": grid.stride_px,
            "threshold": cfg.threshold,
            "slide": path.name,
        },
    )
    pred = SlidePrediction(
        slide_path=path,
        heatmap=heatmap,
        slide_score=0.0,
        lesions=[],
        tiles=TileScores(grid.xy_px, grid.rc, float(grid.tile_level0_px), scores, probability),
        note=note,
        config=cfg,
        model_id=model.model_id,
        slide_mpp=float(slide_mpp),
        slide_size_px=size,
        seconds=0.0,
        timings=timings,
        tile_features=tile_feats,
    )
    pred.ood = (
        slide_ood(model.ood_reference, distances)
        if model.ood_reference is not None and distances is not None
        else not_available(model.ood_unavailable_reason() or "")
    )
    pred = apply_threshold(pred, cfg.threshold)
    pred.seconds = time.perf_counter() - started
    return pred


# --- many slides --------------------------------------------------------------------------
@dataclass
class SlideRun:
    """Outcome of one slide in :func:`qupath_rkd.inference.batch.predict_slides`; ``status`` is
    ok | skipped | failed."""

    slide_path: Path
    slide_id: str
    status: str
    slide_score: float | None = None
    n_tiles: int = 0
    n_lesions: int = 0
    note: str | None = None
    error: str | None = None
    seconds: float = 0.0
    #: the out-of-domain check (:class:`~qupath_rkd.model.ood.OodResult.as_dict` values:
    #: ``ood_available``, ``ood_far_fraction``, ``out_of_domain``, ...); empty when unknown
    ood: dict[str, Any] = field(default_factory=dict)
