"""Every script in examples/ runs to completion with no arguments.

Convention for examples: runnable as ``python examples/NAME.py`` with no arguments, writing
only to a temporary folder that it removes, finishing in well under a minute on 2 CPU cores. An
example that needs data a fresh clone lacks (``../shared``) says so in one line and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=dict(os.environ, TMPDIR=str(tmp)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example should show what it did"
    # regression: examples wrote ./runs/example and left their temporary folders behind
    assert not list(cwd.iterdir()), "an example writes nothing into the current folder"
    # (torch keeps its per-user compile cache, torchinductor_USER, in TMPDIR: not the example's)
    left = [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")]
    assert not left, f"an example removes its temporary folder: {left} left in TMPDIR"


def test_patch_example_without_pcam_says_what_it_needs(tmp_path: Path) -> None:
    """Regression: without ../shared/data/pcam it ended in a traceback."""
    script = next(p for p in EXAMPLES if p.stem == "train_and_score_patches")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "no-pcam")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "needs PatchCamelyon" in lines[0] and "no-pcam" in lines[0]
