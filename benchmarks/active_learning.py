"""Active learning by simulation (issue 13.3): a simulated pathologist annotates the regions
``sync`` suggests, on semi-real slides whose lesions are known.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/active_learning.py          # the full run
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/active_learning.py --smoke  # minutes

Slides (built once, cached under ``benchmarks/out/active_learning/slides-<key>/``): mosaics of
real PCam patches (0.972 µm/px) with REAL Camelyon16 lesion clusters
(:mod:`qupath_rkd.demo.camelyon_lesions`). The project's slides use PCam **train** patches and
the even-numbered Camelyon16 annotation files; the held-out slides, never in a project, use
PCam **valid** patches and the odd-numbered files, so they share no patch and no lesion shape
with anything the model learns from.

Each (strategy, seed) run is a QuPath 0.5-style project (:func:`qupath_rkd.demo.
write_qupath_project`) whose annotations are the export folder the Groovy script writes, read by
``sync`` through the geojson backend, exactly as ``qupath-rkd sync PROJECT`` does (the run's
settings are written to the project's ``config.toml``; :func:`qupath_rkd.sync.runner.run_sync`
is what the CLI calls). It starts from one annotated lesion (the largest lesion of the seed's
tumour slide, the exact truth, class ``Tumor``) plus one slide marked tumour-free. The seed's
tumour slide is number ``seed mod --train-tumour``: with the default 4, seeds 4 apart share
their start and differ only in the training's, the labels' and ``random``'s draws. Each round,
the oracle reads the suggestion objects ``sync`` wrote into the prediction files (what QuPath
shows), and for each region appends to that image's exported GeoJSON a ``Tumor`` annotation =
truth ∩ region and a ``Normal`` annotation (the class the label reader takes as normal:
``classes.normal``) = region − truth; existing annotations are never touched. Then ``sync`` runs
again. Strategies: the ``suggest.signal`` values (the default ``mixed``, its parts
``uncertainty_diversity`` and ``top_probability`` taking turns; ``mixed_random``, those and a
random pick in turn; ``tumour_first``; the
single signals ``uncertainty``, ``diversity`` and ``tta_disagreement`` (sync scores the tiles
of each slide's most uncertain candidates in 4 dihedral views), the baselines ``random`` —
random regions of the same size from unannotated tissue — and ``top_probability``). Round 0
(the start) is synced once per seed and shared by the strategies.

Measured per round on the held-out slides, with the model and operating point ``sync`` made:
tile AUROC and tile average precision (AP) (tiles >= 50 % in a lesion are tumour, tiles
touching no lesion normal, the rest left out; tumour-free slides included; pooled over the
slides), the Camelyon16 lesion FROC of the lesions ``sync`` would write at its operating point
(``froc``) and, threshold-free, of the ranked candidate list ``predict`` submits
(``froc_candidates``: lesion peaks plus the heatmap's local maxima outside them, floor 0.05,
NMS 187 µm, those below the seed reported just below it); and the annotated area (mm²,
cumulative: the polygons drawn). ``--test-tumour`` / ``--test-normal`` set the held-out set's
size (the tumour slides take the odd-numbered annotation files in order, 50 in the shared
data). The summary pairs the default with each other strategy by (seed, round).

The reference "annotate every lesion": every lesion of every training slide outlined
(the truth) and the slides marked fully annotated, so the pathologist has looked over all their
tissue: its area is the tissue of the tumour training slides.

Held-out tiles are scored by :func:`qupath_rkd.inference.predict_slide` with the trunk's output
memoised by the tile's input bytes (the trunk is frozen and the same in every model: only the
head changes between rounds), so a round's evaluation costs the head only.

Writes ``<out>/results.json`` (every round of every run, settings, timings, load averages) and
``<out>/results.md`` (the tables). Not part of CI; ``tests/benchmarks`` runs the oracle.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "active_learning"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Name prefix of the oracle's annotations (not ``qupath-rkd …``: they are the pathologist's).
ORACLE_NAME = "oracle"
STRATEGIES = (
    "mixed",
    "mixed_random",
    "uncertainty_diversity",
    "tumour_first",
    "random",
    "top_probability",
    "uncertainty",
    "diversity",
    "tta_disagreement",
)
REFERENCE = "every_lesion"


# --- the oracle -----------------------------------------------------------------------------
def oracle_geometries(region: Any, truth: Any) -> tuple[Any, Any]:
    """``(tumour, normal)`` the oracle draws in one region: truth ∩ region and region − truth
    (shapely, level-0 px, QuPath's frame; either may be empty). ``truth`` is the union of the
    slide's lesions (or ``None``/empty on a slide without tumour)."""
    from shapely.geometry import Polygon

    if truth is None or truth.is_empty:
        return Polygon(), region
    return region.intersection(truth), region.difference(truth)


def _polygonal(geom: Any) -> Any:
    """Only the polygon parts of ``geom`` (an intersection can add lines and points)."""
    from shapely.geometry import MultiPolygon, Polygon

    if geom.is_empty:
        return Polygon()
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]
    parts += [p for g in getattr(geom, "geoms", []) if isinstance(g, MultiPolygon) for p in g.geoms]
    return MultiPolygon(parts) if parts else Polygon()


