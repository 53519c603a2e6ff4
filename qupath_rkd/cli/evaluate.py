"""``qupath-rkd evaluate --truth T --pred P``: Camelyon16 lesion FROC and slide AUC."""

from __future__ import annotations

from pathlib import Path

import click

from qupath_rkd.cli.flags import MPP_TYPE, deprecated_alias


@click.command("evaluate")
@click.option(
    "--truth",
    "truth",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of ground-truth files, one per slide named like it (slide name, image name or "
    "entry ID): Camelyon16 JSON (positive/negative) or QuPath GeoJSON (class Tumor); both for "
    "one slide are checked to agree. A file without tumour = normal slide.",
)
@click.option(
    "--pred",
    "pred",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Output folder of `qupath-rkd predict` (or a folder of <slide>.csv submissions), or "
    "the QuPath project `qupath-rkd sync` wrote (its qupath-rkd/ or predictions/ folder too).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write evaluation.json, froc.csv, slides.csv and froc.png "
    "[default: PRED/evaluation; for a sync project PROJECT/qupath-rkd/evaluation].",
)
@click.option(
    "--slide-mpp",
    type=MPP_TYPE,
    default=None,
    help="Level-0 µm/px of the slides [default: from the heatmap metadata or the QuPath "
    "project; 0.243 for Camelyon16 JSON].",
)
@deprecated_alias("--mpp", "--slide-mpp", "slide_mpp")
@click.option(
    "--normal-if-no-truth",
    is_flag=True,
    help="Treat predicted slides without a truth file as normal (Camelyon16 ships "
    "annotations for tumour slides only).",
)
def evaluate(
    truth: Path,
    pred: Path,
    out_dir: Path | None,
    slide_mpp: float | None,
    normal_if_no_truth: bool,
) -> None:
    """Score predicted lesions and slide scores against ground truth (Camelyon16 protocol).

    Prints the FROC score (mean sensitivity at 0.25-8 false positives per slide over all
    slides), the sensitivity at each point and the slide-level ROC AUC.
    """
    from qupath_rkd.evaluation.run import evaluate as run_evaluate
    from qupath_rkd.evaluation.run import write_report

    report = run_evaluate(truth, pred, mpp=slide_mpp, normal_if_no_truth=normal_if_no_truth)
    default_out = report.default_out_dir or pred / "evaluation"
    paths = write_report(report, out_dir if out_dir is not None else default_out)
    f = report.froc
    n_tumor = sum(1 for s in report.slides if s["tumor"])
    click.echo(
        f"Slides: {f.n_slides} ({n_tumor} tumour, {f.n_slides - n_tumor} normal); "
        f"lesions to detect: {f.n_lesions}"
    )
    click.echo(f"FROC score: {f.score:.4f}")
    for fp, sens in f.sensitivity_at.items():
        click.echo(f"  sensitivity at {fp:g} FP/slide: {sens:.4f}")
    if report.slide_auc is not None:
        click.echo(f"Slide AUC: {report.slide_auc:.4f} (scores: {report.slide_score_source})")
    else:
        click.echo(f"Slide AUC: not defined ({report.slide_auc_note})")
    fl = report.false_lesions_per_tumor_free_slide
    if fl is not None:
        click.echo(
            f"False lesions per tumour-free slide at the operating point: {fl:.2f} "
            f"({f.n_slides - n_tumor} slide(s); every lesion reported there is false)"
        )
    if report.stale_slides:
        click.echo(
            f"Warning: {len(report.stale_slides)} slide(s) scored on STALE predictions (the "
            f"last sync failed on them and kept the previous model's): "
            + ", ".join(report.stale_slides[:10])
            + " — fix them and sync again for a score of the current model",
            err=True,
        )
    click.echo(f"Wrote {paths['json']} and {paths['png']}")
