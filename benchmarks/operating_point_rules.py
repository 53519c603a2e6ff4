"""How sync's operating point should weigh what the pathologist marked tumour-free (issue 10.2,
issue 13's FROC at the operating point).

    O=benchmarks/out
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/operating_point_rules.py \
        $O/al_onese_04 --round 1 --seeds 0,1,2,3 --out $O/op_rules_round1

Reads active-learning runs (:mod:`benchmarks.active_learning`, ``RUN/runs/seed*/<strategy>/
project``) and, with ``--round R``, copies each strategy's project as it was after round ``R``
(:func:`benchmarks.head_l2_by_slide.truncated`). Each copy is synced once (the package as it is),
and what sync chooses its operating point on is kept: the held-out heatmaps of the tumour-free
slides, of the fully annotated slides away from their tumour and of the normal regions (all of
them, also those sync itself leaves out). With the package before 2026-12-07 23:30 UTC (whole
images left out, not band by band, :mod:`qupath_rkd.sync.heldout`) the same command gives the
rules on those heatmaps: run it from a worktree of that commit. Then each
rule below picks a seed threshold from those alone, and the project's model is scored at it on the
run's held-out slides (PCam valid patches, odd-numbered Camelyon16 lesion shapes; never in a
project):

- ``share`` (sync's rule until 2026-12-07, 23:40 UTC): a normal region weighs its share of its
  slide's tissue; the rate is false lesions / (tumour-free slides + the regions' shares);
- ``slide``: a slide with normal regions weighs one slide, its false lesions those found in its
  regions (a lower bound on the slide's own);
- ``unbiased`` (sync's rule since then, :func:`qupath_rkd.sync.operating.representative`):
  only the tumour-free slides and the fully annotated slides (the tissue the pathologist did
  not pick because the model got it wrong); the regions only without them;
- ``in_sample``: ``share`` on the final model's heatmaps (not held out);
- ``calibrated``: the model's calibrated threshold (0.5), whatever was marked.

Per rule: the threshold, the lesion FROC of the lesions sync would write at it (Camelyon16
protocol, the active-learning benchmark's ``froc``), the sensitivity and the false lesions per
tumour-free held-out slide at it. Also the best threshold in hindsight (the held-out FROC's
maximum over a grid) and the candidate FROC (threshold-free).

Writes ``<out>/results.json`` and ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

RULES = ("share", "slide", "unbiased", "in_sample", "calibrated")
GRID = tuple(round(x, 2) for x in np.arange(0.10, 0.96, 0.05))


@dataclasses.dataclass
class Captured:
    """What sync chose its operating point on (``choose_operating_point``'s arguments)."""

    negatives: list[Any]
    post: Any
    floor: float
    target: float
    unbiased: set[str]
    in_sample: dict[str, Any]


def sync_capturing(project_dir: Path) -> tuple[Any, Captured]:
    """Sync ``project_dir`` once; return its outcome and the operating point's inputs."""
    import active_learning as al

    from qupath_rkd.lesions import operating_point as op_mod
    from qupath_rkd.sync import heldout
    from qupath_rkd.sync import operating as sync_op

    seen: list[Captured] = []
    pairs: list[Any] = []
    in_sample: dict[str, Any] = {}
    last: list[Any] = []
    real_choose = op_mod.choose_operating_point
    real_negative = sync_op.negative_heatmap
    real_representative = sync_op.representative
    real_held = heldout.held_out_heatmap

    def held(pred: Any, fit: Any, model: Any) -> Any:
        last.append(pred.heatmap)  # the final model's heatmap of the image (in-sample)
        return real_held(pred, fit, model)

    def representative(negatives: Sequence[Any]) -> Any:
        pairs[:] = list(negatives)  # every negative, before sync keeps the whole slides
        return real_representative(negatives)

    def choose(negatives: Sequence[Any], post: Any, **kw: Any) -> Any:
        unbiased = {n.name for src, n in pairs if src.tumor_free or src.fully_annotated}
        everything = [n for _src, n in pairs] or list(negatives)
        seen.append(
            Captured(
                everything,
                post,
                kw["floor"],
                kw["target_fp_per_slide"],
                unbiased,
                dict(in_sample),
            )
        )
        return real_choose(negatives, post, **kw)

    def negative(source: Any, heatmap: Any, name: str) -> Any:
        neg = real_negative(source, heatmap, name)
        if last:
            in_sample[name] = dataclasses.replace(neg, heatmap=last.pop())
        return neg

    op_mod.choose_operating_point = choose  # type: ignore[assignment]
    sync_op.negative_heatmap = negative  # type: ignore[assignment]
    sync_op.representative = representative  # type: ignore[assignment]
    heldout.held_out_heatmap = held  # type: ignore[assignment]
    try:
        outcome = al.sync(project_dir)
    finally:
        op_mod.choose_operating_point = real_choose  # type: ignore[assignment]
        sync_op.negative_heatmap = real_negative  # type: ignore[assignment]
        sync_op.representative = real_representative  # type: ignore[assignment]
        heldout.held_out_heatmap = real_held  # type: ignore[assignment]
    if not seen:
        raise SystemExit(f"{project_dir}: sync chose no operating point on tumour-free tissue")
    return outcome, seen[-1]


def rule_threshold(rule: str, cap: Captured, calibrated: float) -> float:
    """The seed threshold ``rule`` picks from what sync chose its operating point on."""
    from qupath_rkd.lesions.operating_point import choose_operating_point

    if rule == "calibrated":
        return calibrated
    negatives = cap.negatives
    if rule == "slide":
        negatives = [n if n.mask is None else dataclasses.replace(n, weight=1.0) for n in negatives]
    elif rule == "in_sample":
        negatives = [cap.in_sample.get(n.name, n) for n in negatives]
    elif rule == "unbiased":
        kept = [n for n in negatives if n.name in cap.unbiased]
        negatives = kept or negatives
    elif rule != "share":
        raise ValueError(rule)
    op = choose_operating_point(
        negatives, cap.post, target_fp_per_slide=cap.target, floor=cap.floor
    )
    return float(op.threshold)


def score_at(preds: Sequence[tuple[Any, Any, Any]], threshold: float) -> dict[str, float | None]:
    """FROC of the lesions at ``threshold``, sensitivity (lesions hit / FROC lesions) and false
    lesions per tumour-free slide, over ``preds`` = ``(slide, prediction, evaluation mask)``."""
    from qupath_rkd.evaluation.camelyon16 import froc, score_detections
    from qupath_rkd.inference.predict import apply_threshold

    per_slide = []
    normal_fp = []
    for s, pred, mask in preds:
        les = apply_threshold(pred, threshold).lesions
        det = score_detections(
            s.name,
            np.array([float(x.max_probability) for x in les]),
            np.array([float(x.peak_xy_px[0]) for x in les]),
            np.array([float(x.peak_xy_px[1]) for x in les]),
            mask,
        )
        per_slide.append(det)
        if mask is None:
            normal_fp.append(len(les))
    result = froc(per_slide)
    hit = sum(int((d.tp_probs > 0).sum()) for d in per_slide if d.is_tumor)
    return {
        "froc": round(float(result.score), 4),
        "sensitivity": round(hit / max(int(result.n_lesions), 1), 4),
        "fp_per_normal_slide": round(float(np.mean(normal_fp)), 3) if normal_fp else None,
    }


def study(project: Path, test: Sequence[Any], memo: Any) -> dict[str, Any]:
    """One project: sync it, pick each rule's threshold, score the held-out slides."""
    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.evaluation.camelyon16 import froc, score_detections
    from qupath_rkd.inference.write import slide_candidates
    from qupath_rkd.model.scorer import load_model

    t0 = time.perf_counter()
    outcome, cap = sync_capturing(project)
    sync_s = time.perf_counter() - t0
    model = load_model(project / PROJECT_SUBDIR / "model" / "model.pt", device="cpu")
    memo.wrap(model)
    calibrated = float(model.threshold)
    preds = predict_held_out(project, model, test, calibrated)
    cands = []
    for s, pred, mask in preds:
        c = slide_candidates(pred)
        cands.append(score_detections(s.name, c.probs, c.x_px, c.y_px, mask))
    row: dict[str, Any] = {
        "project": str(project),
        "sync_threshold": round(float(outcome.operating_point["threshold"]), 4),
        "negatives": [
            {
                "name": n.name,
                "unbiased": n.name in cap.unbiased,
                "region": n.mask is not None,
            }
            for n in cap.negatives
        ],
        "negative_max": {
            n.name: [
                _max_smoothed(n, cap.post),
                _max_smoothed(cap.in_sample[n.name], cap.post) if n.name in cap.in_sample else None,
            ]
            for n in cap.negatives
        },
        "test_normal_max": [
            round(float(np.nanmax(p.smoothed.probability)), 4) for s, p, m in preds if m is None
        ],
        "test_tumour_peak": [
            round(float(np.nanmax(p.smoothed.probability)), 4) for s, p, m in preds if m is not None
        ],
        "froc_candidates": round(float(froc(cands).score), 4),
        "sync_s": round(sync_s, 1),
    }
    for rule in RULES:
        t = rule_threshold(rule, cap, calibrated)
        row[rule] = {"threshold": round(t, 4), **score_at(preds, t)}
    # the scale moves between projects (a flat calibration puts a whole slide within 0.02):
    # the grid is the quantiles of the held-out slides' smoothed values, plus the fixed one
    pooled = np.concatenate([p.smoothed.probability.reshape(-1) for _s, p, _m in preds])
    pooled = pooled[np.isfinite(pooled)]
    quantiles = np.quantile(pooled, np.linspace(0.90, 0.9999, 24))
    grid = {
        f"{t:.4f}": score_at(preds, float(t))
        for t in sorted({*GRID, *np.round(quantiles, 4).tolist()})
    }
    best = max(grid, key=lambda t: grid[t]["froc"] or 0.0)
    row["hindsight"] = {"threshold": float(best), **grid[best]}
    row["grid"] = grid
    return row


def predict_held_out(
    project: Path, model: Any, test: Sequence[Any], threshold: float
) -> list[tuple[Any, Any, Any]]:
    """``(slide, prediction, evaluation mask or None)`` of each held-out slide, predicted by
    ``model`` with the project's inference settings at seed ``threshold``."""
    from qupath_rkd.evaluation.camelyon16 import evaluation_mask
    from qupath_rkd.inference import predict_slide
    from qupath_rkd.sync.config import load_config
    from qupath_rkd.sync.runner import inference_config

    config = load_config(project, {})
    out = []
    for s in test:
        cfg = dataclasses.replace(inference_config(config, s.mpp), threshold=threshold)
        pred = predict_slide(s.path, model, config=cfg)
        mask = (
            evaluation_mask(s.lesions, mpp=s.mpp, slide_size_px=(s.width_px, s.height_px))
            if s.lesions
            else None
        )
        out.append((s, pred, mask))
    return out


def _max_smoothed(neg: Any, post: Any) -> float | None:
    """The highest smoothed value of a negative's known-normal cells."""
    from qupath_rkd.lesions.postprocess import smooth_heatmap

    sm = smooth_heatmap(neg.heatmap, post.smooth_sigma_um).probability
    if neg.mask is not None:
        sm = np.where(neg.mask, sm, np.nan)
    sm = sm[np.isfinite(sm)]
    return round(float(sm.max()), 4) if sm.size else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean threshold, FROC, sensitivity and false lesions per tumour-free slide of each rule."""
    out: dict[str, Any] = {"projects": len(rows)}
    for rule in (*RULES, "hindsight"):

        def mean(key: str, rule: str = rule) -> float | None:
            vals = [r[rule][key] for r in rows if r[rule][key] is not None]
            return round(float(np.mean(vals)), 4) if vals else None

        out[rule] = {
            k: mean(k) for k in ("threshold", "froc", "sensitivity", "fp_per_normal_slide")
        }
        out[rule]["froc_min"] = round(min(r[rule]["froc"] for r in rows), 4)
    out["froc_candidates"] = round(float(np.mean([r["froc_candidates"] for r in rows])), 4)
    return out


def markdown(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "| rule | threshold | FROC | worst FROC | sensitivity | false lesions / tumour-free "
        "slide |",
        "|---|---|---|---|---|---|",
    ]
    for rule in (*RULES, "hindsight"):
        s = summary[rule]
        lines.append(
            f"| {rule} | {s['threshold']:.3f} | {s['froc']:.3f} | {s['froc_min']:.3f} | "
            f"{s['sensitivity']:.3f} | {s['fp_per_normal_slide']:.2f} |"
        )
    lines.append("")
    lines.append(f"{summary['projects']} projects; candidate FROC {summary['froc_candidates']:.3f}")
    lines.append("")
    lines.append("| project | " + " | ".join(RULES) + " | hindsight |")
    lines.append("|---|" + "---|" * (len(RULES) + 1))
    for r in rows:
        cells = [f"{r[k]['threshold']:.2f}: {r[k]['froc']:.2f}" for k in (*RULES, "hindsight")]
        lines.append(f"| {Path(r['project']).parts[-3:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def projects(run: Path, seeds: set[int] | None, strategies: set[str]) -> list[Path]:
    """``RUN/runs/seed*/<strategy>/project`` for the chosen seeds and strategies."""
    out = []
    for project in sorted(run.glob("runs/seed*/*/project")):
        seed = int(project.parent.parent.name.removeprefix("seed"))
        if seeds is not None and seed not in seeds:
            continue
        if project.parent.name in strategies:
            out.append(project)
    return out


def main(argv: Sequence[str] | None = None, *, log: Callable[[str], None] = print) -> None:
    import active_learning as al
    import torch
    from head_l2_by_slide import truncated

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="active_learning.py --out folders")
    parser.add_argument("--round", type=int, default=None, help="the projects after round R")
    parser.add_argument("--seeds", default=None, help="comma-separated; default: all")
    parser.add_argument("--strategies", default="mixed,top_probability,random")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    strategies = set(args.strategies.split(","))
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    memo = al.MemoTrunk({})
    rows: list[dict[str, Any]] = []
    for run in args.runs:
        slide_sets = sorted(run.glob("slides-*"))
        if len(slide_sets) != 1:
            raise SystemExit(f"{run}: expected one slides-* folder, found {len(slide_sets)}")
        test = load_test_slides(slide_sets[0])
        for project in projects(run, seeds, strategies):
            if args.round is not None:
                project = truncated(
                    project,
                    args.round,
                    args.out
                    / "projects"
                    / run.name
                    / project.parent.parent.name
                    / project.parent.name,
                )
            row = study(project, test, memo)
            rows.append(row)
            log(
                f"{project}: "
                + ", ".join(
                    f"{k} {row[k]['threshold']:.2f}→{row[k]['froc']:.2f}"
                    for k in (*RULES, "hindsight")
                )
            )
            write(args.out, rows, started, load_start)
    log(markdown(rows, summarise(rows)))


def write(out: Path, rows: list[dict[str, Any]], started: float, load_start: list[float]) -> None:
    summary = summarise(rows)
    write_results(
        out, "operating_point_rules.py", rows, summary, markdown(rows, summary), started, load_start
    )


def write_results(
    out: Path,
    script: str,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    text: str,
    started: float,
    load_start: list[float],
) -> None:
    """``<out>/results.json`` (the run's command, date, machine, seconds and load averages, the
    summary and the rows) and ``<out>/results.md`` (``text``), each written atomically."""
    from qupath_rkd.io_utils import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"2-core shared VM ({platform.processor() or platform.machine()})",
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    atomic_write_json(out / "results.json", {"meta": meta, "summary": summary, "rows": rows})
    atomic_write_text(out / "results.md", text)


def load_test_slides(folder: Path) -> list[Any]:
    """The held-out slides of an active-learning slide set (``slides-*/manifest.json``)."""
    import active_learning as al

    from qupath_rkd.qupath.geojson import read_geojson

    info = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return [
        al.SimSlide(
            s["name"],
            folder / s["slide"],
            s["width_px"],
            s["height_px"],
            s["mpp"],
            [o.geometry for o in read_geojson(folder / s["truth"])],
            s["tissue_um2"],
        )
        for s in info["test"]
    ]


if __name__ == "__main__":
    main()
