"""Constants shared by every stage. Labels are explicit numbers, never folder-name order."""

from __future__ import annotations

from typing import Final

#: Label of a normal (non-tumour) patch or tile.
LABEL_NORMAL: Final[int] = 0
#: Label of a tumour patch or tile.
LABEL_TUMOR: Final[int] = 1
#: Label of a tile that must not be used (ignore class, ambiguous overlap).
LABEL_IGNORE: Final[int] = -1

#: PatchCamelyon patches: 96 px at about 0.972 µm/px (10x, Camelyon16 level 2 of 0.243 µm/px).
PCAM_MPP: Final[float] = 0.972
PCAM_PATCH_PX: Final[int] = 96

#: ImageNet normalisation used by every pretrained teacher.
IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)

#: Name of the folder inside a QuPath project that qupath-rkd owns.
PROJECT_SUBDIR: Final[str] = "qupath-rkd"
#: Marker put on every object qupath-rkd writes into QuPath, so only those are ever replaced.
TOOL_TAG: Final[str] = "qupath-rkd"
