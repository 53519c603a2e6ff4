"""One-class bottleneck embedding (OCBE) of RD4AD, with FW-RD's 3x3 shortcut as an option.

RD4AD (Deng & Li, CVPR 2022) fuses the three teacher scales and compresses them: the stride-4
feature goes through two 3x3 stride-2 conv+BN+ReLU, the stride-8 feature through one, both land
at stride 16 with the deepest feature's channel count, the three are concatenated and a stage of
residual blocks with stride 2 (one-class embedding, stride 32) follows. FW-RD (He & Li, MIDL 2023)
changes only the shortcut of that stage's first block, from a 1x1 to a 3x3 convolution.

For WideResNet-50-2 at 256 px: ``[(B,256,64,64), (B,512,32,32), (B,1024,16,16)] ->
(B,3072,16,16) -> (B,2048,8,8)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qupath_rkd.errors import ModelError
from qupath_rkd.model.blocks import BasicBlock, Bottleneck, conv1x1, conv3x3, init_like_rd4ad
from qupath_rkd.model.teachers import TeacherSpec

SHORTCUTS = ("conv3x3", "conv1x1")


class OCBE(nn.Module):
    """Multi-scale fusion + one residual stage with stride 2.

    Args:
        spec: teacher description (channels, block type, widths, number of blocks).
        shortcut: ``"conv3x3"`` (FW-RD) or ``"conv1x1"`` (RD4AD) for the first block's shortcut.
    """

    def __init__(self, spec: TeacherSpec, shortcut: str = "conv3x3") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ModelError(f"unknown shortcut {shortcut!r}", hint=f"use one of {SHORTCUTS}")
        c1, c2, c3 = spec.channels
        self.conv1 = conv3x3(c1, c2, 2)
        self.bn1 = nn.BatchNorm2d(c2)
        self.conv2 = conv3x3(c2, c3, 2)
        self.bn2 = nn.BatchNorm2d(c3)
        self.conv3 = conv3x3(c2, c3, 2)
        self.bn3 = nn.BatchNorm2d(c3)
        self.relu = nn.ReLU(inplace=True)

        in_ch = 3 * c3
        out_ch = spec.bottleneck_channels
        block: type[BasicBlock] | type[Bottleneck]
        block = Bottleneck if spec.block == "bottleneck" else BasicBlock
        planes = out_ch // block.expansion
        short_conv = (
            conv3x3(in_ch, out_ch, 2) if shortcut == "conv3x3" else conv1x1(in_ch, out_ch, 2)
        )
        short = nn.Sequential(short_conv, nn.BatchNorm2d(out_ch))
        kwargs = {"base_width": spec.base_width} if block is Bottleneck else {}
        layers: list[nn.Module] = [block(in_ch, planes, 2, short, **kwargs)]
        for _ in range(1, spec.bottleneck_blocks):
            layers.append(block(out_ch, planes, 1, None, **kwargs))
        self.bn_layer = nn.Sequential(*layers)
        init_like_rd4ad(self)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """``[(B,C1,H/4,W/4), (B,C2,H/8,W/8), (B,C3,H/16,W/16)] -> (B, C_b, H/32, W/32)``."""
        f1, f2, f3 = feats
        l1 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(f1))))))
        l2 = self.relu(self.bn3(self.conv3(f2)))
        return self.bn_layer(torch.cat([l1, l2, f3], dim=1)).contiguous()
