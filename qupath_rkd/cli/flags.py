"""Flags shared by several commands, with one meaning each (issue 11.5).

- ``--slide-mpp``: a slide's level-0 µm/px (``slide-info``, ``evaluate``, ``predict``, ``sync``);
- ``--tile-mpp``: the µm/px at which ``predict`` reads tiles (the model's own by default);
- ``--patch-mpp``: the µm/px of the patches ``train-patches`` learns from.

The old ``--mpp`` meant each of these in turn; it still works where it did, hidden from
``--help``, and prints a one-line deprecation warning naming the new flag
(:func:`deprecated_alias`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Positive µm/px values.
MPP_TYPE = click.FloatRange(min=0, min_open=True)


def deprecated_alias(old: str, new: str, dest: str) -> Callable[[F], F]:
    """A hidden option ``old`` that sets the parameter ``dest`` (the option ``new``), with a
    one-line warning on stderr. Giving both with different values is a usage error.

    Apply it below ``@click.command`` and above the function, like any ``@click.option``.
    """
    hidden_dest = f"_deprecated_{dest}"

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(hidden_dest, None)
            if value is not None:
                click.echo(f"Warning: {old} is deprecated here; use {new} (same value).", err=True)
                current = kwargs.get(dest)
                if current is not None and current != value:
                    raise click.UsageError(
                        f"{old} {value:g} and {new} {current:g} disagree; give {new} only"
                    )
                kwargs[dest] = value
            return func(*args, **kwargs)

        option = click.option(old, hidden_dest, type=MPP_TYPE, default=None, hidden=True)
        return option(wrapper)  # type: ignore[return-value]

    return decorate


#: A tile µm/px within this share of the model's counts as the model's own.
MPP_MATCH_TOLERANCE = 0.01


def check_tile_mpp(
    model_path: Path, model_mpp: float | None, tile_mpp: float | None, allow: bool
) -> None:
    """Refuse (one line) a ``--tile-mpp`` other than the µm/px the model was trained at,
    unless ``--allow-mpp-mismatch``; then warn on stderr. A model that records no µm/px is
    not checked (``predict`` then needs ``--tile-mpp``).

    Raises:
        click.UsageError: the µm/px differ and ``allow`` is false.
    """
    if tile_mpp is None or model_mpp is None:
        return
    if abs(tile_mpp / model_mpp - 1.0) <= MPP_MATCH_TOLERANCE:
        return
    ratio = (model_mpp / tile_mpp) ** 2
    what = (
        f"{model_path.name} was trained at {model_mpp:g} µm/px; reading it at --tile-mpp "
        f"{tile_mpp:g} scores tissue at another magnification ({ratio:.3g}× the tiles)"
    )
    if not allow:
        raise click.UsageError(
            f"{what}: pass --allow-mpp-mismatch to do so anyway, or leave out --tile-mpp"
        )
    click.echo(f"Warning: {what} (--allow-mpp-mismatch).", err=True)
