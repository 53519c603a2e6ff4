"""Whether paquo can find a QuPath installation, without starting a JVM."""

from __future__ import annotations


def qupath_status() -> tuple[bool, str]:
    """(found, detail): detail is the installation found, or the exact reason and the fix."""
    try:
        from paquo import settings
        from paquo.jpype_backend import find_qupath
    except Exception as exc:
        return False, f"paquo cannot be imported ({exc}); pip install paquo"
    try:
        qupath_dir, *_ = find_qupath(
            qupath_dir=settings.qupath_dir or None,
            qupath_search_dirs=settings.qupath_search_dirs,
            qupath_search_dir_regex=settings.qupath_search_dir_regex,
            qupath_search_conda=settings.qupath_search_conda,
            qupath_prefer_conda=settings.qupath_prefer_conda,
        )
    except Exception as exc:
        return False, (
            f"{exc}; set PAQUO_QUPATH_DIR=/path/to/QuPath (or run `paquo get_qupath --install-path "
            "DIR 0.5.1`) — without it qupath-rkd uses the GeoJSON exchange folder and the "
            "groovy/ scripts"
        )
    return True, f"found at {qupath_dir}"
