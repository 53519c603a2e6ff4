"""`qupath-rkd demo [DIR]`: build a demo QuPath project and run the whole loop on it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click


@click.command()
@click.argument(
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("qupath-rkd-demo"),
    required=False,
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a configuration value of the demo's sync; repeatable.",
)
@click.option("--device", default=None, help="torch device: auto, cpu, cuda, cuda:1, mps.")
def demo(directory: Path, overrides: tuple[str, ...], device: str | None) -> None:
    """Build a demo QuPath project in DIRECTORY (default ./qupath-rkd-demo) and sync it.

    Five semi-real lymph-node slides (mosaics of real PatchCamelyon patches with tumour
    lesions of known shape); a pathologist's Tumor outlines on one slide and a slide marked
    tumour-free, exported as groovy/export_annotations.groovy would. Then `qupath-rkd sync`
    runs with the offline EfficientNet-Lite0 teacher and the predicted lesions are scored
    against the truth (Camelyon16 lesion FROC). Run it again to see that nothing is redone.
    """
    from qupath_rkd.demo import run_demo
    from qupath_rkd.sync.config import parse_overrides
    from qupath_rkd.sync.report import format_outcome

    values = parse_overrides(overrides)
    if device is not None:
        values["sync.device"] = device
    started = time.perf_counter()
    from qupath_rkd.cli.progress import ProgressRenderer

    with ProgressRenderer() as progress:
        result = run_demo(
            directory,
            overrides=values,
            progress=progress,
            echo=lambda line: progress.echo(line, err=True),
        )
    outcome = result.outcome
    from qupath_rkd.demo.pictures import write_demo_pictures
    from qupath_rkd.demo.project import demo_froc

    threshold = float((outcome.operating_point or {}).get("threshold") or 0.5)
    result.pictures = write_demo_pictures(
        result.project, demo_froc(result.project)[0], threshold=threshold
    )
    click.echo("")
    click.echo(f"QuPath project: {result.project.project_dir / 'project.qpproj'}")
    click.echo(format_outcome(outcome))  # what `qupath-rkd sync` prints, suggestions included
    truth = ", ".join(
        f"{name}: {'tumour' if has else 'no tumour'}" for name, has in result.slide_truth.items()
    )
    click.echo(f"truth: {truth}")
    if result.froc_score is not None:
        at = ", ".join(f"{k:g}: {v:.2f}" for k, v in result.froc_at.items())
        click.echo(
            f"lesion FROC on the slides the model never learnt from: {result.froc_score:.3f} "
            f"({result.n_lesions} lesions; sensitivity at FPs/slide {at})"
        )
        click.echo(
            f"  there: {result.lesions_found} of {result.n_lesions} lesions found, "
            f"{result.false_lesions} false lesion(s) at the operating point"
        )
    else:
        click.echo("lesion FROC: not computable (no lesion in the held-out slides)")
    pics = result.pictures
    if pics is not None and (pics.overlays or pics.froc):
        what = f"{len(pics.overlays)} overlays" + (", FROC curve" if pics.froc else "")
        click.echo(f"pictures: {pics.folder} ({what})")
    click.echo(f"done in {time.perf_counter() - started:.0f} s")
    click.echo(
        "Next: open the project in QuPath 0.5+, run groovy/import_predictions.groovy "
        f"(Run for project), or run `qupath-rkd sync {result.project.project_dir}` again."
    )
    if outcome.exit_code:
        sys.exit(outcome.exit_code)
