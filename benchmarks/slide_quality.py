"""Benchmark: heatmap post-processing on semi-real slides with real Camelyon16 lesion shapes.

    nice -n 15 python benchmarks/slide_quality.py --tumour 4 --normal 4      # perfect heatmap
    python benchmarks/slide_quality.py --set benchmarks/out/slide_set --model MODEL.pt

Evaluates every combination of the post-processing settings (grid stride, Gaussian sigma in µm,
hysteresis extent ratio) on

(i) the truth-derived **perfect heatmap** (:mod:`qupath_rkd.evaluation.perfect_heatmap`: the
    tumour share of each tile), optionally with i.i.d. Gaussian noise (``--noise-sd``) standing
    in for a patch model's salt-and-pepper errors. Slides are placed geometry-only, as
    ``benchmarks/build_slide_set.py`` places them (real Camelyon16 lesion clusters rescaled from
    0.243 µm/px, irregular tissue with fat), without writing any pixels, so it stays light;
(ii) a model's heatmap (``--model``) on the slides of a set built by ``build_slide_set.py``
    (``--set``), each slide scored once per stride and post-processed in every setting.

Per setting: Camelyon16 lesion FROC (organisers' protocol) twice, with sensitivity at
0.25 / 1 / 8 FP per slide: of the lesion peaks alone (lesions extracted at the seed
``--seed-threshold``, default the calibrated 0.5) and, under ``candidates``, of the candidate
list ``predict`` writes to ``camelyon16/<slide>.csv`` (the lesion peaks plus the other local
maxima down to a floor, non-maximum suppression in µm:
:func:`qupath_rkd.lesions.candidates.candidate_detections`; one entry per
``--candidate-floors`` × ``--candidate-nms-um`` × ``--candidate-rules``); false lesions per
tumour-free slide at that seed, the operating point chosen on the tumour-free slides
(``choose_operating_point``, floor 0.05 as sync and predict use, in-sample) with the
sensitivity there, slide AUC for every
slide-score rule, lesion Dice and tumour-area error on the tumour slides, and how often the
burden category (ITC / micro / macro) matches the truth's. Prints JSON and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:  # candidate_rules, when imported as a module
    sys.path.insert(0, str(REPO / "benchmarks"))
SHARED = REPO.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out" / "slide_quality"


# --- slides ---------------------------------------------------------------------------------
def placed_slides(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Geometry-only semi-real slides: ``{"slide_id", "tumor": [polygons], "tissue", "size"}``.

    Tumour slides: the first ``--tumour`` annotation files (sorted) whose best of
    ``--placements`` windows holds a non-ITC lesion; tumour-free slides: irregular tissue only.
    """
    from qupath_rkd.constants import PCAM_MPP
    from qupath_rkd.demo.camelyon_lesions import (
        irregular_tissue,
        load_camelyon16_lesions,
        place_lesion_cluster,
    )
    from qupath_rkd.errors import DataError, EvaluationError
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask

    size = (args.size_px, args.size_px)
    files = sorted(
        f for split in args.splits.split(",") for f in (args.annotations / split).glob("*.json")
    )
    slides: list[dict[str, Any]] = []
    for index, f in enumerate(files):
        if sum(1 for s in slides if s["tumor"]) >= args.tumour:
            break
        lesions = load_camelyon16_lesions(f)
        rng = np.random.default_rng([args.seed, index])
        best = None
        for _ in range(args.placements):
            try:
                cluster = place_lesion_cluster(
                    lesions, width_px=size[0], height_px=size[1], mpp=PCAM_MPP, rng=rng, source=f
                )
                mask = evaluation_mask(cluster.lesions, mpp=PCAM_MPP, slide_size_px=size)
            except (DataError, EvaluationError):
                continue
            if best is None or mask.n_lesions > best[0]:
                best = (mask.n_lesions, cluster)
        if best is None or best[0] == 0:
            continue
        tissue = irregular_tissue(size[0], size[1], rng, mpp=PCAM_MPP, keep=best[1].lesions)
        slides.append(
            {
                "slide_id": f"tumor_{len(slides) + 1:02d}",
                "source": f.name,
                "tumor": list(best[1].lesions),
                "tissue": tissue,
                "size": size,
                "mpp": PCAM_MPP,
            }
        )
    for k in range(1, args.normal + 1):
        rng = np.random.default_rng([args.seed, 10_000 + k])
        slides.append(
            {
                "slide_id": f"normal_{k:02d}",
                "source": None,
                "tumor": [],
                "tissue": irregular_tissue(size[0], size[1], rng, mpp=PCAM_MPP),
                "size": size,
                "mpp": PCAM_MPP,
            }
        )
    return slides


