"""qupath-rkd: few-shot lymph-node metastasis detection in QuPath projects.

Implements He & Li, *Whole-slide-imaging cancer metastases detection and localization with
limited tumorous data* (MIDL 2023, PMLR 227): reverse knowledge distillation with a focal loss
on teacher-student cosine similarity.

Importing this package is cheap: torch, openslide and paquo are imported only by the stages
that use them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
