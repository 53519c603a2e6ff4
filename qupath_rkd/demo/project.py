"""The demo: a QuPath project of semi-real lymph-node slides, and the whole loop run on it.

:func:`build_demo_project` writes, in a folder of the user's choice:

- ``slides/``: five semi-real slides — mosaics of the real PatchCamelyon patches shipped in
  the package (see :mod:`qupath_rkd.demo.semireal`; they are *mosaics*, not scans), with
  tumour lesions of known shape on three of them;
- ``project/``: a QuPath project as QuPath 0.5 writes it (``project.qpproj`` with
  ``serverBuilder`` + metadata per entry, ``data/<id>/server.json`` and ``summary.json``,
  ``classifiers/classes.json``); QuPath 0.5 opens it (``data.qpdata`` is absent, which
  QuPath reads as "no objects yet");
- ``project/qupath-rkd/annotations/``: what the export Groovy script would write after a
  pathologist outlined the two lesions of the first slide as ``Tumor`` (roughly, slightly
  inside the true border, as a quick outline is) and marked it fully annotated, and marked the
  second slide tumour-free;
- ``truth/<slide>.geojson``: the true lesion polygons of every slide (for the FROC), named
  like ``predict`` names the slide's outputs (``LN-01_tumour_annotated``), so that
  ``qupath-rkd evaluate --truth DIR/truth`` scores both ``predict``'s output folder and the
  project ``sync`` wrote (which ``evaluate`` matches by image name).

The labelled slides are built from one half of the shipped patches and the other slides from
the other half, so the slides the model is judged on share no patch with what it learnt from.

:func:`run_demo` builds the project, runs :func:`qupath_rkd.sync.runner.run_sync` with the
offline EfficientNet-Lite0 teacher, and scores the predicted lesions against the truth with the
Camelyon16 lesion FROC.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qupath_rkd.constants import PCAM_MPP, PROJECT_SUBDIR
from qupath_rkd.errors import ProjectError
from qupath_rkd.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from qupath_rkd.outputs import (
    MEASURE_MAX_PROBABILITY,
    MEASURE_PEAK_X_PX,
    MEASURE_PEAK_Y_PX,
    slide_id_for,
)
from qupath_rkd.progress import ProgressCallback, ProgressTask

logger = logging.getLogger(__name__)

#: QuPath version whose project layout the demo reproduces.
QUPATH_VERSION = "0.5.1"
_OPENSLIDE_BUILDER = "qupath.lib.images.servers.openslide.OpenslideServerBuilder"

#: Per-image metadata flags (QuPath entry ``metadata``, strings), as labels/ reads them.
TUMOR_FREE_KEY = "qupath-rkd.tumor-free"
FULLY_ANNOTATED_KEY = "qupath-rkd.fully-annotated"

#: QuPath's default classes (from a real ``classifiers/classes.json``; colours as packed ARGB).
_QUPATH_CLASSES = [
    ("Tumor", -3670016),
    ("Stroma", -6895466),
    ("Immune cells", -6268256),
    ("Necrosis", -13487566),
    ("Other", -14336),
    ("Region*", -16777036),
    ("Ignore*", -4934476),
    ("Positive", -377282),
    ("Negative", -9408287),
]


@dataclass(frozen=True)
class DemoSlideSpec:
    """One demo slide: its name, lesions (mean diameters in µm), and what the pathologist did.

    ``role`` is ``"annotated"`` (lesions outlined as Tumor, slide marked fully annotated),
    ``"tumor-free"`` (marked tumour-free) or ``"unlabelled"``.
    """

    name: str
    lesion_diameters_um: tuple[float, ...]
    role: str
    seed: int


#: The demo's slides. Lesion sizes straddle the 200 µm / 275 µm limits the FROC cares about.
DEMO_SLIDES: tuple[DemoSlideSpec, ...] = (
    DemoSlideSpec("LN-01 tumour annotated.tif", (1100.0, 900.0), "annotated", 11),
    DemoSlideSpec("LN-02 tumour-free.tif", (), "tumor-free", 12),
    DemoSlideSpec("LN-03.tif", (1000.0, 600.0), "unlabelled", 13),
    DemoSlideSpec("LN-04.tif", (800.0, 400.0), "unlabelled", 14),
    DemoSlideSpec("LN-05.tif", (), "unlabelled", 15),
)


@dataclass
class DemoSlide:
    """A written demo slide and its project entry."""

    entry_id: int
    spec: DemoSlideSpec
    path: Path
    width_px: int
    height_px: int
    mpp: float
    levels: list[tuple[float, int, int]]  # (downsample, width, height)
    lesions: list[Any] = field(default_factory=list)  # shapely polygons, level-0 px


@dataclass
class DemoProject:
    """What :func:`build_demo_project` made."""

    root: Path
    project_dir: Path
    slides: list[DemoSlide]

    @property
    def truth_dir(self) -> Path:
        return self.root / "truth"


def truth_file(root: Path, slide_name: str, entry_id: int) -> Path:
    """A demo slide's truth file: ``truth/<slide id>.geojson``, or ``truth/<entryID>.geojson``
    in a demo built before the truth was named by slide."""
    by_name = root / "truth" / f"{slide_id_for(slide_name)}.geojson"
    by_entry = root / "truth" / f"{entry_id}.geojson"
    return by_name if by_name.is_file() or not by_entry.is_file() else by_entry


def qupath_file_uri(path: Path) -> str:
    """A file URI as QuPath (Java's ``File.toURI``) writes it: ``file:/abs/path%20x.tif``."""
    posix = path.resolve().as_posix()
    if not posix.startswith("/"):  # Windows drive: file:/D:/...
        posix = "/" + posix
    return "file:" + quote(posix, safe="/:")


def _split_patch_pools(workdir: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """Split the shipped patches in two disjoint halves: ((normal, tumour) to learn from,
    (normal, tumour) to judge on)."""
    from qupath_rkd.demo.semireal import demo_patch_dirs

    normal_dir, tumor_dir = demo_patch_dirs()
    pools = []
    for half in (0, 1):
        dirs = []
        for source, label in ((normal_dir, "normal"), (tumor_dir, "tumor")):
            target = workdir / f"pool{half}" / label
            target.mkdir(parents=True)
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in {".jpg", ".png"})
            for path in files[half::2]:
                shutil.copyfile(path, target / path.name)
            dirs.append(target)
        pools.append((dirs[0], dirs[1]))
    return pools[0], pools[1]


def _server_metadata(slide: DemoSlide) -> dict[str, Any]:
    """``serverBuilder.metadata`` as QuPath 0.5 writes it for an RGB OpenSlide image."""
    return {
        "name": slide.spec.name,
        "width": slide.width_px,
        "height": slide.height_px,
        "sizeZ": 1,
        "sizeT": 1,
        "channelType": "DEFAULT",
        "isRGB": True,
        "pixelType": "UINT8",
        "levels": [{"downsample": d, "width": w, "height": h} for d, w, h in slide.levels],
        "channels": [
            {"name": "Red", "color": -65536},
            {"name": "Green", "color": -16711936},
            {"name": "Blue", "color": -16776961},
        ],
        "pixelCalibration": {
            "pixelWidth": {"value": slide.mpp, "unit": "µm"},
            "pixelHeight": {"value": slide.mpp, "unit": "µm"},
            "zSpacing": {"value": 1.0, "unit": "z-slice"},
            "timeUnit": "SECONDS",
            "timepoints": [],
        },
        "magnification": 10.0,
        "preferredTileWidth": 256,
        "preferredTileHeight": 256,
    }


def _entry_metadata(spec: DemoSlideSpec) -> dict[str, str]:
    if spec.role == "annotated":
        return {FULLY_ANNOTATED_KEY: "true"}
    if spec.role == "tumor-free":
        return {TUMOR_FREE_KEY: "true"}
    return {}


def write_qupath_project(project_dir: Path, slides: Sequence[DemoSlide], *, seed: int = 0) -> Path:
    """Write ``project.qpproj``, ``data/<id>/`` and ``classifiers/classes.json`` as QuPath
    0.5.1 does (JSON with the same keys, order and nesting); returns the project file."""
    project_dir.mkdir(parents=True, exist_ok=True)
    now_ms = int(time.time() * 1000)
    rng = uuid.UUID(int=(seed * 7919 + 1) << 64)
    images = []
    for slide in slides:
        builder = {
            "builderType": "uri",
            "providerClassName": _OPENSLIDE_BUILDER,
            "uri": qupath_file_uri(slide.path),
            "args": [],
            "metadata": _server_metadata(slide),
        }
        randomized = str(uuid.uuid5(rng, slide.spec.name))
        images.append(
            {
                "serverBuilder": builder,
                "entryID": slide.entry_id,
                "randomizedName": randomized,
                "imageName": slide.spec.name,
                "metadata": _entry_metadata(slide.spec),
            }
        )
        data_dir = project_dir / "data" / str(slide.entry_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        server = {"builder": builder, "metadata": builder["metadata"]}
        atomic_write_text(data_dir / "server.json", json.dumps(server, ensure_ascii=False))
        summary = {
            "timestamp": now_ms,
            "imageType": "BRIGHTFIELD_H_E",
            "server": {
                "width": slide.width_px,
                "height": slide.height_px,
                "sizeC": 3,
                "sizeZ": 1,
                "sizeT": 1,
            },
            "hierarchy": {"nObjects": 1, "objectTypeCounts": {"Root objects": 1}},
        }
        atomic_write_text(data_dir / "summary.json", json.dumps(summary, ensure_ascii=False))
        _write_thumbnail(slide.path, data_dir / "thumbnail.jpg")
    project = {
        "version": QUPATH_VERSION,
        "createTimestamp": now_ms,
        "modifyTimestamp": now_ms,
        "uri": qupath_file_uri(project_dir / "project.qpproj"),
        "lastID": max((s.entry_id for s in slides), default=0),
        "images": images,
    }
    classes_dir = project_dir / "classifiers"
    classes_dir.mkdir(exist_ok=True)
    atomic_write_text(
        classes_dir / "classes.json",
        json.dumps(
            {"pathClasses": [{"name": n, "color": c} for n, c in _QUPATH_CLASSES]}, indent=2
        ),
    )
    path = project_dir / "project.qpproj"
    atomic_write_text(path, json.dumps(project, indent=2, ensure_ascii=False))
    return path


def _write_thumbnail(slide_path: Path, out: Path) -> None:
    """QuPath keeps a small JPEG thumbnail per entry; write one the same way."""
    import io

    from PIL import Image

    from qupath_rkd.slides import open_slide

    with open_slide(slide_path) as slide:
        rgb, _ = slide.thumbnail(max_px=256)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=85)
    atomic_write_bytes(out, buffer.getvalue())


def _pathologist_outline(lesion: Any) -> Any:
    """A quick hand outline of a lesion: smoothed and drawn a little inside its border."""
    outline = lesion.buffer(-12.0).simplify(8.0)
    return outline if not outline.is_empty else lesion


def export_annotations(project_dir: Path, slides: Sequence[DemoSlide]) -> Path:
    """Write ``qupath-rkd/annotations/<entryID>.geojson`` + ``manifest.json`` as the export
    Groovy script does (every image gets a file, empty when it has no annotation)."""
    from qupath_rkd.qupath.backends.base import ExchangeLayout, ManifestImage, write_manifest
    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id, write_geojson

    layout = ExchangeLayout(project_dir / PROJECT_SUBDIR)
    layout.annotations_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for slide in slides:
        features = []
        if slide.spec.role == "annotated":
            for index, lesion in enumerate(slide.lesions):
                features.append(
                    make_feature(
                        _pathologist_outline(lesion),
                        object_type="annotation",
                        class_name="Tumor",
                        feature_id=stable_feature_id("demo-annotation", slide.entry_id, index),
                    )
                )
        write_geojson(layout.annotations_file(str(slide.entry_id)), features)
        records.append(
            ManifestImage(
                entry_id=str(slide.entry_id),
                image_name=slide.spec.name,
                uris=(qupath_file_uri(slide.path),),
                pixel_width_um=slide.mpp,
                pixel_height_um=slide.mpp,
                width_px=slide.width_px,
                height_px=slide.height_px,
                metadata=_entry_metadata(slide.spec),
                n_annotations=len(features),
            )
        )
    return write_manifest(layout.manifest_path, records, qupath_version=QUPATH_VERSION)


def write_truth(root: Path, slides: Sequence[DemoSlide]) -> Path:
    """The true lesions of every slide as ``truth/<slide id>.geojson`` (Tumor annotations;
    the slide id is :func:`qupath_rkd.outputs.slide_id_for` of the slide's file name)."""
    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id, write_geojson

    folder = root / "truth"
    folder.mkdir(parents=True, exist_ok=True)
    for slide in slides:
        features = [
            make_feature(
                lesion,
                object_type="annotation",
                class_name="Tumor",
                feature_id=stable_feature_id("demo-truth", slide.entry_id, i),
            )
            for i, lesion in enumerate(slide.lesions)
        ]
        write_geojson(folder / f"{slide_id_for(slide.spec.name)}.geojson", features)
    return folder


def build_demo_project(
    out_dir: str | os.PathLike[str],
    *,
    width_px: int = 3072,
    height_px: int = 2560,
    specs: Sequence[DemoSlideSpec] = DEMO_SLIDES,
    progress: ProgressCallback | None = None,
) -> DemoProject:
    """Build the demo folder (slides, QuPath project, exported annotations, truth).

    Args:
        out_dir: an empty or missing folder.
        width_px, height_px: level-0 size of each slide (0.972 µm/px).
        specs: the slides to make.
        progress: gets task ``building the demo``: the slides built and then the QuPath
            project, unit ``step`` (:mod:`qupath_rkd.progress`).

    Raises:
        ProjectError: ``out_dir`` exists and is not empty.
    """
    from qupath_rkd.demo.semireal import build_semireal_slide
    from qupath_rkd.slides import open_slide

    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise ProjectError(
            f"{root} is not empty", hint="give the demo a new folder, or delete this one"
        )
    root.mkdir(parents=True, exist_ok=True)
    slides: list[DemoSlide] = []
    with ProgressTask(progress, "building the demo", len(specs) + 1, "step") as task:
        with tempfile.TemporaryDirectory(dir=root, prefix=".patches-") as tmp:
            learn_pool, judge_pool = _split_patch_pools(Path(tmp))
            for index, spec in enumerate(specs, start=1):
                task.update(index - 1, now=spec.name)
                normal_dir, tumor_dir = learn_pool if spec.role != "unlabelled" else judge_pool
                built = build_semireal_slide(
                    root / "slides" / spec.name,
                    normal_dir=normal_dir,
                    tumor_dir=tumor_dir,
                    width_px=width_px,
                    height_px=height_px,
                    n_lesions=len(spec.lesion_diameters_um),
                    lesion_diameters_um=spec.lesion_diameters_um or (1000.0,),
                    mpp=PCAM_MPP,
                    seed=spec.seed,
                )
                with open_slide(built.path) as handle:
                    levels = [
                        (float(d), int(w), int(h))
                        for d, (w, h) in zip(
                            handle.level_downsamples, handle.level_dimensions, strict=True
                        )
                    ]
                slides.append(
                    DemoSlide(
                        entry_id=index,
                        spec=spec,
                        path=built.path,
                        width_px=built.width_px,
                        height_px=built.height_px,
                        mpp=built.mpp,
                        levels=levels,
                        lesions=list(built.lesions),
                    )
                )
        project_dir = root / "project"
        task.update(len(specs), now="the QuPath project")
        write_qupath_project(project_dir, slides)
        export_annotations(project_dir, slides)
        write_truth(root, slides)
        task.update(len(specs) + 1)
    return DemoProject(root=root, project_dir=project_dir, slides=slides)


# --- running the demo ---------------------------------------------------------------------
#: Lesion measurements the demo's FROC reads: those
#: :func:`qupath_rkd.inference.write.lesion_features` writes (defined in qupath_rkd.outputs).
MAX_PROBABILITY = MEASURE_MAX_PROBABILITY
PEAK_X_PX = MEASURE_PEAK_X_PX
PEAK_Y_PX = MEASURE_PEAK_Y_PX

#: Marker written last by :func:`build_demo_project`: a folder holding it is a finished demo.
DEMO_MARKER = "demo.json"

#: The demo's settings, written to the project's config.toml so that a later
#: ``qupath-rkd sync DIR/project`` uses the same ones (and finds nothing to redo).
DEMO_SETTINGS: dict[str, Any] = {
    "training.steps": 100,
    "sync.backend": "geojson",
}


@dataclass
class DemoResult:
    """What :func:`run_demo` found.

    Attributes:
        project: the demo project.
        outcome: the sync's outcome (per-slide table).
        froc_score: Camelyon16 lesion FROC over the slides the model never learnt from
            (``None`` when it cannot be computed).
        froc_at: sensitivity at 0.25 … 8 false positives per slide.
        n_lesions: lesions counted by the FROC (non-ITC).
        lesions_found, false_lesions: of those, how many some predicted lesion hit, and the
            predicted lesions that hit none, on the same slides (:func:`lesion_counts`).
        slide_truth: ``{image_name: has tumour}``.
        built: whether this run built the project (``False``: it reused one).
        pictures: the overlay PNGs and the FROC curve under ``<demo>/pictures/`` (set by the
            CLI, which draws them with :mod:`qupath_rkd.demo.pictures`).
    """

    project: DemoProject
    outcome: Any
    froc_score: float | None
    froc_at: dict[float, float]
    n_lesions: int
    slide_truth: dict[str, bool]
    built: bool
    pictures: Any = None
    lesions_found: int = 0
    false_lesions: int = 0


def _build_or_leave_nothing(
    root: Path, overrides: dict[str, Any], progress: ProgressCallback | None
) -> DemoProject:
    """Build the demo in ``root`` (missing or empty) with its config and marker; on any
    failure or Ctrl-C remove what was built, leaving ``root`` as it was (missing or empty, and
    the folders above it that this created removed too)."""
    from qupath_rkd.sync.config import load_config, write_config

    existed = root.is_dir()
    if existed and any(root.iterdir()):
        # not ours to clean up: build_demo_project refuses it with the message
        return build_demo_project(root, progress=progress)
    created = root  # the topmost folder this build creates
    while not created.parent.exists():
        created = created.parent
    try:
        demo = build_demo_project(root, progress=progress)
        config = load_config(demo.project_dir, {**DEMO_SETTINGS, **overrides})
        write_config(demo.project_dir, config, only_non_default=True)
        _write_marker(demo)
    except BaseException:
        if existed:
            for child in list(root.iterdir()) if root.is_dir() else []:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        else:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return demo


def _load_demo(root: Path) -> DemoProject | None:
    """The demo in ``root`` if one was finished there before, else ``None``."""
    marker = root / DEMO_MARKER
    if not marker.is_file():
        return None
    from qupath_rkd.qupath.geojson import read_geojson

    info = json.loads(marker.read_text(encoding="utf-8"))
    slides = []
    for item in info["slides"]:
        spec = next((s for s in DEMO_SLIDES if s.name == item["name"]), None)
        if spec is None:
            return None
        truth_path = truth_file(root, spec.name, int(item["entry_id"]))
        truth = [o.geometry for o in read_geojson(truth_path)]
        slides.append(
            DemoSlide(
                entry_id=int(item["entry_id"]),
                spec=spec,
                path=root / "slides" / spec.name,
                width_px=int(item["width_px"]),
                height_px=int(item["height_px"]),
                mpp=float(item["mpp"]),
                levels=[],
                lesions=truth,
            )
        )
    return DemoProject(root=root, project_dir=root / "project", slides=slides)


def _write_marker(demo: DemoProject) -> None:
    info = {
        "what": "qupath-rkd demo: semi-real slides (mosaics of real PCam patches)",
        "slides": [
            {
                "entry_id": s.entry_id,
                "name": s.spec.name,
                "role": s.spec.role,
                "width_px": s.width_px,
                "height_px": s.height_px,
                "mpp": s.mpp,
            }
            for s in demo.slides
        ],
    }
    atomic_write_json(demo.root / DEMO_MARKER, info)


def demo_detections(
    demo: DemoProject, roles: Sequence[str] = ("unlabelled",), *, candidates: bool = True
) -> list[Any]:
    """Per slide whose role is in ``roles``, the project's predictions scored against the demo's
    truth (:class:`qupath_rkd.evaluation.camelyon16.SlideDetections`), as ``qupath-rkd
    evaluate`` scores ``sync``'s output: with ``candidates`` the Camelyon16 candidate list sync
    wrote (lesion peaks and the heatmap's maxima below the threshold, as ``predict``'s CSV;
    the lesions where there is none), else one detection per lesion (a lesion in parts is one
    MultiPolygon object) at its maximum probability and peak."""
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask, score_detections
    from qupath_rkd.evaluation.predictions import (
        SYNC_PREDICTIONS_DIR,
        read_lesion_detections,
        read_sync_detections,
    )

    per_slide = []
    folder = demo.project_dir / PROJECT_SUBDIR / SYNC_PREDICTIONS_DIR
    for slide in demo.slides:
        if slide.spec.role not in roles:
            continue
        sub = (
            read_sync_detections(folder, str(slide.entry_id), slide.spec.name)
            if candidates
            else read_lesion_detections(folder / f"{slide.entry_id}.geojson", slide.spec.name)
        )
        mask = (
            evaluation_mask(
                slide.lesions, mpp=slide.mpp, slide_size_px=(slide.width_px, slide.height_px)
            )
            if slide.lesions
            else None
        )
        per_slide.append(score_detections(slide.spec.name, sub.probs, sub.x_px, sub.y_px, mask))
    return per_slide


def demo_froc(demo: DemoProject, roles: Sequence[str] = ("unlabelled",)) -> tuple[Any, int]:
    """Camelyon16 lesion FROC of the project's candidate lists (:func:`demo_detections`)
    against the demo's truth, over the slides whose role is in ``roles``; returns
    ``(FROCResult | None, n_slides)``."""
    from qupath_rkd.errors import EvaluationError
    from qupath_rkd.evaluation.camelyon16 import froc

    per_slide = demo_detections(demo, roles)
    try:
        return froc(per_slide), len(per_slide)
    except EvaluationError:
        return None, len(per_slide)


def lesion_counts(per_slide: Sequence[Any]) -> tuple[int, int]:
    """``(lesions found, false detections)`` of scored slides (``SlideDetections``): the
    non-ITC true lesions some detection hit, and the detections that hit none (ITC hits are
    neither). Given the predicted lesions (``demo_detections(..., candidates=False)``), the
    plain counts a pathologist reads beside the FROC."""
    import numpy as np

    found = sum(int((np.asarray(s.tp_probs) > 0).sum()) for s in per_slide)
    false = sum(int(np.asarray(s.fp_probs).size) for s in per_slide)
    return found, false


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    overrides: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Build the demo project in ``out_dir`` (or reuse the one there), run ``sync`` on it
    with the offline teacher, and score the lesions against the truth.

    Args:
        out_dir: the demo folder (built when missing or empty, reused when it holds a demo).
        overrides: configuration overrides (``{"section.key": value}``).
        progress: gets the events of the build (:func:`build_demo_project`) and of the sync
            (:func:`qupath_rkd.sync.runner.run_sync`), see :mod:`qupath_rkd.progress`.
        echo: one-line remarks and the labelled-set summary.

    Raises:
        ProjectError: ``out_dir`` is a non-empty folder that is not a finished demo.
        DeviceError: the device asked for (``sync.device``) is not usable here; checked before
            anything is built.
    """
    from qupath_rkd.model.device import resolve_device
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import run_sync

    root = Path(out_dir)
    say = echo or (lambda _m: None)
    demo = _load_demo(root) if root.is_dir() else None
    built = demo is None
    if demo is None:
        # the device first: building the slides takes minutes and must not end in "no CUDA"
        resolve_device(str({**DEMO_SETTINGS, **(overrides or {})}.get("sync.device", "auto")))
        demo = _build_or_leave_nothing(root, overrides or {}, progress)
    else:
        say(f"reusing the demo project in {root}")
    config = load_config(demo.project_dir, overrides or {})
    resolve_device(str(config.get("sync.device")))
    say("running: qupath-rkd sync " + str(demo.project_dir))
    outcome = run_sync(demo.project_dir, config, progress=progress, echo=say)
    result, _ = demo_froc(demo)
    found, false = lesion_counts(demo_detections(demo, candidates=False))
    return DemoResult(
        project=demo,
        outcome=outcome,
        froc_score=None if result is None else result.score,
        froc_at={} if result is None else dict(result.sensitivity_at),
        n_lesions=0 if result is None else result.n_lesions,
        lesions_found=found,
        false_lesions=false,
        slide_truth={s.spec.name: bool(s.lesions) for s in demo.slides},
        built=built,
    )
