"""One-class scoring from normal tissue alone: local texture kNN on the trunk's first tap.

With no tumour patch the supervised head has nothing to separate. Measured on PatchCamelyon
(docs/benchmarks.md, "Normal patches only"): the head's pooled features score at chance as
one-class distances (PCA residual, Mahalanobis, kNN: 0.51-0.56 AUROC) and the paper's one-class
RD ranks tumour as *more* normal than normal tissue (0.445). What separates is low-level
texture: an early tap of the frozen ImageNet trunk (by default the stride-8 one:
EfficientNet-Lite0's 40 channels on a 12 x 12 map for a 96 px input; optionally averaged over
a neighbourhood of cells) compared position by position with a memory bank of the same local
features from normal patches. Crowded, pleomorphic nuclei lie far from every normal
neighbourhood. Tap and neighbourhood were chosen on a PCam train split
(``benchmarks/one_class_select.py``; :data:`~qupath_rkd.constants.KNN_TAP`).

A tile's raw score is the mean over its positions of the Euclidean distance to the nearest bank
vector, averaged over the dihedral views asked for; higher = less like the normal patches.

Shapes: network input ``(B, 3, S, S)`` ImageNet-normalised; local features ``(B, h, w, C)``
with ``h = S / 2**(tap + 2)``; bank ``(M, C)`` float32; scores ``(B,)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qupath_rkd.constants import KNN_POOL_CELLS, KNN_TAP
from qupath_rkd.features.trunk import FeatureTrunk
from qupath_rkd.features.views import view_images

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
    """The frozen trunk (run to tap ``tap`` only) and a memory bank of normal local features,
    each averaged over ``pool_cells`` x ``pool_cells`` cells of that tap (1: as they are).

    ``bank`` is a buffer ``(bank_size, C)`` (zeros until :meth:`set_bank`); it is saved with the
    checkpoint and its size, tap and neighbourhood stored in the config (``knn_bank_size``,
    ``knn_tap``, ``knn_pool_cells``) so the network rebuilds.
    """

    def __init__(
        self,
        trunk: FeatureTrunk,
        bank_size: int,
        tap: int = KNN_TAP,
        pool_cells: int = KNN_POOL_CELLS,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.tap, self.pool_cells = int(tap), int(pool_cells)
        with torch.no_grad():
            channels = int(trunk.tap(torch.zeros(1, 3, 64, 64), self.tap).shape[1])
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
        """``(B, 3, S, S)`` -> ``(B, h, w, C)`` float32: the tap, averaged over ``pool_cells``
        x ``pool_cells`` cells when that is above 1 (zero padding counted, as measured)."""
        with torch.no_grad():
            f = self.trunk.tap(x, self.tap).float()
            if self.pool_cells > 1:
                f = F.avg_pool2d(f, self.pool_cells, stride=1, padding=self.pool_cells // 2)
        return f.permute(0, 2, 3, 1)

    def distances(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, h, w)`` float32: each position's distance to its
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


__all__ = ["LocalKnnNetwork", "sample_bank"]
