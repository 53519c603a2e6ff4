"""``qupath-rkd predict MODEL SLIDE... --out DIR``: heatmaps, lesions and scores for slides."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

#: File suffixes taken when a folder is given instead of slide files.
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif"}


def _expand(slides: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for p in slides:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                raise click.UsageError(
                    f"{p} holds no slide files ({', '.join(sorted(SLIDE_SUFFIXES))})"
                )
            out.extend(found)
        else:
            out.append(p)  # a missing file is reported as that slide's failure
    return out


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (one sub-folder per slide, camelyon16/, slide_scores.csv).",
)
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="µm/px at which tiles are read [default: the µm/px recorded in the model].",
)
@click.option(
    "--slide-mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Level-0 µm/px of the slides, for slides whose metadata has none.",
)
@click.option(
    "--tile-px",
    type=click.IntRange(min=8),
    default=None,
    help="Tile side at --mpp [default: the model's input size].",
)
@click.option(
    "--stride-px",
    type=click.IntRange(min=1),
    default=None,
    help="Grid step at --mpp [default: the tile side, no overlap]. Dense like FW-RD "
    "(64 px at 0.243 µm/px): 16 at 0.972 µm/px.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Lesion probability threshold [default: the model's calibrated threshold].",
)
@click.option(
    "--slide-score",
    type=click.Choice(["mean_above", "max"]),
    default="mean_above",
    show_default=True,
    help="Slide score: FW-RD's mean of the tile probabilities above the threshold (chosen by "
    "measurement, docs/benchmarks.md), or the highest tile probability.",
)
@click.option(
    "--min-lesion-um",
    type=click.FloatRange(min=0),
    default=200.0,
    show_default=True,
    help="Drop lesions whose major axis is shorter (isolated tumour cells: 200 µm).",
)
@click.option(
    "--simplify-um",
    type=click.FloatRange(min=0),
    default=None,
    help="Lesion outline tolerance in µm; outlines follow tile edges exactly, so any value gives "
    "the same outline.",
)
@click.option(
    "--min-tissue",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Score a tile when at least this share of it is tissue.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Tiles scored at once; lower it if memory runs out.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Tile-reading worker processes, each with its own slide handle "
    "[default: CPU cores - 1, at most 8].",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--overwrite", is_flag=True, help="Predict again even where outputs exist.")
def predict(
    model: Path,
    slides: tuple[Path, ...],
    out_dir: Path,
    mpp: float | None,
    slide_mpp: float | None,
    tile_px: int | None,
    stride_px: int | None,
    threshold: float | None,
    slide_score: str,
    min_lesion_um: float,
    simplify_um: float | None,
    min_tissue: float,
    batch_size: int,
    workers: int | None,
    device: str,
    overwrite: bool,
) -> None:
    """Heatmaps, lesions and slide scores for SLIDE... (files or folders) with MODEL.

    \b
    Per slide:
      OUT/<slide>/lesions.geojson     lesions as QuPath detections (class Tumor)
      OUT/<slide>/tiles.geojson       scored tiles for QuPath measurement maps (+ tiles.csv)
      OUT/<slide>/heatmap.npy/.json   calibrated probability on the tile grid (+ heatmap.png)
      OUT/camelyon16/<slide>.csv      Camelyon16 submission: prob,X,Y per lesion peak
      OUT/slide_scores.csv            one row per slide
    Slides already predicted with the same model and settings are skipped.
    """
    from qupath_rkd.inference.batch import predict_slides
    from qupath_rkd.inference.predict import InferenceConfig, SlideRun
    from qupath_rkd.model.scorer import load_model

    paths = _expand(slides)
    trained = load_model(model, device=device)
    config = InferenceConfig(
        mpp=mpp,
        tile_px=tile_px,
        stride_px=stride_px,
        min_tissue_fraction=min_tissue,
        threshold=threshold,
        slide_score=slide_score,
        min_lesion_um=min_lesion_um,
        simplify_um=simplify_um,
        slide_mpp=slide_mpp,
        batch_size=batch_size,
        num_workers=workers,
    )
    show_bars = sys.stderr.isatty()
    bars: list[Any] = []

    def progress_factory(name: str):  # type: ignore[no-untyped-def]
        from tqdm import tqdm

        bar = tqdm(desc=name, unit="tile", disable=not show_bars, leave=False)
        bars.append(bar)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        return update

    def report(run: SlideRun) -> None:
        while bars:
            bars.pop().close()
        if run.status == "failed":
            click.echo(f"FAILED   {run.slide_path}: {run.error}", err=True)
            return
        verb = "skipped " if run.status == "skipped" else "done    "
        score = "-" if run.slide_score is None else f"{run.slide_score:.3f}"
        line = (
            f"{verb} {run.slide_id}: score {score}, {run.n_tiles} tiles, {run.n_lesions} lesion(s)"
        )
        if run.status == "ok":
            line += f", {run.seconds:.1f} s"
        if run.note:
            line += f" — note: {run.note}"
        click.echo(line)

    runs = predict_slides(
        paths,
        trained,
        out_dir,
        config=config,
        overwrite=overwrite,
        progress_factory=progress_factory,
        on_slide_done=report,
    )
    failed = [r for r in runs if r.status == "failed"]
    click.echo(
        f"{len(runs) - len(failed)} of {len(runs)} slide(s) predicted into {out_dir}"
        + (f"; {len(failed)} failed" if failed else "")
    )
    if failed:
        raise click.ClickException(
            f"{len(failed)} slide(s) failed: " + ", ".join(str(r.slide_path.name) for r in failed)
        )
