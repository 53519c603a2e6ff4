"""One-class scoring from normal tissue alone: local texture kNN on the trunk's first tap.

With no tumour patch the supervised head has nothing to separate. Measured on PatchCamelyon
(docs/benchmarks.md, "Normal patches only"): the head's pooled features score at chance as
one-class distances (PCA residual, Mahalanobis, kNN: 0.51-0.56 AUROC) and the paper's one-class
RD ranks tumour as *more* normal than normal tissue (0.445). What separates is low-level
texture: the frozen ImageNet trunk's stride-4 tap (EfficientNet-Lite0: 24 channels, a 24 x 24
map for a 96 px input), averaged over 3 x 3 neighbourhoods and compared position by position
with a memory bank of the same local features from normal patches. Crowded, pleomorphic nuclei
lie far from every normal neighbourhood.

A tile's raw score is the mean over its positions of the Euclidean distance to the nearest bank
vector, averaged over the dihedral views asked for; higher = less like the normal patches.

Shapes: network input ``(B, 3, S, S)`` ImageNet-normalised; local features
``(B, S/4, S/4, C)``; bank ``(M, C)`` float32; scores ``(B,)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qupath_rkd.features.trunk import FeatureTrunk
from qupath_rkd.features.views import view_images

#: side of the neighbourhood each local feature is averaged over (first-tap cells, stride 1)
KNN_POOL_CELLS = 3
#: query rows per distance block (bounds the (rows, M) distance matrix: 8,192 x 10,000 floats
#: = 330 MB at most)
QUERY_CHUNK = 8192


def sample_bank(local: Tensor, size: int, seed: int) -> Tensor:
    """``(N, C)`` local features of normal patches -> a seeded random subset ``(min(size, N), C)``
    float32 (the memory bank)."""
    g = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(len(local), generator=g)[: int(size)]
    return local[keep.sort().values].float().contiguous()


class LocalKnnNetwork(nn.Module):
    """The frozen trunk (run to its first tap only) and a memory bank of normal local features.

    ``bank`` is a buffer ``(bank_size, C)`` (zeros until :meth:`set_bank`); it is saved with the
    checkpoint and its size stored in the config (``knn_bank_size``) so the network rebuilds.
    """

    def __init__(self, trunk: FeatureTrunk, bank_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        with torch.no_grad():
            channels = int(trunk.first_tap(torch.zeros(1, 3, 64, 64)).shape[1])
        self.register_buffer("bank", torch.zeros(max(int(bank_size), 1), channels))
        self.bank: Tensor

    def train(self, mode: bool = True) -> LocalKnnNetwork:
        return super().train(False)

    def set_bank(self, bank: Tensor) -> LocalKnnNetwork:
        """Replace the bank by ``(M, C)`` features (any ``M >= 1``)."""
        if bank.ndim != 2 or bank.shape[1] != self.bank.shape[1] or len(bank) == 0:
            raise ValueError(f"a bank is (M >= 1, {self.bank.shape[1]}), got {tuple(bank.shape)}")
        self.bank = bank.to(self.bank.device, torch.float32).contiguous()
        return self

    def local_features(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, S/4, S/4, C)`` float32: the first tap averaged over
        :data:`KNN_POOL_CELLS` x :data:`KNN_POOL_CELLS` cells (zero padding counted, as
        measured)."""
        with torch.no_grad():
            f = self.trunk.first_tap(x).float()
            f = F.avg_pool2d(f, KNN_POOL_CELLS, stride=1, padding=KNN_POOL_CELLS // 2)
        return f.permute(0, 2, 3, 1)

    def distances(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, S/4, S/4)`` float32: each position's distance to its
        nearest bank vector."""
        q = self.local_features(x)
        b, h, w, c = q.shape
        flat = q.reshape(-1, c)
        out = torch.empty(len(flat), device=flat.device)
        with torch.no_grad():
            for i in range(0, len(flat), QUERY_CHUNK):
                out[i : i + QUERY_CHUNK] = torch.cdist(flat[i : i + QUERY_CHUNK], self.bank).amin(1)
        return out.reshape(b, h, w)

    def forward(self, x: Tensor, views: Sequence[int] = (0,)) -> Tensor:
        """``(B, 3, S, S)`` -> raw scores ``(B,)``: the mean nearest-bank distance over the
        positions, averaged over ``views``."""
        per_view = [self.distances(view_images(x, v)).mean(dim=(1, 2)) for v in views]
        return torch.stack(per_view).mean(0)


__all__ = ["KNN_POOL_CELLS", "LocalKnnNetwork", "sample_bank"]
