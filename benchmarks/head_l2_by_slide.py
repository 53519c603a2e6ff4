"""Which L2 strength the held-out slides want, and which cross-validation finds it (sync's head).

    O=benchmarks/out
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/head_l2_by_slide.py \
        $O/al_seeds04_C $O/al_seeds04_D --out $O/head_l2_by_slide

Reads the finished projects of :mod:`benchmarks.active_learning` runs (each ``RUN/runs/seed*/
*/project``: their labelled sets as sync builds them, from the annotations they ended with;
a labelled set met twice is counted once) and
the held-out slides of the run's slide set (``RUN/slides-*``: PCam valid patches, lesion shapes
of the odd-numbered Camelyon16 files; never in a project). For each project:

- its training features, as sync's head gets them (view 0 of every labelled tile and the rare
  dihedral views of the tumour tiles, through the feature cache);
- the held-out tile AUROC of the head fitted on all of them at each L2 of the grid (and 300,
  1000, 3000 beyond it): tiles of a non-overlapping grid over the held-out slides' tissue, view
  0, unsmoothed, tumour when >= 50 % in a lesion, normal when touching none, pooled over the
  slides (the active-learning benchmark's tile AUROC is of the half-tile, smoothed heatmap:
  close, not equal);
- the L2 each selection rule picks from the project's own labels alone: ``regions`` (the rule
  before 2026-12-07: k-fold over annotated regions, mean per-fold AUROC; patches when one
  region), ``slides`` (:func:`qupath_rkd.model.head.slide_folds`, pooled out-of-fold AUROC;
  ``regions`` when slide folds are refused: tumour on one slide, or a fold would train on too
  few of a class), ``one-SE`` (the regions' folds with the one-standard-error rule) and
  ``now`` (sync's rule since 2026-12-07, evening: ``slides``, else ``one-SE``), all on the
  package's grid.

``--demo`` adds the demo's first labelled set (``qupath-rkd demo``'s project, built under
``OUT/demo`` and not synced; held out: its unlabelled slides LN-03/04/05), e.g.
``python benchmarks/head_l2_by_slide.py --demo --out $O/head_l2_demo``.

``--round R`` studies each strategy's project as it was after round ``R`` instead of finished:
a copy under ``OUT/projects`` keeps the start's annotations and those the oracle drew in rounds
``1..R`` (recognised by their stable ids), e.g.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/head_l2_by_slide.py $O/al_slidecv2_04_C \
        $O/al_slidecv2_04_D $O/al_slidecv2_59_A $O/al_slidecv2_59_B --round 1 \
        --out $O/head_l2_round1

Writes ``<out>/results.json`` and ``<out>/results.md``: per project, and the mean held-out tile
AUROC of each rule, of each fixed L2, and of the best L2 in hindsight.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EXTRA_L2 = (300.0, 1000.0, 3000.0)
#: ``active_learning.ORACLE_NAME``, the first part of the oracle's feature ids (a test checks
#: that :func:`truncated` recognises the ids that script writes)
ORACLE_NAME = "oracle"


def _labelled(project_dir: Path) -> tuple[Any, Any]:
    """The project's labelled set and sync configuration (read only)."""
    from qupath_rkd.qupath.backends import get_backend
    from qupath_rkd.qupath.project import open_project
    from qupath_rkd.sync import runner
    from qupath_rkd.sync.config import load_config

    config = load_config(project_dir, {})
    backend, _ = get_backend(open_project(project_dir), config.get("sync.backend"))
    entries = list(backend.images())
    sets = runner._read_annotations(backend, entries)
    return runner.build_labelled_set(entries, sets, config), config


