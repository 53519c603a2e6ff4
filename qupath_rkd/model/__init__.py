"""Reverse knowledge distillation (torch only, no I/O): teachers, OCBE, decoder, loss, maps."""

from __future__ import annotations

from qupath_rkd.model.anomaly_map import anomaly_map, gaussian_blur, patch_scores
from qupath_rkd.model.bottleneck import OCBE
from qupath_rkd.model.decoder import StudentDecoder
from qupath_rkd.model.loss import flat_cosine_similarity, focal_similarity_loss
from qupath_rkd.model.rd import ReverseDistillation
from qupath_rkd.model.teachers import TEACHERS, Teacher, TeacherSpec, build_teacher, teacher_spec

__all__ = [
    "OCBE",
    "TEACHERS",
    "ReverseDistillation",
    "StudentDecoder",
    "Teacher",
    "TeacherSpec",
    "anomaly_map",
    "build_teacher",
    "flat_cosine_similarity",
    "focal_similarity_loss",
    "gaussian_blur",
    "patch_scores",
    "teacher_spec",
]
