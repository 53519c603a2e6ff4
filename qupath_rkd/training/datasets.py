"""Patch datasets: folders of image files, in-memory arrays, and the batch collation.

A dataset (any ``torch.utils.data.Dataset``) yields ``(image, label)`` with ``image`` a
``(H, W, 3)`` uint8 RGB array and ``label`` ``LABEL_NORMAL`` or ``LABEL_TUMOR``, and has a
``labels`` array. An unreadable file yields a zero-size image ``(0, 0, 3)``: the collation drops
it and the trainer counts and reports it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import DataError
from qupath_rkd.model.scorer import resize_uint8

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)


def find_images(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files (PNG/JPEG/TIFF, any case) found recursively under ``dirs``, sorted per folder.

    Hidden files and folders (name starting with ``.``) are skipped. Raises :class:`DataError`
    when a folder does not exist.
    """
    found: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise DataError(f"patch folder {root} does not exist or is not a folder")
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in filenames:
                if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                    files.append(Path(dirpath) / name)
        found.extend(sorted(files))
    return found


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB; raises :class:`DataError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "L", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                arr = np.asarray(im)
                return _to_uint8_rgb(arr, path)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if str(path).lower().endswith((".tif", ".tiff")):
            try:
                import tifffile

                return _to_uint8_rgb(tifffile.imread(path), path)
            except Exception:
                pass
        raise DataError(f"cannot read image {path}: {type(exc).__name__}") from exc


def _to_uint8_rgb(arr: np.ndarray, path: object) -> np.ndarray:
    """Greyscale / RGBA / 16-bit arrays -> ``(H, W, 3)`` uint8."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] < 3:
        raise DataError(f"image {path} has shape {a.shape}, expected (H, W, 3)")
    a = a[..., :3]
    if a.dtype != np.uint8:
        hi = float(a.max()) if a.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0)
        a = np.clip(a.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


class PatchFolderDataset(Dataset):
    """Patches from folders: normal folders are ``LABEL_NORMAL``, tumour folders ``LABEL_TUMOR``.

    Args:
        normal_dirs, tumor_dirs: folders searched recursively for PNG/JPEG/TIFF files.
        max_normal, max_tumor: keep at most this many of each (a seeded random subset).
        seed: seed of that subset.

    Items: ``(image (H, W, 3) uint8, label)``; an unreadable file gives ``(EMPTY_IMAGE, label)``.
    """

    def __init__(
        self,
        normal_dirs: Sequence[str | os.PathLike[str]] = (),
        tumor_dirs: Sequence[str | os.PathLike[str]] = (),
        max_normal: int | None = None,
        max_tumor: int | None = None,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        normal = _subset(find_images(normal_dirs), max_normal, rng)
        tumor = _subset(find_images(tumor_dirs), max_tumor, rng)
        self.paths: list[Path] = normal + tumor
        self.labels = np.array(
            [LABEL_NORMAL] * len(normal) + [LABEL_TUMOR] * len(tumor), dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        label = int(self.labels[index])
        try:
            return read_image(self.paths[index]), label
        except DataError as exc:
            logger.debug("%s", exc)
            return EMPTY_IMAGE, label

    def tile_px(self) -> int | None:
        """Side in pixels of the first readable patch (square patches assumed: PCam's 96), or
        None when there is none; recorded in the checkpoint as the training field of view."""
        from PIL import Image

        for path in self.paths[:16]:
            try:
                with Image.open(path) as im:
                    return int(max(im.size))
            except OSError:
                continue
        return None

    def fingerprint(self) -> str:
        """sha256 over (label, file name, content) of every patch, in order."""
        h = hashlib.sha256()
        for path, label in zip(self.paths, self.labels, strict=True):
            try:
                data = Path(path).read_bytes()
            except OSError:
                data = b""
            h.update(f"{int(label)}\t{Path(path).name}\t".encode())
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()


def _subset(paths: list[Path], limit: int | None, rng: np.random.Generator) -> list[Path]:
    if limit is None or limit >= len(paths):
        return paths
    if limit < 0:
        raise DataError(f"a patch limit must be >= 0, got {limit}")
    keep = np.sort(rng.choice(len(paths), size=limit, replace=False))
    return [paths[i] for i in keep]


class ArrayDataset(Dataset):
    """In-memory patches: ``images (N, H, W, 3) uint8`` (or a list of arrays), ``labels (N,)``."""

    def __init__(
        self, images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[int]
    ) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return np.asarray(self.images[index]), int(self.labels[index])

    def fingerprint(self) -> str:
        """sha256 over labels and pixel bytes."""
        h = hashlib.sha256()
        for i in range(len(self)):
            img, label = self[i]
            h.update(f"{label}:{img.shape}".encode())
            h.update(np.ascontiguousarray(img).tobytes())
        return h.hexdigest()


class IndexedDataset(Dataset):
    """Wraps a dataset so items carry their index: ``(index, image, label)``."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, int]:
        image, label = self.base[index]
        return index, image, label


class PatchBatch:
    """A collated batch: ``images (B, S, S, 3) uint8``, ``labels (B,) int64``, ``indices (B,)``
    and ``skipped`` (indices of unreadable or malformed items dropped from the batch)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, skipped: list[int]
    ) -> None:
        self.images, self.labels, self.indices, self.skipped = images, labels, indices, skipped

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> PatchBatch:
        """Called by the DataLoader when ``pin_memory=True`` (CUDA)."""
        return PatchBatch(
            self.images.pin_memory(), self.labels.pin_memory(), self.indices, self.skipped
        )


class Collate:
    """Collation that resizes every image to ``size_px`` and drops unusable items."""

    def __init__(self, size_px: int) -> None:
        self.size_px = size_px

    def __call__(self, items: list[tuple[int, np.ndarray, int]]) -> PatchBatch:
        images, labels, indices, skipped = [], [], [], []
        for index, image, label in items:
            a = np.asarray(image)
            if (
                a.ndim != 3
                or a.shape[2] != 3
                or a.shape[0] == 0
                or a.shape[1] == 0
                or a.dtype != np.uint8
            ):
                skipped.append(int(index))
                continue
            images.append(resize_uint8(torch.from_numpy(np.ascontiguousarray(a)), self.size_px))
            labels.append(int(label))
            indices.append(int(index))
        if images:
            batch = torch.stack(images)
        else:
            batch = torch.zeros((0, self.size_px, self.size_px, 3), dtype=torch.uint8)
        return PatchBatch(
            batch,
            torch.tensor(labels, dtype=torch.int64),
            torch.tensor(indices, dtype=torch.int64),
            skipped,
        )
