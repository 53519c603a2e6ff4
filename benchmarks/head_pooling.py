"""Which pooled statistics of the frozen trunk feed the head best (issue 8.3), chosen on a split
of PCam **train**, reported on PCam valid.

The default head reads, from EfficientNet-Lite0 at 96 px, the last block of each resolution
(strides 4-32) and the 1,280-channel head convolution, each pooled as the whole-map mean and the
centre-third mean (:mod:`qupath_rkd.features.trunk`, 3,552 dims). This script runs the trunk
once per tile-view, keeps five statistics of **every** block and of the head convolution
(whole-map mean, centre-third mean, whole-map max, centre-third max, whole-map std), and fits
the library's head (:func:`qupath_rkd.model.head.fit_head`) on subsets of them.

Data: PCam train/0 (10,000 normals, view 0): the first 9,000 of a seeded order train, the other
1,000 are the **selection** split's normals; a seeded 1,500 of train/1 (the tumour pool, as in
``head_ablation.py``) in the 8 dihedral views, of which each seed draws its budget; 1,000 other
train/1 patches (view 0) are the selection split's tumours; all 3,000 of PCam valid in 8 views
(mean logit). Per variant, budget and seed, every L2 of the grid is fitted; the variant and its
L2 are chosen on the **selection** split (view 0), and PCam valid is reported at that L2 (and,
for orientation, at the L2 best on valid: setting (a)).

    PYTHONPATH=$PWD nice -n 5 python benchmarks/head_pooling.py --budgets 100,1000 --seeds 0,1,2

Features are kept in ``benchmarks/out/head_pooling/*.npy`` (about 1.5 GB, float16); a rerun
reuses them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qupath_rkd.features.trunk import (  # noqa: E402
    EfficientNetLiteTrunk,
    build_trunk,
    centre_third,
)
from qupath_rkd.features.views import view_tiles  # noqa: E402
from qupath_rkd.model.head import L2_GRID, auroc_of, fit_head  # noqa: E402
from qupath_rkd.model.scorer import preprocess_batch  # noqa: E402
from qupath_rkd.training.datasets import Collate, IndexedDataset, PatchFolderDataset  # noqa: E402

STATS = ("mean", "cmean", "max", "cmax", "std")


def block_stats(x: Tensor) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, 5, C)``: the :data:`STATS` of each channel."""
    x = x.float()
    c = centre_third(x)
    return torch.stack(
        [
            x.mean(dim=(-2, -1)),
            c.mean(dim=(-2, -1)),
            x.amax(dim=(-2, -1)),
            c.amax(dim=(-2, -1)),
            x.std(dim=(-2, -1)),
        ],
        dim=1,
    )


@torch.inference_mode()
def all_taps(trunk: EfficientNetLiteTrunk, x: Tensor) -> list[Tensor]:
    """Every block's output, then the head convolution's."""
    y = trunk.act(trunk.bn0(trunk.conv_stem(x)))
    out = []
    for block in trunk.blocks:
        y = block(y, drop_connect_rate=None)
        out.append(y)
    out.append(trunk.act(trunk.bn1(trunk.conv_head(y))))
    return out


def layout(trunk: EfficientNetLiteTrunk) -> tuple[list[int], list[int]]:
    """Channels per source (blocks..., head) and the indices of the default taps."""
    taps = all_taps(trunk, torch.zeros(1, 3, 96, 96))
    chans = [int(t.shape[1]) for t in taps]
    default = [*trunk.tap_blocks, len(taps) - 1]
    return chans, default


def extract(
    trunk: EfficientNetLiteTrunk, ds, views: list[int], path: Path, label: str
) -> np.ndarray:
    """``(N, V, 5 * sum(C))`` float16 stats, source-major then stat then channel."""
    if path.exists():
        return np.load(path, mmap_mode="r")
    t0 = time.time()
    loader = DataLoader(IndexedDataset(ds), batch_size=64, collate_fn=Collate(96))
    rows: dict[int, np.ndarray] = {}
    for batch in loader:
        idx = batch.indices.numpy()
        per_view = []
        for v in views:
            x = preprocess_batch(view_tiles(batch.images, v), 96, torch.device("cpu"))
            taps = all_taps(trunk, x)
            per_view.append(torch.cat([block_stats(t).flatten(1) for t in taps], dim=1).numpy())
        arr = np.stack(per_view, axis=1).astype(np.float16)
        for k, i in enumerate(idx):
            rows[int(i)] = arr[k]
    dim = next(iter(rows.values())).shape[-1]
    out = np.zeros((len(ds), len(views), dim), dtype=np.float16)
    for i, r in rows.items():
        out[i] = r
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    print(f"{label}: {len(ds)} x {len(views)} views in {time.time() - t0:.0f} s", flush=True)
    return out


