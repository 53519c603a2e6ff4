"""Which local maxima the Camelyon16 candidate list holds: outside the lesions only, or inside too.

    O=benchmarks/out
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/candidate_rules.py \
        $O/op_rules_r1_final/projects --slides $O/al_onese_04/slides-fdef69f0bc \
        --out $O/candidate_rules_r1

Reads synced projects (every ``project.qpproj`` under the given folders, e.g. the round-R copies
:mod:`benchmarks.operating_point_rules` writes, or an active-learning run's ``runs/``), each
with its model and sync's operating point (``qupath-rkd/report.json``). The project's model
predicts the held-out slides of an active-learning slide set (``slides-*/manifest.json``: PCam
valid patches, odd-numbered Camelyon16 lesion shapes; never in a project) once; then, at each
seed threshold (sync's operating point and the model's calibrated one), the lesions are found
again on the same heatmap and the candidate list (:func:`qupath_rkd.lesions.candidates.
candidate_detections`, the package's floor, radius and cap) is scored with the Camelyon16 FROC
for each rule:

- ``outside``: the lesion peaks and the local maxima outside the lesions, those at or above the
  seed tied just below it (``clamp``; the list until 2026-12-08);
- ``inside``: the lesion peaks and every other local maximum, inside the lesions too (``clamp``);
- ``outside_scaled``, ``inside_scaled``: the same points, the others at ``p × seed`` (``scale``:
  below the seed in their own order, no tie);
- ``inside_own`` (the package's default since 2026-12-08), ``outside_own``: every point at its
  own probability (``own``: the lesions only decide which maximum stands for a lesion).

Writes ``<out>/results.json`` and ``<out>/results.md`` (mean FROC, sensitivity at 0.25 / 1 / 8
false positives per slide and candidates per slide, per rule and threshold; one row per project).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

#: rule -> (the maxima inside the lesions too, how the other candidates go below the seed)
RULES = {
    "outside": (False, "clamp"),
    "inside": (True, "clamp"),
    "outside_scaled": (False, "scale"),
    "inside_scaled": (True, "scale"),
    "inside_own": (True, "own"),
    "outside_own": (False, "own"),
}


def default_rule() -> str:
    """The rule the package uses (its ``DEFAULT_CANDIDATES_*`` constants)."""
    from qupath_rkd.constants import (
        DEFAULT_CANDIDATES_BELOW_SEED,
        DEFAULT_CANDIDATES_INSIDE_LESIONS,
    )

    want = (DEFAULT_CANDIDATES_INSIDE_LESIONS, DEFAULT_CANDIDATES_BELOW_SEED)
    return next(name for name, rule in RULES.items() if rule == want)


SEEDS = ("sync", "calibrated")


def score_rules(
    preds: Sequence[tuple[Any, Any, Any]], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per rule: the candidate FROC, its sensitivity at 0.25 / 1 / 8 FP per slide and the mean
    candidates per slide, with the lesions found at seed ``threshold``, over ``preds`` =
    ``(slide, prediction, evaluation mask)``."""
    from qupath_rkd.constants import (
        DEFAULT_CANDIDATE_FLOOR,
        DEFAULT_CANDIDATE_NMS_UM,
        DEFAULT_MAX_CANDIDATES,
    )
    from qupath_rkd.evaluation.camelyon16 import froc, score_detections
    from qupath_rkd.inference.predict import apply_threshold
    from qupath_rkd.lesions.candidates import candidate_detections

    found = [(s, apply_threshold(pred, threshold), mask) for s, pred, mask in preds]
    out: dict[str, dict[str, Any]] = {}
    for rule, (inside, below) in RULES.items():
        dets, counts = [], []
        for s, pred, mask in found:
            c = candidate_detections(
                pred.smoothed if pred.smoothed is not None else pred.heatmap,
                pred.lesions,
                floor=DEFAULT_CANDIDATE_FLOOR,
                nms_radius_um=DEFAULT_CANDIDATE_NMS_UM,
                max_candidates=DEFAULT_MAX_CANDIDATES,
                seed_threshold=threshold,
                inside_lesions=inside,
                below_seed=below,
            )
            counts.append(len(c))
            dets.append(score_detections(s.name, c.probs, c.x_px, c.y_px, mask))
        result = froc(dets)
        out[rule] = {
            "froc": round(float(result.score), 4),
            "sens_at": [round(result.sensitivity_at[f], 4) for f in (0.25, 1.0, 8.0)],
            "candidates_per_slide": round(float(np.mean(counts)), 1),
        }
    return out


