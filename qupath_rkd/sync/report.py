"""The per-slide results of ``sync``: ``<project>/qupath-rkd/report.json`` and its table.

``report.json`` describes the predictions now in the project (one row per image: tumour
score, number of lesions, lesion area in mm², status, and for a failed slide the error), the
model they came from and the labelled set it was trained on. It holds no timestamps and no
"what this run did", so a sync that changes nothing leaves it byte-identical; what a run did
(trained or reused, predicted or up to date) is in :class:`SyncOutcome` and printed by the CLI.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qupath_rkd import __version__
from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.io_utils import atomic_write_json

REPORT_FILENAME = "report.json"
REPORT_VERSION = 1

#: Row statuses. ``predicted``: predictions written by this run; ``up to date``: reused;
#: ``failed``: this slide could not be predicted (see ``error``); ``would predict``: dry run.
STATUS_PREDICTED = "predicted"
STATUS_UP_TO_DATE = "up to date"
STATUS_FAILED = "failed"
STATUS_WOULD_PREDICT = "would predict"


@dataclass
class SlideResult:
    """One image's line in the report.

    Attributes:
        entry_id: QuPath's ``entryID`` (as a string).
        image_name: QuPath's ``imageName``.
        status: one of the ``STATUS_*`` values.
        tumor_score: slide-level tumour probability in [0, 1] (``None`` when failed/pending, or
            when no tissue was scored: see ``note``).
        lesions: number of predicted lesions.
        lesion_area_mm2: total area of the predicted lesions in mm² (the tumour burden's area).
        largest_lesion_major_axis_um: major axis of the largest lesion in µm (0: none).
        burden_category: ``none``, ``ITC``, ``micrometastasis`` or ``macrometastasis``.
        positive: slide-level call at the operating point (any lesion).
        ood_far_fraction: share of the tissue tiles far from the model's training tiles
            (:mod:`qupath_rkd.model.ood`); ``None`` when the check is not available.
        out_of_domain: ``ood_far_fraction`` above the limit: the slide looks unlike anything
            the model was trained on; ``None`` when the check is not available.
        ood_note: why the check is not available ("" when it ran).
        reason: why it was (re)predicted, or the error of a failed slide.
        note: why the result is empty or unusual (e.g. "no tissue found: nothing scored").
        stale: a failed slide whose previous predictions (another model or settings) are
            kept and shown: the values above are theirs, and QuPath names them STALE.
    """

    entry_id: str
    image_name: str
    status: str
    tumor_score: float | None = None
    lesions: int | None = None
    lesion_area_mm2: float | None = None
    largest_lesion_major_axis_um: float | None = None
    burden_category: str | None = None
    positive: bool | None = None
    ood_far_fraction: float | None = None
    out_of_domain: bool | None = None
    ood_note: str = ""
    reason: str = ""
    note: str = ""
    stale: bool = False

    def report_row(self) -> dict[str, Any]:
        """The row as stored in report.json: the result, not what this run did."""
        row = asdict(self)
        row.pop("reason")
        if not self.note:
            row.pop("note")
        if not self.ood_note:
            row.pop("ood_note")
        row["status"] = "failed" if self.status == STATUS_FAILED else "ok"
        if self.status == STATUS_FAILED:
            row["error"] = self.reason
        for key in ("tumor_score", "lesion_area_mm2"):
            if row[key] is not None:
                row[key] = round(float(row[key]), 6)
        return row


@dataclass
class SyncOutcome:
    """What one ``sync`` did and found.

    Attributes:
        project_dir: the project.
        trained: whether a model was trained by this run.
        train_reason: why it was trained (or why it would be, in a dry run).
        model_id: the model in effect.
        dataset_hash: hash of the labelled set.
        label_summary: tiles per class per slide (``{image_name: {"tumor": n, "normal": n}}``).
        slides: one :class:`SlideResult` per image, in project order.
        dry_run: nothing was written.
        notes: one-line remarks for the user (fallbacks, repaired geometries, ...).
        operating_point: the seed threshold in use and how it was found
            (:meth:`qupath_rkd.lesions.operating_point.OperatingPoint.as_dict`).
        warnings: one-line warnings about the model in use (no tumour tiles, the trainer's
            own warnings); printed by every sync and stored in report.json.
        suggestions: where to annotate next (:mod:`qupath_rkd.sync.suggestions`):
            ``{"key", "signal", "regions": [row, ...], "notes": [...]}``, or ``None`` when
            suggestions are off (then report.json has no ``suggestions``).
    """

    project_dir: Path
    trained: bool = False
    train_reason: str | None = None
    model_id: str | None = None
    dataset_hash: str | None = None
    label_summary: dict[str, dict[str, int]] = field(default_factory=dict)
    slides: list[SlideResult] = field(default_factory=list)
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)
    operating_point: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    suggestions: dict[str, Any] | None = None

    @property
    def failed(self) -> list[SlideResult]:
        return [s for s in self.slides if s.status == STATUS_FAILED]

    @property
    def predicted(self) -> list[SlideResult]:
        return [s for s in self.slides if s.status == STATUS_PREDICTED]

    @property
    def exit_code(self) -> int:
        """1 when any slide failed, else 0."""
        return 1 if self.failed else 0


def report_path(project_dir: str | Path) -> Path:
    """``<project>/qupath-rkd/report.json``."""
    return Path(project_dir) / PROJECT_SUBDIR / REPORT_FILENAME


def report_json(outcome: SyncOutcome) -> dict[str, Any]:
    """The deterministic content of report.json for ``outcome``."""
    return {
        "version": REPORT_VERSION,
        "qupath_rkd_version": __version__,
        "model_id": outcome.model_id,
        "dataset_hash": outcome.dataset_hash,
        "labelled_tiles": outcome.label_summary,
        "operating_point": outcome.operating_point,
        "warnings": list(outcome.warnings),
        "slides": [s.report_row() for s in outcome.slides],
        **({"suggestions": outcome.suggestions} if outcome.suggestions is not None else {}),
    }


def write_report(outcome: SyncOutcome) -> Path:
    """Write report.json atomically, only if its content changed (so a no-op sync touches
    nothing); returns its path."""
    path = report_path(outcome.project_dir)
    content = report_json(outcome)
    try:
        import json

        if json.loads(path.read_text(encoding="utf-8")) == content:
            return path
    except (OSError, ValueError):
        pass
    atomic_write_json(path, content)
    return path


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(slides: list[SlideResult]) -> str:
    """The per-slide table as plain text (the CLI prints it)."""
    header = (
        "image",
        "tumour score",
        "lesions",
        "lesion area mm²",
        "largest µm",
        "far tiles",
        "status",
    )
    rows = [
        (
            s.image_name,
            _fmt(s.tumor_score, ".3f"),
            _fmt(s.lesions, "d"),
            _fmt(s.lesion_area_mm2, ".3f"),
            _fmt(s.largest_lesion_major_axis_um, ".0f"),
            _fmt(s.ood_far_fraction, ".0%") + (" OOD" if s.out_of_domain else ""),
            s.status
            + (f" ({s.reason})" if s.reason else "")
            + (f"; {s.note}" if s.note else "")
            + (" — previous predictions kept, marked STALE" if s.stale else ""),
        )
        for s in slides
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths))]
    out.extend(line(r) for r in rows)
    out.extend(ood_lines(slides))
    return "\n".join(out)


def ood_lines(slides: list[SlideResult]) -> list[str]:
    """The out-of-domain check below the table: one line per flagged slide, or one line
    saying the check is not available."""
    flagged = [s for s in slides if s.out_of_domain]
    lines = [
        f"OUT OF DOMAIN: {s.image_name}: {_fmt(s.ood_far_fraction, '.0%')} of its tissue tiles "
        "are unlike the model's training tiles; its scores and lesions mean little"
        for s in flagged
    ]
    notes = sorted({s.ood_note for s in slides if s.ood_note and s.out_of_domain is None})
    lines.extend(notes[:1])
    return lines


def format_outcome(outcome: SyncOutcome, *, dry_run: bool = False) -> str:
    """What a sync prints about its outcome, as ``qupath-rkd sync`` and ``qupath-rkd demo``
    both show it: the model line (trained, reused, or what a dry run would do), the per-slide
    table (:func:`format_table`), the warnings about the model, and the suggestions
    (:func:`format_suggestions`)."""
    if dry_run:
        model = (
            f"would train a model: {outcome.train_reason}"
            if outcome.train_reason
            else "would reuse the model"
        )
    elif outcome.trained:
        model = f"trained a model ({outcome.train_reason})"
    else:
        model = "model up to date: nothing to train"
    lines = [model, format_table(outcome.slides)]
    # the warnings are about the model in use: shown on every sync
    lines.extend(f"warning: {line}" for line in outcome.warnings)
    suggested = format_suggestions(outcome.suggestions)
    if suggested:
        lines.append(suggested)
    return "\n".join(lines)


def format_suggestions(suggestions: dict[str, Any] | None, top: int = 5) -> str:
    """The first ``top`` suggestions, one line each (slide, centre in µm in QuPath's frame,
    reason), then their notes; ``""`` when suggestions are off."""
    if suggestions is None:
        return ""
    regions = list(suggestions.get("regions") or [])
    lines = []
    if regions:
        more = f" (top {top} of {len(regions)})" if len(regions) > top else ""
        lines.append(f"annotate next{more}:")
        for row in regions[:top]:
            lines.append(
                f"  {row['rank']:>2}. {row['image']}: x {row['x_um']:.0f} µm, "
                f"y {row['y_um']:.0f} µm ({row['width_um']:.0f} x {row['height_um']:.0f} µm) "
                f"— {row['reason']}"
            )
    lines.extend(f"suggestions: {note}" for note in suggestions.get("notes") or [])
    return "\n".join(lines)
