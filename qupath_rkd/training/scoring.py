"""Score folders of patch images with a trained model (the library side of ``score-patches``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from qupath_rkd.constants import LABEL_NORMAL
from qupath_rkd.errors import DataError
from qupath_rkd.model.scorer import TrainedModel
from qupath_rkd.progress import ProgressCallback, ProgressTask
from qupath_rkd.training.datasets import (
    EMPTY_IMAGE,
    Collate,
    IndexedDataset,
    find_images,
    read_image,
)

logger = logging.getLogger(__name__)


class _PathDataset(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.labels = np.full(len(paths), LABEL_NORMAL, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        try:
            return read_image(self.paths[index]), LABEL_NORMAL
        except DataError:
            return EMPTY_IMAGE, LABEL_NORMAL


@dataclass
class FolderScores:
    """Scores of the readable images, in file order; ``skipped`` lists unreadable files."""

    paths: list[Path]
    scores: np.ndarray
    probabilities: np.ndarray
    skipped: list[Path] = field(default_factory=list)


def score_folders(
    model: TrainedModel,
    dirs: Sequence[str | os.PathLike[str]],
    batch_size: int = 64,
    num_workers: int = 0,
    progress: ProgressCallback | None = None,
) -> FolderScores:
    """Score every PNG/JPEG/TIFF found recursively under ``dirs`` (resized to ``input_px``).

    ``progress`` gets task ``scoring``: images done (readable or not) of all found, unit
    ``patch``, after each batch.

    Raises :class:`DataError` when a folder is missing or holds no image files.
    """
    paths = find_images(dirs)
    if not paths:
        raise DataError(f"no PNG/JPEG/TIFF files found under {', '.join(str(d) for d in dirs)}")
    loader = DataLoader(
        IndexedDataset(_PathDataset(paths)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=Collate(model.input_px),
        pin_memory=model.device.type == "cuda",
    )
    scores = np.full(len(paths), np.nan, dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    skipped: list[int] = []
    with ProgressTask(progress, "scoring", total=len(paths), unit="patch") as bar:
        for batch in loader:
            skipped.extend(batch.skipped)
            if len(batch):
                s = model.raw_scores(model.preprocess(batch.images)).float().cpu().numpy()
                idx = batch.indices.numpy()
                scores[idx] = s
                ok[idx] = True
            bar.advance(len(batch) + len(batch.skipped))
    for i in sorted(skipped):
        logger.info("unreadable image skipped: %s", paths[i])
    kept = np.flatnonzero(ok)
    s = scores[kept]
    return FolderScores(
        [paths[i] for i in kept], s, model.calibrate(s), [paths[i] for i in sorted(skipped)]
    )


__all__ = ["FolderScores", "score_folders"]
