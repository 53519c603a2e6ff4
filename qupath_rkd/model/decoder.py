"""The student decoder: a ResNet mirrored from the teacher, upsampling with 2x2 transposed convs.

RD4AD's ``de_wide_resnet50_2``: three stages of decoder bottlenecks, ``[3, 4, 6]`` blocks, each
starting with a stride-2 transposed-conv block, producing features matched to the teacher's
layer3, layer2 and layer1. For other teachers the stages mirror the teacher's channel counts
(basic blocks, ``[2, 2, 2]``).

For WideResNet-50-2 at 256 px: ``(B,2048,8,8) -> [(B,256,64,64), (B,512,32,32), (B,1024,16,16)]``
(returned shallow to deep, the teacher's order).
"""

from __future__ import annotations

from torch import Tensor, nn

from qupath_rkd.model.blocks import DeBasicBlock, DeBottleneck, deconv2x2, init_like_rd4ad
from qupath_rkd.model.teachers import TeacherSpec


class StudentDecoder(nn.Module):
    """Mirrored decoder of the teacher described by ``spec``.

    Input ``(B, C_b, H/32, W/32)``; output ``[(B, C1, H/4, W/4), (B, C2, H/8, W/8),
    (B, C3, H/16, W/16)]``.
    """

    def __init__(self, spec: TeacherSpec) -> None:
        super().__init__()
        block: type[DeBasicBlock] | type[DeBottleneck]
        block = DeBottleneck if spec.block == "bottleneck" else DeBasicBlock
        kwargs = {"base_width": spec.base_width} if block is DeBottleneck else {}
        c1, c2, c3 = spec.channels
        in_ch = spec.bottleneck_channels
        stages: list[nn.Module] = []
        for out_ch, n_blocks in zip((c3, c2, c1), spec.decoder_blocks, strict=True):
            planes = out_ch // block.expansion
            up = nn.Sequential(deconv2x2(in_ch, out_ch, 2), nn.BatchNorm2d(out_ch))
            layers: list[nn.Module] = [block(in_ch, planes, 2, up, **kwargs)]
            for _ in range(1, n_blocks):
                layers.append(block(out_ch, planes, 1, None, **kwargs))
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3 = stages
        init_like_rd4ad(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        a = self.layer1(x)  # stride 16, C3
        b = self.layer2(a)  # stride 8, C2
        c = self.layer3(b)  # stride 4, C1
        return [c, b, a]
