"""Atomic file writes: a crash at any moment leaves either the old file or the new one, never a partial one.

Writes go only to regular files: a target that exists and is a symlink, a folder, a device node or a FIFO is
refused (:class:`~pinlite_edge.errors.WriteError`), never replaced. Temporary files are named
``.<name>.<pid>.<random>.part`` in the target's folder (unique per process), and a writer removes the temporaries
that processes no longer alive left behind for the same target. ``OSError`` s while writing (read-only folder, full
device, a name too long) become :class:`~pinlite_edge.errors.WriteError` naming the target.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator

from pinlite_edge.errors import UsageError, WriteError

log = logging.getLogger(__name__)

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?:part|staging)$")

_HINTS = {
    errno.EACCES: "no permission to write there: choose a writable folder",
    errno.EPERM: "no permission to write there: choose a writable folder",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "the device is full: free space or choose another device",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another device",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter name",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "the path is a folder: give a file name",
}


def write_error(path: str | Path, exc: OSError, action: str = "cannot write") -> WriteError:
    """A :class:`WriteError` for ``exc`` naming ``path`` and what to do about it."""
    hint = _HINTS.get(exc.errno or -1, exc.strerror or str(exc))
    return WriteError(f"{action} {path}: {hint} ({exc.strerror or exc})")


def open_regular_file(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags)`` that refuses, in the same call, to follow a symlink at ``path`` (``O_NOFOLLOW``,
    where the platform has it) and then checks the opened descriptor is a regular file: a path checked first and
    opened later can be swapped for a symlink in between. :class:`WriteError` naming it; other ``OSError`` s as
    raised."""
    try:  # O_NONBLOCK: a FIFO swapped in does not block the open (no effect on a regular file)
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # Linux, macOS / FreeBSD
            raise WriteError(f"refusing to write {path}: it is a symbolic link, not a regular file") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise WriteError(f"refusing to write {path}: it is not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WriteError(f"refusing to write {path}: it is not a regular file")
    return fd


def check_writable_target(path: str | Path) -> None:
    """Refuse to replace anything but a regular file (or nothing): symlinks, folders, devices, FIFOs, sockets."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise write_error(path, exc) from None
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
            else "a device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
    raise WriteError(f"refusing to write {path}: it is {kind}, not a regular file; give the path of a regular file "
                     "(or remove it first)")


@contextlib.contextmanager
def folder_lock(folder: Path, doing: str = "writing", waiting: str | None = None) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock on the directory itself: no lock file), waited for: one writer at a
    time in it (an export's publish, a calibration's check and rewrite of a checkpoint, a quickstart's build of its
    workspace). ``doing`` names the work in the warning where the file system has no ``flock``; ``waiting``, when
    given, is logged as a warning when another process holds the lock, before waiting for it."""
    if not _HAS_FLOCK:  # not POSIX: no cross-process lock
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise write_error(folder, exc, "cannot open the folder of") from None
    try:
        if not lock_exclusive(fd, folder, doing, wait=False):
            if waiting is not None:
                log.warning("%s", waiting)
            lock_exclusive(fd, folder, doing, wait=True)
        yield
    finally:
        os.close(fd)  # releases the lock


_HAS_FLOCK = os.name == "posix"


def lock_exclusive(fd: int, what: Path, doing: str, *, wait: bool) -> bool:
    """``flock`` ``fd`` exclusively, waiting for it or not (``wait``): False when another process holds it and
    ``wait`` is False, else True. Where the platform or the file system has no ``flock`` (some network mounts) it
    warns, naming ``what`` and ``doing``, and returns True: the work goes on unlocked."""
    if not _HAS_FLOCK:
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        log.warning("cannot lock %s; %s without a lock (avoid running two such commands on it at once)", what, doing)
    return True


def make_output_folder(path: str | Path, option: str, keep: bool = True) -> None:
    """Create the output folder ``path`` (and its parents) before any work, or raise in one line naming ``option``:
    :class:`UsageError` when it is a file, :class:`WriteError` when it cannot be created or written (``/proc/x``, a
    read-only place, a file among its parents). ``keep=False`` removes again the folders it made (a check only)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder: give a folder")
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # e.g. under /proc: the file system takes no new folder there
            raise WriteError(f"{option}: cannot create the folder {path}: that place takes no new folders "
                             f"({exc.strerror}): choose another folder") from None
        raise write_error(path, exc, f"{option}: cannot create the folder") from None
    finally:
        if not keep:
            for p in made:  # the deepest first
                with contextlib.suppress(OSError):
                    p.rmdir()


_ON_WINDOWS = os.name == "nt"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if _ON_WINDOWS:  # os.kill(pid, 0) terminates the process there (TerminateProcess) instead of probing it
        import psutil

        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def temp_name(path: Path, kind: str = "part") -> Path:
    """A temporary name beside ``path``, unique to this process: ``.<name>.<pid>.<random>.<kind>``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _temp_target(name: str) -> str:
    """The file a temporary's ``name`` group stands for: a temporary of a temporary (an exporter rewriting its
    ``.staging`` file atomically) belongs to the final file too."""
    while (m := _TEMP_RE.match(name)) is not None:
        name = m.group("name")
    return name


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` (``.part`` / ``.staging``) whose writing process is gone; returns them."""
    path = Path(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or _temp_target(m.group("name")) != path.name or _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is fsynced and renamed over ``path``.

    Use for writers that insist on a filename (``torch.onnx.export``, ``save_file``, TensorRT serialisers).
    On an exception the temporary file is removed and ``path`` is untouched. A target that is not a regular file
    is refused before anything is written.
    """
    path = Path(path)
    check_writable_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path.parent, exc, "cannot create the folder of") from None
    clean_stale_temporaries(path)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, _final_mode(path))  # 0600 until now; give the file the mode a normal open() would
            check_writable_target(path)  # it may have become a symlink while we wrote
            os.replace(tmp, path)
        except OSError as exc:
            if isinstance(exc, WriteError):
                raise
            raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _final_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777  # replacing a file keeps its mode
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise write_error(path, exc) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as strict JSON (:func:`finite_json`: an undefined metric is ``null``, never ``NaN``)."""
    atomic_write_text(path, json.dumps(finite_json(obj), indent=2, sort_keys=False, allow_nan=False,
                                       default=json_default) + "\n")


def finite_json(obj: Any) -> Any:
    """``obj`` with numpy values and paths as JSON types and every non-finite float (NaN, +-inf: an AUC over one
    class, a metric of no samples) as None: Python writes them as ``NaN`` / ``Infinity``, which strict JSON readers
    (``JSON.parse``, Go's ``encoding/json``, jq) refuse, so one undefined number made a whole report unreadable."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") or isinstance(obj, Path):
        return finite_json(json_default(obj))
    return obj


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy values and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
