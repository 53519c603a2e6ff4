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
