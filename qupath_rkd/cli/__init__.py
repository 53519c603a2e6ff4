"""Command-line interface: a thin click group over the library.

Subcommands are imported lazily (only the one that runs is imported), so ``qupath-rkd --help``
and ``--version`` stay instant and never start torch, OpenSlide or a JVM. Each subcommand lives
in its own module of this package; register it in ``_COMMANDS`` below.

Library errors (:class:`qupath_rkd.errors.QupathRkdError`) become one line on stderr and exit
code 1; no traceback reaches the user unless ``QUPATH_RKD_DEBUG=1`` is set. Logged warnings
read as ``Warning: <sentence>`` on a line of their own (with ``-v``: level and logger name too).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from qupath_rkd import __version__

# command name -> ("module:attribute", one-line help shown by --help without importing it)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("qupath_rkd.cli.demo:demo", "Build the demo QuPath project and run the loop on it."),
    "doctor": ("qupath_rkd.cli.doctor:doctor", "Report what this installation can do."),
    "slide-info": ("qupath_rkd.cli.slide_info:slide_info", "Describe a whole-slide image."),
    "train-patches": (
        "qupath_rkd.cli.train_patches:train_patches",
        "Train the RD model on folders of patches.",
    ),
    "score-patches": (
        "qupath_rkd.cli.score_patches:score_patches",
        "Score folders of patches with a trained model.",
    ),
    "predict": ("qupath_rkd.cli.predict:predict", "Heatmaps and lesions for slides."),
    "evaluate": ("qupath_rkd.cli.evaluate:evaluate", "Camelyon16 lesion FROC and slide AUC."),
    "sync": ("qupath_rkd.cli.sync:sync", "Annotations in, detections out: the whole loop."),
    "config": ("qupath_rkd.cli.config:config", "Print the configuration in effect."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the subcommands from ``_COMMANDS`` without importing them."""
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:  # one line for our own errors
            from qupath_rkd.errors import QupathRkdError

            if isinstance(exc, QupathRkdError) and not os.environ.get("QUPATH_RKD_DEBUG"):
                click.echo(f"Error: {exc.one_line()}", err=True)
                ctx.exit(int(getattr(exc, "exit_code", 1)))
            raise


#: Log line format with ``-v`` (and for levels other than WARNING without it).
_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class UserFormatter(logging.Formatter):
    """Log lines for a user: a warning is one line ``Warning: <message>`` (a traceback logged
    with it shows with ``-v`` only), other levels keep the level and the logger's name
    (``ERROR qupath_rkd.sync.runner: ...``)."""

    def __init__(self) -> None:
        super().__init__(_LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.WARNING:
            return "Warning: " + record.getMessage()
        return super().format(record)


def _configure_logging(verbose: int) -> None:
    """Log to stderr: warnings only by default, INFO with ``-v``, DEBUG with ``-vv``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    if root.handlers:  # configured already (by an embedding program): as logging.basicConfig
        return
    handler = logging.StreamHandler()
    handler.setFormatter(UserFormatter() if verbose == 0 else logging.Formatter(_LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="qupath-rkd")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """qupath-rkd: find lymph-node metastases from a few tumour annotations in QuPath.

    Reverse knowledge distillation with a focal similarity loss (He & Li, MIDL 2023).
    Start with `qupath-rkd demo`, then `qupath-rkd sync PROJECT` on your own project.
    """
    _configure_logging(verbose)


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="qupath-rkd")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("Interrupted.", err=True)
        sys.exit(130)