def columns(chans: list[int], sources: list[int], stats: tuple[str, ...]) -> np.ndarray:
    """Column indices of ``stats`` of ``sources`` in the extracted layout."""
    offsets = np.cumsum([0] + [5 * c for c in chans])
    cols = []
    for s in sources:
        for st in stats:
            k = STATS.index(st)
            start = offsets[s] + k * chans[s]
            cols.append(np.arange(start, start + chans[s]))
    return np.concatenate(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=REPO.parent / "shared" / "data" / "pcam")
    ap.add_argument("--budgets", default="100,1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "head_pooling")
    ap.add_argument("--results", default="results.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    trunk = build_trunk("efficientnet_lite0")
    assert isinstance(trunk, EfficientNetLiteTrunk)
    chans, default = layout(trunk)
    every = list(range(len(chans)))
    variants: dict[str, tuple[list[int], tuple[str, ...]]] = {
        "default": (default, ("mean", "cmean")),
        "default+max": (default, ("mean", "cmean", "max")),
        "default+cmax": (default, ("mean", "cmean", "cmax")),
        "default+std": (default, ("mean", "cmean", "std")),
        "default+max+std": (default, ("mean", "cmean", "max", "std")),
        "centre only": (default, ("cmean",)),
        "all blocks": (every, ("mean", "cmean")),
        "all blocks+max": (every, ("mean", "cmean", "max")),
        "all blocks+std": (every, ("mean", "cmean", "std")),
    }
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}

    normal_ds = PatchFolderDataset([args.pcam / "train/0"], [], seed=123)
    tumor_all = PatchFolderDataset([], [args.pcam / "train/1"], seed=123)
    pool_ds = PatchFolderDataset([], [args.pcam / "train/1"], max_tumor=1500, seed=123)
    pool_paths = set(pool_ds.paths)
    rest = [p for p in tumor_all.paths if p not in pool_paths]
    rest = [rest[i] for i in np.random.default_rng(7).permutation(len(rest))[:1000]]
    sel_tumor_ds = PatchFolderDataset([], [], seed=0)
    sel_tumor_ds.paths = rest
    sel_tumor_ds.labels = np.ones(len(rest), dtype=np.int64)
    valid_ds = PatchFolderDataset([args.pcam / "valid/0"], [args.pcam / "valid/1"], seed=123)

    nx = extract(trunk, normal_ds, [0], args.out / "normal.npy", "train normals")[:, 0]
    tx = extract(trunk, pool_ds, list(range(8)), args.out / "tumour_pool.npy", "tumour pool")
    sx_t = extract(trunk, sel_tumor_ds, [0], args.out / "sel_tumour.npy", "selection tumours")
    vx = extract(trunk, valid_ds, list(range(8)), args.out / "valid.npy", "valid")
    vy = valid_ds.labels
    order = np.random.default_rng(11).permutation(len(nx))
    train_n, sel_n = order[:9000], order[9000:]

    results: dict[str, dict] = {}
    for name, (sources, stats) in variants.items():
        cols = columns(chans, sources, stats)
        n_train = np.asarray(nx[train_n][:, cols], dtype=np.float32)
        sel = np.concatenate([nx[sel_n][:, cols], sx_t[:, 0][:, cols]]).astype(np.float32)
        sy = np.r_[np.zeros(len(sel_n)), np.ones(len(sx_t))].astype(int)
        vxx = np.asarray(vx[:, :, cols], dtype=np.float32)
        txx = np.asarray(tx[:, :, cols], dtype=np.float32)
        for budget in (int(b) for b in args.budgets.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                t1 = time.time()
                pick = np.random.default_rng(seed).choice(len(txx), size=budget, replace=False)
                tum = txx[pick].reshape(-1, len(cols))
                x = np.concatenate([n_train, tum])
                y = np.r_[np.zeros(len(n_train)), np.ones(len(tum))].astype(int)
                sel_auc, val_auc, prev = {}, {}, None
                for l2 in sorted(L2_GRID, reverse=True):
                    fit = fit_head(x, y, l2, init=prev)
                    prev = fit
                    sel_auc[l2] = auroc_of(sy, fit.logits(sel[:, None, :]).mean(axis=1))
                    val_auc[l2] = auroc_of(vy, fit.logits(vxx).mean(axis=1))
                l2_sel = max(sorted(L2_GRID, reverse=True), key=lambda k: sel_auc[k])
                l2_val = max(sorted(L2_GRID, reverse=True), key=lambda k: val_auc[k])
                rec = {
                    "dims": len(cols),
                    "l2_sel": l2_sel,
                    "sel_auroc": sel_auc[l2_sel],
                    "valid_at_sel_l2": val_auc[l2_sel],
                    "l2_val": l2_val,
                    "valid_best": val_auc[l2_val],
                }
                results.setdefault(f"{name}|{budget}", {})[str(seed)] = rec
                print(
                    f"{name:16s} {budget:5d} s{seed} dims {len(cols):5d} sel {rec['sel_auroc']:.4f}"
                    f" (l2 {l2_sel:g}) valid@sel {rec['valid_at_sel_l2']:.4f}"
                    f" valid-best {rec['valid_best']:.4f} (l2 {l2_val:g}) {time.time() - t1:.0f} s",
                    flush=True,
                )
        (args.out / args.results).write_text(json.dumps(results, indent=1))
    print(
        "| variant | tumour | dims | selection split AUROC | valid at that L2 "
        "| valid, L2 on valid |"
    )
    print("|---|---|---|---|---|---|")
    for key, per_seed in results.items():
        name, budget = key.split("|")
        recs = list(per_seed.values())

        def ms(k: str, recs=recs) -> str:
            v = [r[k] for r in recs]
            return f"{np.mean(v):.4f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.4f}"

        print(
            f"| {name} | {budget} | {recs[0]['dims']} | {ms('sel_auroc')} | "
            f"{ms('valid_at_sel_l2')} | {ms('valid_best')} |"
        )


if __name__ == "__main__":
    main()
