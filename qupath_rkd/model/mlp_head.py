"""The head's second member: a one-hidden-layer perceptron on the same pooled features, averaged
with the linear head (the "ensemble" head).

Why: the linear head saturates on the frozen trunk's pooled features (PCam valid AUROC 0.931 at
1,000 tumour patches, 0.932 with all 20,000 labels). A small non-linear head on the same
standardised features, trained with strong dropout and averaged logit-for-logit with the linear
head, added +0.004 / +0.006 PCam valid AUROC at 100 / 1,000 tumour patches and lost 0.026 at 10
(docs/benchmarks.md, "A non-linear second member"); with ``head = "auto"`` the trainer uses
it from :data:`~qupath_rkd.constants.ENSEMBLE_MIN_TUMOUR_PATCHES` tumour patches on, unless the
user's validation data say otherwise (:mod:`qupath_rkd.training.head_trainer`). On whole
slides it found no more lesions than its own linear member and slightly more false ones (4
paired draws), so sync's default stays the linear head.

Model: ``z = clip((f - mean) / std, -8, 8)`` (the linear head's standardiser), then
``fc2(gelu(fc1(z)))``;
``(B, D)`` features -> ``(B,)`` logits. Training: class-balanced binary cross-entropy (tumour
and normal weigh half each), AdamW with a one-cycle learning rate, dropout on the input and on
the hidden layer, a fixed number of steps — no early stopping, so nothing needs a validation
split. Deterministic for a seed (the global RNG is seeded inside a fork, so it is left as it
was) on one intra-op thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qupath_rkd.constants import LABEL_TUMOR, MLP_HIDDEN
from qupath_rkd.errors import DataError

#: rows per optimiser step
MLP_BATCH = 256
#: passes over the training rows, and at least this many steps for small sets
MLP_EPOCHS = 12
MLP_MIN_STEPS = 100
#: peak learning rate (one-cycle), AdamW weight decay, dropout on the input and hidden layer
MLP_LR = 1e-3
MLP_WEIGHT_DECAY = 0.01
MLP_INPUT_DROPOUT = 0.5
MLP_HIDDEN_DROPOUT = 0.5
#: standardised inputs are clipped to +-this, in training and in scoring: a feature (nearly)
#: constant in the training rows has its std floored at 1e-6, so a new tile's slightly other
#: value standardises to +-1e4 or more, and the perceptron's random input weights (unlike the
#: linear head's, which stay 0 for such a feature) turned it into a huge logit — in sync's
#: cross-validation on the demo, out-of-fold logits that Platt scaling could only flatten
#: (slope 3e-4: every slide 0.193)
MLP_INPUT_CLIP = 8.0


class MlpHead(nn.Module):
    """``(B, D)`` features -> ``(B,)`` logits; buffers ``mean``, ``std`` ``(D,)`` (the linear
    head's standardiser), layers ``fc1`` ``(D -> hidden)`` and ``fc2`` ``(hidden -> 1)``."""

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int, hidden: int = MLP_HIDDEN) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, feats: Tensor) -> Tensor:
        z = ((feats.float() - self.mean) / self.std).clamp(-MLP_INPUT_CLIP, MLP_INPUT_CLIP)
        return self.fc2(nn.functional.gelu(self.fc1(z))).squeeze(-1)


@dataclass
class MlpFit:
    """A fitted :class:`MlpHead`: its ``state`` (tensors by name, float32) and ``hidden``."""

    state: dict[str, Tensor]
    hidden: int

    def module(self) -> MlpHead:
        dim = int(self.state["mean"].shape[0])
        m = MlpHead(dim, self.hidden)
        m.load_state_dict(self.state)
        return m.eval()

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """``(..., D)`` features -> ``(...)`` float64 logits (in blocks of 4,096 rows)."""
        x = np.asarray(feats)
        flat = x.reshape(-1, x.shape[-1])
        m = self.module()
        out = np.empty(flat.shape[0], dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, flat.shape[0], 4096):
                block = torch.from_numpy(np.asarray(flat[start : start + 4096], dtype=np.float32))
                out[start : start + 4096] = m(block).double().numpy()
        return out.reshape(x.shape[:-1])


