"""Input files: the checks before one is opened (regular, readable, of a size that can be trusted), and the one
walk that finds the videos in a folder (scan, folder datasets, calibrate, the bench's end-to-end videos)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Iterable

log = logging.getLogger(__name__)

#: the file suffixes every folder walk takes as videos (``scan --extensions`` can change its own)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".mpg", ".mpeg", ".webm", ".m4v", ".flv", ".ts")
#: the largest JSON metadata file read (a manifest, a checkpoint's record): they are a few KB, a bigger one is not ours
MAX_METADATA_BYTES = 16 << 20


def names_a_file_inside(location: str) -> bool:
    """Whether ``location``, a path a metadata file (labels CSV, LAV-DF metadata, ONNX external data) gives relative
    to its folder, stays inside that folder: not empty, not absolute, no ``..`` part ('/' or '\\' separated)."""
    return parts_inside(location) is not None


def parts_inside(location: str) -> tuple[str, ...] | None:
    """The parts of ``location`` ('/' or '\\' separated) where :func:`names_a_file_inside` holds, else None."""
    rel = PurePosixPath(location.replace("\\", "/"))
    return rel.parts if location and not rel.is_absolute() and ".." not in rel.parts else None


def find_videos(root: str | Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under ``root`` (recursive, sorted), as ``root`` joined with their relative paths. Hidden folders
    and files (names starting with ".", e.g. macOS "._" copies) are skipped; symlinked folders are not followed (a
    symlink loop cannot trap the walk); a folder that cannot be read is skipped with a warning naming it."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        log.warning("cannot read folder %s (%s); its files are left out", exc.filename, exc.strerror or exc)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, name) for name in sorted(filenames)
                     if not name.startswith(".") and Path(name).suffix.lower() in exts)
    return sorted(found)


def input_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file, or None when it can.

    Refused: a missing path, a folder, anything but a regular file (device node, FIFO, socket), a symlink loop, a
    name the OS rejects (too long), an unreadable file, and virtual files such as those under ``/proc`` or ``/sys``,
    which report size 0 although they have content (they are not files of data). A real zero-byte file is "empty".
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file does not exist"
    except OSError as exc:  # ELOOP, ENAMETOOLONG, EACCES on a parent folder...
        return f"cannot access it ({exc.strerror or exc})"
    except ValueError as exc:  # an embedded NUL byte
        return f"not a valid file name ({exc})"
    if stat.S_ISDIR(st.st_mode):
        return "it is a folder, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device node, FIFO or socket)"
    if not os.access(path, os.R_OK):
        return "no permission to read it"
    if st.st_size == 0:
        try:
            with open(path, "rb") as fh:
                has_content = bool(fh.read(1))
        except OSError as exc:
            return f"cannot read it ({exc.strerror or exc})"
        if has_content:
            return ("not a regular file: it reports size 0 but has content (a virtual file, e.g. under /proc or "
                    "/sys)")
        return "file is empty (0 bytes)"
    return None
