"""Many slides: predict each (:func:`qupath_rkd.inference.predict.predict_slide`) and write its
outputs (:mod:`qupath_rkd.inference.write`). Its own module so that ``predict`` and ``write``
do not import each other: this one imports both.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR
from qupath_rkd.errors import QupathRkdError
from qupath_rkd.heatmap import Heatmap, HeatmapFileError
from qupath_rkd.inference.predict import (
    InferenceConfig,
    SlidePrediction,
    SlideRun,
    apply_threshold,
    predict_slide,
)
from qupath_rkd.inference.write import (
    FilesRequest,
    read_done,
    slide_identity,
    slide_is_done,
    write_run_json,
    write_slide_outputs,
    write_slide_scores,
)
from qupath_rkd.lesions.operating_point import (
    DEFAULT_TARGET_FP_PER_SLIDE,
    NegativeHeatmap,
    OperatingPoint,
    choose_on_mosaics,
    choose_operating_point,
    fallback,
    given,
)
from qupath_rkd.outputs import TUMOR_FREE_DIR, SlideOutputs, slide_id_for
from qupath_rkd.progress import ProgressCallback, ProgressTask

if TYPE_CHECKING:
    from qupath_rkd.cluster.session import ClusterSession
    from qupath_rkd.model.scorer import TrainedModel

logger = logging.getLogger(__name__)


def predict_slides(
    slide_paths: list[Path],
    model: TrainedModel,
    out_dir: str | Path,
    *,
    config: InferenceConfig | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_slide_done: Callable[[SlideRun], None] | None = None,
    tumor_free: Sequence[Path] = (),
    target_fp_per_slide: float = DEFAULT_TARGET_FP_PER_SLIDE,
    cluster: ClusterSession | None = None,
    checkpoint: Path | None = None,
) -> list[SlideRun]:
    """Predict every slide and write its outputs (see :mod:`qupath_rkd.outputs`).

    A slide whose ``done.json`` matches the model and config is skipped (unless ``overwrite``);
    a slide that fails is reported and the others go on. ``slide_scores.csv`` is rewritten
    after every slide, so an interrupted run keeps what it finished.

    Args:
        progress: gets task ``slides`` (slides finished, done, skipped or failed, of all) and
            each slide's ``tiles <file name>`` (:func:`predict_slide`), tumour-free ones
            included (:mod:`qupath_rkd.progress`).
        on_slide_done: called with each :class:`SlideRun` as it finishes.
        tumor_free: slides the user knows are tumour-free (they may also be in
            ``slide_paths``). They are scored first and the seed threshold becomes the lowest one
            (>= :data:`MOSAIC_FLOOR`, 0.05: a model calibrated at a low prior has its tumour
            below 0.5) at which they hold at most
            ``target_fp_per_slide`` false lesions per slide
            (:func:`~qupath_rkd.lesions.operating_point.choose_operating_point`); it is written
            into ``run.json`` with how it was found. Not allowed with a threshold in ``config``.
        cluster, checkpoint: predict on a Dask cluster (:mod:`qupath_rkd.cluster`) with the
            model in ``checkpoint`` (the file ``model`` was loaded from): one task per slide,
            every file still written here.

    Raises:
        QupathRkdError: ``tumor_free`` together with a given threshold, or a tumour-free slide
            that cannot be predicted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = config or InferenceConfig()
    if tumor_free and base.threshold is not None:
        raise QupathRkdError(
            "a threshold and tumour-free slides were both given",
            hint="drop --threshold: with --tumor-free the threshold is set from those slides",
        )
    cfg = base.resolved(model)
    assert cfg.threshold is not None
    cached: dict[Path, SlidePrediction] = {}
    if tumor_free:
        op, cached = _operating_point(
            tumor_free,
            model,
            cfg,
            target_fp_per_slide,
            progress,
            out=out,
            cluster=cluster,
            checkpoint=checkpoint,
        )
        cfg = dataclasses.replace(cfg, threshold=op.threshold)
    elif base.threshold is not None:
        assert cfg.threshold is not None  # resolved: the given one
        op = given(cfg.threshold)
    else:
        op = model_operating_point(model, cfg, target_fp_per_slide)
        cfg = dataclasses.replace(cfg, threshold=op.threshold)
    key = cfg.key(model.model_id)
    ids = [slide_id_for(p) for p in slide_paths]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise QupathRkdError(
            f"several slides would share the output name {dupes[0]!r}",
            hint="give slides with distinct file names",
        )
    write_run_json(out, model, cfg, slide_paths, op)
    remote = None
    if cluster is not None:  # one task per slide still to predict, all sent now
        todo = [
            p
            for p, i in zip(slide_paths, ids, strict=True)
            if (overwrite or not slide_is_done(SlideOutputs(out, i), key, Path(p)))
            and Path(p).resolve() not in cached
        ]
        # the workers render each slide's files too; this process only writes their bytes
        files = {p: FilesRequest(key, slide_id_for(p), Path(p).name) for p in todo}
        remote = _submit(cluster, checkpoint, todo, cfg, files)
    runs: list[SlideRun] = []
    done_cache: dict[str, dict[str, Any]] = {}  # each slide's done.json, read once
    with ProgressTask(progress, "slides", len(slide_paths), "slide") as task:
        for path, slide_id in zip(slide_paths, ids, strict=True):
            runs.append(
                _one_slide(
                    path, slide_id, out, model, cfg, key, overwrite, cached, progress, remote
                )
            )
            write_slide_scores(out, runs, done_cache=done_cache)
            if on_slide_done is not None:
                on_slide_done(runs[-1])
            task.advance(1)
    return runs


