"""The demo: a QuPath-like project of semi-real slides (mosaics of real PCam patches) and the
builders behind it.

- :mod:`qupath_rkd.demo.project`: builds the demo project and runs the loop on it (``qupath-rkd
  demo``).
- :mod:`qupath_rkd.demo.semireal`: the semi-real slide builder (pyramidal TIFF + true lesions).
- :mod:`qupath_rkd.demo.camelyon_lesions`: semi-real slides with real Camelyon16 lesion shapes.
"""

from __future__ import annotations

from qupath_rkd.demo.project import (
    MAX_PROBABILITY,
    PEAK_X_PX,
    PEAK_Y_PX,
    DemoProject,
    DemoResult,
    DemoSlideSpec,
    build_demo_project,
    demo_froc,
    qupath_file_uri,
    run_demo,
)
from qupath_rkd.demo.semireal import (
    LesionSpec,
    SemiRealSlide,
    build_semireal_slide,
    demo_patch_dirs,
)

__all__ = [
    "MAX_PROBABILITY",
    "PEAK_X_PX",
    "PEAK_Y_PX",
    "DemoProject",
    "DemoResult",
    "DemoSlideSpec",
    "LesionSpec",
    "SemiRealSlide",
    "build_demo_project",
    "build_semireal_slide",
    "demo_froc",
    "demo_patch_dirs",
    "qupath_file_uri",
    "run_demo",
]
