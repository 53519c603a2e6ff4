"""Training and patch datasets of the RD model.

Import from the submodules (``qupath_rkd.training.trainer``, ``.datasets``, ``.config``,
``.scoring``); this package imports nothing heavy itself. The checkpoint format, the scorer and
the calibration live in :mod:`qupath_rkd.model`.
"""
