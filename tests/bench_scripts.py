"""Load a script of ``benchmarks/`` as a module, for the tests that check it.

The scripts are not a package (each runs as ``python benchmarks/<script>.py``), so a test loads
one from its file. The module is registered in ``sys.modules`` while in use: the scripts'
dataclasses look their module up there.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_module(script: str, name: str | None = None) -> Iterator[ModuleType]:
    """``benchmarks/<script>`` loaded as module ``name`` (default ``<stem>_bench``), removed
    from ``sys.modules`` again on exit."""
    name = name or f"{Path(script).stem}_bench"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    assert spec is not None and spec.loader is not None, f"cannot load {BENCHMARKS / script}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
