"""The README tells a newcomer what the install needs."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_says_how_to_get_the_cpu_build_of_torch() -> None:
    """Regression: the install pulled a 5.8 GB CUDA torch on a machine without a GPU and the
    README did not say how to get the CPU build."""
    text = README.read_text(encoding="utf-8")
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in text
    # before the package, so that pip keeps it
    assert text.index("download.pytorch.org/whl/cpu") < text.index(".venv/bin/pip install -e .  ")
