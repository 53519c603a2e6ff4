"""Typed errors raised by the library.

Library code raises these and never prints or exits; the CLI turns them into one-line
messages and an exit code. Each error carries an optional ``hint`` that says how to fix it.
Errors also subclass the matching built-in where one exists (e.g. ``FileNotFoundError``) so
callers can catch them either way.
"""

from __future__ import annotations


class QupathRkdError(Exception):
    """Base class of every error qupath-rkd raises on purpose.

    Args:
        message: what went wrong, naming the file or value at fault.
        hint: how to fix it (shown after the message by the CLI).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the hint on one line, as the CLI prints it."""
        text = self.message.replace("\n", " ")
        if self.hint:
            text = f"{text} — {self.hint}"
        return text

    def __str__(self) -> str:
        return self.one_line()


# --- slides -------------------------------------------------------------------------------
class SlideError(QupathRkdError):
    """Anything wrong with a whole-slide image."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide path does not exist or is not a file."""


class SlideReadError(SlideError, OSError):
    """OpenSlide cannot read the file (unsupported or corrupt format)."""


class UnknownResolutionError(SlideError, ValueError):
    """The slide's µm/px is not in its metadata and no override was given."""


class ResolutionError(SlideError, ValueError):
    """A requested µm/px cannot be served (e.g. finer than level 0)."""


class TileOutOfBoundsError(SlideError, ValueError):
    """A tile request lies (partly) outside the slide."""


# --- model and training -------------------------------------------------------------------
class ModelError(QupathRkdError):
    """The model, its weights or a checkpoint cannot be used."""


class TeacherWeightsError(ModelError, FileNotFoundError):
    """Pretrained teacher weights are not available offline."""


class CheckpointError(ModelError, ValueError):
    """A checkpoint is unreadable or made for another architecture/version."""


class DataError(QupathRkdError, ValueError):
    """Training or scoring data is missing, empty or unusable."""


class DeviceError(QupathRkdError, RuntimeError):
    """The requested compute device is not available."""


# --- QuPath projects and annotations -------------------------------------------------------
class ProjectError(QupathRkdError):
    """A QuPath project cannot be read or written."""


class AnnotationError(QupathRkdError, ValueError):
    """An annotation file or geometry is unusable."""


class ConfigError(QupathRkdError, ValueError):
    """A configuration value or file is invalid."""


class LockError(QupathRkdError, RuntimeError):
    """Another qupath-rkd process holds the project's lock."""


class SyncInterruptedError(QupathRkdError, RuntimeError):
    """A sync was stopped (Ctrl-C) before its commit: nothing was written to the project."""

    #: the shell's convention for a process stopped by SIGINT
    exit_code = 130


class ClusterError(QupathRkdError, RuntimeError):
    """The Dask cluster cannot be reached or used (address, versions, workers, GPUs)."""


class EvaluationError(QupathRkdError, ValueError):
    """Ground truth or predictions for evaluation are unusable."""


# --- QuPath bridge (issue 4) -----------------------------------------------------------------
class ProjectNotFoundError(ProjectError, FileNotFoundError):
    """The path is not a QuPath project (no such folder, or no ``project.qpproj`` in it)."""


class ProjectFormatError(ProjectError, ValueError):
    """``project.qpproj`` (or a ``data/<id>/server.json``) is not what QuPath writes."""


class MissingSlidesError(ProjectError, FileNotFoundError):
    """Image files of a project cannot be found; ``missing`` lists ``(image name, path)``."""

    def __init__(
        self, message: str, hint: str | None = None, missing: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message, hint)
        self.missing = list(missing or [])


class ProjectReadOnlyError(ProjectError, PermissionError):
    """The project folder cannot be written (qupath-rkd needs its ``qupath-rkd/`` folder)."""


class BackendUnavailableError(ProjectError, RuntimeError):
    """The requested QuPath backend cannot be used here (e.g. paquo without QuPath)."""