def set_slides(set_dir: Path) -> list[dict[str, Any]]:
    """The slides of a set built by ``build_slide_set.py`` (truth from its Camelyon16 JSON)."""
    from shapely import union_all

    from qupath_rkd.evaluation.truth import load_truth

    manifest = json.loads((set_dir / "manifest.json").read_text(encoding="utf-8"))
    slides = []
    for e in manifest["slides"]:
        truth = load_truth(set_dir / e["truth_camelyon16"])
        geom = union_all(truth.tumor).difference(union_all(truth.exclude)) if truth.tumor else None
        parts = [] if geom is None else [p for p in getattr(geom, "geoms", [geom]) if p.area > 0]
        slides.append(
            {
                "slide_id": e["slide_id"],
                "path": set_dir / e["slide"],
                "tumor": parts,
                "tissue": None,
                "size": (int(e["width_px"]), int(e["height_px"])),
                "mpp": float(e["mpp"]),
            }
        )
    return slides


# --- metrics --------------------------------------------------------------------------------
def _raster(polys: list[Any], size: tuple[int, int], ds: float) -> np.ndarray:
    from qupath_rkd.evaluation.camelyon16 import rasterize

    shape = (int(np.ceil(size[1] / ds)), int(np.ceil(size[0] / ds)))
    if not polys:
        return np.zeros(shape, bool)
    return rasterize(polys, [], origin_xy_px=(0.0, 0.0), downsample=ds, shape=shape)


def _largest_extent_um(polys: list[Any], mpp: float) -> float:
    """Largest lesion extent of the truth: the long side of each part's minimum rotated
    rectangle (a pathologist's largest dimension), in µm."""
    best = 0.0
    for p in polys:
        for part in getattr(p, "geoms", [p]):
            rect = part.minimum_rotated_rectangle
            xs, ys = rect.exterior.coords.xy
            sides = [np.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) for i in range(2)]
            best = max(best, max(sides) * mpp)
    return best


