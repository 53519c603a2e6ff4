"""`qupath-rkd doctor`: what this installation can do, and how to fix what it cannot."""

from __future__ import annotations

import platform
import sys

import click


def _check(label: str, ok: bool | None, detail: str) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "--  "}[ok]
    click.echo(f"[{mark}] {label:<26} {detail}")


@click.command()
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Also check that this Dask scheduler answers (tcp://HOST:8786) and its workers.",
)
def doctor(scheduler: str | None) -> None:
    """Report Python, torch/CUDA, OpenSlide, QuPath (paquo), the cluster extra and the teachers
    available offline."""
    from qupath_rkd import __version__

    _check("qupath-rkd", True, __version__)
    _check("python", True, f"{platform.python_version()} ({sys.executable})")

    try:
        import torch

        cuda = torch.cuda.is_available()
        detail = f"{torch.__version__}; CUDA " + (
            f"usable: {torch.cuda.get_device_name(0)}"
            if cuda
            else "not usable (training runs on the CPU)"
        )
        _check("torch", True, detail)
    except Exception as exc:  # a broken install is exactly what doctor reports
        _check("torch", False, f"cannot import torch: {exc}")

    try:
        import openslide

        _check(
            "openslide",
            True,
            f"library {openslide.__library_version__}, python {openslide.__version__}",
        )
    except Exception as exc:
        _check("openslide", False, f"{exc} — pip install openslide-python openslide-bin")

    from qupath_rkd.qupath.backends.paquo_backend import paquo_available

    found, detail = paquo_available()
    # not a failure: without QuPath the GeoJSON exchange backend is used
    _check(
        "QuPath (paquo)",
        True if found else None,
        detail if found else f"{detail}; without it qupath-rkd uses the GeoJSON exchange folder",
    )

    try:
        from qupath_rkd.model.teachers import teacher_availability

        for name, (available, how) in teacher_availability().items():
            # a teacher without local weights is not a fault: it downloads or takes a file
            _check(f"teacher {name}", True if available else None, how)
    except ImportError as exc:
        _check("teachers", False, f"model package unavailable: {exc}")

    _check_cluster(scheduler)


def _check_cluster(scheduler: str | None) -> None:
    """The 'cluster' extra (Dask), and with ``--scheduler`` whether it answers."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        # not a failure: without it everything runs in one process
        _check("cluster (dask)", None, "not installed: pip install 'qupath-rkd[cluster]'")
        if scheduler:
            _check("scheduler", False, f"{scheduler}: cannot check without Dask")
        return
    from importlib.metadata import version

    _check("cluster (dask)", True, f"distributed {version('distributed')}")
    if not scheduler:
        return
    from qupath_rkd.cluster import cluster_spec
    from qupath_rkd.cluster.session import ClusterSession
    from qupath_rkd.errors import QupathRkdError

    lines: list[str] = []
    try:
        spec = cluster_spec(scheduler, None, connect_timeout_s=5.0, where="--scheduler")
        assert spec is not None
        with ClusterSession(spec, device="cpu", echo=lines.append):
            pass
        _check("scheduler", True, lines[-1] if lines else scheduler)
    except QupathRkdError as exc:
        _check("scheduler", False, exc.one_line())
