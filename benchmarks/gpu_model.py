"""GPU speed and numerics of the paper's model: wide_resnet50_2 teacher at 256 px.

Measures, for fp32 and bf16 autocast (channels_last), at the largest batch that fits (powers of
two): training patches/s (teacher forward + OCBE/decoder forward and backward + Adam step, as in
``qupath_rkd.training.trainer``) and inference patches/s (``TrainedModel.raw_scores``: features,
anomaly map, Gaussian, mean). Checks that the focal loss on the GPU equals the CPU loss on the same
batch and weights. Speed does not depend on the weights, and the device machine has no internet,
so the teacher is random unless ``--teacher-weights`` is given.

    python benchmarks/gpu_model.py --out "$OUT/gpu_model.json"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR  # noqa: E402
from qupath_rkd.model.anomaly_map import anomaly_map, patch_scores  # noqa: E402
from qupath_rkd.model.loss import focal_similarity_loss  # noqa: E402
from qupath_rkd.model.rd import ReverseDistillation  # noqa: E402
from qupath_rkd.model.teachers import build_teacher  # noqa: E402


def make_net(weights: str | None) -> ReverseDistillation:
    torch.manual_seed(0)
    teacher = build_teacher("wide_resnet50_2", weights, random_weights_for_tests=weights is None)
    return ReverseDistillation(teacher, shortcut="conv3x3")


def batch(n: int, px: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, px, px, generator=g)
    y = torch.tensor([LABEL_TUMOR if i % 4 == 0 else LABEL_NORMAL for i in range(n)])
    return x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)


def train_speed(net, opt, n, px, dtype, steps) -> float:
    dev = torch.device("cuda")
    x, y = batch(n, px, dev)
    net.train()
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            t, s = net(x)
        loss = focal_similarity_loss(t, s, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - t0)


def infer_speed(net, n, px, dtype, steps) -> float:
    x, _ = batch(n, px, torch.device("cuda"))
    net.eval()
    with torch.inference_mode():
        for i in range(steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                t, s = net(x)
            patch_scores(anomaly_map(t, s, px, 4.0)).float().cpu()
    torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - t0)


def largest_batch(fn, start: int, limit: int) -> tuple[int, float]:
    """Double the batch until CUDA runs out of memory: (batch, patches/s) of the last fit."""
    best = (0, 0.0)
    n = start
    while n <= limit:
        try:
            best = (n, fn(n))
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        n *= 2
    return best


def measure(name: str, dtype: torch.dtype | None, args: argparse.Namespace) -> dict:
    """Training and inference speed at the largest batch for one precision."""
    px, out = args.input_px, {}
    net = make_net(args.teacher_weights).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(list(net.trainable_parameters()), lr=1e-3, betas=(0.5, 0.999))

    def train_fn(n: int) -> float:
        return train_speed(net, opt, n, px, dtype, args.steps)

    def infer_fn(n: int) -> float:
        return infer_speed(net, n, px, dtype, args.steps)

    b, speed = largest_batch(train_fn, 8, args.max_batch)
    out[f"train_{name}"] = {"batch": b, "patches_per_s": speed}
    print(name, "train", b, speed, flush=True)
    opt.state.clear()
    net.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    b, speed = largest_batch(infer_fn, 16, args.max_batch)
    out[f"infer_{name}"] = {"batch": b, "patches_per_s": speed}
    print(name, "infer", b, speed, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-px", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--max-batch", type=int, default=1024)
    ap.add_argument("--teacher-weights", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    px = args.input_px
    res: dict = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "input_px": px,
        "teacher": "wide_resnet50_2",
        "shortcut": "conv3x3",
        "teacher_weights": args.teacher_weights or "random (speed does not depend on them)",
    }

    # 1. loss: GPU vs CPU on the same batch and weights
    net = make_net(args.teacher_weights).eval()
    x, y = batch(4, px, torch.device("cpu"))
    with torch.no_grad():
        t, s = net(x)
        cpu_loss = float(focal_similarity_loss(t, s, y))
        net_gpu = net.cuda().to(memory_format=torch.channels_last)
        xg, yg = x.cuda(), y.cuda()
        t, s = net_gpu(xg)
        gpu_fp32 = float(focal_similarity_loss(t, s, yg))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            t, s = net_gpu(xg)
        gpu_bf16 = float(focal_similarity_loss(t, s, yg))
    res["loss"] = {
        "cpu_fp32": cpu_loss,
        "gpu_fp32": gpu_fp32,
        "gpu_bf16": gpu_bf16,
        "rel_diff_fp32": abs(gpu_fp32 - cpu_loss) / abs(cpu_loss),
        "rel_diff_bf16": abs(gpu_bf16 - cpu_loss) / abs(cpu_loss),
    }
    res["loss"]["fp32_matches"] = res["loss"]["rel_diff_fp32"] < 1e-3
    print(json.dumps(res["loss"]), flush=True)

    # 2. speed
    torch.backends.cudnn.benchmark = True
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        res.update(measure(name, dtype, args))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
