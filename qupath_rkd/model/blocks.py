"""Residual building blocks of the reverse-distillation bottleneck and student decoder.

Shapes follow RD4AD (Deng & Li, CVPR 2022), which the FW-RD paper (He & Li, MIDL 2023) reuses:
encoder-style blocks (torchvision's ``BasicBlock`` / ``Bottleneck`` layout) in the one-class
bottleneck, and "de-" blocks whose stride-2 convolution is a 2x2 transposed convolution in the
student decoder. All tensors are ``(B, C, H, W)``.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (ResNet style)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


def deconv2x2(in_ch: int, out_ch: int, stride: int = 2) -> nn.ConvTranspose2d:
    """2x2 transposed convolution (x2 upsampling for stride 2), no bias, as in RD4AD."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), expansion 1.

    ``(B, in_ch, H, W) -> (B, planes, H/s, W/s)``.
    """

    expansion = 1

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3 with stride, 1x1), expansion 4.

    ``width = planes * base_width / 64`` (128 for wide ResNets). ``(B, in_ch, H, W) ->
    (B, 4 * planes, H/s, W/s)``.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DeBasicBlock(nn.Module):
    """Decoder basic block: the first conv is a 2x2 transposed conv when ``stride == 2``.

    ``(B, in_ch, H, W) -> (B, planes, H*s, W*s)``.
    """

    expansion = 1

    def __init__(
        self, in_ch: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = deconv2x2(in_ch, planes, stride) if stride == 2 else conv3x3(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DeBottleneck(nn.Module):
    """Decoder bottleneck: 1x1, then 2x2 transposed conv (stride 2) or 3x3, then 1x1.

    ``(B, in_ch, H, W) -> (B, 4 * planes, H*s, W*s)``.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width, stride) if stride == 2 else conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def init_like_rd4ad(module: nn.Module) -> None:
    """RD4AD's initialisation: Kaiming-normal (fan_out, ReLU) for ``nn.Conv2d``, BN = (1, 0).

    Transposed convolutions keep PyTorch's default initialisation, as in RD4AD (they are not
    ``nn.Conv2d`` instances there either).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0.0)
