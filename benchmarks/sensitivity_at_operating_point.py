"""Sensitivity and false lesions at the operating point of a ``predict`` output folder.

``qupath-rkd evaluate`` scores the whole candidate list (the FROC) and counts the lesions on
tumour-free slides; this adds what a pathologist sees at the threshold in ``run.json``: the
share of the truth's lesions (Camelyon16 protocol, ITCs excluded) that a reported lesion's peak
hits, and the reported lesions on tumour slides that hit no lesion.

    PYTHONPATH=. python benchmarks/sensitivity_at_operating_point.py \\
        --pred /work/exp/nm/pred4000b --truth benchmarks/out/slide_set_4000/truth/camelyon16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from qupath_rkd.evaluation.camelyon16 import evaluation_mask, score_detections
from qupath_rkd.evaluation.predictions import read_predictions
from qupath_rkd.evaluation.run import _slide_mpp, match_truths
from qupath_rkd.evaluation.truth import load_truth_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pred", type=Path, required=True, help="a predict --out folder")
    ap.add_argument("--truth", type=Path, required=True, help="the truth folder")
    args = ap.parse_args()
    op = json.loads((args.pred / "run.json").read_text())["operating_point"]
    threshold = float(op["threshold"])
    predictions = read_predictions(args.pred)
    matched, _ = match_truths(predictions.slides, load_truth_dir(args.truth))
    hits = lesions = false_on_tumour = tumour_slides = 0
    tumour_free: list[int | None] = []
    for slide in predictions.slides:
        truth = matched.get(slide.slide_id)
        if truth is None or not truth.is_tumor:
            tumour_free.append(slide.n_lesions)
            continue
        mask = evaluation_mask(truth.tumor, truth.exclude, mpp=_slide_mpp(slide, truth, None))
        sub = slide.detections
        det = score_detections(slide.slide_id, sub.probs, sub.x_px, sub.y_px, mask)
        hits += int((det.tp_probs >= threshold).sum())
        lesions += det.n_lesions
        false_on_tumour += int((det.fp_probs >= threshold).sum())
        tumour_slides += 1
    result = {
        "threshold": threshold,
        "method": op.get("method"),
        "lesions": lesions,
        "sensitivity_at_operating_point": hits / max(lesions, 1),
        # None when no tumour-free slide, or one without a lesion count (bare submissions)
        "false_lesions_per_tumor_free_slide": (
            float(np.mean([int(n) for n in tumour_free if n is not None]))
            if tumour_free and None not in tumour_free
            else None
        ),
        "false_lesions_per_tumor_slide": false_on_tumour / max(tumour_slides, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
