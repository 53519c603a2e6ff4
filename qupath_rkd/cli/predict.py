"""``qupath-rkd predict MODEL SLIDE... --out DIR``: heatmaps, lesions and scores for slides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from qupath_rkd.cli.flags import MPP_TYPE, check_tile_mpp, deprecated_alias
from qupath_rkd.constants import (
    DEFAULT_EXTENT_RATIO,
    DEFAULT_INFERENCE_BATCH,
    DEFAULT_MIN_LESION_UM,
    DEFAULT_MIN_TISSUE_FRACTION,
    DEFAULT_SLIDE_SCORE,
    DEFAULT_SLIDE_TTA_VIEWS,
    DEFAULT_SMOOTH_SIGMA_UM,
    DEFAULT_TARGET_FP_PER_SLIDE,
    SLIDE_SCORE_RULES,
)

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
    "--tile-mpp",
    type=MPP_TYPE,
    default=None,
    help="µm/px at which tiles are read [default: the µm/px recorded in the model; another "
    "value needs --allow-mpp-mismatch].",
)
@deprecated_alias("--mpp", "--tile-mpp", "tile_mpp")
@click.option(
    "--allow-mpp-mismatch",
    is_flag=True,
    help="Read tiles at a --tile-mpp other than the model's own (with a warning).",
)
@click.option(
    "--slide-mpp",
    type=MPP_TYPE,
    default=None,
    help="Level-0 µm/px of the slides, for slides whose metadata has none.",
)
@click.option(
    "--tile-px",
    type=click.IntRange(min=8),
    default=None,
    help="Tile side at --tile-mpp [default: the model's input size].",
)
@click.option(
    "--stride-px",
    type=click.IntRange(min=1),
    default=None,
    help="Grid step at --tile-mpp [default: half the tile side; the tile side is 4x faster "
    "and finds fewer lesions]. Dense like FW-RD (64 px at 0.243 µm/px): 16 at 0.972 µm/px.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Seed threshold of the lesions [default: set from --tumor-free slides, else from the "
    "mosaics of held-out normal patches a train-patches model carries, else the model's "
    "calibrated threshold].",
)
@click.option(
    "--tumor-free",
    "tumor_free",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    help="A slide (or folder of slides) you know is tumour-free (repeatable). The threshold "
    "becomes the lowest one at which these hold at most --target-fp-per-slide false lesions.",
)
@click.option(
    "--target-fp-per-slide",
    type=click.FloatRange(min=0),
    default=DEFAULT_TARGET_FP_PER_SLIDE,
    show_default=True,
    help="False lesions per tumour-free slide allowed at the threshold --tumor-free (or the "
    "model's normal mosaics, each counted as one slide) sets.",
)
@click.option(
    "--slide-score",
    type=click.Choice(list(SLIDE_SCORE_RULES)),
    default=DEFAULT_SLIDE_SCORE,
    show_default=True,
    help="Slide score: the highest value of the smoothed heatmap (max_smoothed), the highest "
    "tile probability, FW-RD's mean above the threshold, or the largest lesion's area / "
    "probability mass in mm².",
)
@click.option(
    "--smooth-um",
    type=click.FloatRange(min=0),
    default=DEFAULT_SMOOTH_SIGMA_UM,
    show_default=True,
    help="Gaussian sigma in µm of the heatmap smoothing before lesions are found (0 = none).",
)
@click.option(
    "--extent-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULT_EXTENT_RATIO,
    show_default=True,
    help="Hysteresis: a lesion extends over cells >= this × the threshold that touch a cell "
    ">= the threshold (1 = one threshold), and never stops above the model's calibrated "
    "threshold: a raised threshold picks fewer lesions without shrinking them.",
)
@click.option(
    "--tta-views",
    type=click.Choice(("1", "2", "4", "8")),
    default=str(DEFAULT_SLIDE_TTA_VIEWS),
    show_default=True,
    help="Dihedral views (rotations, mirror) a head model averages per tile; 8 costs 8x the "
    "scoring time.",
)
@click.option(
    "--min-lesion-um",
    type=click.FloatRange(min=0),
    default=DEFAULT_MIN_LESION_UM,
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
    default=DEFAULT_MIN_TISSUE_FRACTION,
    show_default=True,
    help="Score a tile when at least this share of it is tissue.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_INFERENCE_BATCH,
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
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Send the slides to a running Dask scheduler (tcp://HOST:8786), one task per slide; "
    "slides must be at the same path on the workers. Needs the 'cluster' extra.",
)
@click.option(
    "--local-cluster",
    "local_cluster",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Predict on a local Dask cluster of N worker processes (one slide each at a time).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the --scheduler.",
)
@click.option(
    "--torch-threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch threads while scoring [default: the cores; 1 on cluster workers]. Scores' "
    "last bits depend on it: --torch-threads 1 gives the bytes of a cluster run.",
)
def predict(
    model: Path,
    slides: tuple[Path, ...],
    out_dir: Path,
    tile_mpp: float | None,
    allow_mpp_mismatch: bool,
    slide_mpp: float | None,
    tile_px: int | None,
    stride_px: int | None,
    threshold: float | None,
    tumor_free: tuple[Path, ...],
    target_fp_per_slide: float,
    slide_score: str,
    smooth_um: float,
    extent_ratio: float,
    tta_views: str,
    min_lesion_um: float,
    simplify_um: float | None,
    min_tissue: float,
    batch_size: int,
    workers: int | None,
    device: str,
    overwrite: bool,
    scheduler: str | None,
    local_cluster: int | None,
    connect_timeout: float,
    torch_threads: int | None,
) -> None:
    """Heatmaps, lesions and slide scores for SLIDE... (files or folders) with MODEL.

    \b
    Per slide:
      OUT/<slide>/lesions.geojson     lesions as QuPath detections (class Tumor)
      OUT/<slide>/tiles.geojson       scored tiles for QuPath measurement maps (+ tiles.csv)
      OUT/<slide>/heatmap.npy/.json   calibrated probability on the tile grid (+ heatmap.png)
      OUT/camelyon16/<slide>.csv      Camelyon16 submission: prob,X,Y per candidate (lesion
                                      peaks, then heatmap maxima below the threshold)
      OUT/slide_scores.csv            one row per slide
    Slides already predicted with the same model and settings are skipped.
    """
    from qupath_rkd.inference.batch import predict_slides
    from qupath_rkd.inference.predict import InferenceConfig, SlideRun
    from qupath_rkd.model.scorer import load_model

    paths = _expand(slides)
    cluster = _cluster_session(scheduler, local_cluster, connect_timeout, device)
    trained = load_model(model, device="cpu" if cluster is not None else device)
    check_tile_mpp(model, trained.mpp, tile_mpp, allow_mpp_mismatch)
    config = InferenceConfig(
        tile_mpp=tile_mpp,
        tile_px=tile_px,
        stride_px=stride_px,
        min_tissue_fraction=min_tissue,
        threshold=threshold,
        slide_score=slide_score,
        min_major_axis_um=min_lesion_um,
        smooth_sigma_um=smooth_um,
        extent_ratio=extent_ratio,
        simplify_um=simplify_um,
        slide_mpp=slide_mpp,
        tta_views=int(tta_views),
        batch_size=batch_size,
        num_workers=workers,
        torch_threads=torch_threads,
    )
    from qupath_rkd.cli.progress import ProgressRenderer

    renderer = ProgressRenderer()

    def report(run: SlideRun) -> None:
        if run.status == "failed":
            error = (run.error or "").removeprefix(f"{run.slide_path}: ")  # named once
            renderer.echo(f"FAILED   {run.slide_path}: {error}", err=True)
            return
        verb = "skipped " if run.status == "skipped" else "done    "
        score = "-" if run.slide_score is None else f"{run.slide_score:.3f}"
        line = (
            f"{verb} {run.slide_id}: score {score}, {run.n_tiles} tiles, {run.n_lesions} lesion(s)"
        )
        if run.status == "ok":
            line += f", {run.seconds:.1f} s"
        if run.ood.get("ood_available"):
            line += f", {_ood_line(run.ood)}"
        if run.note:
            line += f" — note: {run.note}"
        renderer.echo(line)

    try:
        with renderer:
            runs = predict_slides(
                paths,
                trained,
                out_dir,
                config=config,
                overwrite=overwrite,
                progress=renderer,
                on_slide_done=report,
                tumor_free=_expand(tumor_free) if tumor_free else (),
                target_fp_per_slide=target_fp_per_slide,
                cluster=cluster,
                checkpoint=model,
            )
    finally:
        if cluster is not None:
            cluster.close()
    failed = [r for r in runs if r.status == "failed"]
    _echo_operating_point(out_dir)
    if trained.ood_reference is None:
        click.echo(f"out-of-domain check: {trained.ood_unavailable_reason()}")
    else:
        flagged = [r.slide_id for r in runs if r.ood.get("out_of_domain")]
        if flagged:
            click.echo(
                f"OUT OF DOMAIN ({len(flagged)} slide(s): most tissue unlike the training "
                f"tiles; scores and lesions there mean little): {', '.join(flagged)}"
            )
    click.echo(
        f"{len(runs) - len(failed)} of {len(runs)} slide(s) predicted into {out_dir}"
        + (f"; {len(failed)} failed" if failed else "")
    )
    if failed:
        raise click.ClickException(
            f"{len(failed)} slide(s) failed: " + ", ".join(str(r.slide_path.name) for r in failed)
        )


def _ood_line(ood: dict[str, Any]) -> str:
    """A run's out-of-domain values (done.json's) as :meth:`OodResult.describe` says them."""
    from qupath_rkd.model.ood import OodResult

    return OodResult(
        available=True,
        far_fraction=ood.get("ood_far_fraction"),
        flagged=bool(ood.get("out_of_domain")),
        far_fraction_threshold=ood.get("ood_far_fraction_threshold"),
    ).describe()


def _cluster_session(
    scheduler: str | None, local_workers: int | None, timeout_s: float, device: str
) -> Any:
    """A connected :class:`~qupath_rkd.cluster.session.ClusterSession`, or ``None`` without
    the flags (then Dask is never imported). Connects before anything is written."""
    from qupath_rkd.cluster import cluster_spec

    spec = cluster_spec(scheduler, local_workers, connect_timeout_s=timeout_s)
    if spec is None:
        return None
    from qupath_rkd.cluster.session import ClusterSession

    session = ClusterSession(spec, device=device, echo=lambda line: click.echo(line, err=True))
    session.connect()
    return session


def _echo_operating_point(out_dir: Path) -> None:
    """Print the threshold in use and how it was found (from run.json)."""
    import json

    from qupath_rkd.outputs import RUN_JSON

    try:
        op = json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))["operating_point"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not isinstance(op, dict):
        return
    line = f"Threshold {op.get('threshold')} ({op.get('method')}"
    if op.get("false_lesions_per_slide") is not None:
        unit = "normal mosaic" if op.get("method") == "normal-patches" else "tumour-free slide"
        line += f": {op['false_lesions_per_slide']:.3g} false lesion(s) per {unit}"
    click.echo(line + f"; {op.get('note', '')})")
