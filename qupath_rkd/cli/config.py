"""`qupath-rkd config PROJECT`: the configuration in effect and where each value came from."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("project", type=click.Path(path_type=Path), required=False)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a value (as sync's --set would); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--init",
    is_flag=True,
    help="Write PROJECT/qupath-rkd/config.toml with every key and its meaning "
    "(the values in effect); refuses to overwrite an existing file.",
)
def config(project: Path | None, overrides: tuple[str, ...], as_json: bool, init: bool) -> None:
    """Print the configuration `sync` would use for PROJECT.

    Layers, later ones win: packaged defaults, PROJECT/qupath-rkd/config.toml, command line.
    Without PROJECT, the defaults.
    """
    from qupath_rkd.errors import ConfigError
    from qupath_rkd.sync.config import (
        config_path,
        load_config,
        parse_overrides,
        write_config,
    )

    project_dir = _project_dir(project) if project is not None else None
    cfg = load_config(project_dir, parse_overrides(overrides))
    if init:
        if project_dir is None:
            raise click.UsageError("--init needs a PROJECT")
        path = config_path(project_dir)
        if path.exists():
            raise ConfigError(f"{path} exists already", hint="edit it, or delete it first")
        write_config(project_dir, cfg, only_non_default=False)
        click.echo(f"wrote {path}")
        return
    if as_json:
        rows = [{"key": k, "value": v, "source": s} for k, v, s in cfg.rows()]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if cfg.project_file is not None:
        state = "exists" if cfg.project_file.is_file() else "not present: defaults apply"
        click.echo(f"config file: {cfg.project_file} ({state})")
    from qupath_rkd.sync.config import toml_value

    table = [(k, toml_value(v), s) for k, v, s in cfg.rows()]
    wk = max(len(r[0]) for r in table)
    wv = max(len(r[1]) for r in table)
    for key, value, source in table:
        click.echo(f"{key:<{wk}}  {value:<{wv}}  # {source}")


def _project_dir(project: Path) -> Path:
    """The project folder (accepts the folder or its project.qpproj); must exist."""
    from qupath_rkd.errors import ProjectNotFoundError

    path = project.parent if project.name.endswith(".qpproj") else project
    if not path.is_dir():
        raise ProjectNotFoundError(
            f"{project}: no such folder", hint="give the folder that holds project.qpproj"
        )
    if not (path / "project.qpproj").is_file():
        raise ProjectNotFoundError(
            f"{path}: not a QuPath project (no project.qpproj)",
            hint="give the folder that holds project.qpproj",
        )
    return path
