"""`qupath-rkd sync PROJECT`: annotations in, detections out (a thin shell over sync/)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click


def _parse_slide_mpps(items: tuple[str, ...]) -> dict[str, float]:
    """``("LN-01.svs=0.25", ...)`` -> ``{"LN-01.svs": 0.25}`` (the last ``=`` splits, so an
    image name may hold ``=``)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or not number > 0 or number == float("inf"):
            raise click.BadParameter(
                f"expected IMAGE=UM_PER_PX with a positive number, e.g. LN-01.svs=0.25; got "
                f"{item!r}",
                param_hint="--slide-mpp",
            )
        out[name.strip()] = number
    return out


def _refuse_torchrun() -> None:
    """sync runs in one process: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank would take
    the project's lock, label, train, predict and commit (docs/architecture.md, "Data-parallel
    training")."""
    import os

    from qupath_rkd.errors import ConfigError

    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
        raise ConfigError(
            "sync runs in one process, not under torchrun (WORLD_SIZE is "
            f"{os.environ['WORLD_SIZE']})",
            hint="start it without torchrun; spread its slides with --scheduler or "
            "--local-cluster; train data-parallel with torchrun ... -m qupath_rkd train-patches",
        )


@click.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say what would be done; write nothing.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a configuration value (see `qupath-rkd config`); repeatable.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "paquo", "geojson"]),
    default=None,
    help="How to talk to QuPath (default: sync.backend, auto).",
)
@click.option("--device", default=None, help="torch device: auto, cpu, cuda, cuda:1, mps.")
@click.option(
    "--slide-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder searched (recursively, by file name) for slides that moved.",
)
@click.option(
    "--slide-mpp",
    "slide_mpps",
    multiple=True,
    metavar="IMAGE=UM_PER_PX",
    help="Level-0 µm/px of an image (QuPath's image name) whose slide file and QuPath record "
    'none, e.g. --slide-mpp "LN-01.svs=0.25"; repeatable. For this run only: to keep it, '
    'put [images] mpp = {"LN-01.svs" = 0.25} in PROJECT/qupath-rkd/config.toml.',
)
@click.option(
    "--update-uris",
    is_flag=True,
    help="Rewrite project.qpproj's image paths for slides found elsewhere (close QuPath "
    "first; the old file is kept as project.qpproj.qupath-rkd.bak).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Predict on a running Dask scheduler (tcp://HOST:8786); sets cluster.scheduler.",
)
@click.option(
    "--local-cluster",
    "local_cluster",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Predict on a local Dask cluster of N worker processes; sets cluster.local_workers.",
)
def sync(
    project: Path,
    dry_run: bool,
    overrides: tuple[str, ...],
    backend: str | None,
    device: str | None,
    slide_root: Path | None,
    slide_mpps: tuple[str, ...],
    update_uris: bool,
    scheduler: str | None,
    local_cluster: int | None,
) -> None:
    """Train on PROJECT's annotations when they changed, predict every stale image, write the
    predictions back for QuPath, and print a per-slide table.

    Annotations come from PROJECT/qupath-rkd/annotations (groovy/export_annotations.groovy)
    or, with a QuPath installation, through paquo. Exit code 1 when any slide failed.
    """
    from qupath_rkd.sync.config import load_config, parse_overrides
    from qupath_rkd.sync.report import format_outcome, report_path
    from qupath_rkd.sync.runner import run_sync

    _refuse_torchrun()
    values = parse_overrides(overrides)
    if backend is not None:
        values["sync.backend"] = backend
    if device is not None:
        values["sync.device"] = device
    if scheduler is not None:  # a flag replaces the config's cluster, whichever kind
        values["cluster.scheduler"], values["cluster.local_workers"] = scheduler, 0
    if local_cluster is not None:
        values["cluster.local_workers"] = local_cluster
        values.setdefault("cluster.scheduler", "")
    project_dir = project.parent if project.name.endswith(".qpproj") else project
    config = load_config(project_dir if project_dir.is_dir() else None, values)
    if slide_mpps:  # on top of images.mpp from config.toml / --set
        merged = {**config.get("images.mpp"), **_parse_slide_mpps(slide_mpps)}
        values["images.mpp"] = merged
        config = load_config(project_dir if project_dir.is_dir() else None, values)
    from qupath_rkd.cli.progress import ProgressRenderer

    started = time.perf_counter()
    with ProgressRenderer() as progress:
        outcome = run_sync(
            project,
            config,
            dry_run=dry_run,
            slide_root=slide_root,
            update_uris=update_uris,
            progress=progress,
            echo=lambda line: progress.echo(line, err=True),
        )
    click.echo(format_outcome(outcome, dry_run=dry_run))
    elapsed = time.perf_counter() - started
    if dry_run:
        click.echo(f"dry run: nothing written ({elapsed:.1f} s)")
    else:
        n = len(outcome.predicted)
        click.echo(
            f"{n} slide(s) predicted, {len(outcome.failed)} failed; "
            f"report: {report_path(outcome.project_dir)} ({elapsed:.1f} s)"
        )
        if n:
            click.echo(
                "In QuPath: run groovy/import_predictions.groovy (Run for project) to see them."
            )
    if outcome.exit_code:
        sys.exit(outcome.exit_code)
