"""Progress of long work: one callback type, from the CLI down to every long loop.

Library functions that take more than a few seconds (feature extraction, the head's fits, RD
training steps, a slide's tiles, building the demo's slides, sync's stages) accept
``progress: ProgressCallback | None`` and call it with :class:`ProgressEvent` as work
advances. They never draw or print anything themselves: the CLI renders the events
(:mod:`qupath_rkd.cli.progress`: bars on a terminal, a log line at intervals elsewhere), tests
record them, and ``None`` means nobody listens.

A task is named by its ``task`` string; its events have non-decreasing ``done`` and end with
one event whose ``finished`` is True (also when the work stopped early or failed).
:class:`ProgressTask` keeps those rules for a loop.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ProgressCallback",
    "ProgressEvent",
    "ProgressTask",
    "no_progress",
]


@dataclass(frozen=True)
class ProgressEvent:
    """Where one task stands.

    Attributes:
        task: what is being done, e.g. ``"features"``, ``"training RD"``, ``"tiles LN-01.svs"``
            (the same string for every event of the task).
        done: units done so far (non-decreasing within a task).
        total: units in the whole task, ``None`` when unknown.
        unit: what is counted, singular (``"patch"``, ``"step"``, ``"tile"``, ``"fit"``).
        info: values worth showing beside the count, e.g. ``{"loss": 0.12, "val AUROC":
            0.91, "epoch": "2/3"}`` (the latest value of each key seen in the task).
        finished: the last event of the task.
    """

    task: str
    done: int
    total: int | None
    unit: str = "it"
    info: Mapping[str, float | str] = field(default_factory=lambda: types.MappingProxyType({}))
    finished: bool = False


#: The one progress callback type.
ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The callback that ignores every event (what ``progress=None`` means)."""


class ProgressTask:
    """The events of one task, sent to ``progress`` (``None``: sent nowhere).

    The first event (``done = initial``) is sent on creation; :meth:`finish` sends the last
    one, once. As a context manager the task is finished on leaving, exception or not::

        with ProgressTask(progress, "features", total=len(dataset), unit="patch") as task:
            for batch in loader:
                ...
                task.advance(len(batch))
    """

    def __init__(
        self,
        progress: ProgressCallback | None,
        task: str,
        total: int | None,
        unit: str = "it",
        *,
        initial: int = 0,
        info: Mapping[str, float | str] | None = None,
    ) -> None:
        self._progress = progress or no_progress
        self.task = task
        self.total = total
        self.unit = unit
        self.done = int(initial)
        self.info: dict[str, float | str] = dict(info or {})
        self._finished = False
        self._emit(False)

    def _emit(self, finished: bool) -> None:
        self._progress(
            ProgressEvent(
                task=self.task,
                done=self.done,
                total=self.total,
                unit=self.unit,
                info=types.MappingProxyType(dict(self.info)),
                finished=finished,
            )
        )

    def advance(self, n: int = 1, **info: float | str) -> None:
        """``n`` more units done (and ``info`` values updated)."""
        self.update(self.done + int(n), **info)

    def update(self, done: int, **info: float | str) -> None:
        """``done`` units done in all (never less than before); ``info`` values updated."""
        if self._finished:
            return
        self.done = max(self.done, int(done))
        self.info.update(info)
        self._emit(False)

    def finish(self, **info: float | str) -> None:
        """Send the task's last event (once; later calls do nothing)."""
        if self._finished:
            return
        self.info.update(info)
        self._finished = True
        self._emit(True)

    def __enter__(self) -> ProgressTask:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()
