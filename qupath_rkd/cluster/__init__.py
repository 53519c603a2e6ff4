"""Slides over a Dask cluster: one task per slide, the client writes every file.

``predict --scheduler ADDRESS | --local-cluster N`` and ``sync`` (the same flags, or the
``[cluster]`` section of its config) hand each slide to a Dask worker
(:mod:`qupath_rkd.cluster.session`): the worker opens the slide itself, runs the model on its
own device and sends back the slide's :class:`~qupath_rkd.inference.predict.SlidePrediction`
(heatmap, lesions, tile scores); the client writes every file exactly as a one-process run
does, so atomic writes and sync's all-or-nothing commit are unchanged. The checkpoint is
broadcast once to every worker and loaded once per worker (:mod:`qupath_rkd.cluster.worker`).

This package's ``__init__`` and :mod:`qupath_rkd.cluster.spec` import no Dask: the CLI reads
its flags without importing Dask, and only :mod:`~qupath_rkd.cluster.session` (used when a
flag is given) does.
"""

from __future__ import annotations

from qupath_rkd.cluster.spec import ClusterSpec, cluster_spec

__all__ = ["ClusterSpec", "cluster_spec"]