def evaluate_setting(
    slides: list[dict[str, Any]],
    heatmaps: dict[str, Any],
    post: Any,
    seed_threshold: float,
    target_fp: float,
    candidate_settings: list[tuple[float, float, str]] | None = None,
) -> dict[str, Any]:
    """Every metric of one post-processing setting over all slides.

    ``candidate_settings``: ``(floor, NMS radius µm, rule)`` triples; for each, the FROC
    of the candidate list ``predict`` submits (:func:`qupath_rkd.lesions.candidates.
    candidate_detections`: the lesion peaks plus the other local maxima; ``rule``: a name of
    :data:`candidate_rules.RULES`, which maxima and how they go below the seed) beside the
    lesions-only FROC. Default: the package defaults.
    """
    from candidate_rules import RULES, default_rule

    from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR, DEFAULT_CANDIDATE_NMS_UM
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask, froc, score_detections
    from qupath_rkd.evaluation.metrics import roc_auc
    from qupath_rkd.lesions.burden import burden_category, tumour_burden
    from qupath_rkd.lesions.candidates import candidate_detections
    from qupath_rkd.lesions.operating_point import NegativeHeatmap, choose_operating_point
    from qupath_rkd.lesions.pipeline import find_lesions
    from qupath_rkd.lesions.slide_score import SLIDE_SCORE_RULES, slide_score

    if candidate_settings is None:
        candidate_settings = [(DEFAULT_CANDIDATE_FLOOR, DEFAULT_CANDIDATE_NMS_UM, default_rule())]
    dets = []
    cand_dets: dict[tuple[float, float, str], list[Any]] = {c: [] for c in candidate_settings}
    n_cands: dict[tuple[float, float, str], list[int]] = {c: [] for c in candidate_settings}
    scores: dict[str, list[float]] = {rule: [] for rule in SLIDE_SCORE_RULES}
    labels = []
    dice, area_err, cat_ok = [], [], []
    fp_normal = []
    masks = {}
    for s in slides:
        hm = heatmaps[s["slide_id"]]
        found = find_lesions(hm, seed_threshold, post)
        les = found.lesions
        mask = (
            evaluation_mask(s["tumor"], mpp=s["mpp"], slide_size_px=s["size"])
            if s["tumor"]
            else None
        )
        masks[s["slide_id"]] = mask
        x = np.array([le.peak_xy_px[0] for le in les])
        y = np.array([le.peak_xy_px[1] for le in les])
        p = np.array([le.max_probability for le in les])
        dets.append(score_detections(s["slide_id"], p, x, y, mask))
        for setting in candidate_settings:  # what predict's Camelyon16 CSV holds
            floor, radius_um, rule = setting
            inside, below = RULES[rule]
            c = candidate_detections(
                found.smoothed,
                les,
                floor=floor,
                nms_radius_um=radius_um,
                seed_threshold=seed_threshold,
                inside_lesions=inside,
                below_seed=below,
            )
            cand_dets[setting].append(
                score_detections(s["slide_id"], c.probs, c.x_px, c.y_px, mask)
            )
            n_cands[setting].append(len(c))
        for rule in SLIDE_SCORE_RULES:
            scores[rule].append(
                slide_score(
                    rule,
                    raw=hm.probability,
                    smoothed=found.smoothed.probability,
                    lesions=les,
                    threshold=seed_threshold,
                )
            )
        labels.append(1 if s["tumor"] else 0)
        if not s["tumor"]:
            fp_normal.append(len(les))
            continue
        ds = 8.0
        truth = _raster(s["tumor"], s["size"], ds)
        pred = _raster([le.polygon for le in les], s["size"], ds)
        inter = np.logical_and(truth, pred).sum()
        dice.append(2 * inter / max(truth.sum() + pred.sum(), 1))
        truth_mm2 = sum(p_.area for p_ in s["tumor"]) * s["mpp"] ** 2 / 1e6
        pred_mm2 = tumour_burden(les).tumor_area_mm2
        area_err.append((pred_mm2 - truth_mm2) / truth_mm2)
        cat_ok.append(
            burden_category(_largest_extent_um(s["tumor"], s["mpp"])) == tumour_burden(les).category
        )
    result = froc(dets)
    candidates = []
    for (floor, radius_um, rule), per_slide in cand_dets.items():
        cr = froc(per_slide)
        counts = n_cands[(floor, radius_um, rule)]
        candidates.append(
            {
                "floor": floor,
                "nms_radius_um": radius_um,
                "rule": rule,
                "below_seed": RULES[rule][1] != "own",
                "froc": round(cr.score, 4),
                "sensitivity_at": {str(k): round(v, 4) for k, v in cr.sensitivity_at.items()},
                "candidates_per_slide_mean": round(float(np.mean(counts)), 1),
                "candidates_per_slide_max": int(max(counts)),
            }
        )
    negatives = [NegativeHeatmap(heatmaps[s["slide_id"]]) for s in slides if not s["tumor"]]
    # whole tumour-free slides: down to the candidate floor, as predict --tumor-free and sync
    # (with a slide's worth of tumour-free tissue) choose it
    op = choose_operating_point(
        negatives, post, target_fp_per_slide=target_fp, floor=DEFAULT_CANDIDATE_FLOOR
    )
    # the default operating point as a user meets it on a slide it was not chosen on: for each
    # tumour-free slide, the threshold chosen on the others, its false lesions at that threshold
    normal_ids = [s["slide_id"] for s in slides if not s["tumor"]]
    fp_cv = []
    for left_out in normal_ids if len(normal_ids) > 1 else []:
        others = [NegativeHeatmap(heatmaps[i]) for i in normal_ids if i != left_out]
        op_i = choose_operating_point(
            others, post, target_fp_per_slide=target_fp, floor=DEFAULT_CANDIDATE_FLOOR
        )
        fp_cv.append(len(find_lesions(heatmaps[left_out], op_i.threshold, post).lesions))
    # sensitivity (and area) at the chosen operating point: lesions hit by a lesion found there
    hits = n_lesions = 0
    area_err_op = []
    for s in slides:
        if not s["tumor"]:
            continue
        les = find_lesions(heatmaps[s["slide_id"]], op.threshold, post).lesions
        truth_mm2 = sum(p_.area for p_ in s["tumor"]) * s["mpp"] ** 2 / 1e6
        area_err_op.append((tumour_burden(les).tumor_area_mm2 - truth_mm2) / truth_mm2)
        d = score_detections(
            s["slide_id"],
            np.array([le.max_probability for le in les]),
            np.array([le.peak_xy_px[0] for le in les]),
            np.array([le.peak_xy_px[1] for le in les]),
            masks[s["slide_id"]],
        )
        hits += int((d.tp_probs > 0).sum())
        n_lesions += d.n_lesions
    y = np.array(labels)
    return {
        "froc": round(result.score, 4),
        "sensitivity_at": {str(k): round(v, 4) for k, v in result.sensitivity_at.items()},
        "n_lesions": result.n_lesions,
        "candidates": candidates,
        "false_lesions_per_tumor_free_slide": round(float(np.mean(fp_normal)), 3)
        if fp_normal
        else None,
        "operating_point": op.as_dict(),
        "sensitivity_at_operating_point": round(hits / max(n_lesions, 1), 4),
        "false_lesions_per_tumor_free_slide_cv_operating_point": round(float(np.mean(fp_cv)), 3)
        if fp_cv
        else None,
        "area_error_at_operating_point_mean": round(float(np.mean(area_err_op)), 4)
        if area_err_op
        else None,
        "area_error_abs_at_operating_point_mean": round(float(np.mean(np.abs(area_err_op))), 4)
        if area_err_op
        else None,
        "slide_auc": {
            rule: round(roc_auc(y, np.array(v)), 4) if 0 < y.sum() < y.size else None
            for rule, v in scores.items()
        },
        "dice_mean": round(float(np.mean(dice)), 4) if dice else None,
        "area_error_mean": round(float(np.mean(area_err)), 4) if area_err else None,
        "area_error_abs_mean": round(float(np.mean(np.abs(area_err))), 4) if area_err else None,
        "burden_category_agreement": round(float(np.mean(cat_ok)), 3) if cat_ok else None,
    }