def _held_out_tiles(
    slide_set: Path, tile_px: int, tile_mpp: float
) -> list[tuple[str, int, int, int]]:
    """``(path, x_px, y_px, label)`` of the held-out slides' tissue tiles (see the module doc)."""
    import shapely

    from qupath_rkd.slides import open_slide
    from qupath_rkd.slides.grid import tile_grid

    manifest = json.loads((slide_set / "manifest.json").read_text(encoding="utf-8"))
    items: list[tuple[str, int, int, int]] = []
    for s in manifest["test"]:
        path = slide_set / s["slide"]
        truth_file = slide_set / s["truth"] if s.get("truth") else None
        truth = (
            shapely.from_geojson(truth_file.read_text(encoding="utf-8"))
            if truth_file is not None and truth_file.is_file()
            else None
        )
        with open_slide(path) as slide:
            grid = tile_grid(slide, tile_px, tile_mpp)
        side = float(grid.tile_level0_px)
        x, y = grid.xy_px[:, 0], grid.xy_px[:, 1]
        boxes = shapely.box(x, y, x + side, y + side)
        if truth is None or truth.is_empty:
            frac = np.zeros(len(boxes))
        else:
            frac = shapely.area(shapely.intersection(boxes, truth)) / side**2
        for (x0, y0), f in zip(grid.xy_px, frac, strict=True):
            if f >= 0.5 or f == 0.0:
                items.append((str(path), int(x0), int(y0), int(f >= 0.5)))
    return items


def truncated(project: Path, last_round: int, dest: Path) -> Path:
    """A copy of ``project`` (an active-learning run's) at ``dest`` whose annotations are the
    start's and those the oracle drew in rounds ``1..last_round`` (by their stable ids; see
    ``active_learning.oracle_features``); the model, predictions and backups are not copied."""
    import shutil

    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.qupath.geojson import stable_feature_id

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        project,
        dest,
        ignore=shutil.ignore_patterns(
            "model", "predictions", "backup", "report.json", "state.json"
        ),
    )
    for export in sorted((dest / PROJECT_SUBDIR / "annotations").glob("*.geojson")):
        later = {
            stable_feature_id(ORACLE_NAME, f"{export.stem}-{r}", index, kind)
            for r in range(last_round + 1, 64)
            for index in range(64)
            for kind in (0, 1)
        }
        data = json.loads(export.read_text(encoding="utf-8"))
        data["features"] = [f for f in data["features"] if f.get("id") not in later]
        export.write_text(json.dumps(data), encoding="utf-8")
    return dest


def demo_slide_set(dest: Path) -> Path:
    """``qupath-rkd demo``'s folder built at ``dest`` (not synced), with a ``manifest.json``
    whose ``test`` slides are its held-out slides (role ``unlabelled``: LN-03/04/05), their
    truth merged into one geometry per slide (``truth/<id>.union.geojson``)."""
    import shutil

    import shapely

    from qupath_rkd.demo.project import build_demo_project, truth_file

    shutil.rmtree(dest, ignore_errors=True)
    demo = build_demo_project(dest)
    test = []
    for slide in demo.slides:
        if slide.spec.role != "unlabelled":
            continue
        source = truth_file(demo.root, slide.spec.name, slide.entry_id)
        features = json.loads(source.read_text(encoding="utf-8"))["features"]
        truth = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in features])
        union = source.with_suffix(".union.geojson")
        union.write_text(shapely.to_geojson(truth), encoding="utf-8")
        test.append(
            {"slide": str(slide.path.relative_to(dest)), "truth": str(union.relative_to(dest))}
        )
    (dest / "manifest.json").write_text(json.dumps({"test": test}), encoding="utf-8")
    return demo.project_dir


