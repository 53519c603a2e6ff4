"""GPU checks (skipped without CUDA): the loss and scores match the CPU; an AMP step is finite."""

from __future__ import annotations

import pytest
import torch

from qupath_rkd.model import ReverseDistillation, build_teacher, focal_similarity_loss

pytestmark = pytest.mark.gpu


def _net() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(build_teacher("efficientnet_lite0")).eval()


def test_gpu_loss_matches_cpu_loss_on_the_same_batch() -> None:
    torch.backends.cudnn.allow_tf32 = False
    net = _net()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        cpu = float(focal_similarity_loss(*net(x), y))
        net = net.cuda()
        gpu = float(focal_similarity_loss(*net(x.cuda()), y.cuda()))
    assert gpu == pytest.approx(cpu, rel=1e-3)


def test_amp_training_step_is_finite_and_updates_the_student() -> None:
    net = _net().cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(list(net.trainable_parameters()), lr=1e-3)
    before = next(net.student.parameters()).detach().clone()
    net.train()
    x = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        t, s = net(x)
    loss = focal_similarity_loss(t, s, torch.zeros(8, dtype=torch.long, device="cuda"))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, next(net.student.parameters()))