# --- heatmaps -------------------------------------------------------------------------------
def perfect_heatmaps(
    slides: list[dict[str, Any]], tile_px: int, stride_px: int, noise_sd: float, seed: int
) -> dict[str, Any]:
    import dataclasses

    from qupath_rkd.evaluation.perfect_heatmap import perfect_heatmap

    out = {}
    for k, s in enumerate(slides):
        hm = perfect_heatmap(
            s["tumor"],
            slide_size_px=s["size"],
            mpp=s["mpp"],
            tile_level0_px=tile_px,
            stride_level0_px=stride_px,
            tissue=s["tissue"],
        )
        if noise_sd > 0:
            rng = np.random.default_rng([seed, k, stride_px])
            noisy = hm.probability + rng.normal(0.0, noise_sd, hm.probability.shape)
            hm = dataclasses.replace(hm, probability=np.clip(noisy, 0, 1).astype(np.float32))
        out[s["slide_id"]] = hm
    return out


def model_heatmaps(
    slides: list[dict[str, Any]],
    model: Any,
    stride_px: int,
    workers: int,
    tta_views: int = 1,
    cache: Path | None = None,
) -> dict[str, Any]:
    """The model's heatmap of every slide; with ``cache``, read from / written to a pickle per
    stride and view count, so that another grid of post-processing settings rescores nothing."""
    import pickle

    from qupath_rkd.inference import InferenceConfig, predict_slide

    path = None if cache is None else cache / f"heatmaps_s{stride_px}_v{tta_views}.pkl"
    if path is not None and path.is_file():
        return pickle.loads(path.read_bytes())
    cfg = InferenceConfig(
        stride_px=stride_px, num_workers=workers, smooth_sigma_um=0.0, tta_views=tta_views
    )
    out = {s["slide_id"]: predict_slide(s["path"], model, config=cfg).heatmap for s in slides}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=None, help="a set built by build_slide_set")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (needs --set)")
    parser.add_argument("--tumour", type=int, default=4, help="tumour slides (placed)")
    parser.add_argument("--normal", type=int, default=4, help="tumour-free slides (placed)")
    parser.add_argument("--size-px", type=int, default=3000, help="slide side at 0.972 µm/px")
    parser.add_argument("--placements", type=int, default=4)
    parser.add_argument("--splits", default="valid,train")
    parser.add_argument("--annotations", type=Path, default=SHARED / "camelyon16-annotations")
    parser.add_argument("--tile-px", type=int, default=96, help="tile side (level-0 px)")
    parser.add_argument(
        "--strides",
        default="96,48",
        help="grid strides: level-0 px for the perfect heatmap, px at the model's µm/px with "
        "--model (its tile is the model's input size)",
    )
    parser.add_argument("--sigmas-um", default="0,48,96", help="smoothing sigmas (µm)")
    parser.add_argument("--extent-ratios", default="1,0.5", help="hysteresis extent ratios")
    parser.add_argument("--noise-sd", default="0,0.2", help="noise on the perfect heatmap")
    parser.add_argument("--seed-threshold", type=float, default=0.5)
    parser.add_argument("--target-fp", type=float, default=0.25)
    parser.add_argument(
        "--min-lesion-um", default="200", help="minimum lesion sizes (µm), comma-separated"
    )
    parser.add_argument(
        "--tta-views", type=int, default=1, help="views per tile for a head model (1, 2, 4, 8)"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="folder caching the model's heatmaps"
    )
    parser.add_argument(
        "--extent-cap",
        type=float,
        default=None,
        help="cap of the extent threshold (predict and sync use the model's calibrated 0.5)",
    )
    parser.add_argument(
        "--candidate-floors",
        default=None,
        help="floors of the Camelyon16 candidate list, comma-separated (default: the package's)",
    )
    parser.add_argument(
        "--candidate-nms-um",
        default=None,
        help="NMS radii (µm) of the candidate list, comma-separated (default: the package's)",
    )
    parser.add_argument(
        "--candidate-unclamped",
        action="store_true",
        help="also score each candidate list with the maxima outside the lesions at their own "
        "probability (the rule outside_own)",
    )
    parser.add_argument(
        "--candidate-rules",
        default=None,
        help="candidate list rules (benchmarks/candidate_rules.py RULES), comma-separated "
        "(default: the package's)",
    )
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR, DEFAULT_CANDIDATE_NMS_UM
    from qupath_rkd.lesions.postprocess import PostProcessing

    floors = (
        [float(v) for v in args.candidate_floors.split(",")]
        if args.candidate_floors
        else [DEFAULT_CANDIDATE_FLOOR]
    )
    radii = (
        [float(v) for v in args.candidate_nms_um.split(",")]
        if args.candidate_nms_um
        else [DEFAULT_CANDIDATE_NMS_UM]
    )
    from candidate_rules import RULES, default_rule

    rules = args.candidate_rules.split(",") if args.candidate_rules else [default_rule()]
    if args.candidate_unclamped and "outside_own" not in rules:
        rules.append("outside_own")
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        sys.exit(f"--candidate-rules: unknown {unknown}; known: {', '.join(RULES)}")
    candidate_settings = list(itertools.product(floors, radii, rules))
    started = time.perf_counter()
    if args.model is not None and args.set is None:
        sys.exit("--model needs --set (run benchmarks/build_slide_set.py first)")
    slides = set_slides(args.set) if args.set is not None else placed_slides(args)
    if args.set is None and not args.annotations.is_dir():
        sys.exit(f"{args.annotations} not found")
    strides = [int(v) for v in args.strides.split(",")]
    sigmas = [float(v) for v in args.sigmas_um.split(",")]
    ratios = [float(v) for v in args.extent_ratios.split(",")]
    min_sizes = [float(v) for v in args.min_lesion_um.split(",")]
    sources: list[tuple[str, float]] = (
        [("model", 0.0)]
        if args.model is not None
        else [("perfect", float(v)) for v in args.noise_sd.split(",")]
    )
    model = None
    if args.model is not None:
        from qupath_rkd.model.scorer import load_model

        model = load_model(args.model, device="auto")
    rows = []
    for (source, noise), stride in itertools.product(sources, strides):
        t0 = time.perf_counter()
        heatmaps = (
            model_heatmaps(slides, model, stride, args.workers, args.tta_views, args.cache)
            if model is not None
            else perfect_heatmaps(slides, args.tile_px, stride, noise, args.seed)
        )
        heat_s = time.perf_counter() - t0
        settings = list(itertools.product(sigmas, ratios, min_sizes))
        for sigma, ratio, min_um in settings:
            post = PostProcessing(sigma, ratio, min_um, extent_cap=args.extent_cap)
            t1 = time.perf_counter()
            row = {
                "heatmap": source,
                "noise_sd": noise,
                "stride_px": stride,
                "smooth_sigma_um": sigma,
                "extent_ratio": ratio,
                "min_lesion_um": min_um,
                "extent_cap": args.extent_cap,
                "tta_views": args.tta_views if model is not None else None,
                **evaluate_setting(
                    slides,
                    heatmaps,
                    post,
                    args.seed_threshold,
                    args.target_fp,
                    candidate_settings,
                ),
                "seconds": round(time.perf_counter() - t1 + heat_s / len(settings), 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "what": __doc__.splitlines()[0],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/slide_quality.py", *sys.argv[1:]]),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "n_slides": len(slides),
        "n_tumor_slides": sum(1 for s in slides if s["tumor"]),
        "slides": [
            {"slide_id": s["slide_id"], "source": s.get("source"), "parts": len(s["tumor"])}
            for s in slides
        ],
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("n_slides", "n_tumor_slides", "seconds")}))


if __name__ == "__main__":
    main()
