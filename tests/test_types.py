"""The package type-checks with mypy (configured in pyproject.toml's ``[tool.mypy]``), so the
types at the seams between stages cannot drift, as tests/test_lint.py does for ruff.

Timing of this test (2 CPU cores shared, load average 7.5): with an empty cache (a fresh
clone, CI) 29 s of CPU, 108 s wall; with the cache ``.mypy_cache/`` a previous run left 1 s of
CPU, 2 s wall.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_the_package() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip(
            "mypy is not installed (it is part of the test extra: pip install -e '.[test]')"
        )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
