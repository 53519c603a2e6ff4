"""Many slides: predict each (:func:`qupath_rkd.inference.predict.predict_slide`) and write its
outputs (:mod:`qupath_rkd.inference.write`). Its own module so that ``predict`` and ``write``
do not import each other: this one imports both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qupath_rkd.errors import QupathRkdError
from qupath_rkd.inference.predict import InferenceConfig, Progress, SlideRun, predict_slide
from qupath_rkd.inference.write import (
    read_done,
    slide_is_done,
    write_run_json,
    write_slide_outputs,
    write_slide_scores,
)
from qupath_rkd.outputs import SlideOutputs, slide_id_for

if TYPE_CHECKING:
    from qupath_rkd.model.scorer import TrainedModel

logger = logging.getLogger(__name__)


def predict_slides(
    slide_paths: list[Path],
    model: TrainedModel,
    out_dir: str | Path,
    *,
    config: InferenceConfig | None = None,
    overwrite: bool = False,
    progress_factory: Callable[[str], Progress] | None = None,
    on_slide_done: Callable[[SlideRun], None] | None = None,
) -> list[SlideRun]:
    """Predict every slide and write its outputs (see :mod:`qupath_rkd.outputs`).

    A slide whose ``done.json`` matches the model and config is skipped (unless ``overwrite``);
    a slide that fails is reported and the others go on. ``slide_scores.csv`` is rewritten
    after every slide, so an interrupted run keeps what it finished.

    Args:
        progress_factory: ``slide name -> progress callback`` (the CLI's progress bars).
        on_slide_done: called with each :class:`SlideRun` as it finishes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = (config or InferenceConfig()).resolved(model)
    key = cfg.key(model.model_id)
    ids = [slide_id_for(p) for p in slide_paths]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise QupathRkdError(
            f"several slides would share the output name {dupes[0]!r}",
            hint="give slides with distinct file names",
        )
    write_run_json(out, model, cfg, slide_paths)
    runs: list[SlideRun] = []
    for path, slide_id in zip(slide_paths, ids, strict=True):
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
            )
        else:
            try:
                progress = progress_factory(Path(path).name) if progress_factory else None
                pred = predict_slide(path, model, config=cfg, progress=progress)
                write_slide_outputs(outputs, pred, key)
                run = SlideRun(
                    Path(path),
                    slide_id,
                    "ok",
                    slide_score=pred.slide_score,
                    n_tiles=len(pred.tiles),
                    n_lesions=len(pred.lesions),
                    note=pred.note,
                    seconds=pred.seconds,
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
        runs.append(run)
        write_slide_scores(out, runs)
        if on_slide_done is not None:
            on_slide_done(run)
    return runs
