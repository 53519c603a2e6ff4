"""Benchmark: tiles/s read at 0.5 µm/px, 256 px, from a large semi-real slide.

    python benchmarks/slide_read.py --size-px 40000 --tiles 3000

Builds (once, cached in benchmarks/out/) a pyramidal JPEG TIFF of SIZE×SIZE px at 0.25 µm/px
from real PCam patches, lays the tissue grid at 0.5 µm/px and reads tiles through a torch
DataLoader with 0, 1 and 2 workers; each worker opens its own slide handle in worker_init_fn.
Prints one Markdown table row per setting.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from qupath_rkd.demo import build_semireal_slide
from qupath_rkd.slides import open_slide, tile_grid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam" / "train"


class TileDataset(Dataset):
    """Tiles of a grid; the slide is opened lazily, once per worker process."""

    def __init__(self, path: Path, xy_px: np.ndarray, size_px: int, mpp: float) -> None:
        self.path, self.xy_px, self.size_px, self.mpp = path, xy_px, size_px, mpp
        self.slide = None

    def __len__(self) -> int:
        return len(self.xy_px)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.slide is None:
            self.slide = open_slide(self.path)
        x, y = self.xy_px[index]
        return torch.from_numpy(self.slide.read_tile(int(x), int(y), self.size_px, self.mpp))


def _worker_init(_: int) -> None:
    info = get_worker_info()
    assert info is not None
    info.dataset.slide = open_slide(info.dataset.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=40_000)
    parser.add_argument("--tiles", type=int, default=3000, help="tiles read per setting")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"semireal-{args.size_px}.tif"
    if not path.exists():
        t0 = time.perf_counter()
        build_semireal_slide(
            path,
            normal_dir=SHARED / "0",
            tumor_dir=SHARED / "1",
            width_px=args.size_px,
            height_px=args.size_px,
            n_lesions=3,
            lesion_diameters_um=(args.size_px * 0.25 / 20, 500),
            mpp=0.25,
            seed=1,
            max_patches=1000,
        )
        print(
            f"built {path} in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 1e9:.2f} GB)"
        )
    with open_slide(path) as slide:
        grid = tile_grid(slide, 256, 0.5)
        print(f"{slide}: {len(grid)} tissue tiles of 256 px at 0.5 µm/px")
    rng = np.random.default_rng(0)
    xy = grid.xy_px[np.sort(rng.choice(len(grid), size=min(args.tiles, len(grid)), replace=False))]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; {date.today()}")
    print("| DataLoader workers | tiles | seconds | tiles/s | ratio to 0 workers |")
    print("|---|---|---|---|---|")
    base = None
    for workers in (0, 1, 2):
        loader = DataLoader(
            TileDataset(path, xy, 256, 0.5),
            batch_size=32,
            num_workers=workers,
            worker_init_fn=_worker_init if workers else None,
        )
        t0 = time.perf_counter()
        count = sum(len(batch) for batch in loader)
        seconds = time.perf_counter() - t0
        rate = count / seconds
        base = base or rate
        print(f"| {workers} | {count} | {seconds:.1f} | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
