"""Open a real slide, find its tissue and read tiles at a physical resolution (0.5 µm/px).

    python examples/read_tiles.py [SLIDE]

Without an argument it uses ../shared/data/slides/cmu-1-small-region.svs when present,
otherwise a small semi-real slide built from the patches shipped with qupath-rkd.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs
from qupath_rkd.slides import open_slide, tile_grid, tissue_mask


def main(argv: list[str]) -> None:
    if argv:
        show(Path(argv[0]))
        return
    shared = (
        Path(__file__).resolve().parents[1].parent / "shared/data/slides/cmu-1-small-region.svs"
    )
    if shared.exists():
        show(shared)
        return
    normal, tumor = demo_patch_dirs()
    with tempfile.TemporaryDirectory(prefix="qupath-rkd-example-") as tmp:
        slide = build_semireal_slide(
            Path(tmp) / "semi.tif",
            normal_dir=normal,
            tumor_dir=tumor,
            width_px=1500,
            height_px=1200,
        )
        show(slide.path)


def show(slide_path: Path) -> None:
    with open_slide(slide_path) as slide:
        print(slide)
        mask = tissue_mask(slide)
        print(f"tissue: {100 * mask.fraction:.1f} % of the slide")
        # 256 px tiles at 0.5 µm/px over tissue: level-0 (x, y) top-left corners in QuPath's frame
        target_mpp = max(0.5, slide.mpp)
        grid = tile_grid(slide, 256, target_mpp, mask=mask, min_tissue_fraction=0.5)
        print(f"{len(grid)} tiles of 256 px at {target_mpp} µm/px (grid {grid.grid_shape})")
        for x_px, y_px in grid.xy_px[:3]:
            tile = slide.read_tile(int(x_px), int(y_px), 256, target_mpp)
            print(
                f"  tile at ({x_px}, {y_px}): {tile.shape} {tile.dtype}, "
                f"mean RGB {tile.mean((0, 1)).round(1)}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