def _one_slide(
    path: Path,
    slide_id: str,
    out: Path,
    model: TrainedModel,
    cfg: InferenceConfig,
    key: str,
    overwrite: bool,
    cached: dict[Path, SlidePrediction],
    progress: ProgressCallback | None,
    remote: Any = None,
) -> SlideRun:
    """Predict one slide of :func:`predict_slides` and write its outputs (or skip it when
    done); a failure is returned as a failed run."""
    assert cfg.threshold is not None
    outputs = SlideOutputs(out, slide_id)
    if not overwrite and slide_is_done(outputs, key, Path(path)):
        done = read_done(outputs)
        run = SlideRun(
            Path(path),
            slide_id,
            "skipped",
            slide_score=done.get("slide_score"),
            n_tiles=int(done.get("n_tiles", 0)),
            n_lesions=int(done.get("n_lesions", 0)),
            note=done.get("note"),
            ood={k: v for k, v in done.items() if k.startswith("ood_") or k == "out_of_domain"},
        )
    else:
        try:
            earlier = cached.get(Path(path).resolve())
            rendered = None  # the files' bytes, when a worker rendered them
            if earlier is not None:
                pred = apply_threshold(earlier, cfg.threshold)
            elif remote is not None:
                pred, rendered = remote.result_with_files(str(path))
            else:
                pred = predict_slide(path, model, config=cfg, progress=progress)
            write_slide_outputs(outputs, pred, key, rendered=rendered)
            run = SlideRun(
                Path(path),
                slide_id,
                "ok",
                slide_score=pred.slide_score,
                n_tiles=len(pred.tiles),
                n_lesions=len(pred.lesions),
                note=pred.note,
                seconds=pred.seconds,
                ood=pred.ood.as_dict() if pred.ood is not None else {},
            )
        except Exception as exc:
            # A failed slide is reported and the batch goes on (NaN scores fail it too).
            if isinstance(exc, QupathRkdError):
                message = exc.one_line()
                logger.info("%s failed: %s", path, message)  # the caller reports it
            else:
                message = f"{type(exc).__name__}: {exc}"
                logger.warning("%s failed: %s", path, message, exc_info=True)
            run = SlideRun(Path(path), slide_id, "failed", error=message.splitlines()[0])
    return run


#: The lowest seed threshold the normal mosaics may choose: the candidate list's floor.
MOSAIC_FLOOR = DEFAULT_CANDIDATE_FLOOR


def model_operating_point(
    model: TrainedModel, cfg: InferenceConfig, target_fp_per_slide: float
) -> OperatingPoint:
    """The operating point without tumour-free slides or a given threshold: chosen on the
    mosaics of held-out normal patches the model carries (``train-patches`` models,
    :mod:`qupath_rkd.training.normal_mosaics`) with ``cfg``'s post-processing, else the model's
    calibrated threshold (``fallback``, whose note says why when the mosaics cannot serve).

    On the mosaics the threshold may fall below the calibrated one, down to
    :data:`MOSAIC_FLOOR`: a head calibrated on its own patches (cross-validation, 100 tumour
    among 10,000 normal) gives probabilities at that prior, and at 0.5 it found no lesion at
    all on the benchmark set (docs/benchmarks.md, "The operating point from the training's
    normal patches"). The extent stays capped at the calibrated threshold.

    Args:
        cfg: resolved (:meth:`InferenceConfig.resolved`): its threshold is the calibrated one.
    """
    assert cfg.threshold is not None and cfg.tile_px is not None and cfg.stride_px is not None
    calibrated = float(cfg.threshold)
    mosaics = getattr(model, "normal_mosaics", None)
    if mosaics is None:
        return fallback(target_fp_per_slide, calibrated)
    why = ""
    if cfg.tile_px != model.tile_px or (
        model.mpp is not None
        and cfg.tile_mpp is not None
        and not math.isclose(cfg.tile_mpp, model.mpp, rel_tol=1e-6)
    ):
        why = "tiles of another size or µm/px than the model's"
        grids = None
    else:
        grids, why = mosaics.grids(cfg.stride_px / cfg.tile_px)
    if grids is None or cfg.tile_mpp is None:
        logger.warning("normal mosaics not used (%s): the calibrated threshold", why)
        return dataclasses.replace(
            fallback(target_fp_per_slide, calibrated),
            note=f"the model's normal mosaics do not fit this grid ({why}): the calibrated "
            f"threshold {calibrated:g}",
        )
    return choose_on_mosaics(
        grids,
        tile_px=mosaics.input_px,
        um_per_px=float(cfg.tile_mpp) * cfg.tile_px / mosaics.input_px,
        post=cfg.post_processing(),
        target_fp_per_slide=target_fp_per_slide,
        floor=MOSAIC_FLOOR,
    )


