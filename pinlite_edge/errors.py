"""Errors raised by pinlite-edge.

Every error a user can trigger with bad input derives from :class:`PinliteError`, so applications can catch one
type. Errors about a file always name the file.
"""
from __future__ import annotations

from pathlib import Path


class PinliteError(Exception):
    """Base class of every error pinlite-edge raises on purpose."""


class InputError(PinliteError, ValueError):
    """Arrays given to a model or runner do not match the input contract (shape, dtype, NaN/inf, empty batch)."""


class DecodeError(PinliteError):
    """A media file could not be decoded (missing, empty, truncated, not a video, timed out)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")

    def __reduce__(self):  # keep the (path, reason) signature across process boundaries (decode workers)
        return (type(self), (self.path, self.reason))


class NoAudioError(DecodeError):
    """A video file has no audio track (the detector needs both modalities)."""

    def __init__(self, path: str | Path, reason: str = "the file has no audio track"):
        super().__init__(path, reason)


class CheckpointError(PinliteError):
    """A checkpoint is missing, unreadable, or does not match the model it is loaded into."""


class ManifestError(PinliteError):
    """An artefact's manifest is missing, malformed, or does not match its artefact or the expected contract."""


class BackendUnavailableError(PinliteError, ImportError):
    """A runtime backend (onnxruntime, TensorRT, ExecuTorch, CUDA) is not installed or has no device here."""

    def __init__(self, backend: str, reason: str, install_hint: str | None = None):
        self.backend = backend
        self.reason = reason
        self.install_hint = install_hint
        msg = f"backend '{backend}' is unavailable: {reason}"
        if install_hint:
            msg += f" ({install_hint})"
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.backend, self.reason, self.install_hint))


class ExportError(PinliteError):
    """An export could not be produced (bad options for a format, failed lowering, missing tool)."""


class DatasetError(PinliteError):
    """A dataset specification or its files are invalid."""


class UsageError(PinliteError, ValueError):
    """A command-line option or API argument has an invalid value (CLIs exit with status 2 for these)."""


class DataOptionError(DatasetError, UsageError):
    """A ``--data`` / ``--data-option`` value that cannot work (an unknown or ill-typed option, a prefix naming no
    source): a usage error, exit 2. Data that cannot be read stays a :class:`DatasetError`, a failure (exit 1)."""


class ExportOptionError(ExportError, UsageError):
    """An export format or option value that cannot work (an unknown format or option, an option the format does not
    take, a value of the wrong type or range): a usage error (exit 2), and an :class:`ExportError` as before. An
    export that fails while it runs stays an :class:`ExportError` (exit 1)."""


class WriteError(PinliteError, OSError):
    """An output cannot be written safely: the target exists and is not this tool's output, is not a regular file
    (a folder, symlink or device node), or the folder is read-only, missing, or its device is full."""