def fit_mlp(
    feats: np.ndarray,
    labels: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    seed: int,
    hidden: int = MLP_HIDDEN,
) -> MlpFit:
    """Fit the perceptron on ``(N, D)`` features and ``(N,)`` 0/1 labels, standardised by
    ``mean`` / ``std`` ``(D,)``. Raises :class:`DataError` unless both classes are present."""
    y = (np.asarray(labels) == LABEL_TUMOR).astype(np.float32)
    n_pos = float(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DataError("the supervised head needs tumour and normal patches")
    # the global RNG is saved and restored around the fit, which seeds it itself (dropout
    # draws from it), so a fit neither depends on nor changes what ran before
    # one intra-op thread: its small matrices gain little from more, and on the 2-core VM, in
    # train-patches beside another process, 2 threads took 105 s where 1 took 20 s (same fit)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            w1, c1, w2, c2 = _train(feats, y, mean, std, hidden)
    finally:
        torch.set_num_threads(threads)
    state = {
        "mean": torch.from_numpy(np.asarray(mean, dtype=np.float32)).clone(),
        "std": torch.from_numpy(np.asarray(std, dtype=np.float32)).clone(),
        "fc1.weight": w1,
        "fc1.bias": c1,
        "fc2.weight": w2,
        "fc2.bias": c2,
    }
    return MlpFit(state, hidden)


def _train(
    feats: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray, hidden: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The training loop of :func:`fit_mlp` (draws from the global RNG, seeded by the caller):
    ``fc1`` weight ``(hidden, D)`` and bias, ``fc2`` weight ``(1, hidden)`` and bias."""
    # standardised once (float32, N x D), not per batch
    x = torch.from_numpy(
        ((np.asarray(feats, dtype=np.float32) - np.asarray(mean, dtype=np.float32))
         / np.asarray(std, dtype=np.float32)).astype(np.float32, copy=False)
    ).clamp_(-MLP_INPUT_CLIP, MLP_INPUT_CLIP)  # fmt: skip
    t = torch.from_numpy(y)
    n_pos = float(y.sum())
    dim = x.shape[1]
    fc1, fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, 1)
    opt = torch.optim.AdamW(
        [*fc1.parameters(), *fc2.parameters()],
        lr=MLP_LR,
        weight_decay=MLP_WEIGHT_DECAY,
        foreach=True,
    )
    per_epoch = max(1, math.ceil(len(x) / MLP_BATCH))
    steps = max(MLP_MIN_STEPS, MLP_EPOCHS * per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, MLP_LR, total_steps=steps)
    sample_w = torch.where(t > 0, 0.5 / n_pos, 0.5 / (len(y) - n_pos)).float() * len(y)
    drop = nn.functional.dropout
    order, pos = torch.randperm(len(x)), 0
    for _ in range(steps):
        if pos + MLP_BATCH > len(order):
            order, pos = torch.randperm(len(x)), 0
        b = order[pos : pos + MLP_BATCH]
        pos += MLP_BATCH
        z = drop(x[b], MLP_INPUT_DROPOUT, training=True)
        h = drop(nn.functional.gelu(fc1(z)), MLP_HIDDEN_DROPOUT, training=True)
        logit = fc2(h).squeeze(-1)
        bce = nn.functional.binary_cross_entropy_with_logits(logit, t[b], reduction="none")
        loss = (bce * sample_w[b]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return (
        fc1.weight.detach().clone(),
        fc1.bias.detach().clone(),
        fc2.weight.detach().clone(),
        fc2.bias.detach().clone(),
    )


__all__ = ["MlpFit", "MlpHead", "fit_mlp"]