def oracle_features(
    regions: Sequence[Any],
    truth: Any,
    *,
    tumor_class: str,
    normal_class: str,
    key: str,
    min_area_px: float = 1.0,
) -> tuple[list[dict[str, Any]], float, float]:
    """The annotations the oracle draws for ``regions`` of one image (QuPath GeoJSON
    features, class ``tumor_class`` / ``normal_class``, named ``oracle …``, ids stable in
    ``key``), and the drawn areas ``(tumour_px2, normal_px2)`` (level-0 px²). Pieces under
    ``min_area_px`` px² (slivers of a cut) are not drawn."""
    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id

    features: list[dict[str, Any]] = []
    areas = [0.0, 0.0]
    for index, region in enumerate(regions):
        tumour, normal = oracle_geometries(region, truth)
        for kind, (geom, cls) in enumerate(((tumour, tumor_class), (normal, normal_class))):
            geom = _polygonal(geom)
            if geom.is_empty or geom.area < min_area_px:
                continue
            areas[kind] += float(geom.area)
            features.append(
                make_feature(
                    geom,
                    object_type="annotation",
                    class_name=cls,
                    name=f"{ORACLE_NAME} {cls} {index + 1}",
                    feature_id=stable_feature_id(ORACLE_NAME, key, index, kind),
                )
            )
    return features, areas[0], areas[1]


def append_annotations(export: Path, features: Sequence[Mapping[str, Any]]) -> None:
    """Add ``features`` to an exported annotation file (a FeatureCollection) atomically; the
    features already there are kept exactly as they are (same JSON values, same order)."""
    from qupath_rkd.io_utils import atomic_write_json

    data = json.loads(export.read_text(encoding="utf-8")) if export.is_file() else None
    if data is None:
        data = {"type": "FeatureCollection", "features": []}
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise SystemExit(f"{export}: not a FeatureCollection (rewrite it with the export script)")
    data["features"] = list(data["features"]) + [dict(f) for f in features]
    atomic_write_json(export, data)
    manifest = export.parent / "manifest.json"
    if manifest.is_file():  # keep the export script's count right
        info = json.loads(manifest.read_text(encoding="utf-8"))
        for image in info.get("images", []):
            if image.get("annotations") == export.name:
                image["n_annotations"] = len(data["features"])
        atomic_write_json(manifest, info)


def suggested_regions(project_dir: Path) -> dict[str, list[Any]]:
    """The suggestion objects in the project's prediction files, by entry ID (geometry in
    QuPath's frame), in rank order: what QuPath shows after the import script."""
    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.qupath.geojson import read_geojson
    from qupath_rkd.suggest.write import MEASURE_RANK, SUGGESTION_CLASS

    out: dict[str, list[Any]] = {}
    for path in sorted((project_dir / PROJECT_SUBDIR / "predictions").glob("*.geojson")):
        objs = [o for o in read_geojson(path) if o.class_name == SUGGESTION_CLASS]
        objs.sort(key=lambda o: float(o.measurements.get(MEASURE_RANK, 0.0)))
        if objs:
            out[path.stem] = [o.geometry for o in objs]
    return out


# --- slides ---------------------------------------------------------------------------------
@dataclasses.dataclass
class SimSlide:
    """A built slide and its truth (level-0 px at ``mpp``; ``tissue`` the builder's)."""

    name: str
    path: Path
    width_px: int
    height_px: int
    mpp: float
    lesions: list[Any]
    tissue_um2: float

    @property
    def truth(self) -> Any:
        from shapely import union_all

        return union_all(self.lesions) if self.lesions else None


def _lesion_count(lesions: Sequence[Any], mpp: float, size: tuple[int, int]) -> int:
    from qupath_rkd.errors import EvaluationError
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask

    try:
        return int(evaluation_mask(lesions, mpp=mpp, slide_size_px=size).n_lesions)
    except EvaluationError:
        return 0


def _clusters(
    files: Sequence[Path],
    n: int,
    size_px: int,
    seed: int,
    max_tumour_fraction: float,
    min_lesion_um2: float,
) -> list[Any]:
    """``n`` placed lesion clusters (one per file, the files in order) with at least one
    FROC lesion, a largest lesion of at least ``min_lesion_um2`` µm² and at most
    ``max_tumour_fraction`` of the slide in tumour."""
    from qupath_rkd.constants import PCAM_MPP
    from qupath_rkd.demo.camelyon_lesions import load_camelyon16_lesions, place_lesion_cluster
    from qupath_rkd.errors import DataError

    chosen = []
    for index, f in enumerate(files):
        if len(chosen) == n:
            break
        rng = np.random.default_rng([seed, index])
        lesions = load_camelyon16_lesions(f)
        for _ in range(4):
            try:
                cluster = place_lesion_cluster(
                    lesions, width_px=size_px, height_px=size_px, mpp=PCAM_MPP, rng=rng, source=f
                )
            except DataError:
                break
            area = sum(p.area for p in cluster.lesions)
            largest_um2 = max((p.area for p in cluster.lesions), default=0.0) * PCAM_MPP**2
            if area > max_tumour_fraction * size_px**2 or largest_um2 < min_lesion_um2:
                continue
            if _lesion_count(cluster.lesions, PCAM_MPP, (size_px, size_px)) >= 1:
                chosen.append(cluster)
                break
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} of {n} lesion clusters fit {size_px} px slides")
    return chosen


