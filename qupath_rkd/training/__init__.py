"""Training, patch datasets, checkpoints and calibration of the RD model.

Import from the submodules (``qupath_rkd.training.trainer``, ``.checkpoint``, ``.datasets``,
``.calibration``, ``.config``); this package imports nothing heavy itself.
"""