def _operating_point(
    tumor_free: Sequence[Path],
    model: TrainedModel,
    cfg: InferenceConfig,
    target_fp_per_slide: float,
    progress: ProgressCallback | None = None,
    *,
    out: Path | None = None,
    cluster: ClusterSession | None = None,
    checkpoint: Path | None = None,
) -> tuple[OperatingPoint, dict[Path, SlidePrediction]]:
    """Score the tumour-free slides and choose the seed threshold on them.

    With ``out``, each tumour-free slide's heatmap is kept in ``out/tumor_free_heatmaps/`` and
    reused by the next run while the model, the heatmap settings
    (:meth:`InferenceConfig.heatmap_key`) and the slide file (size, mtime) are unchanged: a new
    threshold, slide score or lesion setting does not score them again.

    Returns the operating point and the predictions by resolved path of the slides scored in
    this run (reused when a tumour-free slide is also predicted).
    """
    preds: dict[Path, SlidePrediction] = {}
    heatmaps: dict[Path, Heatmap] = {}
    hkey = cfg.heatmap_key(model.model_id)
    for path in tumor_free:
        earlier = _stored_negative(out, Path(path), hkey)
        if earlier is not None:
            heatmaps[Path(path).resolve()] = earlier
    todo = [p for p in tumor_free if Path(p).resolve() not in heatmaps]
    remote = _submit(cluster, checkpoint, todo, cfg) if cluster is not None and todo else None
    for path in todo:
        try:
            pred = (
                remote.result(str(path))
                if remote is not None
                else predict_slide(path, model, config=cfg, progress=progress)
            )
        except QupathRkdError as exc:
            raise QupathRkdError(
                f"tumour-free slide {path}: {exc.message}",
                hint=exc.hint or "fix or drop it from --tumor-free",
            ) from exc
        preds[Path(path).resolve()] = pred
        heatmaps[Path(path).resolve()] = pred.heatmap
        _store_negative(out, Path(path), hkey, pred.heatmap)
    assert cfg.threshold is not None
    op = choose_operating_point(
        [NegativeHeatmap(heatmaps[Path(p).resolve()], None, Path(p).name) for p in tumor_free],
        cfg.post_processing(),
        target_fp_per_slide=target_fp_per_slide,
        # as on the mosaics (model_operating_point): a model calibrated at a low prior has
        # its tumour below 0.5
        floor=MOSAIC_FLOOR,
    )
    logger.info(
        "operating point: %s (%d tumour-free slide(s) scored, %d reused)",
        op,
        len(todo),
        len(tumor_free) - len(todo),
    )
    return op, preds


def _negative_stem(out: Path, path: Path) -> Path:
    return out / TUMOR_FREE_DIR / slide_id_for(path)


def _stored_negative(out: Path | None, path: Path, hkey: str) -> Heatmap | None:
    """The stored heatmap of tumour-free slide ``path`` if it is still valid, else ``None``."""
    if out is None:
        return None
    stem = _negative_stem(out, path)
    if not stem.with_name(stem.name + ".json").is_file():
        return None
    try:
        heatmap = Heatmap.load(stem)
        identity = slide_identity(path)
    except (HeatmapFileError, OSError):
        return None  # unreadable or gone: score it again
    meta = heatmap.meta
    same = meta.get("heatmap_key") == hkey and all(meta.get(k) == v for k, v in identity.items())
    return heatmap if same else None


def _store_negative(out: Path | None, path: Path, hkey: str, heatmap: Heatmap) -> None:
    """Keep a tumour-free slide's heatmap for the next run (atomically; a failure only logs)."""
    if out is None:
        return
    try:
        meta = {**heatmap.meta, "heatmap_key": hkey, **slide_identity(path)}
        stem = _negative_stem(out, path)
        stem.parent.mkdir(parents=True, exist_ok=True)
        dataclasses.replace(heatmap, meta=meta).save(stem)
    except OSError as exc:
        logger.warning("could not keep the heatmap of tumour-free slide %s: %s", path, exc)


def _submit(
    cluster: ClusterSession,
    checkpoint: Path | None,
    paths: Sequence[Path],
    cfg: InferenceConfig,
    files: Mapping[Path, FilesRequest] | None = None,
) -> Any:
    """Send ``paths`` to the cluster (keys: ``str(path)``); with ``files``, the workers render
    those slides' files too. See :mod:`qupath_rkd.cluster`."""
    from qupath_rkd.cluster.session import SlideJob

    if checkpoint is None:
        raise ValueError("predicting on a cluster needs the checkpoint file")
    jobs = [SlideJob(str(p), Path(p), cfg, files=(files or {}).get(p)) for p in paths]
    return cluster.submit(checkpoint, jobs)
