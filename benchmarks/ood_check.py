"""Measure the out-of-domain check (issue 11.8): far-tile fractions of in-domain and foreign slides.

    python benchmarks/ood_check.py                 # about 3-5 minutes on 2 shared cores

1. A head model trained with ``qupath-rkd train-patches`` on a few hundred PCam **train**
   patches (``--max-normal/--max-tumor``, 5-fold CV: no validation folders), which stores the
   out-of-domain reference of its training patches' features (qupath_rkd/model/ood.py).
2. Semi-real lymph-node slides: mosaics of PCam **valid** patches (none of them trained on),
   half with lesions (qupath_rkd/demo/semireal.py; as benchmarks/build_slide_set.py does).
3. The real non-lymph-node slides of ``../shared/data/slides``: ``cmu-1-small-region.svs``
   (skin, 0.499 µm/px) and ``tcga-cr-7395-01a-01-ts1.svs`` (head and neck; its file records
   no µm/px, so it is read with ``--slide-mpp 0.25``, the usual 40x scan — an assumption).
4. ``qupath-rkd predict`` on all of them; the far fraction and flag of each slide from
   ``slide_scores.csv``.

Writes ``benchmarks/out/ood_check/`` (not in git): the model, slides, predictions and
``results.json``; prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "ood_check"
#: the head-and-neck slide records no µm/px: read as a 40x scan
TCGA_SLIDE_MPP = 0.25


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "qupath_rkd", *args]
    print("$ qupath-rkd " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--patches", type=int, default=200, help="train patches per class")
    parser.add_argument("--slides", type=int, default=4, help="semi-real slides (half tumour)")
    parser.add_argument("--size-px", type=int, default=2500, help="semi-real slide side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse-model", action="store_true", help="keep OUT/model.pt when it exists"
    )
    args = parser.parse_args()
    pcam = SHARED / "pcam"
    real = {
        "cmu-1-small-region": SHARED / "slides" / "cmu-1-small-region.svs",
        "tcga-cr-7395-01a-01-ts1": SHARED / "slides" / "tcga-cr-7395-01a-01-ts1.svs",
    }
    for path in (pcam / "train" / "0", pcam / "valid" / "0", *real.values()):
        if not path.exists():
            sys.exit(f"{path} not found (the project's shared data belongs beside the checkout)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # 1. the model
    model = out / "model.pt"
    t0 = time.perf_counter()
    train_args = (
        "train-patches",
        "--normal", str(pcam / "train" / "0"),
        "--tumor", str(pcam / "train" / "1"),
        "--max-normal", str(args.patches),
        "--max-tumor", str(args.patches),
        "--patch-mpp", "0.972",
        "--seed", str(args.seed),
        "--device", "cpu",
        "--out", str(model),
    )  # fmt: skip
    if not (args.reuse_model and model.is_file()):
        _cli(*train_args)
    train_s = time.perf_counter() - t0

    # 2. semi-real lymph-node slides from PCam valid patches
    from qupath_rkd.demo import build_semireal_slide

    t0 = time.perf_counter()
    semireal = []
    for k in range(args.slides):
        tumour = k % 2 == 0
        slide = build_semireal_slide(
            out / "slides" / f"semireal_{'tumor' if tumour else 'normal'}_{k + 1:02d}.tif",
            normal_dir=pcam / "valid" / "0",
            tumor_dir=pcam / "valid" / "1",
            width_px=args.size_px,
            height_px=args.size_px,
            n_lesions=2 if tumour else 0,
            lesion_diameters_um=(600.0, 300.0),
            seed=args.seed * 100 + k,
            max_patches=None,
        )
        semireal.append(slide.path)
    build_s = time.perf_counter() - t0

    # 3. predict; the tcga file records no µm/px: --slide-mpp for it alone (the flag replaces
    # what a slide's metadata says)
    pred = out / "pred"
    t0 = time.perf_counter()
    tcga = real.pop("tcga-cr-7395-01a-01-ts1")
    common = ("--device", "cpu", "--out", str(pred), "--overwrite")
    _cli("predict", str(model), *map(str, semireal), *map(str, real.values()), *common)
    _cli("predict", str(model), str(tcga), "--slide-mpp", str(TCGA_SLIDE_MPP), *common)
    predict_s = time.perf_counter() - t0

    with (pred / "slide_scores.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ckpt = _reference(model)
    results = {
        "what": "far-tile fraction of the out-of-domain check (qupath_rkd/model/ood.py)",
        "command": " ".join(["python", "benchmarks/ood_check.py", *sys.argv[1:]]),
        "model": "qupath-rkd " + " ".join(train_args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "train_patches_per_class": args.patches,
        "reference": ckpt,
        "tcga_slide_mpp_assumed": TCGA_SLIDE_MPP,
        "seconds": {
            "train": round(train_s, 1),
            "build": round(build_s, 1),
            "predict": round(predict_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "slides": [
            {
                "slide": r["slide"],
                "kind": "lymph node (semi-real, PCam valid)"
                if r["slide"].startswith("semireal")
                else "skin (real)"
                if r["slide"].startswith("cmu")
                else "head and neck (real, --slide-mpp 0.25)",
                "n_tiles": int(r["n_tiles"] or 0),
                "far_fraction": float(r["ood_far_fraction"]) if r["ood_far_fraction"] else None,
                "out_of_domain": r["out_of_domain"],
                "score": float(r["score"]) if r["score"] else None,
                "n_lesions": int(r["n_lesions"] or 0),
            }
            for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print("| slide | tissue | tiles | far fraction | flagged | slide score | lesions |")
    print("|---|---|---:|---:|---|---:|---:|")
    for r in results["slides"]:
        far = "-" if r["far_fraction"] is None else f"{r['far_fraction']:.3f}"
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        print(
            f"| {r['slide']} | {r['kind']} | {r['n_tiles']} | {far} | {r['out_of_domain']} | "
            f"{score} | {r['n_lesions']} |"
        )
    print(f"\nreference: {ckpt}; load average {results['load_average']}; {results['seconds']}")


def _reference(model: Path) -> dict[str, float | int]:
    """The stored reference's size and thresholds."""
    from qupath_rkd.constants import DEFAULT_OOD_FAR_FRACTION
    from qupath_rkd.model.scorer import load_model

    ref = load_model(model, device="cpu").ood_reference
    assert ref is not None, "the trained model stores no out-of-domain reference"
    return {
        "k": ref.k,
        "n_fit": ref.n_fit,
        "n_held": ref.n_held,
        "quantile": ref.quantile,
        "tile_threshold": round(ref.tile_threshold, 4),
        "far_fraction_limit": DEFAULT_OOD_FAR_FRACTION,
    }


if __name__ == "__main__":
    main()