def study(
    project_dir: Path, slide_set: Path, held: dict[tuple[int, float, int], Any]
) -> dict[str, Any]:
    """One project's row (``held`` caches the held-out features between projects)."""
    import torch

    from qupath_rkd.features.cache import open_default_cache
    from qupath_rkd.features.extract import extract_features
    from qupath_rkd.labels.regions import tile_groups
    from qupath_rkd.model.calibration import auroc
    from qupath_rkd.model.head import (
        L2_GRID,
        cross_validate_l2,
        fit_head,
        slide_folds,
        stratified_folds,
    )
    from qupath_rkd.model.scorer import build_network
    from qupath_rkd.slides.tiles_dataset import SlideTileDataset
    from qupath_rkd.sync import runner
    from qupath_rkd.training.head_trainer import training_features

    t0 = time.perf_counter()
    labelled, config = _labelled(project_dir)
    tiles = SlideTileDataset(
        labelled.items,
        tile_px=int(labelled.tile_px),
        tile_mpp=float(labelled.tile_mpp),
        slide_mpp=labelled.slide_mpp,
    )
    cfg = runner._train_config(config, len(tiles)).resolved()
    net = build_network(cfg)
    cache = open_default_cache()
    rows = training_features(net, tiles, cfg, torch.device("cpu"), cache)  # type: ignore[arg-type]
    assert cfg.input_px is not None
    key = (int(labelled.tile_px), float(labelled.tile_mpp), int(cfg.input_px))
    if key not in held:
        items = _held_out_tiles(slide_set, key[0], key[1])
        ds = SlideTileDataset(items, tile_px=key[0], tile_mpp=key[1])
        feats = extract_features(
            net.trunk,  # type: ignore[arg-type]
            ds,  # type: ignore[arg-type]
            input_px=key[2],
            views=[0],
            device=torch.device("cpu"),
            cache=cache,
            batch_size=64,
        )
        held[key] = (feats.values[feats.ok, :1].astype(np.float32), ds.labels[feats.ok])
    test_x, test_y = held[key]

    y = np.where(rows.ok, rows.y, -1)
    x_all, y_all, _ = rows.rows(np.ones(len(y), dtype=bool))
    grid = tuple(L2_GRID) + EXTRA_L2
    held_auroc: dict[float, float] = {}
    prev = None
    for l2 in sorted(grid, reverse=True):
        fit = fit_head(x_all, y_all, l2, init=prev)
        prev = fit
        held_auroc[l2] = float(auroc(test_y, fit.logits(test_x).mean(axis=1)))

    def feats_of(mask: np.ndarray, train: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if train:
            x, labels, _ = rows.rows(mask)
            return x, labels
        return rows.base.values[mask, :1].astype(np.float32), None

    # the rule before: regions (head_trainer's k and fallback to patches)
    groups: np.ndarray | None = tile_groups(labelled.items)
    n_tumour = int((y == 1).sum())
    k = min(int(cfg.cv_folds), n_tumour)
    assert groups is not None
    n_groups = min(len(np.unique(groups[y == c])) for c in (0, 1))
    if n_groups >= 2:
        k = min(k, n_groups)
    else:
        groups = None
    region_folds = stratified_folds(rows.y, k, cfg.seed, groups)
    regions, _ = cross_validate_l2(feats_of, y, region_folds)
    one_se, _ = cross_validate_l2(feats_of, y, region_folds, one_se=True)
    slides = np.array([item.slide_path for item in labelled.items])
    by_slide = slide_folds(y, slides, int(cfg.cv_folds), int(cfg.seed))
    slide_choice = (
        cross_validate_l2(feats_of, y, by_slide, pooled=True)[0] if by_slide is not None else None
    )
    return {
        "project": str(project_dir),
        "labelled_set": labelled.sha256,
        "tiles": len(y),
        "tumour_tiles": n_tumour,
        "tumour_slides": len({s for s, lab in zip(slides, y, strict=True) if lab == 1}),
        "held_out_tiles": len(test_y),
        "held_auroc": {str(k): round(v, 4) for k, v in held_auroc.items()},
        "regions_l2": regions.l2,
        "regions_scores": {str(k): round(v, 4) for k, v in regions.scores.items()},
        "slides_l2": slide_choice.l2 if slide_choice is not None else regions.l2,
        "slides_fell_back": slide_choice is None,
        "one_se_l2": one_se.l2,
        "sync_l2": slide_choice.l2 if slide_choice is not None else one_se.l2,
        "slides_scores": (
            {str(k): round(v, 4) for k, v in slide_choice.scores.items()} if slide_choice else None
        ),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def held(row: dict[str, Any], l2: float) -> float:
        return float(row["held_auroc"][str(float(l2))])

    out: dict[str, Any] = {"projects": len(rows)}
    out["regions (before)"] = float(np.mean([held(r, r["regions_l2"]) for r in rows]))
    out["slides, else regions (2026-12-07)"] = float(
        np.mean([held(r, r["slides_l2"]) for r in rows])
    )
    out["regions, one-SE rule"] = float(np.mean([held(r, r["one_se_l2"]) for r in rows]))
    out["slides, else regions one-SE (now)"] = float(np.mean([held(r, r["sync_l2"]) for r in rows]))
    out["best in hindsight"] = float(np.mean([max(r["held_auroc"].values()) for r in rows]))
    for l2 in (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0):
        out[f"fixed {l2:g}"] = float(np.mean([held(r, l2) for r in rows]))
    out["regions (before), min"] = float(min(held(r, r["regions_l2"]) for r in rows))
    out["slides, else regions (2026-12-07), min"] = float(
        min(held(r, r["slides_l2"]) for r in rows)
    )
    out["slides, else regions one-SE (now), min"] = float(min(held(r, r["sync_l2"]) for r in rows))
    out["falls back to regions"] = int(sum(bool(r["slides_fell_back"]) for r in rows))
    return out


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "| project | tiles (tumour) | tumour slides | L2 regions → held-out | L2 slides → held-out "
        "| L2 now → held-out | best L2 → held-out |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        parts = Path(r["project"]).parts
        name = "/".join(parts[-4:-1] if parts[-1] == "project" else parts[-3:])
        best = max(r["held_auroc"], key=lambda k: r["held_auroc"][k])
        lines.append(
            f"| {name} | {r['tiles']} ({r['tumour_tiles']}) | {r['tumour_slides']} "
            f"| {r['regions_l2']:g} → {r['held_auroc'][str(float(r['regions_l2']))]:.3f} "
            f"| {r['slides_l2']:g}{' (regions)' if r['slides_fell_back'] else ''} → "
            f"{r['held_auroc'][str(float(r['slides_l2']))]:.3f} "
            f"| {r['sync_l2']:g} → {r['held_auroc'][str(float(r['sync_l2']))]:.3f} "
            f"| {float(best):g} → {r['held_auroc'][best]:.3f} |"
        )
    lines += ["", "| rule | mean held-out tile AUROC |", "|---|---|"]
    lines += [
        f"| {k} | {v:.4f} |"
        for k, v in summary.items()
        if k not in ("projects", "falls back to regions")
    ]
    lines += [
        "",
        f"Slide folds refused (regions decide): {summary['falls back to regions']} "
        f"of {summary['projects']} projects.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="*", help="active_learning.py --out folders")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also study qupath-rkd demo's first labelled set (built under OUT/demo), its "
        "held-out slides LN-03/04/05 as the held-out set",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "head_l2")
    parser.add_argument(
        "--round",
        type=int,
        default=None,
        help="study each strategy's project as it was after this round (copies under "
        "OUT/projects; start and every_lesion skipped); default: the finished projects",
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    held: dict[tuple[int, float, int], Any] = {}
    started = time.perf_counter()
    if args.demo:
        project = demo_slide_set(args.out / "demo")
        row = study(project, args.out / "demo", held)
        row["strategy"] = "demo"
        rows.append(row)
    for run in args.runs:
        slide_sets = sorted(run.glob("slides-*"))
        if len(slide_sets) != 1:
            raise SystemExit(f"{run}: expected one slides-* folder, found {len(slide_sets)}")
        for project in sorted(run.glob("runs/seed*/*/project")):
            strategy = project.parent.name
            if args.round is not None:
                if strategy in ("start", "every_lesion"):
                    continue
                project = truncated(
                    project,
                    args.round,
                    args.out / "projects" / run.name / project.parent.parent.name / strategy,
                )
            row = study(project, slide_sets[0], held)
            row["strategy"] = strategy
            if any(r["labelled_set"] == row["labelled_set"] for r in rows):
                continue  # the same labels (a seed's start, in every run of the seed)
            rows.append(row)
            print(
                f"{project}: regions L2 {row['regions_l2']:g}, slides L2 {row['slides_l2']:g}, "
                f"held-out {row['held_auroc'][str(float(row['regions_l2']))]:.3f} → "
                f"{row['held_auroc'][str(float(row['slides_l2']))]:.3f}",
                flush=True,
            )
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(sys.argv),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": list(__import__("os").getloadavg()),
    }
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1), encoding="utf-8"
    )
    (args.out / "results.md").write_text(markdown(rows, summary), encoding="utf-8")
    print(markdown(rows, summary))


if __name__ == "__main__":
    main()
