"""Labels from annotations: class mapping, per-image flags, tile overlap → labelled set.

Torch-free. Geometry in level-0 ``(x, y)`` px (QuPath's frame). Typical use::

    classes = ClassMapping.from_config(config.section("classes"))
    label_config = LabelConfig.from_config(config.section("labels"))
    inputs = [SlideInput.from_entry(e, backend.read_annotations(e)) for e in backend.images()]
    labelled = build_labelled_set(inputs, classes, label_config)
    print(labelled.summary())          # tiles per class per slide
    labelled.items                     # [(slide_path, x_px, y_px, label), ...]
    labelled.sha256                    # changes exactly when the labels change
"""

from __future__ import annotations

from qupath_rkd.labels.config import (
    FULLY_ANNOTATED_KEY,
    TUMOR_FREE_KEY,
    ClassMapping,
    LabelConfig,
    SlideFlags,
    slide_flags,
)
from qupath_rkd.labels.labelled_set import (
    LabelledSet,
    SlideInput,
    SlideLabels,
    TileItem,
    assemble_labelled_set,
    build_labelled_set,
    label_slide,
    slide_grid,
)
from qupath_rkd.labels.tiles import (
    LABEL_UNLABELLED,
    RoleGeometry,
    TileLabels,
    label_tiles,
    overlap_fractions,
    prediction_region,
    role_geometry,
)

__all__ = [
    "FULLY_ANNOTATED_KEY",
    "LABEL_UNLABELLED",
    "TUMOR_FREE_KEY",
    "ClassMapping",
    "LabelConfig",
    "LabelledSet",
    "RoleGeometry",
    "SlideFlags",
    "SlideInput",
    "SlideLabels",
    "TileItem",
    "TileLabels",
    "assemble_labelled_set",
    "build_labelled_set",
    "label_slide",
    "label_tiles",
    "overlap_fractions",
    "prediction_region",
    "role_geometry",
    "slide_flags",
    "slide_grid",
]