def build_slides(args: argparse.Namespace) -> dict[str, list[SimSlide]]:
    """The project's and the held-out slides (built once; reused when the settings match)."""
    from qupath_rkd.constants import PCAM_MPP
    from qupath_rkd.demo.camelyon_lesions import build_real_lesion_slide
    from qupath_rkd.qupath.geojson import make_feature, read_geojson, write_geojson

    spec = {
        "size_px": args.size_px,
        "train": [args.train_tumour, args.train_normal],
        "test": [args.test_tumour, args.test_normal],
        "max_patches": args.max_patches,
        "min_lesion_um2": args.min_lesion_um2,
        "version": 2,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    folder = args.out / f"slides-{key}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text(encoding="utf-8"))
        out: dict[str, list[SimSlide]] = {"train": [], "test": []}
        for part in out:
            for s in info[part]:
                lesions = [o.geometry for o in read_geojson(folder / s["truth"])]
                out[part].append(
                    SimSlide(
                        s["name"],
                        folder / s["slide"],
                        s["width_px"],
                        s["height_px"],
                        s["mpp"],
                        lesions,
                        s["tissue_um2"],
                    )
                )
        return out
    files = sorted((args.annotations / "train").glob("*.json"))
    if not files:
        raise SystemExit(f"{args.annotations}/train: no Camelyon16 annotation files")
    t0 = time.perf_counter()
    frac = 0.25
    plan = {
        "train": (
            _clusters(files[0::2], args.train_tumour, args.size_px, 0, frac, args.min_lesion_um2),
            args.train_normal,
            args.patches / "train",
        ),
        "test": (
            _clusters(files[1::2], args.test_tumour, args.size_px, 1, frac, args.min_lesion_um2),
            args.test_normal,
            args.patches / "valid",
        ),
    }
    info = {"spec": spec, "train": [], "test": []}
    out = {"train": [], "test": []}
    for part, (clusters, n_normal, patches) in plan.items():
        jobs = [(f"{part}_tumour_{k + 1:02d}", c) for k, c in enumerate(clusters)]
        jobs += [(f"{part}_normal_{k + 1:02d}", None) for k in range(n_normal)]
        for k, (name, cluster) in enumerate(jobs):
            path = folder / "slides" / f"{name}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            built = build_real_lesion_slide(
                path,
                normal_dir=patches / "0",
                tumor_dir=patches / "1",
                width_px=args.size_px,
                height_px=args.size_px,
                cluster=cluster,
                mpp=PCAM_MPP,
                seed=(100 if part == "test" else 0) + k,
                max_patches=args.max_patches,
            ).slide
            truth = folder / "truth" / f"{name}.geojson"
            truth.parent.mkdir(parents=True, exist_ok=True)
            write_geojson(
                truth,
                [
                    make_feature(p, object_type="annotation", class_name="Tumor")
                    for p in built.lesions
                ],
            )
            slide = SimSlide(
                name,
                path,
                built.width_px,
                built.height_px,
                built.mpp,
                list(built.lesions),
                float(built.tissue.area) * built.mpp**2,
            )
            out[part].append(slide)
            info[part].append(
                {
                    "name": name,
                    "slide": os.path.relpath(path, folder),
                    "truth": os.path.relpath(truth, folder),
                    "width_px": slide.width_px,
                    "height_px": slide.height_px,
                    "mpp": slide.mpp,
                    "tissue_um2": round(slide.tissue_um2, 1),
                    "lesion_um2": round(sum(p.area for p in slide.lesions) * slide.mpp**2, 1),
                    "froc_lesions": _lesion_count(
                        slide.lesions, slide.mpp, (slide.width_px, slide.height_px)
                    )
                    if slide.lesions
                    else 0,
                    "source": None if cluster is None else str(cluster.source.name),
                }
            )
            print(f"built {name} ({info[part][-1]['froc_lesions']} FROC lesions)", flush=True)
    info["build_s"] = round(time.perf_counter() - t0, 1)
    manifest.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out


# --- projects -------------------------------------------------------------------------------
def write_project(
    project_dir: Path,
    slides: Sequence[SimSlide],
    *,
    roles: Mapping[str, str],
    annotations: Mapping[str, Sequence[Mapping[str, Any]]],
    settings: Mapping[str, Any],
) -> None:
    """A QuPath 0.5-style project of ``slides`` with its export folder (what the Groovy
    export script writes) and ``config.toml``. ``roles``: ``annotated`` (fully annotated),
    ``tumor-free`` or ``unlabelled`` by slide name; ``annotations``: features by slide name."""
    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.demo.project import (
        QUPATH_VERSION,
        DemoSlide,
        DemoSlideSpec,
        _entry_metadata,
        qupath_file_uri,
        write_qupath_project,
    )
    from qupath_rkd.io_utils import atomic_write_json
    from qupath_rkd.qupath.backends.base import MANIFEST_FORMAT
    from qupath_rkd.slides import open_slide
    from qupath_rkd.sync.config import load_config, write_config

    demo_slides = []
    for index, s in enumerate(slides, start=1):
        with open_slide(s.path) as handle:
            levels = [
                (float(d), int(w), int(h))
                for d, (w, h) in zip(handle.level_downsamples, handle.level_dimensions, strict=True)
            ]
        spec = DemoSlideSpec(f"{s.name}.tif", (), roles.get(s.name, "unlabelled"), index)
        demo_slides.append(
            DemoSlide(index, spec, s.path, s.width_px, s.height_px, s.mpp, levels, [])
        )
    write_qupath_project(project_dir, demo_slides)
    folder = project_dir / PROJECT_SUBDIR / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for ds, s in zip(demo_slides, slides, strict=True):
        features = list(annotations.get(s.name, []))
        atomic_write_json(
            folder / f"{ds.entry_id}.geojson", {"type": "FeatureCollection", "features": features}
        )
        images.append(
            {
                "entry_id": str(ds.entry_id),
                "image_name": ds.spec.name,
                "uri": qupath_file_uri(s.path),
                "mpp": s.mpp,
                "width": s.width_px,
                "height": s.height_px,
                "metadata": _entry_metadata(ds.spec),
                "annotations": f"{ds.entry_id}.geojson",
                "n_annotations": len(features),
            }
        )
    atomic_write_json(
        folder / "manifest.json",
        {"format": MANIFEST_FORMAT, "qupath_version": QUPATH_VERSION, "images": images},
    )
    write_config(project_dir, load_config(project_dir, dict(settings)), only_non_default=True)


def sync(project_dir: Path) -> Any:
    """``qupath-rkd sync PROJECT`` through the library (the settings in its config.toml)."""
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import run_sync

    outcome = run_sync(project_dir, load_config(project_dir, {}))
    if outcome.exit_code != 0:
        raise SystemExit(f"sync of {project_dir} failed: {outcome.failed}")
    return outcome


