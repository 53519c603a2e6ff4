"""Data-parallel training under ``torchrun``: the process group, its ranks, and small collectives.

``torchrun --nproc-per-node N -m qupath_rkd train-patches ...`` starts N processes with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`session` reads them, joins the process group (``nccl`` when the device is
CUDA, ``gloo`` on the CPU) and gives each process its device (``cuda:LOCAL_RANK``); without them
nothing is initialised and every helper here is a no-op for one process. The training code asks
:func:`current` whether it runs data-parallel, so a library caller that initialises the process
group itself gets the same behaviour.

Who does what (rank 0 is "main"):

- RD (:mod:`qupath_rkd.training.trainer`): every rank takes its share of each step's batch
  (:func:`shard_positions`), gradients are averaged by ``DistributedDataParallel``, the
  BatchNorm statistics are those of the whole step's batch (:func:`convert_batchnorm`); rank 0
  alone validates, writes the checkpoint and the resume file, and the others receive the
  outcome (:func:`run_on_main`).
- The head (:mod:`qupath_rkd.training.head_trainer`): every rank extracts the features of its
  share of the patches (through its feature cache), the features are gathered
  (:func:`gather_rows`), and rank 0 alone fits, calibrates and writes the checkpoint.

BatchNorm: ``torch.nn.SyncBatchNorm`` only runs on GPUs (torch 2.14 raises "SyncBatchNorm
expected input tensor to be on GPU" for CPU tensors), so on the CPU the trainable BatchNorm
layers become :class:`GlobalBatchNorm2d`, which all-reduces the per-channel sums with autograd
(:func:`all_reduce_sum`): the mean, variance, running statistics and
gradients are those of the union batch, as one process would compute them (tested to 1e-5).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from qupath_rkd.constants import DISTRIBUTED_TIMEOUT_S, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: what torchrun (and ``torch.distributed.run``) sets in every process it starts
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True for rank 0, the one that validates, writes and prints."""
        return self.rank == 0


SINGLE = DistContext()


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """True when the torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) are set."""
    env = os.environ if environ is None else environ
    return all(k in env for k in TORCHRUN_ENV)


def current() -> DistContext:
    """This process's place in the initialised process group (one process if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local)


def rank_device(device: torch.device, ctx: DistContext | None = None) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` when data-parallel."""
    ctx = ctx or current()
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (``nccl`` for CUDA, else ``gloo``).

    Without the torchrun variables, or with ``WORLD_SIZE=1``, nothing is initialised and the
    one-process context is returned. Raises :class:`ConfigError` for malformed variables.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return current()
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ["LOCAL_RANK"])
    except ValueError as exc:
        raise ConfigError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)"
        ) from exc
    if world <= 1:
        return SINGLE
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: run in one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend=backend,
        timeout=datetime.timedelta(seconds=DISTRIBUTED_TIMEOUT_S),
    )
    ctx = DistContext(rank, world, local)
    logger.info("rank %d of %d (%s, local rank %d)", rank, world, backend, local)
    return ctx


def shutdown(wait: bool = True) -> None:
    """Leave the process group (if one was joined).

    With ``wait`` (a normal exit) every rank first waits for the others: a rank that left the
    group while another was still working (rank 0 validates and saves alone) could abort in
    the communication library's teardown ("terminate called without an active exception",
    about one run in ten of the two-rank tests on a loaded 2-core machine). After an error,
    ``wait=False``: the other ranks may never come.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            try:
                dist.barrier()
            except Exception:  # a rank already gone: leave anyway
                logger.debug("no barrier before leaving the process group", exc_info=True)
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[DistContext]:
    """:func:`init_from_env` on entry, :func:`shutdown` on exit (only if it initialised): after
    the other ranks on a normal exit, at once after an error."""
    already = dist.is_available() and dist.is_initialized()
    ctx = init_from_env(device)
    owned = ctx.enabled and not already
    try:
        yield ctx
    except BaseException:
        if owned:
            shutdown(wait=False)
        raise
    if owned:
        shutdown()


# ---- collectives (no-ops for one process) -------------------------------------------------
def barrier() -> None:
    """Wait for every rank."""
    if current().enabled:
        dist.barrier()


def _comm_device() -> torch.device:
    """Tensors of collectives live on the GPU for nccl, on the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64)."""
    if not current().enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def all_values(value: float) -> list[float]:
    """``value`` of every rank, in rank order."""
    ctx = current()
    if not ctx.enabled:
        return [value]
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    out = [torch.zeros_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(out, t)
    return [float(o.item()) for o in out]


def any_flag(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    return bool(all_sum([1.0 if flag else 0.0])[0] > 0)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled)."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def union_of(items: set[int]) -> set[int]:
    """The union over the ranks of each rank's ``items`` (e.g. the unreadable images it met)."""
    ctx = current()
    if not ctx.enabled:
        return set(items)
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, sorted(items))
    return {int(i) for part in parts for i in part}


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    An exception on rank 0 is raised on every rank (so no rank waits forever for the others).
    """
    ctx = current()
    if not ctx.enabled:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    if ctx.is_main:
        try:
            outcome = ("ok", fn())
        except BaseException as exc:  # re-raised below, on every rank
            outcome = ("error", exc)
    try:
        outcome = broadcast_object(outcome)
    except Exception:  # an unpicklable exception: send its text
        if ctx.is_main and outcome[0] == "error":
            broadcast_object(("error", RuntimeError(f"rank 0 failed: {outcome[1]}")))
            raise outcome[1] from None
        raise
    kind, value = outcome
    if kind == "error":
        raise value
    return value


def shard_indices(n: int, ctx: DistContext | None = None) -> np.ndarray:
    """Items ``rank, rank + world, ...`` of ``range(n)`` (every rank's share of a dataset)."""
    ctx = ctx or current()
    return np.arange(ctx.rank, n, ctx.world_size, dtype=np.int64)


def gather_rows(local: np.ndarray, n: int, ctx: DistContext | None = None) -> np.ndarray:
    """Reassemble an array sharded by :func:`shard_indices`.

    Args:
        local: ``(n_r, ...)`` the rows of this rank's share, in its order.
        n: the number of rows of the whole array.

    Returns:
        ``(n, ...)`` of the same dtype, row ``i`` from the rank that holds item ``i``; the
        bytes travel as they are (float16 features are not converted).
    """
    ctx = ctx or current()
    if not ctx.enabled:
        return local
    sizes = [len(shard_indices(n, DistContext(r, ctx.world_size))) for r in range(ctx.world_size)]
    if len(local) != sizes[ctx.rank]:
        raise ValueError(f"rank {ctx.rank} holds {len(local)} rows, expected {sizes[ctx.rank]}")
    row_shape, dtype = local.shape[1:], local.dtype
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    biggest = max(sizes)
    buf = np.zeros((biggest, row_bytes), dtype=np.uint8)
    buf[: len(local)] = np.ascontiguousarray(local).view(np.uint8).reshape(len(local), row_bytes)
    device = _comm_device()
    t = torch.from_numpy(buf).to(device)
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t)
    out = np.empty((n, row_bytes), dtype=np.uint8)
    for r, part in enumerate(parts):
        out[shard_indices(n, DistContext(r, ctx.world_size))] = part.cpu().numpy()[: sizes[r]]
    return out.view(dtype).reshape((n, *row_shape))


