"""The bridge and the labels are light: importing them starts no JVM and loads no torch."""

from __future__ import annotations

import subprocess
import sys


def test_imports_load_neither_paquo_nor_torch() -> None:
    code = (
        "import sys, qupath_rkd.qupath, qupath_rkd.qupath.backends, qupath_rkd.labels;"
        "from qupath_rkd.qupath.backends import get_backend;"
        "print(sorted(m for m in ('paquo', 'jpype', 'torch', 'openslide') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
