"""The client side: connect to (or start) a Dask cluster, send slides, collect predictions.

``with ClusterSession(spec, device=...) as session:`` connects (a short timeout; an
unreachable scheduler is one :class:`~qupath_rkd.errors.ClusterError` naming the address),
checks that client, scheduler and workers run the same package versions (Dask's own check,
as one line), and :meth:`ClusterSession.submit` sends one task per slide. The checkpoint's
bytes go once to every worker (a worker plugin, see :mod:`qupath_rkd.cluster.worker`); each
task names the checkpoint by its sha256, so no slide carries the model. Results come back as
the slides' predictions (and, for a job with a
:class:`~qupath_rkd.inference.write.FilesRequest`, the bytes of its files, rendered on the
worker); the caller writes them.

Failures: a task that raises (not one of our errors) is retried once (``retries=1``); a worker
that dies mid-slide has its slide run again elsewhere, and a slide whose worker died twice
fails (``KilledWorker``; on a local cluster ``allowed-failures`` is set to 1, a remote
scheduler uses its own setting). Either way the slide is reported like any failed slide and the
others go on.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from qupath_rkd.cluster.spec import ClusterSpec
from qupath_rkd.cluster.worker import (
    ModelPlugin,
    SlideFailure,
    SlideResult,
    predict_on_worker,
)
from qupath_rkd.errors import ClusterError, QupathRkdError

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from qupath_rkd.cluster.worker import SlidePredictor
    from qupath_rkd.inference.predict import InferenceConfig, SlidePrediction
    from qupath_rkd.inference.write import FilesRequest, RenderedSlide

logger = logging.getLogger(__name__)

#: Packages whose versions must agree beyond Dask's own list (they decide the results).
CHECKED_PACKAGES = ("qupath_rkd", "torch", "shapely", "openslide")
#: Worker deaths a slide survives on a local cluster before it fails (Dask's default is 3).
LOCAL_ALLOWED_FAILURES = 1


@dataclass(frozen=True)
class SlideJob:
    """One slide to predict: ``key`` names it in :meth:`RemoteSlides.result`; with ``files``
    the worker renders the slide's files too (:meth:`RemoteSlides.result_with_files`)."""

    key: str
    slide_path: Path
    config: InferenceConfig
    region: BaseGeometry | None = None
    files: FilesRequest | None = None


