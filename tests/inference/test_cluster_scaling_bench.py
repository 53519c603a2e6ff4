"""benchmarks/cluster_scaling.py's simulated mode, run tiny (issue 14.4): the sleep stands in
for the model behind the real Dask orchestration, and the JSON it prints is sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "cluster_scaling.py"


def test_simulated_mode_tiny(tmp_path: Path) -> None:
    gpu_s, slides, tiles = 0.4, 4, 300
    out = tmp_path / "sim.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable, str(SCRIPT), "simulated", "--workers", "2", "--slides", str(slides),
            "--gpu-s", str(gpu_s), "--tiles", str(tiles), "--json", str(out),
        ],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout)
    assert result["mode"] == "simulated"
    assert result["gpu_s"] == gpu_s and result["slides"] == slides
    assert "not compute" in result["note"]
    [run] = result["runs"]
    assert run["workers"] == 2 and run["slides"] == slides
    # every slide came back from the stand-in (the real model would score the slide's own
    # tiles, far fewer) and was written by the client
    assert run["tiles"] == slides * tiles
    assert result["output_bytes_per_slide"] > 10_000
    # two workers cannot beat the sleeps: 4 slides x 0.4 s / 2 workers
    assert run["ideal_seconds"] == pytest.approx(slides * gpu_s / 2)
    assert run["seconds"] >= run["ideal_seconds"]
    assert 0 < run["ideal_efficiency"] <= 1
    assert run["slides_per_s"] == pytest.approx(slides / run["seconds"], rel=1e-3)
    assert run["efficiency"] is None  # no one-worker run to compare with
    assert run["warm_up_s"] > 0 and run["cluster_start_s"] > 0
    assert len(run["load_before"]) == 3


def test_bad_arguments_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "simulated", "--workers", "0", "--slides", "2"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "workers >= 1" in proc.stderr
