"""What runs on a Dask worker: one slide through the model, its prediction sent back.

The checkpoint travels as a worker plugin (:class:`ModelPlugin`): Dask sends it once to every
worker, and to each worker that joins or restarts later; tasks name the checkpoint by its
sha256 only. :func:`_model` loads it once per worker process and keeps it, keyed by the sha256
and the device. (A broadcast ``scatter`` is not enough: Dask's active memory manager drops
the extra copies, and the data is lost with the worker that kept it.) Nothing is written
here: the client writes every file. A task asked for a slide's files
(:class:`~qupath_rkd.inference.write.FilesRequest`, ``predict``'s path) also renders their
bytes here with the functions a one-process run uses
(:func:`~qupath_rkd.inference.write.render_slide_outputs`) and sends them back with the
prediction (:class:`SlideResult`), so the client only writes bytes: rendering a
Camelyon16-size slide's files (tile GeoJSON, overlay PNG, ...) takes most of a CPU second,
which the client would spend on every slide one after another.

Errors: an error of ours (:class:`~qupath_rkd.errors.QupathRkdError`: unreadable slide,
unknown µm/px, NaN scores...) is a property of the slide, not of the worker, so it is returned
as a :class:`SlideFailure` (no retry); anything else is raised, and Dask retries the slide once.
A slide path the worker cannot see (while the client can) fails with a message saying the
slides must be visible to the workers.

Imported only by :mod:`qupath_rkd.cluster.session` (and so only with the cluster flags); it
imports torch only when a task runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import WorkerPlugin

from qupath_rkd.errors import QupathRkdError, SlideNotFoundError

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from qupath_rkd.inference.predict import InferenceConfig, SlidePrediction
    from qupath_rkd.inference.write import FilesRequest, RenderedSlide
    from qupath_rkd.model.scorer import TrainedModel

logger = logging.getLogger(__name__)

#: Fault injection for tests and benchmarks: with ``$QUPATH_RKD_FAULT`` set to this, the first
#: worker to score a batch (of any slide) kills its own process mid-slide, once: it first
#: creates the file ``$QUPATH_RKD_FAULT_MARKER``, and a worker finding that file goes on.
KILL_ONCE_FAULT = "cluster-worker-kill-once"
FAULT_ENV = "QUPATH_RKD_FAULT"
FAULT_MARKER_ENV = "QUPATH_RKD_FAULT_MARKER"

#: What a task runs on its slide: :func:`~qupath_rkd.inference.predict.predict_slide`, or what
#: :class:`~qupath_rkd.cluster.session.ClusterSession` was given instead (a test seam).
SlidePredictor = Callable[..., "SlidePrediction"]

_CHECKPOINTS: dict[str, bytes] = {}
_MODELS: dict[tuple[str, str], TrainedModel] = {}
#: How often this process loaded a checkpoint (tests check: once per worker, not per slide).
LOADS: dict[str, int] = {}


@dataclass(frozen=True)
class SlideFailure:
    """A slide that failed on a worker with one of our errors (rebuilt on the client)."""

    error_type: str
    message: str
    hint: str | None

    def exception(self) -> QupathRkdError:
        """The error as the client raises it: the same class when it can be rebuilt."""
        import qupath_rkd.errors as errors

        cls = getattr(errors, self.error_type, None)
        if isinstance(cls, type) and issubclass(cls, QupathRkdError):
            try:
                return cls(self.message, hint=self.hint)
            except TypeError:
                pass
        return QupathRkdError(self.message, hint=self.hint)


@dataclass
class SlideResult:
    """A slide's prediction and, when asked for (a ``FilesRequest``), its files' bytes
    (``None`` when rendering failed here: the client renders them and meets the error itself)."""

    prediction: SlidePrediction
    rendered: RenderedSlide | None


class ModelPlugin(WorkerPlugin):
    """Puts a checkpoint's bytes on each worker (once; again on a worker that restarts)."""

    def __init__(self, checkpoint: bytes, sha256: str) -> None:
        self.checkpoint = checkpoint
        self.sha256 = sha256
        self.name = plugin_name(sha256)

    def setup(self, worker: Any) -> None:
        _CHECKPOINTS[self.sha256] = self.checkpoint

    def teardown(self, worker: Any) -> None:
        _CHECKPOINTS.pop(self.sha256, None)
        for key in [k for k in _MODELS if k[0] == self.sha256]:
            del _MODELS[key]