# ---- sampling -------------------------------------------------------------------------------
def shard_positions(batch_labels: np.ndarray, ctx: DistContext) -> list[int]:
    """This rank's positions in one step's union batch, tumour and normal split separately.

    Tumour positions ``rank, rank + world, ...`` and likewise the normal ones, in batch order:
    the ranks' shares partition the batch and each keeps the batch's tumour/normal balance
    (shares differ by at most one patch of each class).
    """
    labels = np.asarray(batch_labels)
    pos: list[int] = []
    for cls in (LABEL_TUMOR, LABEL_NORMAL):
        pos.extend(np.flatnonzero(labels == cls)[ctx.rank :: ctx.world_size].tolist())
    return sorted(pos)


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's share (:func:`shard_positions`) of each batch of ``union``, the sampler
    one process would use, so N ranks together see exactly one process's batches."""

    def __init__(
        self, union: torch.utils.data.Sampler[list[int]], labels: np.ndarray, ctx: DistContext
    ) -> None:
        self.union, self.labels, self.ctx = union, np.asarray(labels), ctx

    def __len__(self) -> int:
        return len(self.union)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.union:
            pos = shard_positions(self.labels[batch], self.ctx)
            yield [int(batch[p]) for p in pos]


# ---- BatchNorm over the union batch ---------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks with a gradient: the gradient of each rank's input is the sum of the
    output gradients of every rank (each rank's loss depends on every rank's input)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = grad.contiguous().clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


def all_reduce_sum(x: Tensor, group: Any = None) -> Tensor:
    """Differentiable sum of ``x`` over the ranks of ``group`` (default: all)."""
    return _AllReduceSum.apply(x, group or dist.group.WORLD)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of every rank's batch together.

    What ``torch.nn.SyncBatchNorm`` does on GPUs, for the CPU (gloo): two autograd all-reduces
    per layer (the per-channel sums and count, then the squared deviations from the global
    mean), so the forward, the backward and the running statistics (unbiased variance over the
    union count) equal one process's on the union batch. Outside training, or without a process
    group, it is plain ``BatchNorm2d``.
    """

    process_group: Any = None

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        group = self.process_group or dist.group.WORLD
        c = x.shape[1]
        xf = x.float()
        count_local = torch.full((1,), float(xf.numel() // max(c, 1)), dtype=xf.dtype)
        sums = all_reduce_sum(torch.cat([xf.sum(dim=(0, 2, 3)), count_local]), group)
        count = sums[c]
        mean = sums[:c] / count
        centred = xf - mean.view(1, c, 1, 1)
        var = all_reduce_sum((centred * centred).sum(dim=(0, 2, 3)), group) / count
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - m).add_(
                    mean.detach().to(self.running_mean.dtype), alpha=m
                )
                self.running_var.mul_(1 - m).add_(
                    unbiased.detach().to(self.running_var.dtype), alpha=m
                )
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make the ``BatchNorm2d`` layers of ``module`` use the union batch's statistics.

    CUDA: ``torch.nn.SyncBatchNorm``; CPU: :class:`GlobalBatchNorm2d` (same parameter and
    buffer names, so checkpoints are unchanged). Returns the module (converted in place where
    the layers are children; a bare ``BatchNorm2d`` is returned converted).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.to(next(iter(module.state_dict().values())).device)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_batchnorm(child, device)
        if converted is not child:
            setattr(module, name, converted)
    return module


__all__ = [
    "SINGLE",
    "DistContext",
    "GlobalBatchNorm2d",
    "ShardedBatchSampler",
    "all_reduce_sum",
    "all_sum",
    "all_values",
    "any_flag",
    "barrier",
    "broadcast_object",
    "convert_batchnorm",
    "current",
    "gather_rows",
    "init_from_env",
    "launched_by_torchrun",
    "rank_device",
    "run_on_main",
    "session",
    "shard_indices",
    "shard_positions",
    "shutdown",
    "union_of",
]
