"""Benchmark: which slide score (max vs FW-RD's mean above threshold), and the lesion FROC.

    python benchmarks/slide_score_rule.py --model benchmarks/out/rd_b1000_s0.pt

Builds semi-real slides (mosaics of real PCam *validation* patches, 0.972 µm/px) — half with
lesions of known outline, half without — predicts them with a trained checkpoint through
``predict_slides`` and evaluates with ``qupath_rkd.evaluation.run.evaluate`` (Camelyon16
lesion FROC), then computes the slide AUC for both slide-score rules from the same tile
probabilities. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcam" / "valid"
OUT = Path(__file__).resolve().parent / "out" / "slide_score_rule"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--slides", type=int, default=10, help="half tumour, half normal")
    parser.add_argument("--size-px", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--mpp", type=float, default=None, help="tile µm/px when the checkpoint records none"
    )
    args = parser.parse_args()

    from qupath_rkd.demo import build_semireal_slide
    from qupath_rkd.evaluation.metrics import roc_auc
    from qupath_rkd.evaluation.run import evaluate, write_report
    from qupath_rkd.heatmap import Heatmap
    from qupath_rkd.inference import InferenceConfig, predict_slides
    from qupath_rkd.inference.predict import slide_score_of
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.outputs import SlideOutputs

    OUT.mkdir(parents=True, exist_ok=True)
    slides_dir, truth_dir = OUT / "slides", OUT / "truth"
    slides_dir.mkdir(exist_ok=True)
    truth_dir.mkdir(exist_ok=True)
    paths, labels = [], []
    for k in range(args.slides):
        tumour = k % 2 == 0
        path = slides_dir / f"{'tumor' if tumour else 'normal'}_{k:02d}.tif"
        slide = build_semireal_slide(
            path,
            normal_dir=SHARED / "0",
            tumor_dir=SHARED / "1",
            width_px=args.size_px,
            height_px=args.size_px,
            n_lesions=(1 + (k // 2) % 2) if tumour else 0,
            lesion_diameters_um=(600.0, 350.0),
            seed=100 + k,
            max_patches=1500,
        )
        (truth_dir / f"{path.stem}.geojson").write_text(json.dumps(slide.lesions_geojson()))
        paths.append(path)
        labels.append(int(tumour))
    model = load_model(args.model, device="cpu")
    pred_dir = OUT / "pred"
    t0 = time.perf_counter()
    runs = predict_slides(
        paths, model, pred_dir, config=InferenceConfig(num_workers=args.workers, tile_mpp=args.mpp)
    )
    seconds = time.perf_counter() - t0
    assert all(r.status in ("ok", "skipped") for r in runs), [r.error for r in runs]
    report = evaluate(truth_dir, pred_dir)
    write_report(report, OUT / "evaluation")
    threshold = float(model.threshold)
    rules = {}
    for rule in ("max", "mean_above"):
        scores = []
        for path in paths:
            hm = Heatmap.load(SlideOutputs(pred_dir, path.stem).heatmap_json)
            scores.append(slide_score_of(hm.probability.ravel(), rule, threshold))
        rules[rule] = {"auc": roc_auc(np.array(labels), np.array(scores)), "scores": scores}
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "model": str(args.model),
        "model_id": model.model_id[:12],
        "threshold": threshold,
        "slides": [p.name for p in paths],
        "tiles": sum(r.n_tiles for r in runs),
        "predict_seconds": seconds,
        "froc_score": report.froc.score,
        "froc_sensitivity_at": report.froc.sensitivity_at,
        "n_lesions": report.froc.n_lesions,
        "slide_auc_by_rule": {k: v["auc"] for k, v in rules.items()},
        "slide_scores_by_rule": {k: v["scores"] for k, v in rules.items()},
    }
    (OUT / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
