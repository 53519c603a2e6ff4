"""Normal patches only (issue 8's budget 0): one-class scores on the head's pooled features.

PCA residual, Mahalanobis distance inside the PCA space, and kNN cosine distance, fitted on
2,000 PCam train normals (view 0), AUROC on 600 + 600 PCam valid patches.

    PYTHONPATH=$PWD python benchmarks/head_one_class.py
"""

from pathlib import Path

import numpy as np
import torch
from numpy.linalg import norm

from qupath_rkd.features.cache import open_default_cache
from qupath_rkd.features.extract import extract_features
from qupath_rkd.features.trunk import build_trunk
from qupath_rkd.model.head import auroc_of
from qupath_rkd.training.datasets import PatchFolderDataset

P = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam"
torch.set_num_threads(1)
trunk, cache = build_trunk("efficientnet_lite0"), open_default_cache()


def feats(normal, tumor, px=96, max_n=None, max_t=None):
    ds = PatchFolderDataset(normal, tumor, max_normal=max_n, max_tumor=max_t, seed=123)
    f = extract_features(trunk, ds, input_px=px, views=[0], cache=cache)
    print("computed", f.computed, "cached", f.cached, flush=True)
    return f.values.astype(np.float32)[:, 0], ds.labels


vx, vy = feats([P / "valid/0"], [P / "valid/1"], max_n=600, max_t=600)
nx, _ = feats([P / "train/0"], [], max_n=2000)
mu, sd = nx.mean(0), nx.std(0) + 1e-6
z = (nx - mu) / sd
zv = (vx - mu) / sd
U, S, Vt = np.linalg.svd(z, full_matrices=False)
for k in (8, 16, 32, 64, 128, 256):
    B = Vt[:k]
    res = zv - (zv @ B.T) @ B
    r = (res**2).sum(1)
    proj = zv @ B.T
    maha = ((proj / (S[:k] / np.sqrt(len(z)))) ** 2).sum(1)
    both = r / r.mean() + maha / maha.mean()
    print(
        k,
        f"residual {auroc_of(vy, r):.4f} mahalanobis-in-PCA {auroc_of(vy, maha):.4f}",
        f"sum {auroc_of(vy, both):.4f}",
    )
zn = z / norm(z, axis=1, keepdims=True)
zvn = zv / norm(zv, axis=1, keepdims=True)
sim = zvn @ zn.T
for kk in (1, 5, 20):
    d = -np.sort(sim, axis=1)[:, -kk:].mean(1)
    print("kNN", kk, round(auroc_of(vy, d), 4))
