"""Build the benchmark set: semi-real slides with real Camelyon16 lesion shapes.

    python benchmarks/build_slide_set.py            # 10 tumour + 10 tumour-free, 5000 px

Each slide is a mosaic of real PCam **validation** patches (0.972 µm/px) over an irregular
tissue region with tears and fat; tumour slides carry a real lesion cluster from the Camelyon16
annotations (``../shared/data/camelyon16-annotations``, valid and train), rescaled from
0.243 µm/px with its physical size kept, holes, satellites and isolated tumour cells included.
For every annotation file a few placements of a slide-sized window are drawn; the tumour
slides are the files whose best placement holds the most Camelyon16 lesion instances
(non-ITC, then all), so the set has many lesions.

Writes under ``benchmarks/out/slide_set/`` (not in git): ``slides/*.tif``, the truth twice —
``truth/geojson/<slide>.geojson`` (QuPath GeoJSON, class Tumor) and
``truth/camelyon16/<slide>.json`` (Camelyon16 JSON in the slide's level-0 px at 0.972 µm/px;
``qupath-rkd evaluate`` takes the µm/px from the heatmap metadata or ``--slide-mpp 0.972``) — and
``manifest.json`` (slides, sources, lesion counts, truth files, timings). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "slide_set"


def _counts(lesions: list, mpp: float, size: tuple[int, int]) -> dict[str, int]:
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask

    if not lesions:
        return {"polygons": 0, "holes": 0, "instances": 0, "lesions": 0, "itc": 0}
    mask = evaluation_mask(lesions, mpp=mpp, slide_size_px=size)
    return {
        "polygons": len(lesions),
        "holes": sum(len(p.interiors) for p in lesions),
        "instances": mask.n_instances,
        "lesions": mask.n_lesions,
        "itc": len(mask.itc_labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tumour", type=int, default=10, help="tumour slides")
    parser.add_argument("--normal", type=int, default=10, help="tumour-free slides")
    parser.add_argument("--size-px", type=int, default=5000, help="slide side at 0.972 µm/px")
    parser.add_argument("--placements", type=int, default=6, help="windows tried per file")
    parser.add_argument("--splits", default="valid,train", help="annotation folders used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patches", type=Path, default=SHARED / "pcam" / "valid")
    parser.add_argument("--annotations", type=Path, default=SHARED / "camelyon16-annotations")
    args = parser.parse_args()

    from qupath_rkd.constants import PCAM_MPP
    from qupath_rkd.demo.camelyon_lesions import (
        build_real_lesion_slide,
        load_camelyon16_lesions,
        place_lesion_cluster,
    )
    from qupath_rkd.errors import DataError, EvaluationError
    from qupath_rkd.evaluation.truth import load_truth_dir

    for folder in (args.patches / "0", args.patches / "1", args.annotations):
        if not folder.is_dir():
            sys.exit(f"{folder} not found (the project's shared data belongs beside the checkout)")
    started = time.perf_counter()
    mpp, size = PCAM_MPP, (args.size_px, args.size_px)
    files = sorted(
        f for split in args.splits.split(",") for f in (args.annotations / split).glob("*.json")
    )

    # 1. the richest placement of every annotation file (geometry only, no pixels)
    candidates = []
    for index, f in enumerate(files):
        lesions = load_camelyon16_lesions(f)
        rng = np.random.default_rng([args.seed, index])
        best = None
        for _ in range(args.placements):
            try:
                cluster = place_lesion_cluster(
                    lesions, width_px=size[0], height_px=size[1], mpp=mpp, rng=rng, source=f
                )
            except DataError:
                break  # no lesion of this file fits the window
            try:
                counts = _counts(cluster.lesions, mpp, size)
            except EvaluationError:
                continue  # only specks under one evaluation-mask pixel: not a tumour slide
            key = (counts["lesions"], counts["instances"])
            if best is None or key > best[0]:
                best = (key, cluster, counts)
        if best is not None and best[2]["lesions"] > 0:
            candidates.append(best)
    candidates.sort(key=lambda c: (c[0], str(c[1].source)), reverse=True)
    chosen = candidates[: args.tumour]
    placed_s = time.perf_counter() - started

    # 2. the slides
    out: Path = args.out
    for sub in ("slides", "truth/geojson", "truth/camelyon16"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [("tumor", k, c) for k, c in enumerate(chosen, 1)]
    jobs += [("normal", k, None) for k in range(1, args.normal + 1)]
    entries = []
    for kind, k, cand in jobs:
        slide_id = f"semireal_{kind}_{k:02d}"
        seed = args.seed * 1000 + (k if kind == "tumor" else 500 + k)
        t0 = time.perf_counter()
        built = build_real_lesion_slide(
            out / "slides" / f"{slide_id}.tif",
            normal_dir=args.patches / "0",
            tumor_dir=args.patches / "1",
            width_px=size[0],
            height_px=size[1],
            cluster=cand[1] if cand else None,
            mpp=mpp,
            seed=seed,
            max_patches=None,
        )
        slide = built.slide
        geojson = out / "truth" / "geojson" / f"{slide_id}.geojson"
        camelyon = out / "truth" / "camelyon16" / f"{slide_id}.json"
        geojson.write_text(json.dumps(slide.lesions_geojson()), encoding="utf-8")
        camelyon.write_text(json.dumps(slide.lesions_camelyon16()), encoding="utf-8")
        counts = cand[2] if cand else _counts([], mpp, size)
        cluster = built.cluster
        entry = {
            "slide_id": slide_id,
            "slide": os.path.relpath(slide.path, out),
            "tumor": bool(slide.lesions),
            "width_px": slide.width_px,
            "height_px": slide.height_px,
            "mpp": slide.mpp,
            "tissue_mm2": round(slide.tissue.area * mpp**2 / 1e6, 3),
            "tumor_mm2": round(sum(p.area for p in slide.lesions) * mpp**2 / 1e6, 4),
            "counts": counts,
            "truth_geojson": os.path.relpath(geojson, out),
            "truth_camelyon16": os.path.relpath(camelyon, out),
            "seed": seed,
            "build_s": round(time.perf_counter() - t0, 2),
        }
        if cluster is not None:
            entry["source"] = {
                "annotation": os.path.relpath(cluster.source, args.annotations),
                "window_origin_px_at_0.243": [round(v, 1) for v in cluster.origin_src_px],
                "scale": cluster.scale,
                "flip_xy": list(cluster.flip),
                "main_lesion_index": cluster.main_index,
                "lesions_dropped_at_window_border": cluster.n_dropped,
            }
        entries.append(entry)
        print(slide_id, entry["counts"], f"{entry['build_s']} s", flush=True)

    # 3. both truth folders read back the same (as `qupath-rkd evaluate` reads them)
    from shapely import union_all

    for fmt in ("geojson", "camelyon16"):
        truths = load_truth_dir(out / "truth" / fmt)
        for entry in entries:
            t = truths[entry["slide_id"]]
            geom = union_all(t.tumor).difference(union_all(t.exclude))
            parts = [p for p in getattr(geom, "geoms", [geom]) if not p.is_empty]
            got = _counts(parts, mpp, size)
            if any(got[key] != entry["counts"][key] for key in ("instances", "lesions", "itc")):
                sys.exit(f"{entry['slide_id']}: {fmt} truth reads back as {got}, not {entry}")

    tumour_entries = [e for e in entries if e["tumor"]]
    total = {
        key: sum(e["counts"][key] for e in tumour_entries)
        for key in ("polygons", "holes", "instances", "lesions", "itc")
    }
    manifest = {
        "what": "semi-real slides: mosaics of real PCam valid patches, real Camelyon16 lesion "
        "shapes rescaled from 0.243 µm/px (physical size kept), irregular tissue with fat",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/build_slide_set.py", *sys.argv[1:]]),
        "patches": str(args.patches),
        "annotations": str(args.annotations),
        "mpp": mpp,
        "n_slides": len(entries),
        "n_tumor_slides": len(tumour_entries),
        "n_normal_slides": len(entries) - len(tumour_entries),
        "lesion_totals": total,
        "counts_note": "instances = 8-connected regions of the Camelyon16 evaluation mask "
        "(grown by 37.5 µm, 7.776 µm pixels); lesions = instances that are not isolated "
        "tumour cells (major axis >= 275 µm), i.e. the FROC's denominator",
        "placement_s": round(placed_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "slides": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    summary = {k: manifest[k] for k in ("n_slides", "n_tumor_slides", "lesion_totals", "seconds")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
