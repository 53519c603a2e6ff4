"""The one renderer of the library's progress events (:mod:`qupath_rkd.progress`), for every
command.

On a terminal each task is a tqdm bar (its count, rate and time left drawn by tqdm; the event's
``info`` — loss, validation AUROC, epoch, slide — as the postfix), removed when the task ends.
Elsewhere (a log file, a pipe, a cron job) each task writes at most one line every
``interval_s`` seconds and one line when it ends, to stderr: done / total, rate, time left and
the ``info`` values. tqdm is imported only when the first bar is drawn, so ``--help`` and
commands off a terminal never load it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from qupath_rkd.progress import ProgressEvent

#: Seconds between two lines of one task off a terminal.
LOG_INTERVAL_S = 10.0


def format_info(info: Mapping[str, float | str]) -> str:
    """``{"loss": 0.12345, "epoch": "1/3"}`` -> ``"loss 0.1235, epoch 1/3"`` (floats to 4
    significant digits)."""
    parts = []
    for key, value in info.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key} {text}")
    return ", ".join(parts)


def format_duration(seconds: float) -> str:
    """``42.3`` -> ``"42 s"``, ``185`` -> ``"3 min 05 s"``, ``3720`` -> ``"1 h 02 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _plural(unit: str, n: int) -> str:
    if n == 1:
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


@dataclass
class _LogState:
    started: float
    done0: int
    last_line: float


class ProgressRenderer:
    """A :data:`~qupath_rkd.progress.ProgressCallback` that draws bars on a terminal and writes
    rate-limited log lines elsewhere.

    Args:
        stream: where to draw (default ``sys.stderr``).
        tty: bars (True) or log lines (False); default: whether ``stream`` is a terminal.
        interval_s: seconds between two log lines of a task (off a terminal).
        clock: seconds, monotonic (tests inject a fake one).

    Use it as a context manager (bars left open by an error are closed on leaving), and
    print lines through :meth:`echo` while bars may be on screen.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval_s = float(interval_s)
        self.clock = clock
        self._bars: dict[str, Any] = {}
        self._logs: dict[str, _LogState] = {}

    # ---- the callback ------------------------------------------------------------------------
    def __call__(self, event: ProgressEvent) -> None:
        if self.tty:
            self._draw(event)
        else:
            self._log(event)

    def _draw(self, event: ProgressEvent) -> None:
        bar = self._bars.get(event.task)
        if bar is None:
            if event.finished:
                return
            from tqdm import tqdm

            bar = tqdm(
                total=event.total,
                initial=event.done,
                desc=event.task,
                unit=event.unit,
                leave=False,
                file=self.stream,
                dynamic_ncols=True,
            )
            self._bars[event.task] = bar
            if event.info:
                bar.set_postfix_str(format_info(event.info))
            return
        if event.finished:
            bar.close()
            del self._bars[event.task]
            return
        if event.total != bar.total:
            bar.total = event.total
        if event.info:
            bar.set_postfix_str(format_info(event.info), refresh=False)
        delta = event.done - bar.n
        if delta > 0:
            bar.update(delta)
        else:
            bar.refresh()

    def _log(self, event: ProgressEvent) -> None:
        now = self.clock()
        state = self._logs.get(event.task)
        if state is None:
            state = _LogState(started=now, done0=event.done, last_line=now)
            self._logs[event.task] = state
        if event.finished:
            del self._logs[event.task]
            self._write(self.log_line(event, now - state.started, event.done - state.done0))
        elif now - state.last_line >= self.interval_s:
            state.last_line = now
            self._write(self.log_line(event, now - state.started, event.done - state.done0))

    @staticmethod
    def log_line(event: ProgressEvent, elapsed_s: float, advanced: int) -> str:
        """The log line of ``event``, ``elapsed_s`` after the task began, having done
        ``advanced`` units since then (a resumed task starts above 0)."""
        rate = advanced / elapsed_s if elapsed_s > 0 else None
        count = f"{event.done}" if event.total is None else f"{event.done}/{event.total}"
        text = f"{event.task}: {count} {_plural(event.unit, event.total or event.done)}"
        if event.total:
            text += f" ({100 * event.done / event.total:.0f}%)"
        if rate is not None:
            text += f", {rate:.3g} {event.unit}/s"
        if event.finished:
            text += f", done in {format_duration(elapsed_s)}"
        elif rate and event.total is not None:
            text += f", {format_duration((event.total - event.done) / rate)} left"
        if event.info:
            text += f"; {format_info(event.info)}"
        return text

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    # ---- around it ---------------------------------------------------------------------------
    def echo(self, message: str, *, err: bool = False) -> None:
        """Print ``message`` (to stderr with ``err``) without breaking the bars on screen."""
        import click

        if self._bars:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr if err else sys.stdout)
        else:
            click.echo(message, err=err)

    def close(self) -> None:
        """Close the bars still open (a task cut short by an error)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._logs.clear()

    def __enter__(self) -> ProgressRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["LOG_INTERVAL_S", "ProgressRenderer", "format_duration", "format_info"]
