"""Progress: one callback type from the CLI down (``qupath_rkd.progress``), drawn only by the CLI
(``qupath_rkd.cli.progress``): bars on a terminal, rate-limited log lines elsewhere."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from qupath_rkd.cli.progress import ProgressRenderer, format_duration, format_info
from qupath_rkd.progress import ProgressEvent, ProgressTask

PACKAGE = Path(__file__).resolve().parents[1] / "qupath_rkd"


def _library_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]


def test_no_tqdm_and_no_print_below_the_cli() -> None:
    """The library reports progress through the callback only: it imports no tqdm and prints
    nothing (every import and call counts, function-level ones included)."""
    offenders = []
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "tqdm" or n.startswith("tqdm.") for n in names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports tqdm")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} prints")
    assert len(_library_modules()) > 50  # the walk found the package
    assert not offenders, offenders


def test_the_renderer_imports_no_tqdm_until_a_bar_is_drawn() -> None:
    """``--help`` and off-terminal runs never load tqdm (a fresh interpreter: tqdm may already
    be imported in this one)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import qupath_rkd.cli, qupath_rkd.cli.progress as p\n"
        "r = p.ProgressRenderer(tty=False)\n"
        "from qupath_rkd.progress import ProgressTask\n"
        "with ProgressTask(r, 'x', 3, 'patch') as t: t.advance(3)\n"
        "print('tqdm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_a_task_sends_increasing_counts_and_finishes_once_even_on_error() -> None:
    events: list[ProgressEvent] = []
    task = ProgressTask(events.append, "features", 10, "patch", initial=2)
    with pytest.raises(RuntimeError), task:
        task.advance(3, loss=0.5)
        task.update(4)  # never goes back
        task.update(9, auroc=0.8)
        raise RuntimeError("boom")
    assert [e.done for e in events] == [2, 5, 5, 9, 9]
    assert [e.finished for e in events] == [False] * 4 + [True]
    assert dict(events[-1].info) == {"loss": 0.5, "auroc": 0.8}  # the latest of each key
    assert all(e.task == "features" and e.total == 10 and e.unit == "patch" for e in events)
    task.finish()
    task.advance(1)
    assert len(events) == 5  # nothing after the end
    ProgressTask(None, "nobody listens", None).finish()  # None: no callback, no error


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_one_line_per_task_at_most_every_interval_and_at_its_end() -> None:
    stream, clock = io.StringIO(), FakeClock()
    render = ProgressRenderer(stream, tty=False, interval_s=10.0, clock=clock)
    task = ProgressTask(render, "training RD", 300, "step", info={"epoch": "1/3"})
    for step in range(1, 301):
        clock.now += 0.5  # 2 steps/s: 150 s in all
        task.advance(1, loss=1.0 / step)
        if step == 150:
            other = ProgressTask(render, "validation", 64, "patch")
            clock.now += 3.0
            other.advance(64)
            other.finish()
            task.update(task.done, **{"val AUROC": 0.875})
    task.finish()
    lines = stream.getvalue().splitlines()
    train = [line for line in lines if line.startswith("training RD:")]
    # every 10 s of a 153 s task: 15 lines, and the final one
    assert len(train) == 16, lines
    assert train[0].startswith("training RD: 20/300 steps (7%), 2 step/s, 2 min 20 s left")
    assert "epoch 1/3" in train[0] and "loss 0.05" in train[0]
    assert "val AUROC 0.875" in train[-2] and "val AUROC" not in train[0]
    assert train[-1].startswith("training RD: 300/300 steps (100%)")
    assert train[-1].endswith("; epoch 1/3, loss 0.003333, val AUROC 0.875")
    assert "done in 2 min 33 s" in train[-1]
    # a 3 s task writes its end line only
    assert [line for line in lines if line.startswith("validation")] == [
        "validation: 64/64 patches (100%), 21.3 patch/s, done in 3 s"
    ]


def test_off_a_terminal_a_resumed_or_open_ended_task_reads_right() -> None:
    stream, clock = io.StringIO(), FakeClock()
    render = ProgressRenderer(stream, tty=False, interval_s=5.0, clock=clock)
    resumed = ProgressTask(render, "training RD", 100, "step", initial=50)
    clock.now += 10.0
    resumed.advance(10)  # 10 steps in 10 s, not 60
    open_ended = ProgressTask(render, "scoring", None, "tile")
    clock.now += 6.0
    open_ended.advance(30)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "training RD: 60/100 steps (60%), 1 step/s, 40 s left"
    assert lines[1] == "scoring: 30 tiles, 5 tile/s"


def test_on_a_terminal_each_task_is_a_bar_closed_at_its_end() -> None:
    stream = io.StringIO()
    with ProgressRenderer(stream, tty=True) as render:
        outer = ProgressTask(render, "predicting slides", 2, "slide")
        inner = ProgressTask(render, "tiles LN-01.tif", 40, "tile")
        assert set(render._bars) == {"predicting slides", "tiles LN-01.tif"}
        inner.advance(40, loss=0.25)
        bar = render._bars["tiles LN-01.tif"]
        assert bar.n == 40 and bar.total == 40 and "loss 0.25" in bar.postfix
        inner.finish()
        outer.advance(1)
        assert set(render._bars) == {"predicting slides"}
        assert render._bars["predicting slides"].n == 1
    assert not render._bars  # the bar left open is closed with the renderer
    drawn = stream.getvalue()
    assert "predicting slides" in drawn and "tiles LN-01.tif" in drawn and "\r" in drawn


def test_formats() -> None:
    assert format_info({"loss": 0.123456, "epoch": "2/3", "n": 5}) == "loss 0.1235, epoch 2/3, n 5"
    assert [format_duration(s) for s in (0.4, 42.3, 185, 3720)] == [
        "0 s",
        "42 s",
        "3 min 05 s",
        "1 h 02 min",
    ]
