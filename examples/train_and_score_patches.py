"""Train the RD model on a few PatchCamelyon patches and score held-out ones (library API).

A small, fast configuration (EfficientNet-Lite0 teacher from the PyPI wheel, 96 px, 10 training
steps of 16 patches): about half a minute on 2 CPU cores, no download. It reads a
PatchCamelyon-style folder (``train/0``, ``train/1``, ``valid/0``, ``valid/1`` of 96×96
patches): PCAM_DIR, by default the project's shared data set ``../shared/data/pcam``, and when
that is absent the real PCam patches bundled with the package (``qupath_rkd/data/pcam_demo``,
split in two disjoint halves); a PCAM_DIR given that is not such a folder is said in one line.
The model and scores go to OUT_DIR (default: a temporary folder, removed at the end). The
command-line equivalent is

    qupath-rkd train-patches --normal PCAM/train/0 --tumor PCAM/train/1 --max-normal 2000 \
        --max-tumor 100 --valid-normal PCAM/valid/0 --valid-tumor PCAM/valid/1 \
        --epochs 1 --patch-mpp 0.972 --out model.pt
    qupath-rkd score-patches model.pt PCAM/valid --out scores.csv

Usage: python examples/train_and_score_patches.py [PCAM_DIR] [OUT_DIR]
"""

from __future__ import annotations

import shutil
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
    """Train and score; 0 when done or when the data is missing (said in one line), 1 on an
    error (one line, no traceback)."""
    from qupath_rkd.errors import QupathRkdError

    repo = Path(__file__).resolve().parents[1]
    shared = repo.parent / "shared" / "data" / "pcam"
    pcam = Path(argv[0]) if argv else shared
    missing = [s for s in SPLITS if not (pcam / s).is_dir()]
    if missing and argv:
        print(
            f"this example needs PatchCamelyon patch folders ({', '.join(SPLITS)}) in {pcam}, "
            "not found: pass PCAM_DIR (see the docstring), or none for the bundled patches; "
            "nothing done"
        )
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="qupath-rkd-example-") as tmp:
            if missing:
                print(f"({shared} not found: using the patches bundled with qupath-rkd)")
                pcam = bundled_pcam(Path(tmp) / "pcam")
            if len(argv) > 1:
                run(pcam, Path(argv[1]))
            else:
                run(pcam, Path(tmp) / "out")
                print("(model and scores were in a temporary folder, removed now: pass OUT_DIR)")
    except (QupathRkdError, OSError) as exc:
        message = exc.one_line() if isinstance(exc, QupathRkdError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def bundled_pcam(root: Path) -> Path:
    """A PCam-style folder under ``root`` from the package's patches: even-numbered files (in
    name order) to ``train/``, odd-numbered ones to ``valid/``, so the two never share a patch."""
    from qupath_rkd.demo import demo_patch_dirs

    for label, source in zip(("0", "1"), demo_patch_dirs(), strict=True):
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in {".jpg", ".png"})
        for split, part in (("train", files[0::2]), ("valid", files[1::2])):
            target = root / split / label
            target.mkdir(parents=True)
            for path in part:
                shutil.copyfile(path, target / path.name)
    return root


def run(pcam: Path, out_dir: Path) -> None:
    from qupath_rkd.training.trainer import train

    out_dir.mkdir(parents=True, exist_ok=True)
    train_set = PatchFolderDataset(
        [pcam / "train" / "0"], [pcam / "train" / "1"], max_normal=160, max_tumor=16, seed=0
    )
    valid_set = PatchFolderDataset(
        [pcam / "valid" / "0"], [pcam / "valid" / "1"], max_normal=50, max_tumor=50, seed=0
    )
    config = TrainConfig(
        teacher="efficientnet_lite0",
        input_px=96,
        epochs=1,
        batch_size=16,
        max_steps_per_epoch=10,
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
        [pcam / "valid" / "0"], [pcam / "valid" / "1"], max_normal=50, max_tumor=50, seed=1
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
