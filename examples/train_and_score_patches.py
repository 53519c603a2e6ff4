"""Train the RD model on a few PatchCamelyon patches and score held-out ones (library API).

A small, fast configuration (EfficientNet-Lite0 teacher from the PyPI wheel, 96 px, a few dozen
training steps): well under a minute on 2 CPU cores, no download. It needs a PatchCamelyon-style
folder (``train/0``, ``train/1``, ``valid/0``, ``valid/1`` of 96×96 patches): PCAM_DIR, by default
the project's shared data set ``../shared/data/pcam``; without one it says so and exits. The
model and scores go to OUT_DIR (default: a temporary folder, removed at the end). The
command-line equivalent is

    qupath-rkd train-patches --normal PCAM/train/0 --tumor PCAM/train/1 --max-normal 2000 \
        --max-tumor 100 --valid-normal PCAM/valid/0 --valid-tumor PCAM/valid/1 \
        --epochs 1 --mpp 0.972 --out model.pt
    qupath-rkd score-patches model.pt PCAM/valid --out scores.csv

Usage: python examples/train_and_score_patches.py [PCAM_DIR] [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from qupath_rkd.constants import PCAM_MPP
from qupath_rkd.model.calibration import auroc
from qupath_rkd.model.scorer import load_model
from qupath_rkd.training.config import TrainConfig
from qupath_rkd.training.datasets import PatchFolderDataset

SPLITS = ("train/0", "train/1", "valid/0", "valid/1")


def main(argv: list[str]) -> int:
    repo = Path(__file__).resolve().parents[1]
    pcam = Path(argv[0]) if argv else repo.parent / "shared" / "data" / "pcam"
    missing = [s for s in SPLITS if not (pcam / s).is_dir()]
    if missing:
        print(
            f"this example needs PatchCamelyon patch folders ({', '.join(SPLITS)}) in {pcam}, "
            "not found: pass PCAM_DIR (see the docstring); nothing done"
        )
        return 0
    if len(argv) > 1:
        run(pcam, Path(argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="qupath-rkd-example-") as tmp:
            run(pcam, Path(tmp))
            print("(model and scores were in a temporary folder, removed now: pass OUT_DIR)")
    return 0


def run(pcam: Path, out_dir: Path) -> None:
    from qupath_rkd.training.trainer import train

    out_dir.mkdir(parents=True, exist_ok=True)
    train_set = PatchFolderDataset(
        [pcam / "train" / "0"], [pcam / "train" / "1"], max_normal=400, max_tumor=40, seed=0
    )
    valid_set = PatchFolderDataset(
        [pcam / "valid" / "0"], [pcam / "valid" / "1"], max_normal=100, max_tumor=100, seed=0
    )
    config = TrainConfig(
        teacher="efficientnet_lite0",
        input_px=96,
        epochs=1,
        max_steps_per_epoch=20,
        validate_every_steps=10,
        mpp=PCAM_MPP,
        seed=0,
    )
    result = train(train_set, valid_set, config, out_dir / "model.pt", train_set.fingerprint())
    print(f"trained: best AUROC {result.best_metrics['val_auroc']:.3f} at step {result.best_step}")
    for warning in result.warnings:
        print("warning:", warning)

    model = load_model(out_dir / "model.pt")
    # another draw from valid (it may share patches with the selection set above: an example,
    # not an evaluation; benchmarks/patch_quality.py is the measurement)
    test = PatchFolderDataset(
        [pcam / "valid" / "0"], [pcam / "valid" / "1"], max_normal=100, max_tumor=100, seed=1
    )
    images = [test[i][0] for i in range(len(test))]
    scores, probabilities = model.score_images(images)
    print(
        f"scored {len(scores)} patches: AUROC {auroc(test.labels, scores):.3f}, "
        f"{int((probabilities >= model.threshold).sum())} above the threshold"
    )
    np.savetxt(out_dir / "scores.txt", np.c_[test.labels, scores, probabilities], fmt="%.5f")
    print(f"wrote {out_dir / 'model.pt'} and {out_dir / 'scores.txt'}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
