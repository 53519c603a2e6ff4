"""Names of everything ``predict`` writes, defined once (``evaluate`` and ``sync`` read them here).

Layout of an output folder ``OUT``::

    OUT/run.json                       arguments, versions, model id of the last run
    OUT/slide_scores.csv               one row per slide (SLIDE_SCORES_HEADER): score, lesions,
                                       burden, out-of-domain check (far fraction, flag), note
    OUT/camelyon16/<slide>.csv         Camelyon16 submission: the candidate list, one "prob,X,Y"
                                       line per candidate, highest first (see below)
    OUT/<slide>/lesions.geojson        lesions as QuPath GeoJSON detections (class Tumor)
    OUT/<slide>/tiles.geojson          scored tiles as QuPath tiles (measurement maps)
    OUT/<slide>/tiles.csv              the same tiles as data (x_px,y_px,width_px,...)
    OUT/<slide>/heatmap.npy / .json    calibrated probability on the tile grid + its geometry
    OUT/<slide>/heatmap.png            the heatmap over the slide thumbnail, with a colour bar
    OUT/<slide>/done.json              written last: model id + config key; a match skips the slide
    OUT/tumor_free_heatmaps/<slide>.*  heatmaps of the --tumor-free slides, reused while the model,
                                       the heatmap settings and the slide file are unchanged

The Camelyon16 CSV is the FROC submission, not the lesion list: every lesion's peak (its maximum
probability; the lesions are those of ``lesions.geojson``) and, below them, the other local
maxima of the heatmap (inside the lesions too) down to ``DEFAULT_CANDIDATE_FLOOR`` (0.05), one
per ``DEFAULT_CANDIDATE_NMS_UM`` µm, at most ``DEFAULT_MAX_CANDIDATES`` per slide, each at its
own probability (:mod:`qupath_rkd.lesions.candidates`): the list hardly depends on the seed
threshold, and its FROC curve goes on below it. ``done.json``'s ``camelyon16_submission``
records this; outputs written with other candidate settings (one line per lesion, maxima
outside the lesions only, clamped below the seed) are predicted again.

All coordinates are level-0 pixels in QuPath's frame, which is OpenSlide's frame for slides
without ``openslide.bounds-x/y`` (every Camelyon16 TIFF); for e.g. MRXS files with bounds, add
the bounds offset to compare the Camelyon16 CSV with OpenSlide-frame annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUN_JSON = "run.json"
SLIDE_SCORES_CSV = "slide_scores.csv"
SUBMISSION_DIR = "camelyon16"
#: heatmaps of the tumour-free slides that set the operating point (reused between runs)
TUMOR_FREE_DIR = "tumor_free_heatmaps"
SLIDE_SCORES_HEADER = (
    "slide",
    "score",
    "probability_max",
    "n_tiles",
    "n_lesions",
    "positive",
    "tumor_area_mm2",
    "largest_lesion_major_axis_um",
    "burden_category",
    "ood_far_fraction",
    "out_of_domain",
    "note",
)

#: Measurement names written on QuPath objects by ``predict`` and ``sync`` (the same names);
#: tiles carry them for Measure › Show measurement maps. ``evaluate`` reads a lesion's
#: maximum probability and peak point from ``sync``'s detections by these names.
MEASURE_PROBABILITY = "Tumor probability"
MEASURE_SCORE = "Raw score"
MEASURE_MAX_PROBABILITY = "Tumor probability (max)"
MEASURE_MEAN_PROBABILITY = "Tumor probability (mean)"
MEASURE_AREA_UM2 = "Area µm^2"
MEASURE_MAJOR_AXIS_UM = "Major axis µm"
MEASURE_PEAK_X_PX = "Peak x px"
MEASURE_PEAK_Y_PX = "Peak y px"
#: A lesion's measurements, in the order ``inference.write.lesion_features`` writes them.
LESION_MEASUREMENTS = (
    MEASURE_MAX_PROBABILITY,
    MEASURE_MEAN_PROBABILITY,
    MEASURE_AREA_UM2,
    MEASURE_MAJOR_AXIS_UM,
    MEASURE_PEAK_X_PX,
    MEASURE_PEAK_Y_PX,
)

#: Slide-level values ``sync`` writes for QuPath, one small JSON per image beside its
#: predictions: ``<project>/qupath-rkd/predictions/<entryID>`` + :data:`SLIDE_VALUES_SUFFIX`
#: (written at sync's commit, only when its content changed). ``groovy/import_predictions.groovy``
#: and ``groovy/run_sync.groovy`` put its ``measurements`` on the image's root object (QuPath
#: shows them as image measurements) and its ``metadata`` on the project entry (sortable in the
#: project pane), after removing every name listed in ``measurementNames`` / ``metadataKeys``
#: (so a value no longer given is not left behind). The scripts read the names from the file.
SLIDE_VALUES_SUFFIX = ".slide.json"
SLIDE_VALUES_FORMAT = "qupath-rkd-slide-values"
#: Field names of the slide-values JSON (the Groovy scripts read these).
SLIDE_FIELD_MEASUREMENTS = "measurements"
SLIDE_FIELD_MEASUREMENT_NAMES = "measurementNames"
SLIDE_FIELD_METADATA = "metadata"
SLIDE_FIELD_METADATA_KEYS = "metadataKeys"
#: Image (root object) measurements: numbers only (QuPath measurements are numbers).
SLIDE_MEASURE_SCORE = "qupath-rkd slide score"
SLIDE_MEASURE_POSITIVE = "qupath-rkd positive (1 yes, 0 no)"
SLIDE_MEASURE_TUMOR_AREA_MM2 = "qupath-rkd tumour area mm^2"
SLIDE_MEASURE_LARGEST_AXIS_UM = "qupath-rkd largest lesion major axis µm"
SLIDE_MEASURE_BURDEN_CODE = "qupath-rkd burden (0 none, 1 ITC, 2 micro, 3 macro)"
SLIDE_MEASURE_OOD_FAR_FRACTION = "qupath-rkd out-of-domain far tile fraction"
SLIDE_MEASURE_OOD_FLAG = "qupath-rkd out of domain (1 yes, 0 no)"
SLIDE_MEASURE_STALE = "qupath-rkd stale"
SLIDE_MEASUREMENTS = (
    SLIDE_MEASURE_SCORE,
    SLIDE_MEASURE_POSITIVE,
    SLIDE_MEASURE_TUMOR_AREA_MM2,
    SLIDE_MEASURE_LARGEST_AXIS_UM,
    SLIDE_MEASURE_BURDEN_CODE,
    SLIDE_MEASURE_OOD_FAR_FRACTION,
    SLIDE_MEASURE_OOD_FLAG,
    SLIDE_MEASURE_STALE,
)
#: Burden categories (qupath_rkd.lesions.burden) as numbers (:data:`SLIDE_MEASURE_BURDEN_CODE`).
BURDEN_CATEGORY_CODES = {"none": 0, "ITC": 1, "micrometastasis": 2, "macrometastasis": 3}
#: Project-entry metadata (strings; QuPath's project pane sorts and filters by them). Their
#: keys start with ``"qupath-rkd "`` (a space), the user's flags with ``"qupath-rkd."``.
SLIDE_META_SCORE = "qupath-rkd slide score"
SLIDE_META_POSITIVE = "qupath-rkd positive"
SLIDE_META_TUMOR_AREA_MM2 = "qupath-rkd tumour area mm2"
SLIDE_META_LARGEST_AXIS_UM = "qupath-rkd largest lesion um"
SLIDE_META_BURDEN = "qupath-rkd burden"
SLIDE_META_OUT_OF_DOMAIN = "qupath-rkd out of domain"
SLIDE_METADATA_KEYS = (
    SLIDE_META_SCORE,
    SLIDE_META_POSITIVE,
    SLIDE_META_TUMOR_AREA_MM2,
    SLIDE_META_LARGEST_AXIS_UM,
    SLIDE_META_BURDEN,
    SLIDE_META_OUT_OF_DOMAIN,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """``name`` with every run of characters other than letters, digits, ``.``, ``_`` and ``-``
    replaced by ``_`` (``"slide"`` when nothing is left)."""
    return _UNSAFE.sub("_", name) or "slide"


def slide_id_for(path: str | Path) -> str:
    """The name a slide's outputs carry: its file name without the last suffix (made safe)."""
    name = Path(path).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return safe_name(stem)


@dataclass(frozen=True)
class SlideOutputs:
    """Paths of one slide's outputs under ``out_dir``."""

    out_dir: Path
    slide_id: str

    @property
    def folder(self) -> Path:
        return self.out_dir / self.slide_id

    @property
    def lesions_geojson(self) -> Path:
        return self.folder / "lesions.geojson"

    @property
    def tiles_geojson(self) -> Path:
        return self.folder / "tiles.geojson"

    @property
    def tiles_csv(self) -> Path:
        return self.folder / "tiles.csv"

    @property
    def heatmap_stem(self) -> Path:
        return self.folder / "heatmap"

    @property
    def heatmap_npy(self) -> Path:
        return self.folder / "heatmap.npy"

    @property
    def heatmap_json(self) -> Path:
        return self.folder / "heatmap.json"

    @property
    def heatmap_png(self) -> Path:
        return self.folder / "heatmap.png"

    @property
    def done_json(self) -> Path:
        return self.folder / "done.json"

    @property
    def submission_csv(self) -> Path:
        return self.out_dir / SUBMISSION_DIR / f"{self.slide_id}.csv"