class ClusterSession:
    """A Dask client for one run (see the module docstring)."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        device: str = "auto",
        echo: Callable[[str], None] | None = None,
        slide_predictor: SlidePredictor | None = None,
    ) -> None:
        """``slide_predictor`` replaces :func:`~qupath_rkd.inference.predict.predict_slide`
        on the workers (a test seam: ``benchmarks/cluster_scaling.py`` puts a fixed sleep
        where the model would run, behind the real submission, checkpoint broadcast, result
        return and writes). Called as ``f(path, model, region=, config=, progress=)``; it
        must pickle by reference (a module-level function the workers can import)."""
        self.spec = spec
        self.device = device or "auto"
        self.echo = echo
        self.slide_predictor = slide_predictor
        self._client: Any = None
        self._cluster: Any = None
        self._plugins: dict[str, str] = {}
        self._gpu = False

    # --- connection -----------------------------------------------------------------------
    def connect(self) -> None:
        """Connect (idempotent). Raises :class:`ClusterError`: unreachable scheduler,
        mismatched versions, no worker, no GPU worker for a CUDA device."""
        if self._client is not None:
            return
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ClusterError(
                f"the cluster flags need Dask ({exc})",
                hint="pip install 'qupath-rkd[cluster]' (dask[distributed])",
            ) from exc
        timeout = f"{self.spec.connect_timeout_s:g}s"
        if self.spec.scheduler:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # versions are checked below, as one line
                    self._client = Client(
                        self.spec.scheduler, timeout=timeout, set_as_default=False
                    )
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {self.spec.scheduler} within "
                    f"{self.spec.connect_timeout_s:g} s ({type(exc).__name__})",
                    hint="start one with `dask scheduler` and workers with `dask worker "
                    "ADDRESS`, or check the address and the firewall",
                ) from exc
        else:
            self._gpu = self.device != "cpu" and _cuda_here()
            with dask.config.set(
                {"distributed.scheduler.allowed-failures": LOCAL_ALLOWED_FAILURES}
            ):
                self._cluster = LocalCluster(
                    n_workers=self.spec.local_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    resources={"GPU": 1} if self._gpu else None,
                    silence_logs=logging.ERROR,
                )
            self._client = Client(self._cluster, timeout=timeout, set_as_default=False)
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        client = self._client
        if self.spec.scheduler:
            try:
                client.wait_for_workers(1, timeout=self.spec.connect_timeout_s)
            except (TimeoutError, OSError) as exc:
                raise ClusterError(
                    f"the Dask scheduler at {self.spec.scheduler} has no workers "
                    f"(waited {self.spec.connect_timeout_s:g} s)",
                    hint=f"start some with `dask worker {self.spec.scheduler}`",
                ) from exc
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.get_versions(check=True, packages=list(CHECKED_PACKAGES))
        mismatch = [str(w.message) for w in caught if "Mismatched versions" in str(w.message)]
        if mismatch:
            raise ClusterError(
                f"{self.spec.describe()}: {versions_one_line(mismatch[0])}",
                hint="install the same versions on the client, the scheduler and every worker "
                "(one environment or container image)",
            )
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        gpu_workers = [w for w in workers.values() if w.get("resources", {}).get("GPU", 0) >= 1]
        if self.spec.scheduler:
            wants_cuda = self.device.startswith("cuda")
            if wants_cuda and not gpu_workers:
                raise ClusterError(
                    f"--device {self.device}, but no worker of {self.spec.scheduler} "
                    "declares a GPU",
                    hint=f"start GPU workers with `dask worker {self.spec.scheduler} "
                    "--resources GPU=1`, or use --device cpu",
                )
            self._gpu = bool(gpu_workers) and self.device != "cpu"
        logger.info(
            "%s: %d worker(s)%s", self.spec.describe(), len(workers), ", GPU" if self._gpu else ""
        )
        if self.echo is not None:
            gpus = f", {len(gpu_workers)} with a GPU" if gpu_workers else ""
            self.echo(f"{self.spec.describe()}: {len(workers)} worker(s){gpus}")

    def close(self) -> None:
        """Close the client (and the local cluster it started); a remote cluster's workers
        drop the checkpoint."""
        if self._client is not None and self._cluster is None:
            for name in self._plugins.values():
                try:
                    self._client.unregister_worker_plugin(name)
                except Exception:
                    logger.debug("unregistering %s failed", name, exc_info=True)
        for thing in (self._client, self._cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing must not hide the run's own outcome
                    logger.debug("closing %s failed", thing, exc_info=True)
        self._client = self._cluster = None
        self._plugins.clear()

    def __enter__(self) -> ClusterSession:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- work -----------------------------------------------------------------------------
    def submit(self, checkpoint: str | Path, jobs: Sequence[SlideJob]) -> RemoteSlides:
        """One task per job with the model in ``checkpoint``; returns at once.

        The checkpoint's bytes go to every worker the first time it is used in this session.
        A slide the client itself cannot find is not sent: its result is the error a
        one-process run gives.
        """
        self.connect()
        data = Path(checkpoint).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self._plugins:
            plugin = ModelPlugin(data, sha)
            self._client.register_plugin(plugin, name=plugin.name)
            self._plugins[sha] = plugin.name
        resources = {"GPU": 1} if self._gpu else None
        futures: dict[str, Any] = {}
        paths: dict[str, Path] = {}
        run = uuid.uuid4().hex[:8]
        for job in jobs:
            paths[job.key] = Path(job.slide_path)
            if not Path(job.slide_path).is_file():
                continue
            futures[job.key] = self._client.submit(
                predict_on_worker,
                sha,
                self.device,
                str(Path(job.slide_path).resolve()),
                job.config,
                job.region,
                self.spec.torch_threads,
                self.slide_predictor,
                job.files,
                key=f"qupath-rkd-{Path(job.slide_path).name}-{run}-{len(futures)}",
                retries=1,
                pure=False,
                resources=resources,
            )
        return RemoteSlides(futures, paths, self.spec)

    def run_on_workers(self, function: Callable[[], Any]) -> dict[str, Any]:
        """``function()`` on every worker (worker address -> result); for tests."""
        self.connect()
        return dict(self._client.run(function))


class RemoteSlides:
    """The slides sent by one :meth:`ClusterSession.submit`, by job key."""

    def __init__(self, futures: dict[str, Any], paths: dict[str, Path], spec: ClusterSpec):
        self._futures = futures
        self._paths = paths
        self._spec = spec

    def __contains__(self, key: object) -> bool:
        return key in self._paths

    def result(self, key: str) -> SlidePrediction:
        """The slide's prediction (waits for it), or the error a one-process run raises.

        Raises:
            QupathRkdError: the slide failed (on the worker, or the client cannot find it).
            ClusterError: its workers died twice, or the cluster went away.
        """
        return self.result_with_files(key)[0]

    def result_with_files(self, key: str) -> tuple[SlidePrediction, RenderedSlide | None]:
        """:meth:`result` and the bytes of the slide's files when its job asked for them and
        the worker could render them (else ``None``: the caller renders them)."""
        import dataclasses

        path = self._paths[key]
        future = self._futures.pop(key, None)
        if future is None:  # not sent: the client cannot see it either
            from qupath_rkd.slides import open_slide

            with open_slide(path):
                pass
            raise QupathRkdError(f"{path} could not be sent to the cluster")
        try:
            outcome = future.result()
        except QupathRkdError:
            raise
        except Exception as exc:
            name = type(exc).__name__
            if name == "KilledWorker":
                raise ClusterError(
                    f"{path.name}: the Dask workers running it died twice "
                    f"({self._spec.describe()})",
                    hint="a worker out of memory is the usual cause: give workers more memory "
                    "or lower --batch-size",
                ) from exc
            if name in ("CancelledError", "FutureCancelledError", "CommClosedError"):
                raise ClusterError(
                    f"{path.name}: lost the {self._spec.describe()} ({name})",
                    hint="check that the scheduler and its workers are still running",
                ) from exc
            raise
        finally:
            if future is not None:
                future.release()
        if isinstance(outcome, SlideFailure):
            raise outcome.exception()
        pred: SlidePrediction = outcome
        rendered: RenderedSlide | None = None
        if isinstance(outcome, SlideResult):
            pred, rendered = outcome.prediction, outcome.rendered
        # the worker saw the resolved path; the outputs name the path the caller gave
        return dataclasses.replace(pred, slide_path=path), rendered

    def cancel(self) -> None:
        """Drop what has not been collected (the cluster stops working on it)."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()


def versions_one_line(message: str) -> str:
    """Dask's "Mismatched versions found" table as one line: ``package: client X, scheduler Y,
    workers Z; ...``."""
    rows = []
    header: list[str] | None = None
    for line in message.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        parts = [f"{h} {v}" for h, v in zip(header[1:], cells[1:], strict=False) if v]
        rows.append(f"{cells[0]}: " + ", ".join(parts))
    return "mismatched versions: " + ("; ".join(rows) or message.splitlines()[0])


def _cuda_here() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
