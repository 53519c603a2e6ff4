"""Streaming whole-slide inference: a slide's tissue tiles through a model into a heatmap.

``from qupath_rkd.inference import predict_slide, SlidePrediction``. The heavy parts (torch,
OpenSlide) are imported only when :func:`predict_slide` is first used. The heatmap it produces
is :class:`qupath_rkd.heatmap.Heatmap` (below inference/, lesions/ and evaluation/).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "InferenceConfig",
    "SlidePrediction",
    "TileScores",
    "predict_slide",
    "predict_slides",
]

_LAZY = {
    "predict_slide": "qupath_rkd.inference.predict",
    "predict_slides": "qupath_rkd.inference.batch",
    "SlidePrediction": "qupath_rkd.inference.predict",
    "TileScores": "qupath_rkd.inference.predict",
    "InferenceConfig": "qupath_rkd.inference.predict",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
