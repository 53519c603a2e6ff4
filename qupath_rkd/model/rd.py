"""The reverse-distillation network: frozen teacher -> OCBE bottleneck -> student decoder.

Input ``(B, 3, H, W)`` ImageNet-normalised float (H, W multiples of 32). ``forward`` returns
``(teacher_feats, student_feats)`` — always in that order — each a list of three tensors
ordered shallow to deep: ``[(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16)]``.
Train and eval return the same types.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from qupath_rkd.model.bottleneck import OCBE
from qupath_rkd.model.decoder import StudentDecoder
from qupath_rkd.model.teachers import Teacher, TeacherSpec


class ReverseDistillation(nn.Module):
    """Teacher (frozen, always in eval mode) + trainable bottleneck and student decoder."""

    def __init__(self, teacher: Teacher, shortcut: str = "conv3x3") -> None:
        super().__init__()
        self.teacher = teacher
        self.bottleneck = OCBE(teacher.spec, shortcut=shortcut)
        self.student = StudentDecoder(teacher.spec)

    @property
    def spec(self) -> TeacherSpec:
        return self.teacher.spec

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the bottleneck and student only (what the optimiser sees)."""
        yield from self.bottleneck.parameters()
        yield from self.student.parameters()

    def train(self, mode: bool = True) -> ReverseDistillation:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        with torch.no_grad():
            teacher_feats = self.teacher(x)
        student_feats = self.student(self.bottleneck(teacher_feats))
        return teacher_feats, student_feats