def study(project: Path, test: Sequence[Any], memo: Any) -> dict[str, Any]:
    """One synced project: predict the held-out slides once, score every rule at both seeds."""
    from operating_point_rules import predict_held_out

    from qupath_rkd.constants import PROJECT_SUBDIR
    from qupath_rkd.model.scorer import load_model

    report = json.loads((project / PROJECT_SUBDIR / "report.json").read_text(encoding="utf-8"))
    model = load_model(project / PROJECT_SUBDIR / "model" / "model.pt", device="cpu")
    memo.wrap(model)
    seeds = {
        "sync": float(report["operating_point"]["threshold"]),
        "calibrated": float(model.threshold),
    }
    preds = predict_held_out(project, model, test, seeds["calibrated"])
    row: dict[str, Any] = {"project": str(project)}
    for name, t in seeds.items():
        row[name] = {"threshold": round(t, 4), **score_rules(preds, t)}
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over the projects of each rule's FROC, sensitivities and candidates at each seed."""
    out: dict[str, Any] = {"projects": len(rows)}
    for seed in SEEDS:
        out[seed] = {"threshold": round(float(np.mean([r[seed]["threshold"] for r in rows])), 4)}
        for rule in RULES:
            vals = [r[seed][rule] for r in rows]
            out[seed][rule] = {
                "froc": round(float(np.mean([v["froc"] for v in vals])), 4),
                "froc_min": round(float(min(v["froc"] for v in vals)), 4),
                "sens_at": np.round(np.mean([v["sens_at"] for v in vals], axis=0), 4).tolist(),
                "candidates_per_slide": round(
                    float(np.mean([v["candidates_per_slide"] for v in vals])), 1
                ),
            }
        out[seed]["inside_minus_outside"] = [
            round(r[seed]["inside"]["froc"] - r[seed]["outside"]["froc"], 4) for r in rows
        ]
    return out


def markdown(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "| seed | mean threshold | rule | candidate FROC | worst | sens 0.25 / 1 / 8 FP | "
        "candidates / slide |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed in SEEDS:
        s = summary[seed]
        for rule in RULES:
            r = s[rule]
            sens = " / ".join(f"{v:.3f}" for v in r["sens_at"])
            lines.append(
                f"| {seed} | {s['threshold']:.3f} | {rule} | {r['froc']:.3f} | "
                f"{r['froc_min']:.3f} | {sens} | {r['candidates_per_slide']:.1f} |"
            )
    lines.append("")
    lines.append(f"{summary['projects']} projects")
    lines.append("")
    lines.append(f"| project | sync: threshold, {' / '.join(RULES)} | calibrated: the same |")
    lines.append("|---|---|---|")
    for r in rows:
        cells = [_cells(r[seed]) for seed in SEEDS]
        lines.append(f"| {'/'.join(Path(r['project']).parts[-3:])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cells(at_seed: dict[str, Any]) -> str:
    """``threshold: FROC / FROC / ...`` of every rule at one seed."""
    frocs = " / ".join(f"{at_seed[rule]['froc']:.3f}" for rule in RULES)
    return f"{at_seed['threshold']:.2f}: {frocs}"


def projects(folders: Sequence[Path]) -> list[Path]:
    """Every synced project (a ``project.qpproj`` beside ``qupath-rkd/report.json``)."""
    from qupath_rkd.constants import PROJECT_SUBDIR

    found = []
    for folder in folders:
        for qpproj in sorted(folder.rglob("project.qpproj")):
            if (qpproj.parent / PROJECT_SUBDIR / "report.json").is_file():
                found.append(qpproj.parent)
    return found


def write(out: Path, rows: list[dict[str, Any]], started: float, load_start: list[float]) -> None:
    from operating_point_rules import write_results

    summary = summarise(rows)
    write_results(
        out, "candidate_rules.py", rows, summary, markdown(rows, summary), started, load_start
    )


def main(argv: Sequence[str] | None = None, *, log: Callable[[str], None] = print) -> None:
    import active_learning as al
    import torch
    from operating_point_rules import load_test_slides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="folders holding synced projects")
    parser.add_argument("--slides", type=Path, required=True, help="an active-learning slides-*")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    found = projects(args.folders)
    if not found:
        raise SystemExit(f"no synced project (project.qpproj + report.json) under {args.folders}")
    test = load_test_slides(args.slides)
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    memo = al.MemoTrunk({})
    rows: list[dict[str, Any]] = []
    for project in found:
        row = study(project, test, memo)
        rows.append(row)
        log(f"{project}: " + ", ".join(f"{seed} {_cells(row[seed])}" for seed in SEEDS))
        write(args.out, rows, started, load_start)
    log(markdown(rows, summarise(rows)))


if __name__ == "__main__":
    main()