def set_config(project_dir: Path, changes: Mapping[str, Any]) -> None:
    from qupath_rkd.sync.config import load_config, write_config

    write_config(project_dir, load_config(project_dir, dict(changes)), only_non_default=True)


# --- held-out evaluation ----------------------------------------------------------------------
class MemoTrunk:
    """Wraps a frozen trunk: each input's output is computed once (keyed by its bytes and the
    teacher) and reused; the trunk is the same in every model of a run, only heads differ."""

    def __init__(self, store: dict[bytes, Any]) -> None:
        self.store = store
        self.hits = 0
        self.misses = 0

    def wrap(self, model: Any) -> None:
        import torch

        trunk = model.net.trunk
        store = self
        tag = model.teacher.encode()

        class _Memo(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = trunk
                self.dim = getattr(trunk, "dim", None)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                rows = x.detach().contiguous().cpu().numpy()
                keys = [hashlib.sha1(tag + r.tobytes()).digest() for r in rows]
                missing = [i for i, k in enumerate(keys) if k not in store.store]
                if missing:
                    out = self.inner(x[missing])
                    for i, row in zip(missing, out, strict=True):
                        store.store[keys[i]] = row.detach().clone()
                store.misses += len(missing)
                store.hits += len(keys) - len(missing)
                return torch.stack([store.store[k] for k in keys]).to(x.device)

        model.net.trunk = _Memo()


def evaluate(
    project_dir: Path,
    outcome: Any,
    test: Sequence[SimSlide],
    memo: MemoTrunk,
) -> dict[str, Any]:
    """Tile AUROC, tile average precision, the lesion FROC at the operating point sync chose
    (``froc``: the lesions ``sync`` would write) and the FROC of the ranked candidate list
    ``predict`` submits (``froc_candidates``: the lesion peaks plus the heatmap's local maxima
    outside them down to the package floor, those below the seed reported just below it;
    :func:`qupath_rkd.inference.write.slide_candidates`) of the project's model on the
    held-out slides. Tile AUROC and AP pool the held-out tiles of every slide."""
    import shapely

    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask, score_detections
    from qupath_rkd.evaluation.metrics import roc_auc
    from qupath_rkd.inference import predict_slide
    from qupath_rkd.inference.write import slide_candidates
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import inference_config

    config = load_config(project_dir, {})
    model = load_model(project_dir / PROJECT_SUBDIR / "model" / "model.pt", device="cpu")
    memo.wrap(model)
    threshold = float(outcome.operating_point["threshold"])
    labels, probs, per_slide, per_slide_cands = [], [], [], []
    n_candidates = 0
    for s in test:
        cfg = dataclasses.replace(inference_config(config, s.mpp), threshold=threshold)
        pred = predict_slide(s.path, model, config=cfg)
        t = pred.tiles
        side = float(t.tile_level0_px)
        boxes = shapely.box(
            t.xy_px[:, 0], t.xy_px[:, 1], t.xy_px[:, 0] + side, t.xy_px[:, 1] + side
        )
        truth = s.truth
        if truth is None:
            frac = np.zeros(len(t))
        else:
            shapely.prepare(truth)
            frac = shapely.area(shapely.intersection(boxes, truth)) / (side * side)
        keep = (frac >= 0.5) | (frac == 0.0)
        labels.append((frac[keep] >= 0.5).astype(np.int64))
        probs.append(np.asarray(t.probability, np.float64)[keep])
        mask = (
            evaluation_mask(s.lesions, mpp=s.mpp, slide_size_px=(s.width_px, s.height_px))
            if s.lesions
            else None
        )
        les = pred.lesions
        per_slide.append(
            score_detections(
                s.name,
                np.array([float(x.max_probability) for x in les]),
                np.array([float(x.peak_xy_px[0]) for x in les]),
                np.array([float(x.peak_xy_px[1]) for x in les]),
                mask,
            )
        )
        cands = slide_candidates(pred)  # what predict's camelyon16/<slide>.csv holds
        n_candidates += len(cands)
        per_slide_cands.append(score_detections(s.name, cands.probs, cands.x_px, cands.y_px, mask))
    all_labels, all_probs = np.concatenate(labels), np.concatenate(probs)
    auroc = roc_auc(all_labels, all_probs)
    froc_score, n_lesions = _froc_score(per_slide)
    froc_cands, _ = _froc_score(per_slide_cands)
    return {
        "tile_auroc": round(float(auroc), 4),
        "tile_ap": round(average_precision(all_labels, all_probs), 4),
        "froc": froc_score,
        "froc_candidates": froc_cands,
        "froc_lesions": n_lesions,
        "candidates_per_slide": round(n_candidates / max(len(test), 1), 1),
        "threshold": round(threshold, 4),
    }


def _froc_score(per_slide: Sequence[Any]) -> tuple[float | None, int]:
    """``(FROC score rounded to 4 places, lesions)``; ``(None, 0)`` without a FROC lesion."""
    from qupath_rkd.errors import EvaluationError
    from qupath_rkd.evaluation.camelyon16 import froc

    try:
        result = froc(per_slide)
    except EvaluationError:
        return None, 0
    return round(float(result.score), 4), int(result.n_lesions)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall step curve) of ``scores`` ``(N,)``
    for ``labels`` ``(N,)`` (1 = tumour): ``sum_k (R_k - R_{k-1}) P_k`` over the distinct
    scores from the highest down, tied scores taken together (scikit-learn's definition).
    Threshold-free, and weighted to the high-probability end, where AUROC is not.

    Raises:
        ValueError: shapes differ, a score is not finite, or there is no positive.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("average precision needs finite scores")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # the last index of each tie group
    tp = np.cumsum(y)[last].astype(np.float64)
    precision = tp / (last + 1.0)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --- the runs ---------------------------------------------------------------------------------
def _labelled_tiles(outcome: Any) -> dict[str, int]:
    total = {"tumor": 0, "normal": 0}
    for counts in (outcome.label_summary or {}).values():
        for k in total:
            total[k] += int(counts.get(k, 0))
    return total


def _entry_names(project_dir: Path) -> dict[str, str]:
    from qupath_rkd.qupath.project import open_project

    return {e.entry_id: Path(e.name).stem for e in open_project(project_dir).entries}


def annotate_round(
    project_dir: Path, slides: Mapping[str, SimSlide], round_index: int, classes: tuple[str, str]
) -> dict[str, float]:
    """The oracle's round: every suggested region annotated with the truth. Returns the
    regions and the drawn areas (µm²)."""
    from qupath_rkd.constants import PROJECT_SUBDIR

    names = _entry_names(project_dir)
    drawn = {"regions": 0, "tumour_um2": 0.0, "normal_um2": 0.0}
    for entry_id, regions in suggested_regions(project_dir).items():
        s = slides[names[entry_id]]
        features, tumour_px2, normal_px2 = oracle_features(
            regions,
            s.truth,
            tumor_class=classes[0],
            normal_class=classes[1],
            key=f"{entry_id}-{round_index}",
        )
        export = project_dir / PROJECT_SUBDIR / "annotations" / f"{entry_id}.geojson"
        append_annotations(export, features)
        drawn["regions"] += len(regions)
        drawn["tumour_um2"] += tumour_px2 * s.mpp**2
        drawn["normal_um2"] += normal_px2 * s.mpp**2
    return drawn


def base_settings(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "sync.backend": "geojson",
        "sync.device": "cpu",
        "sync.torch_threads": 1,
        "sync.num_workers": 0,
        "training.seed": seed,
        "labels.seed": seed,
        "labels.max_tiles_per_class": args.max_tiles,
        "suggest.region_um": args.region_um,
        "suggest.per_slide": args.per_slide,
        "suggest.per_project": args.per_round,
        "suggest.seed": seed,
        # the whole-slide grid and smoothing: the package defaults unless given (the runs
        # recorded before 2026-12-07 had stride = tile and no smoothing, the defaults then)
        **({} if args.stride_px is None else {"inference.stride_px": args.stride_px}),
        **({} if args.smooth_um is None else {"inference.smooth_um": args.smooth_um}),
    }


def _row(strategy: str, seed: int, rnd: int, area: Mapping[str, float], **kw: Any) -> dict:
    return {
        "strategy": strategy,
        "seed": seed,
        "round": rnd,
        "area_mm2": round((area["tumour_um2"] + area["normal_um2"]) / 1e6, 4),
        "tumour_area_mm2": round(area["tumour_um2"] / 1e6, 4),
        **kw,
    }


def _classes() -> tuple[str, str]:
    """The first tumour and normal class names the label reader takes (``classes``)."""
    from qupath_rkd.sync.config import load_config

    config = load_config(None, {})
    return str(config.get("classes.tumor")[0]), str(config.get("classes.normal")[0])


def start_seed(
    args: argparse.Namespace,
    seed: int,
    slides: Mapping[str, list[SimSlide]],
    memo: MemoTrunk,
) -> dict[str, Any]:
    """Round 0 of a seed, shared by the strategies: one lesion on one slide (the largest
    lesion of tumour slide ``seed`` mod n), one slide tumour-free; synced and evaluated."""
    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id

    train, test = slides["train"], slides["test"]
    tumour = [s for s in train if s.lesions]
    normal = [s for s in train if not s.lesions]
    start = tumour[seed % len(tumour)]
    lesion = max(start.lesions, key=lambda p: p.area)
    root = args.out / "runs" / f"seed{seed}"
    shutil.rmtree(root, ignore_errors=True)
    first = make_feature(
        lesion,
        object_type="annotation",
        class_name=_classes()[0],
        name=f"{ORACLE_NAME} start",
        feature_id=stable_feature_id(ORACLE_NAME, "start", seed),
    )
    start_dir = root / "start" / "project"
    write_project(
        start_dir,
        train,
        roles={normal[0].name: "tumor-free"},
        annotations={start.name: [first]},
        settings=base_settings(args, seed),
    )
    t0 = time.perf_counter()
    outcome = sync(start_dir)
    sync_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics0 = evaluate(start_dir, outcome, test, memo)
    eval_s = time.perf_counter() - t0
    print(f"seed {seed} start: {metrics0} (sync {sync_s:.0f} s, eval {eval_s:.0f} s)", flush=True)
    return {
        "dir": start_dir,
        "metrics": metrics0,
        "area": {"tumour_um2": float(lesion.area) * start.mpp**2, "normal_um2": 0.0},
        "sync_s": sync_s,
        "eval_s": eval_s,
    }


def run_strategy(
    args: argparse.Namespace,
    seed: int,
    strategy: str,
    slides: Mapping[str, list[SimSlide]],
    memo: MemoTrunk,
    begin: Mapping[str, Any],
    rows: list[dict[str, Any]],
    save: Any,
) -> None:
    """One strategy's rounds from the seed's round 0 (a copy of its project)."""
    test = slides["test"]
    by_name = {s.name: s for s in slides["train"]}
    classes = _classes()
    metrics0, area0 = begin["metrics"], begin["area"]
    sync_s, eval_s = begin["sync_s"], begin["eval_s"]
    run_dir = args.out / "runs" / f"seed{seed}" / strategy / "project"
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    shutil.copytree(begin["dir"], run_dir)
    set_config(run_dir, {"suggest.signal": strategy})
    outcome = sync(run_dir)  # same model, the strategy's suggestions
    area = dict(area0)
    rows.append(
        _row(
            strategy,
            seed,
            0,
            area,
            regions=0,
            **metrics0,
            **_labelled_tiles(outcome),
            sync_s=round(sync_s, 1),
            eval_s=round(eval_s, 1),
        )
    )
    for rnd in range(1, args.rounds + 1):
        drawn = annotate_round(run_dir, by_name, rnd, classes)
        area["tumour_um2"] += drawn["tumour_um2"]
        area["normal_um2"] += drawn["normal_um2"]
        t0 = time.perf_counter()
        outcome = sync(run_dir)
        s_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = evaluate(run_dir, outcome, test, memo)
        e_s = time.perf_counter() - t0
        rows.append(
            _row(
                strategy,
                seed,
                rnd,
                area,
                regions=int(drawn["regions"]),
                **metrics,
                **_labelled_tiles(outcome),
                sync_s=round(s_s, 1),
                eval_s=round(e_s, 1),
            )
        )
        print(
            f"seed {seed} {strategy} round {rnd}: {metrics} area "
            f"{rows[-1]['area_mm2']} mm² ({drawn['regions']} regions; sync {s_s:.0f} s, "
            f"eval {e_s:.0f} s, load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        save()


def run_reference(
    args: argparse.Namespace,
    seed: int,
    slides: Mapping[str, list[SimSlide]],
    memo: MemoTrunk,
    rows: list[dict[str, Any]],
    save: Any,
) -> None:
    """The reference: every lesion of every training slide outlined, slides fully annotated."""
    from qupath_rkd.qupath.geojson import make_feature, stable_feature_id

    train, test = slides["train"], slides["test"]
    tumour = [s for s in train if s.lesions]
    normal = [s for s in train if not s.lesions]
    classes = _classes()
    settings = base_settings(args, seed)
    root = args.out / "runs" / f"seed{seed}"
    shutil.rmtree(root / REFERENCE, ignore_errors=True)
    ref_dir = root / REFERENCE / "project"
    ann = {
        s.name: [
            make_feature(
                p,
                object_type="annotation",
                class_name=classes[0],
                feature_id=stable_feature_id(ORACLE_NAME, "all", s.name, i),
            )
            for i, p in enumerate(s.lesions)
        ]
        for s in tumour
    }
    roles = {s.name: "annotated" for s in tumour} | {s.name: "tumor-free" for s in normal}
    write_project(ref_dir, train, roles=roles, annotations=ann, settings=settings)
    t0 = time.perf_counter()
    outcome = sync(ref_dir)
    s_s = time.perf_counter() - t0
    metrics = evaluate(ref_dir, outcome, test, memo)
    tissue = sum(s.tissue_um2 for s in tumour)
    lesions = sum(p.area for s in tumour for p in s.lesions) * train[0].mpp ** 2
    rows.append(
        {
            "strategy": REFERENCE,
            "seed": seed,
            "round": None,
            "area_mm2": round(tissue / 1e6, 4),
            "tumour_area_mm2": round(lesions / 1e6, 4),
            **metrics,
            **_labelled_tiles(outcome),
            "sync_s": round(s_s, 1),
        }
    )
    print(f"seed {seed} reference: {metrics} (area {tissue / 1e6:.2f} mm²)", flush=True)
    save()


# --- tables ---------------------------------------------------------------------------------
#: The held-out measures of a round (``evaluate``); the last two are threshold-free.
METRICS = ("tile_auroc", "tile_ap", "froc", "froc_candidates")
#: The measures the paired comparison and the goals are read on.
PAIRED_METRICS = ("tile_auroc", "tile_ap", "froc_candidates")


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def paired(
    rows: Sequence[Mapping[str, Any]], strategy: str, base: str, metric: str
) -> dict[str, Any] | None:
    """``strategy`` against ``base`` on ``metric``, paired by (seed, round), rounds >= 1:
    wins / losses / ties, the mean difference and its per-seed means (rounds 1–N)."""

    def measured(name: str) -> dict[tuple[int, int], float]:
        return {
            (int(r["seed"]), int(r["round"])): float(r[metric])
            for r in rows
            if r["strategy"] == name and r["round"] and r.get(metric) is not None
        }

    mine, theirs = measured(strategy), measured(base)
    keys = sorted(set(mine) & set(theirs))
    if not keys:
        return None
    diff = np.array([mine[k] - theirs[k] for k in keys])
    seeds = sorted({k[0] for k in keys})
    seed_of = np.array([k[0] for k in keys])
    per_seed = {str(seed): round(float(diff[seed_of == seed].mean()), 4) for seed in seeds}
    return {
        "pairs": len(keys),
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
        "ties": int((diff == 0).sum()),
        "mean_diff": round(float(diff.mean()), 4),
        "per_seed_mean_diff": per_seed,
    }


def summarise(rows: Sequence[Mapping[str, Any]], strategies: Sequence[str]) -> dict[str, Any]:
    """Means (and min/max) over seeds per strategy and round; each strategy against the others
    paired by (seed, round); the goals (the first strategy is the default)."""
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        for rnd in sorted({int(r["round"]) for r in mine}):
            at = [r for r in mine if r["round"] == rnd]
            entry: dict[str, Any] = {"n_seeds": len(at)}
            for k in (*METRICS, "area_mm2", "tumour_area_mm2"):
                vals = [float(r[k]) for r in at if r.get(k) is not None]
                if vals:
                    entry[k] = round(float(np.mean(vals)), 4)
                    entry[f"{k}_min"] = round(min(vals), 4)
                    entry[f"{k}_max"] = round(max(vals), 4)
            table.setdefault(strategy, {})[rnd] = entry
    ref = [r for r in rows if r["strategy"] == REFERENCE]
    reference = (
        {k: _mean(ref, k) for k in (*METRICS, "area_mm2", "tumour_area_mm2")} if ref else None
    )
    overall = {
        strategy: {
            k: _mean([r for r in rows if r["strategy"] == strategy and r["round"]], k)
            for k in METRICS
        }
        for strategy in table
    }
    pairs = {
        f"{a} vs {b}": {m: paired(rows, a, b, m) for m in PAIRED_METRICS}
        for a in table
        for b in table
        if a != b
    }
    goals: dict[str, Any] = {}
    default = strategies[0]
    for base in ("random", "top_probability"):
        if default in table and base in table:
            rounds = sorted(set(table[default]) & set(table[base]) - {0})
            for metric in METRICS:
                above = [
                    (table[default][r].get(metric) or 0) > (table[base][r].get(metric) or 0)
                    for r in rounds
                ]
                goals[f"{default} above {base} on {metric} at every round"] = bool(
                    above and all(above)
                )
    ref_area = reference.get("area_mm2") if reference else None
    if reference and ref_area and default in table:
        for metric in ("froc", "froc_candidates"):
            if reference.get(metric) is None:
                continue
            reached = [
                (r, e["area_mm2"])
                for r, e in sorted(table[default].items())
                if e.get(metric) is not None and e[metric] >= reference[metric]
            ]
            goals[f"reference {metric}"] = reference[metric]
            goals[f"{metric}: first round reaching it (mean over seeds)"] = (
                reached[0][0] if reached else None
            )
            goals[f"{metric}: its area / the reference's"] = (
                round(reached[0][1] / ref_area, 3) if reached else None
            )
            goals[f"{metric}: reached with at most a third of the area"] = bool(
                reached and reached[0][1] <= ref_area / 3
            )
    return {
        "table": table,
        "reference": reference,
        "mean_rounds_1_on": overall,
        "paired": pairs,
        "goals": goals,
    }


def markdown(summary: Mapping[str, Any]) -> str:
    lines = []
    table = summary["table"]
    rounds = sorted({r for t in table.values() for r in t})
    for metric in (*METRICS, "area_mm2"):
        lines.append(f"**{metric}** (mean over seeds; min–max)\n")
        lines.append("| strategy | " + " | ".join(f"round {r}" for r in rounds) + " |")
        lines.append("|---|" + "---|" * len(rounds))
        for strategy, per in table.items():
            cells = []
            for r in rounds:
                e = per.get(r, {})
                if metric not in e:
                    cells.append("–")
                elif metric == "area_mm2":
                    cells.append(f"{e[metric]:.2f}")
                else:
                    cells.append(
                        f"{e[metric]:.3f} ({e[metric + '_min']:.3f}–{e[metric + '_max']:.3f})"
                    )
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    overall = summary.get("mean_rounds_1_on") or {}
    if overall:
        lines.append("**mean of rounds 1–N** (all seeds)\n")
        lines.append("| strategy | " + " | ".join(METRICS) + " |")
        lines.append("|---|" + "---|" * len(METRICS))
        for strategy, vals in overall.items():
            cells = ["–" if vals.get(m) is None else f"{vals[m]:.3f}" for m in METRICS]
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        lines.append("")
    pairs = summary.get("paired") or {}
    default = next(iter(table), None)
    mine = {k: v for k, v in pairs.items() if default and k.startswith(f"{default} vs ")}
    if mine:
        lines.append(
            f"**{default} against each other strategy**, paired by (seed, round), rounds ≥ 1: "
            "wins / losses / ties, mean difference (per-seed means)\n"
        )
        lines.append("| against | " + " | ".join(PAIRED_METRICS) + " |")
        lines.append("|---|" + "---|" * len(PAIRED_METRICS))
        for name, per in mine.items():
            cells = []
            for m in PAIRED_METRICS:
                p = per.get(m)
                if p is None:
                    cells.append("–")
                    continue
                seeds = " / ".join(f"{v:+.3f}" for v in p["per_seed_mean_diff"].values())
                cells.append(
                    f"{p['wins']}/{p['losses']}/{p['ties']}, {p['mean_diff']:+.4f} ({seeds})"
                )
            lines.append(f"| {name.split(' vs ', 1)[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["reference"]:
        ref = summary["reference"]

        def fmt(key: str) -> str:
            return "–" if ref.get(key) is None else f"{ref[key]:.3f}"

        lines.append(
            f"Reference (every lesion outlined, training slides fully annotated): tile AUROC "
            f"{fmt('tile_auroc')}, tile AP {fmt('tile_ap')}, FROC {fmt('froc')}, candidate "
            f"FROC {fmt('froc_candidates')}, area {ref['area_mm2']:.2f} mm² "
            f"(tissue of the tumour training slides; lesions alone "
            f"{ref['tumour_area_mm2']:.2f} mm²)."
        )
        lines.append("")
    lines.append("Goals: " + json.dumps(summary["goals"], ensure_ascii=False))
    return "\n".join(lines) + "\n"


def resummarise(results_json: Path) -> None:
    """Recompute the summary of a run's rows (its strategies in their order) and rewrite its
    ``results.json`` and ``results.md``."""
    from qupath_rkd.io_utils import atomic_write_json, atomic_write_text

    if not results_json.is_file():
        sys.exit(f"{results_json}: not found (give the results.json a run wrote)")
    data = json.loads(results_json.read_text(encoding="utf-8"))
    strategies = list(dict.fromkeys(r["strategy"] for r in data["rows"] if r["round"] is not None))
    data["summary"] = summarise(data["rows"], strategies)
    atomic_write_json(results_json, data)
    atomic_write_text(results_json.parent / "results.md", markdown(data["summary"]))
    print((results_json.parent / "results.md").read_text(encoding="utf-8"))


def merge(results: Sequence[Path], out: Path) -> None:
    """One ``results.json`` (and ``results.md``) in ``out`` from the rows of several runs, e.g.
    seeds run in separate processes. A (strategy, seed, round) in more than one run (round 0,
    which each process computes for its seeds) must agree in every measure, else it stops:
    that is the check that the runs measured the same code on the same slides."""
    from qupath_rkd.io_utils import atomic_write_json, atomic_write_text

    rows: dict[tuple[str, int, Any], dict[str, Any]] = {}
    runs = []
    for path in results:
        if not path.is_file():
            sys.exit(f"{path}: not found (give the results.json files the runs wrote)")
        data = json.loads(path.read_text(encoding="utf-8"))
        runs.append({k: data.get(k) for k in ("command", "date", "seconds", "machine")})
        for row in data["rows"]:
            key = (row["strategy"], int(row["seed"]), row["round"])
            seen = rows.get(key)
            if seen is not None:
                differ = [k for k in (*METRICS, "area_mm2") if seen.get(k) != row.get(k)]
                if differ:
                    sys.exit(
                        f"{path}: {key} differs from an earlier run in {differ}; "
                        "merge only runs of the same code and slides"
                    )
                continue
            rows[key] = row
    rank = {name: k for k, name in enumerate((*STRATEGIES, REFERENCE))}  # the default first
    ordered = sorted(
        rows.values(),
        key=lambda r: (rank.get(r["strategy"], len(rank)), r["seed"], r["round"] or 0),
    )
    strategies = list(dict.fromkeys(r["strategy"] for r in ordered if r["round"] is not None))
    summary = summarise(ordered, strategies)
    out.mkdir(parents=True, exist_ok=True)
    merged = {"merged_from": [str(p) for p in results], "runs": runs}
    atomic_write_json(out / "results.json", {**merged, "summary": summary, "rows": ordered})
    atomic_write_text(out / "results.md", markdown(summary))
    print((out / "results.md").read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    parser.add_argument("--size-px", type=int, default=1600, help="slide side at 0.972 µm/px")
    parser.add_argument("--train-tumour", type=int, default=4)
    parser.add_argument("--train-normal", type=int, default=1)
    parser.add_argument("--test-tumour", type=int, default=8)
    parser.add_argument("--test-normal", type=int, default=4)
    parser.add_argument("--max-patches", type=int, default=800, help="patches read per folder")
    parser.add_argument(
        "--min-lesion-um2",
        type=float,
        default=100_000.0,
        help="the largest lesion of a tumour slide is at least this big (µm²)",
    )
    parser.add_argument("--region-um", type=float, default=300.0, help="suggest.region_um")
    parser.add_argument("--per-round", type=int, default=4, help="suggest.per_project")
    parser.add_argument("--per-slide", type=int, default=2, help="suggest.per_slide")
    parser.add_argument("--max-tiles", type=int, default=2000, help="labels.max_tiles_per_class")
    parser.add_argument(
        "--stride-px",
        type=int,
        default=None,
        help="inference.stride_px [default: the package's, half the tile; the runs recorded "
        "before 2026-12-07 used 96, the tile]",
    )
    parser.add_argument(
        "--smooth-um",
        type=float,
        default=None,
        help="inference.smooth_um [default: the package's, 40; 0 in the runs before 2026-12-07]",
    )
    parser.add_argument("--patches", type=Path, default=SHARED / "pcam")
    parser.add_argument("--annotations", type=Path, default=SHARED / "camelyon16-annotations")
    parser.add_argument("--smoke", action="store_true", help="1 seed, 1 round, 2 strategies")
    parser.add_argument(
        "--summarise",
        type=Path,
        metavar="RESULTS_JSON",
        help="only rewrite the summary and results.md beside this results.json (its rows)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only write --out/results.json and results.md from the rows of these runs",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if args.summarise is not None:
        resummarise(args.summarise)
        return
    if args.smoke:
        args.rounds, args.seeds, args.strategies = 1, "0", "mixed,random"
        args.size_px, args.train_tumour, args.test_tumour, args.test_normal = 1200, 2, 2, 1
        args.train_normal, args.reference = 1, False
        args.out = args.out.parent / (args.out.name + "_smoke")
    args.strategies = [s for s in args.strategies.split(",") if s]
    for folder in (args.patches / "train" / "1", args.patches / "valid" / "1", args.annotations):
        if not folder.is_dir():
            sys.exit(f"{folder} not found (the project's shared data belongs beside the checkout)")

    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    slides = build_slides(args)
    rows: list[dict[str, Any]] = []
    memo = MemoTrunk({})
    meta = {
        "command": " ".join(["python", "benchmarks/active_learning.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"2-core shared VM ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs)",
        "load_average_start": load_start,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sync_settings": base_settings(args, 0),
        "slides": {
            part: [
                {
                    "name": s.name,
                    "lesions": len(s.lesions),
                    "tissue_mm2": round(s.tissue_um2 / 1e6, 3),
                }
                for s in ss
            ]
            for part, ss in slides.items()
        },
    }

    def save() -> None:
        from qupath_rkd.io_utils import atomic_write_json, atomic_write_text

        summary = summarise(rows, args.strategies)
        meta["seconds"] = round(time.perf_counter() - started, 1)
        meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        atomic_write_json(args.out / "results.json", {**meta, "summary": summary, "rows": rows})
        atomic_write_text(args.out / "results.md", markdown(summary))

    seeds = [int(s) for s in args.seeds.split(",")]
    begins = {seed: start_seed(args, seed, slides, memo) for seed in seeds}
    if args.reference:
        for seed in seeds:
            run_reference(args, seed, slides, memo, rows, save)
    for strategy in args.strategies:  # strategy-major: a cut-short run has whole strategies
        for seed in seeds:
            run_strategy(args, seed, strategy, slides, memo, begins[seed], rows, save)
    save()
    print((args.out / "results.md").read_text(encoding="utf-8"))
    print(
        f"{meta['seconds']} s; load average {meta['load_average_start']} -> "
        f"{meta['load_average_end']}"
    )


if __name__ == "__main__":
    main()
