"""Frozen-teacher features: the pooled multi-scale trunk, dihedral views and the on-disk cache.

Data flow: ``(B, H, W, 3)`` uint8 tiles -> :mod:`views` (one of 8 dihedral views) ->
:class:`~qupath_rkd.features.trunk.FeatureTrunk` (frozen ImageNet network, pooled taps, ``(B, D)``
float32) -> :class:`~qupath_rkd.features.cache.FeatureCache` (keyed by trunk, weights hash,
tile pixels and view) -> the supervised head of :mod:`qupath_rkd.model.head`.
"""
