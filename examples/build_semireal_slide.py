"""Build a semi-real slide (a mosaic of real PCam patches) with two lesions of known shape.

    python examples/build_semireal_slide.py [OUT_DIR]

Writes ``semireal.tif`` (pyramidal JPEG TIFF that OpenSlide reads) and ``semireal-truth.geojson``
(the lesions as QuPath annotations, level-0 pixels) into OUT_DIR (default: a temporary folder,
removed when the example ends).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs
from qupath_rkd.slides import open_slide


def main(argv: list[str]) -> None:
    if argv:
        build(Path(argv[0]))
    else:
        with tempfile.TemporaryDirectory(prefix="qupath-rkd-example-") as tmp:
            build(Path(tmp))
            print("(a temporary folder, removed now: pass OUT_DIR to keep the files)")


def build(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    normal_dir, tumor_dir = demo_patch_dirs()  # real patches shipped with the package
    slide = build_semireal_slide(
        out_dir / "semireal.tif",
        normal_dir=normal_dir,
        tumor_dir=tumor_dir,
        width_px=4000,
        height_px=3000,
        n_lesions=2,
        lesion_diameters_um=(1200.0, 400.0),  # a macro-metastasis and a micro-metastasis
        seed=7,
    )
    truth = out_dir / "semireal-truth.geojson"
    truth.write_text(json.dumps(slide.lesions_geojson(), indent=1))
    with open_slide(slide.path) as wsi:
        print(wsi)
    for index, lesion in enumerate(slide.lesions, start=1):
        area_mm2 = lesion.area * slide.mpp**2 / 1e6
        print(
            f"lesion {index}: {area_mm2:.3f} mm², "
            f"centre {lesion.centroid.x:.0f}, {lesion.centroid.y:.0f} px"
        )
    print(f"wrote {slide.path} and {truth}")


if __name__ == "__main__":
    main(sys.argv[1:])
