"""Which cluster to use (``--scheduler`` / ``--local-cluster`` / ``[cluster]``); no Dask here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from qupath_rkd.errors import ConfigError

#: Seconds the client waits for a scheduler before giving up (one line naming the address).
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: torch intra-op threads per worker task: one slide per core. Scores depend on the thread
#: count in their last float32 bits (MKL / oneDNN split their reductions by thread), so a
#: one-process run gives the same bytes at ``--torch-threads 1`` (docs/benchmarks.md).
WORKER_TORCH_THREADS = 1

_ADDRESS = re.compile(
    r"^(?:(?P<scheme>[a-z][a-z0-9+]*)://)?(?P<host>[^\s/:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$"
)


@dataclass(frozen=True)
class ClusterSpec:
    """A Dask cluster to fan slides out to.

    Attributes:
        scheduler: address of a running ``dask scheduler`` (``tcp://host:8786``), or ``None``.
        local_workers: with no scheduler, start a ``LocalCluster`` of this many worker
            processes (one thread each) on this machine.
        connect_timeout_s: how long to wait for the scheduler.
        torch_threads: torch intra-op threads each worker uses for a slide.
    """

    scheduler: str | None = None
    local_workers: int = 0
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    torch_threads: int = WORKER_TORCH_THREADS

    def describe(self) -> str:
        """``Dask scheduler tcp://host:8786`` or ``local Dask cluster of 2 workers``."""
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        return f"local Dask cluster of {self.local_workers} worker(s)"


def cluster_spec(
    scheduler: str | None,
    local_workers: int | None,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    where: str = "--scheduler / --local-cluster",
) -> ClusterSpec | None:
    """The cluster asked for, or ``None`` (one process, no Dask).

    ``scheduler`` is ``host:port`` or ``scheme://host:port`` (``tcp://`` when no scheme);
    empty means none. ``local_workers`` 0 or ``None`` means none.

    Raises:
        ConfigError: both given, a malformed address, or a negative worker count (``where``
            names the flags or config keys in the message).
    """
    address = (scheduler or "").strip()
    workers = int(local_workers or 0)
    if workers < 0:
        raise ConfigError(f"{where}: the local cluster needs at least 1 worker, not {workers}")
    if address and workers:
        raise ConfigError(
            f"{where}: both a scheduler ({address}) and a local cluster ({workers} workers) given",
            hint="use one: a running scheduler's address, or a local cluster of N workers",
        )
    if not address and not workers:
        return None
    if connect_timeout_s <= 0:
        raise ConfigError(f"{where}: the connect timeout must be positive, not {connect_timeout_s}")
    if address:
        match = _ADDRESS.match(address)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ConfigError(
                f"{where}: {address!r} is not a scheduler address",
                hint="give it as tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786 (`dask scheduler` "
                "prints it)",
            )
        if match["scheme"] is None:
            address = f"tcp://{address}"
        return ClusterSpec(scheduler=address, connect_timeout_s=connect_timeout_s)
    return ClusterSpec(local_workers=workers, connect_timeout_s=connect_timeout_s)
