"""Every script in examples/ runs to completion with no arguments.

Convention for examples: runnable as ``python examples/NAME.py`` with no arguments, writing
only to a temporary folder that it removes, finishing in well under a minute on 2 CPU cores. An
example that needs data a fresh clone lacks (``../shared``) says so in one line and exits 0.
"""

from __future__ import annotations

import os
import shutil
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


def _run_alone(
    script: Path, tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Run a copy of ``script`` laid out as in a fresh clone with no ``../shared`` beside it."""
    clone = tmp_path / "clone"
    (clone / "examples").mkdir(parents=True)
    copy = clone / "examples" / script.name
    shutil.copyfile(script, copy)
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    repo = Path(__file__).resolve().parents[1]
    pythonpath = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(copy), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=pythonpath),
    )
    return result, cwd, tmp


def test_patch_example_without_shared_uses_the_bundled_patches(tmp_path: Path) -> None:
    """Regression: without ../shared it could not run at all (a traceback, later a 'needs' line)."""
    script = next(p for p in EXAMPLES if p.stem == "train_and_score_patches")
    result, cwd, tmp = _run_alone(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the patches bundled with qupath-rkd" in result.stdout
    assert "trained: best AUROC" in result.stdout and "scored 100 patches" in result.stdout
    assert not list(cwd.iterdir())
    assert not [p for p in tmp.iterdir() if not p.name.startswith("torchinductor_")]


def test_patch_example_error_is_one_line(tmp_path: Path, pcam_small: dict[str, Path]) -> None:
    """An unusable OUT_DIR (here a file) is one line on stderr and exit 1, not a traceback."""
    script = next(p for p in EXAMPLES if p.stem == "train_and_score_patches")
    pcam = tmp_path / "pcam"
    for split, key in (
        ("train/0", "train_normal"),
        ("train/1", "train_tumor"),
        ("valid/0", "valid_normal"),
        ("valid/1", "valid_tumor"),
    ):
        (pcam / split).parent.mkdir(parents=True, exist_ok=True)
        (pcam / split).symlink_to(pcam_small[key])
    out = tmp_path / "a file"
    out.write_text("x")
    result, _, tmp = _run_alone(script, tmp_path, str(pcam), str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "a file" in lines[0]
    assert not [p for p in tmp.iterdir() if not p.name.startswith("torchinductor_")]