def plugin_name(sha256: str) -> str:
    """The worker plugin's name for a checkpoint."""
    return f"qupath-rkd-model-{sha256[:16]}"


def predict_on_worker(
    checkpoint_sha256: str,
    device: str,
    slide_path: str,
    config: InferenceConfig,
    region: BaseGeometry | None,
    torch_threads: int,
    slide_predictor: SlidePredictor | None = None,
    files: FilesRequest | None = None,
) -> SlidePrediction | SlideResult | SlideFailure:
    """Predict one slide here (the Dask task); see the module docstring.

    Args:
        checkpoint_sha256: the checkpoint's sha256 (its bytes came with :class:`ModelPlugin`),
            the model cache's key (and the model's ``model_id``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, resolved on this worker.
        slide_path: absolute path, as the client sees it.
        config: the resolved :class:`~qupath_rkd.inference.predict.InferenceConfig`.
        region: level-0 px geometry (QuPath frame) tiles must lie in, or ``None``.
        torch_threads: torch intra-op threads while scoring.
        slide_predictor: runs instead of ``predict_slide`` (same call; benchmarks and tests).
        files: render the slide's files too and return a :class:`SlideResult`; without it
            the prediction alone.
    """
    from qupath_rkd.inference.predict import predict_slide

    path = Path(slide_path)
    try:
        if not path.exists():
            raise SlideNotFoundError(
                f"{path} cannot be found on the Dask worker on {socket.gethostname()}, "
                "although the client can open it",
                hint="slide paths must be visible to the workers at the same path: put the "
                "slides on a shared filesystem mounted at the same place on every worker",
            )
        model = _model(checkpoint_sha256, device)
        # a Dask worker process is a daemon: it cannot start tile-reading processes, and the
        # cluster's parallelism is its workers anyway (readers do not change results)
        readers = 0 if multiprocessing.current_process().daemon else config.num_workers
        cfg = dataclasses.replace(config, num_workers=readers, torch_threads=torch_threads)
        predict = slide_predictor or predict_slide
        pred = predict(path, model, region=region, config=cfg, progress=_fault_progress())
    except QupathRkdError as exc:
        return SlideFailure(type(exc).__name__, exc.message, exc.hint)
    if files is None:
        return pred
    return SlideResult(pred, _render(pred, files))


def _render(pred: SlidePrediction, files: FilesRequest) -> RenderedSlide | None:
    """The slide's files' bytes, or ``None`` when rendering fails here (any error: the client
    then renders them itself, so a slide fails with the error a one-process run gives)."""
    from qupath_rkd.inference.write import render_slide_outputs

    try:
        return render_slide_outputs(pred, files.key, files.slide_id, slide_name=files.slide_name)
    except Exception:
        logger.debug("rendering %s failed; the client will", pred.slide_path, exc_info=True)
        return None


def _model(sha256: str, device: str) -> TrainedModel:
    """The checkpoint as a loaded model, once per process (file written, loaded, removed)."""
    key = (sha256, device)
    model = _MODELS.get(key)
    if model is not None:
        return model
    checkpoint = _CHECKPOINTS.get(sha256)
    if checkpoint is None:  # not a slide's fault: raised, so Dask retries it
        raise RuntimeError(f"checkpoint {sha256[:12]} has not reached this worker")
    from qupath_rkd.errors import CheckpointError
    from qupath_rkd.model.scorer import load_model

    if hashlib.sha256(checkpoint).hexdigest() != sha256:
        raise CheckpointError("the checkpoint the worker received is damaged (sha256 differs)")
    fd, name = tempfile.mkstemp(prefix=f"qupath-rkd-{sha256[:12]}-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(checkpoint)
        model = load_model(name, device=device)
    finally:
        os.unlink(name)
    _MODELS.clear()  # one model per worker: a new checkpoint replaces the old one
    _MODELS[key] = model
    LOADS[sha256] = LOADS.get(sha256, 0) + 1
    return model


def load_counts() -> dict[str, int]:
    """Checkpoint loads of this process by sha256 (run on each worker by the tests)."""
    return dict(LOADS)


def _fault_progress() -> Any:
    """The progress callback that injects :data:`KILL_ONCE_FAULT`, else ``None``."""
    if os.environ.get(FAULT_ENV) != KILL_ONCE_FAULT:
        return None
    marker = Path(os.environ[FAULT_MARKER_ENV])

    def progress(event: Any) -> None:  # a qupath_rkd.progress.ProgressEvent
        if event.done == 0:  # kill mid-slide: after the first batch, not at the start
            return
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    return progress
