"""Batch scanning: ``python -m pinlite_edge.scan DIR [--model ARTIFACT] --out results.jsonl``.

Walks ``DIR`` (recursively) for videos, decodes and featurises them in parallel worker processes, scores them with
:class:`pinlite_edge.detector.Detector` (the runner picked from the artefact's manifest) and appends one JSON line per
file to ``--out``, flushed and fsynced line by line. A file that cannot be decoded is recorded with its error and
the scan goes on; so is a file whose decoder kills its worker process (``"error_type": "WorkerCrash"``).

Files are streamed as ``Detector.detect`` streams them: a worker sends a file's windows a batch at a time (at most
:data:`AHEAD_BATCHES` ahead of the scorer) and the scanning process scores each batch as it arrives
(``Detector.score_stream``), so memory does not grow with a clip's length; clips up to the Detector's
``max_duration_s`` (one hour) are scored, with the results ``Detector.detect`` gives.

Resume: files already recorded in ``--out`` are skipped, so re-running the same command after a crash or a kill
finishes the job; a crash loses only the files in flight (decoded but not yet written), and a line cut short by a
kill is dropped (the file is truncated back to its last complete line) before new lines are appended. Every
record carries the ``settings`` that decided its verdict (model path and sha256, threshold, aggregate, stride, face
crop, offset scan); resuming with other settings is refused rather than mixing verdicts made two ways in one file.
Files recorded with an error are not retried unless ``--retry-errors`` is given (their error records are then taken
out of ``--out``, atomically, before they are scanned again, so each file keeps one line). A name that is not UTF-8 is written with JSON's ASCII escapes (it reads
back as the same ``os.fsdecode`` name).

One JSON line per file::

    {"path": "/abs/clip.mp4", "verdict": "fake", "fake_prob_max": 0.91, "fake_prob_mean": 0.62,
     "fake_prob_scan": 0.83, "aggregate": "scan", "threshold": 0.746, "offset_source": "offset scan",
     "offset_frames": 4, "offset_confidence": 0.7, "windows": 4, "window_fake_probs": [...],
     "window_local_scan_probs": [...], "window_starts": [...], "window_face_fractions": [...],
     "threshold_source": "operating point (...)", "verdict_windows": 2,
     "face_found": true, "face_coverage": 0.97, "faces_in_view": 1, "model_training_data": "real video + synthetic",
     "model_trained_on_real_video": true, "error": null, "error_type": null,
     "seconds": 0.41, "warnings": [], "settings": {"model": "/abs/pinlite-student.onnx", "model_sha256": "...",
     "threshold": 0.746, "short_thresholds": {"max": 0.879, "mean": 0.736, "scan": 0.962}, "aggregate": "scan",
     "stride": null, "face_crop": true, "offset_scan": true}}

A clip where no face is found anywhere has ``"verdict": "no-face"``, one with a digitally silent audio track
``"silent-audio"`` (their probabilities are still recorded). Bad files
have ``"verdict": null`` and ``"error"`` / ``"error_type"`` set (e.g. ``DecodeError``); every other key is there too,
``null`` or empty. ``"windows"`` is the number of windows (``detect --json``'s ``windows`` is the list of window
objects; here each of their fields is a ``window_*`` list). ``"seconds"``: the file's decoding and featurisation time.
Strict JSON: an undefined number would be ``null``, never ``NaN``.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from pinlite_edge.errors import CheckpointError, DecodeError, ManifestError, PinliteError, UsageError, WriteError
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS
from pinlite_edge.operating_point import AGGREGATES
from pinlite_edge.utils.atomic import (atomic_write_bytes, check_writable_target, finite_json, lock_exclusive,
                                       open_regular_file, temp_name, write_error)
from pinlite_edge.utils.cli import (OneLineParser, add_timeout_argument, add_verdict_arguments, configure_logging,
                                    report, run_command, timeout_problem, verdict_argument_problem)
from pinlite_edge.utils.checks import is_finite_number, is_whole
from pinlite_edge.utils.files import VIDEO_EXTENSIONS, input_file_problem
from pinlite_edge.utils.files import find_videos as walk_videos
from pinlite_edge.utils.logcapture import captured_warnings
from pinlite_edge.workspace_layout import add_model_argument, resolve_model

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = VIDEO_EXTENSIONS


@dataclass
class ScanConfig:
    root: Path
    model: Path
    out: Path
    workers: int = 2
    batch: int = 8
    stride: float | None = None
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    face_crop: bool = True
    timeout_s: float | None = 60.0
    threshold: float | None = None  # None: the model's operating point (else 0.5), as Detector decides
    aggregate: str = "scan"
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    #: replace an existing --out that is not a scan results file (atomically) instead of refusing
    force: bool = False
    #: on resume, scan again the files recorded with an error (a fixed file, a timeout on a busy machine)
    retry_errors: bool = False
    offset_scan: bool = True  # False: no offset scan (aggregate must be "max" or "mean")

    def __post_init__(self) -> None:
        for name in ("root", "model", "out"):  # a str or os.PathLike works as the CLI's Path does
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                setattr(self, name, Path(value))


#: most decoding processes a scan starts: a mistyped --workers 100000 started that many
MAX_WORKERS = 64


@dataclass
class ScanSummary:
    total: int  # video files found
    skipped: int  # already in the results file
    scored: int
    failed: int
    fake: int
    seconds: float
    no_face: int = 0  # scored, but no face anywhere in the clip (verdict "no-face")
    silent_audio: int = 0  # scored, but the audio track is digitally silent (verdict "silent-audio")
    several_faces: int = 0  # scored with more than one face in view: the verdict follows one of them
    skipped_fake: int = 0  # "fake" verdicts among the records already in the results file
    retried: int = 0  # files recorded with an error earlier and scanned again (--retry-errors)
    warned: int = 0  # files of this run whose record lists warnings (its "warnings")


# --------------------------------------------------------------------------------------------- files
def find_videos(root: Path, extensions: Iterable[str]) -> list[Path]:
    """Video files under ``root`` (:func:`pinlite_edge.utils.files.find_videos`), as absolute paths with symlinks
    resolved, each file once: links to a file already listed (or to one another) are not scanned again."""
    found = [_absolute(p) for p in walk_videos(root, extensions)]
    unique = list(dict.fromkeys(found))
    if len(unique) < len(found):
        log.info("%d of the %d video paths under %s lead to a file already listed (symbolic links): each file is "
                 "scanned once, under its resolved path", len(found) - len(unique), len(found), root)
    return unique


def _absolute(path: Path) -> Path:
    """``path`` with symlinks resolved; a broken link or a symlink loop keeps its absolute name (its decode then
    fails and is recorded)."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


RECORD_KEYS = frozenset({"path", "verdict", "error"})


#: why an existing ``--out`` that this tool did not write is refused
NOT_SCAN_OUTPUT = "exists and is not a scan results file (JSON lines written by this tool); refusing to append to it"


def unresumable(out: Path) -> str | None:
    """Why a scan must not resume into the existing file ``out``, or None when it may: empty, or every complete line
    a scan record (a JSON object with ``path``, ``verdict`` and ``error``) that says which model and ``settings``
    made it, a last line cut short by a kill allowed. A record without its settings would make the scan skip its
    file on trust."""
    try:
        with open(out, "rb") as fh:
            data = fh.read()
    except OSError:
        return NOT_SCAN_OUTPUT
    if not data:
        return None
    complete = data[: data.rfind(b"\n") + 1]
    lines = [(raw, rec) for _, raw, rec in _lines(complete) if raw.strip()]
    if not lines:  # only a first record cut short by a kill (every record starts with its path)
        try:  # a kill cuts a record short: one that parses whole is some tool's JSON without a newline, not ours
            whole = json.loads(data)
        except (ValueError, RecursionError):
            return None if not complete.strip() and data.lstrip().startswith(b'{"path": ') else NOT_SCAN_OUTPUT
        lines = [(data, whole if isinstance(whole, dict) else None)]
    if not all(rec is not None and RECORD_KEYS <= set(rec) for _, rec in lines):
        return NOT_SCAN_OUTPUT
    unsettled = sum(not isinstance(rec.get("settings"), dict) for _, rec in lines)
    if unsettled:
        return (f"holds {unsettled} record(s) that do not say which model and settings made them (written by another "
                "tool, or by an earlier pinlite-edge); resuming would skip their files on trust")
    return None


def _lines(data: bytes) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    """``(line number, the line with its newline, its record)`` for every line of a results file; the record is None
    for a line that is not one (not a JSON object with a ``path``): the one reading of the file's lines."""
    for i, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            rec = None
        yield i, raw, rec if isinstance(rec, dict) and "path" in rec else None


def check_output(out: Path, force: bool = False) -> None:
    """Refuse a results path that would destroy something: a folder, a symlink, a device node, or an existing file
    that is not a scan results file (unless ``force``: it is then replaced, atomically, by an empty results file).
    A name the OS rejects (too long) is refused too: :class:`UsageError` naming ``--out``."""
    try:
        check_writable_target(out)  # a folder, symlink, device node, FIFO; a name too long
        exists = out.exists()
        parent = out.parent if str(out.parent) else Path(".")
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is not a folder")
    except WriteError as exc:
        raise UsageError(f"--out: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None
    why = unresumable(out) if exists else None
    if why is not None:
        if not force:
            raise UsageError(f"--out {out} {why}: choose another file, or pass --force to replace it")
        log.warning("--force: replacing %s with a new results file", out)
        atomic_write_bytes(out, b"")


@dataclass
class PriorResults:
    """What an existing results file holds: the paths recorded, those recorded with an error or called fake, and
    the distinct ``settings`` its records were made with."""

    paths: set[str]
    settings: list[dict[str, Any]]
    errors: set[str] = dataclasses.field(default_factory=set)
    fake: set[str] = dataclasses.field(default_factory=set)  # paths recorded with the verdict "fake"


def read_results(out: Path) -> PriorResults:
    """:class:`PriorResults` of ``out``; an incomplete last line (a kill mid-write) is cut off the file."""
    prior = PriorResults(set(), [])
    scored: set[str] = set()
    if not out.is_file():
        return prior
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s ends with an incomplete line (interrupted write); dropping it", out)
        fd = open_regular_file(out, os.O_RDWR)
        try:
            os.ftruncate(fd, end)
            os.fsync(fd)
        finally:
            os.close(fd)
    for i, raw, rec in _lines(data[:end]):
        if rec is None:
            if raw.strip():
                log.warning("%s line %d is not a scan record; ignoring it", out, i)
            continue
        prior.paths.add(str(rec["path"]))
        settings = rec.get("settings")
        if isinstance(settings, dict) and settings not in prior.settings:
            prior.settings.append(settings)
        if rec.get("error") is None:
            scored.add(str(rec["path"]))
            if rec.get("verdict") == "fake":
                prior.fake.add(str(rec["path"]))
        else:
            prior.errors.add(str(rec["path"]))
    prior.errors -= scored  # a file with a verdict is done, whatever else the file holds about it
    return prior


def drop_error_records(writer: "JsonlWriter", paths: set[str]) -> None:
    """Rewrite the results file (atomically, :meth:`JsonlWriter.replace`) without the error records of ``paths``:
    they are about to be scanned again, and each file keeps one line. A kill before the rename leaves the file as it
    was; one after it leaves those files unrecorded, and the next run scans them."""
    kept = [raw for _, raw, rec in _lines(writer.path.read_bytes())  # a line that is no record stays as it was
            if rec is None or rec.get("error") is None or str(rec["path"]) not in paths]
    writer.replace(b"".join(kept))


def scan_settings(cfg: ScanConfig, detector: Any) -> dict[str, Any]:
    """What decides a record's verdict, stored in every record: resuming with other settings would mix verdicts
    made two ways in one file (:func:`check_resume`)."""
    from pinlite_edge.utils.hashing import sha256_file

    point = detector.operating_point
    short = {k: round(float(v), 6) for k, v in point.short_thresholds.items()} if point is not None else {}
    return {"model": str(cfg.model.resolve()), "model_sha256": sha256_file(cfg.model),
            "threshold": round(float(detector.threshold), 6),
            # short clips' thresholds (the operating point's; none with a caller's threshold): records made with and
            # without them would judge short clips two ways in one file
            "short_thresholds": short or None,
            "aggregate": cfg.aggregate, "stride": cfg.stride, "face_crop": cfg.face_crop, "offset_scan": cfg.offset_scan}


def check_resume(out: Path, prior: PriorResults, settings: dict[str, Any]) -> None:
    """:class:`UsageError` when ``out`` holds records made with other settings than this scan's (records without
    settings are refused earlier, by :func:`check_output`)."""
    for earlier in prior.settings:
        changed = [f"{k} {earlier.get(k)!r} -> {settings[k]!r}" for k in settings if earlier.get(k) != settings[k]]
        if changed:
            raise UsageError(f"--out {out} holds results made with other settings ({'; '.join(changed)}); "
                             "resuming would mix verdicts made two ways in one file: re-run with the settings it was "
                             "made with, or write to another --out")


class JsonlWriter:
    """Append-only JSON-lines file; every line is flushed and fsynced before the next file is processed.

    The file is locked (``flock``, exclusive, not waiting) from the moment it is opened: a second scan writing the
    same results file while this one runs is refused (:class:`UsageError`) instead of scoring every file again beside
    it, or, with ``--retry-errors``, replacing the file under it. ``OSError`` s (read-only folder, full device, a name
    too long) become :class:`WriteError` naming the file."""

    def __init__(self, path: Path):
        self.path = path
        self.created = not path.exists()  # removed again by discard() while it holds nothing
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_regular_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except WriteError:
            raise
        except OSError as exc:
            raise write_error(path, exc, "cannot write results to") from None
        try:
            _lock_exclusive(fd, path)
        except BaseException:
            os.close(fd)
            raise
        self.fh = os.fdopen(fd, "a", encoding="utf-8")

    def replace(self, data: bytes) -> None:
        """Replace the file's contents atomically: a new file, locked before it is renamed over the old one, so the
        lock is never let go."""
        tmp = temp_name(self.path)
        try:
            fd = open_regular_file(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL)
            try:
                _lock_exclusive(fd, tmp)
                os.write(fd, data)
                os.fsync(fd)
                os.replace(tmp, self.path)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(self.path, exc, "cannot write results to") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.close()
        self.fh = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        record = finite_json(record)  # strict JSON: never NaN / Infinity
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate-escaped bytes): ASCII escapes round-trip
            line = json.dumps(record, allow_nan=False)
        try:
            self.fh.write(line + "\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise write_error(self.path, exc, "cannot write results to") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a full device fails the flush again; the error was reported
            self.fh.close()

    def discard(self) -> None:
        """Close; a file this writer created that is still empty is removed (a scan that failed before its first
        record leaves nothing behind)."""
        with contextlib.suppress(OSError):
            if self.created and os.fstat(self.fh.fileno()).st_size == 0:
                self.path.unlink()
        self.close()


def _lock_exclusive(fd: int, path: Path) -> None:
    """Lock the results file without waiting (:func:`~pinlite_edge.utils.atomic.lock_exclusive`);
    :class:`UsageError` when another scan holds it."""
    if not lock_exclusive(fd, path, "scanning", wait=False):
        raise UsageError(f"--out {path} is being written by another scan that is still running; wait for it to end "
                         "(then run this again to resume) or choose another --out")


# --------------------------------------------------------------------------------------------- decoding jobs
#: Batches a decoding process may have ready ahead of the scoring process (bounded memory: a fast decoder waits).
AHEAD_BATCHES = 4
#: Files given to one decoding process at a time (the next one decodes while the scorer reads the last).
FILES_PER_WORKER = 2


@dataclass(frozen=True)
class JobOptions:
    """What a decoding job needs (picklable: it travels to the worker processes)."""

    contract: dict[str, Any]
    face_crop: bool
    stride: float | None
    timeout_s: float | None
    batch: int
    max_duration_s: float
    max_pixels: int
    scan_offsets: tuple[int, ...] = ()  # the Detector's offset scan: windows carry shifted-audio MFCCs


#: ``("batch", path, (frames, mfcc, starts, mfcc_shifts, shifts_in_track, face_fractions))`` (mfcc_shifts and
#: shifts_in_track None without a scan), then ``("end", path, info)`` or ``("error", path, info)``.
Message = tuple[str, str, Any]
JobFn = Callable[[str, JobOptions], Iterator[Message]]


def featurise_job(path: str, opts: JobOptions) -> Iterator[Message]:
    """Stream one file's windows in batches of ``opts.batch`` (:func:`~pinlite_edge.features.open_windows`, the
    streaming decoder ``Detector.detect`` uses), then an ``"end"`` message with the face information. Never raises:
    errors come back as an ``"error"`` message (exception objects do not all survive pickling across processes).
    ``seconds`` counts the time spent decoding, not the time waiting for the scorer to take a batch."""
    import numpy as np

    from pinlite_edge.contract import InputContract
    from pinlite_edge.features import open_windows

    busy = 0.0
    resumed = time.perf_counter()
    warnings: list[str] = []  # what the SDK logs about this file while decoding it: the record's "warnings"

    def error(msg: str, kind: str) -> Message:
        return "error", path, {"error": msg, "error_type": kind, "seconds": busy + time.perf_counter() - resumed,
                               "warnings": list(warnings)}

    problem = input_file_problem(path)
    if problem is not None:  # e.g. a /proc file reporting size 0, a symlink loop: refused before decoding
        yield error(str(DecodeError(path, problem)), "DecodeError")
        return
    failure: tuple[str, str] | None = None
    with captured_warnings() as warnings:
        try:
            stream, windows = open_windows(path, InputContract.from_dict(opts.contract), face_crop=opts.face_crop,
                                           stride_seconds=opts.stride, timeout_s=opts.timeout_s,
                                           max_duration_s=opts.max_duration_s, max_pixels=opts.max_pixels,
                                           scan_offsets=opts.scan_offsets)
            batch: list[Any] = []
            for w in itertools.chain(windows, [None]):
                if w is not None:
                    batch.append(w)
                if batch and (w is None or len(batch) == opts.batch):
                    shifts = (np.stack([b.mfcc_shifts for b in batch]), [b.shifts_in_track for b in batch]) \
                        if opts.scan_offsets else (None, None)
                    msg = ("batch", path, (np.stack([b.frames for b in batch]), np.stack([b.mfcc for b in batch]),
                                           [b.start_seconds for b in batch], *shifts,
                                           [b.face_fraction for b in batch]))
                    batch = []
                    busy += time.perf_counter() - resumed
                    yield msg
                    resumed = time.perf_counter()
        except PinliteError as exc:
            failure = (str(exc), type(exc).__name__)
        except Exception as exc:  # a library failure the features module did not wrap: recorded, never fatal
            log.debug("unexpected error decoding %s", path, exc_info=True)
            failure = (f"unexpected {type(exc).__name__} while decoding {path}: {exc}", type(exc).__name__)
    # the last message leaves the capture first: a caller that stops reading after it must not leave it collecting
    if failure is not None:
        yield error(*failure)
        return
    yield "end", path, {"face_found": stream.face_found, "face_coverage": stream.face_coverage,
                        "audio_silent": stream.audio_silent,
                        "faces_in_view": stream.faces_in_view, "seconds": busy + time.perf_counter() - resumed,
                        "warnings": list(warnings)}


class WorkerCrashed(Exception):
    """The decoding process died (a decoder segfault, the OOM killer) before the end of a file's stream."""


class FileStream:
    """One file's messages as the scorer reads them: :meth:`windows` for ``Detector.score_stream``, then
    :attr:`info` (face information and decode seconds, or the decoding error) for the record."""

    def __init__(self, path: str, messages: Iterator[Message], retry: bool = False):
        self.path = path
        self.retry = retry  # a crash of its worker re-runs it alone (no record now)
        self.info: dict[str, Any] = {"path": path}
        self.crashed = False
        self._messages = messages
        self._ended = False
        self._start = time.perf_counter()

    def windows(self) -> Iterator[Any]:
        """The windows, batch by batch as they arrive; a decoding error raises :class:`_DecodeFailed` (its message is
        in :attr:`info`), a dead worker :class:`WorkerCrashed`."""
        from pinlite_edge.features import Window

        for kind, path, payload in self._read():
            if kind == "batch":
                frames, mfcc, starts, shifts, inside, faces = payload
                for i, (f, m, s) in enumerate(zip(frames, mfcc, starts)):
                    yield Window(frames=f, mfcc=m, start_seconds=s,
                                 mfcc_shifts=None if shifts is None else shifts[i],
                                 shifts_in_track=True if inside is None else bool(inside[i]), face_fraction=faces[i])
            elif kind == "error":
                raise _DecodeFailed(self.info["error"])

    def face_info(self) -> tuple[bool | None, float | None, int | None, bool | None]:
        return (self.info.get("face_found"), self.info.get("face_coverage"), self.info.get("faces_in_view"),
                self.info.get("audio_silent"))

    def close(self) -> None:
        """Read what is left of this file's stream (scoring stopped early) so the next file's messages come next."""
        with contextlib.suppress(WorkerCrashed):
            for _ in self._read():
                pass

    def _read(self) -> Iterator[Message]:
        while not self._ended:
            try:
                msg = next(self._messages)
            except (WorkerCrashed, StopIteration):
                self._ended = self.crashed = True
                self.info.update(_crash_record(self.path, time.perf_counter() - self._start))
                raise WorkerCrashed(self.path) from None
            if msg[0] != "batch":
                self._ended = True
                self.info.update(msg[2])
            yield msg


class _DecodeFailed(Exception):
    pass


def _crash_record(path: str, seconds: float) -> dict[str, Any]:
    return {"path": path, "error": f"the decoding worker process crashed (killed or aborted) while decoding {path}",
            "error_type": "WorkerCrash", "seconds": seconds}


def _worker_main(job: JobFn, opts: JobOptions, tasks: Any, results: Any) -> None:
    """Decoding process: decode the files that arrive on ``tasks`` one after the other; a sender thread ships the
    messages on ``results`` while the next batch decodes, at most :data:`AHEAD_BATCHES` waiting (bounded memory)."""
    import queue
    import threading

    outbox: queue.Queue = queue.Queue(maxsize=AHEAD_BATCHES)

    def send() -> None:
        try:
            while (msg := outbox.get()) is not None:
                results.send(msg)
        except OSError:  # the scanning process is gone (killed): nobody will read, so stop decoding too
            os._exit(1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        while (path := tasks.recv()) is not None:
            for msg in job(path, opts):
                outbox.put(msg)
    outbox.put(None)
    sender.join()


class _Worker:
    """A decoding process with its own task and result pipes. The parent holds only the read end of ``results``,
    so the death of the process reads as end of file (``EOFError``), never as a hang."""

    def __init__(self, job: JobFn, opts: JobOptions):
        ctx = mp.get_context("spawn")  # the parent has torch / onnxruntime thread pools, which must not be forked
        tasks_r, self.tasks = ctx.Pipe(duplex=False)
        self.results, results_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker_main, args=(job, opts, tasks_r, results_w), daemon=True)
        self.proc.start()
        tasks_r.close()
        results_w.close()
        self.assigned: collections.deque[str] = collections.deque()  # files given to it, not yet read to their end

    def assign(self, path: str) -> None:
        self.assigned.append(path)
        with contextlib.suppress(OSError):  # a dead process: found when its messages are read
            self.tasks.send(path)

    def messages(self) -> Iterator[Message]:
        while True:
            try:
                msg = self.results.recv()
            except (EOFError, OSError):
                raise WorkerCrashed(self.assigned[0]) from None
            if msg[0] != "batch":
                self.assigned.popleft()
            yield msg
            if msg[0] != "batch":
                return

    def close(self) -> None:
        """Stop the process: an idle one exits when told; one still decoding (the scan stopped early) is killed."""
        if not self.assigned:
            with contextlib.suppress(OSError):
                self.tasks.send(None)
            self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.tasks.close()
        self.results.close()


def _streams(paths: Sequence[Path], opts: JobOptions, processes: int, job: JobFn | None = None,
             retry: bool = True) -> Iterator[FileStream]:
    """Every file's :class:`FileStream`, in order; read each (or :meth:`FileStream.close` it) before the next.

    With ``processes`` >= 1, that many processes decode (:data:`FILES_PER_WORKER` files each in flight, each at most
    :data:`AHEAD_BATCHES` batches ahead). A file that kills its process (a decoder segfault, the OOM killer) cannot
    take the scan down: that process is replaced, and its files are re-run one by one, each alone in a fresh
    process, once the others are done; a file that crashes again gets a ``WorkerCrash`` record (``FileStream.info``)
    and the scan goes on. With ``processes`` 0 decoding runs in the scanning process itself, which such a file
    would kill (``--workers`` 0 or 1).
    """
    job = job or featurise_job
    if processes < 1:
        for p in paths:
            yield FileStream(str(p), job(str(p), opts))
        return
    suspects: list[str] = []
    workers = [_Worker(job, opts) for _ in range(processes)]
    try:
        queue = collections.deque(str(p) for p in paths)
        order: collections.deque[_Worker] = collections.deque()  # the worker of each file in flight, in order
        while queue or order:
            for w in workers:
                while queue and len(w.assigned) < FILES_PER_WORKER:
                    w.assign(queue.popleft())
                    order.append(w)
            w = order.popleft()
            path = w.assigned[0]
            stream = FileStream(path, w.messages(), retry=retry)
            yield stream
            stream.close()
            if stream.crashed and retry:
                lost = list(w.assigned)  # the file read and those queued behind it on the dead process
                suspects += lost
                order = collections.deque(o for o in order if o is not w)
                w.close()
                workers[workers.index(w)] = _Worker(job, opts)
                log.warning("a decoding worker crashed on %s; re-running %s alone at the end", path,
                            ", ".join(lost))
    finally:
        for w in workers:
            w.close()
    for p in suspects:
        yield from _streams([Path(p)], opts, 1, job, retry=False)


# --------------------------------------------------------------------------------------------- scoring
def _score(detector: Any, stream: FileStream) -> tuple[Any, BaseException | None]:
    """Score one file as its windows arrive: ``(result, None)``, or ``(None, error)`` for a failure while scoring.
    A decoding error or a crashed worker gives ``(None, None)``: the error is in ``stream.info``."""
    try:
        return detector.score_stream(stream.windows(), stream.path, face_info=stream.face_info), None
    except (_DecodeFailed, WorkerCrashed):
        return None, None
    except PinliteError as exc:  # e.g. a runner rejecting this file's features: record, go on
        return None, exc
    except Exception as exc:  # noqa: BLE001 - any failure on one file is recorded, the scan goes on
        log.debug("unexpected error scoring %s", stream.path, exc_info=True)
        return None, RuntimeError(f"unexpected {type(exc).__name__} while scoring {stream.path}: {exc}")
    finally:
        stream.close()  # what scoring left unread (an error mid-file)


def record_for(job: dict[str, Any], result: Any = None, error: BaseException | None = None,
               model: dict[str, Any] | None = None) -> dict[str, Any]:
    """One results line; ``model``: what every record says of the model (its training data), failed files too."""
    rec: dict[str, Any] = {"path": job["path"], "verdict": None, "fake_prob_max": None, "fake_prob_mean": None,
                           "fake_prob_scan": None, "aggregate": None, "threshold": None, "threshold_source": None,
                           "verdict_windows": None, "offset_source": None,
                           "offset_frames": None, "offset_confidence": None, "windows": 0,
                           "window_fake_probs": [], "window_local_scan_probs": [], "window_starts": [],
                           "window_face_fractions": [],
                           "face_found": job.get("face_found"),
                           "face_coverage": job.get("face_coverage"), "faces_in_view": job.get("faces_in_view"),
                           "error": job.get("error"),
                           "error_type": job.get("error_type"), "seconds": round(float(job["seconds"]), 4)}
    if error is not None:
        rec["error"], rec["error_type"] = str(error), type(error).__name__
    if result is not None:
        rec.update(verdict=result.verdict, threshold=round(result.threshold, 6),
                   threshold_source=result.threshold_source, verdict_windows=result.evidence_windows(),
                   fake_prob_max=round(result.fake_prob_max, 6),
                   fake_prob_mean=round(result.fake_prob_mean, 6), aggregate=result.aggregate,
                   fake_prob_scan=None if result.fake_prob_scan is None else round(result.fake_prob_scan, 6),
                   offset_source=result.offset_source, offset_frames=result.offset_frames,
                   offset_confidence=round(result.offset_confidence, 6), windows=len(result.windows),
                   window_fake_probs=[round(w.fake_prob, 6) for w in result.windows],
                   window_local_scan_probs=[None if w.fake_prob_local_scan is None else round(w.fake_prob_local_scan, 6)
                                            for w in result.windows],
                   window_starts=[round(w.start_seconds, 4) for w in result.windows],
                   window_face_fractions=[None if w.face_fraction is None else round(w.face_fraction, 4)
                                          for w in result.windows],
                   face_found=result.face_found,
                   face_coverage=None if result.face_coverage is None else round(result.face_coverage, 4),
                   faces_in_view=result.faces_in_view)
    rec.update(model or {})
    # decoding's (the worker's) and scoring's, once each, in order
    rec["warnings"] = list(dict.fromkeys([*job.get("warnings", []), *(result.warnings if result is not None else [])]))
    return rec


MAX_THREADS = 1024


def check_config(cfg: ScanConfig) -> None:
    """:class:`UsageError` for every option value that cannot work, before anything is loaded or written."""
    problem = None
    if not isinstance(cfg.root, Path) or not cfg.root.is_dir():
        problem = f"scan folder {cfg.root} does not exist or is not a folder"
    elif not os.access(cfg.root, os.R_OK | os.X_OK):
        problem = f"scan folder {cfg.root} cannot be read (no permission)"
    elif (model_problem := input_file_problem(cfg.model)) is not None:
        problem = f"--model {cfg.model}: {model_problem}"
    elif not is_whole(cfg.workers, 0, MAX_WORKERS) or not is_whole(cfg.batch, 1):
        problem = (f"--workers must be a whole number in 0..{MAX_WORKERS} and --batch one >= 1, got {cfg.workers!r} "
                   f"and {cfg.batch!r}")
    elif (why := timeout_problem(cfg.timeout_s)) is not None:
        problem = why
    elif cfg.stride is not None and not (is_finite_number(cfg.stride, numpy=True) and cfg.stride > 0):
        problem = f"--stride must be positive finite seconds, got {cfg.stride}"
    elif cfg.threshold is not None and not (is_finite_number(cfg.threshold, numpy=True)
                                            and 0.0 <= cfg.threshold <= 1.0):
        problem = f"--threshold must be a probability in 0..1, got {cfg.threshold}"
    elif cfg.threads is not None and not is_whole(cfg.threads, 1, MAX_THREADS, numpy=True):
        problem = f"--threads must be in 1..{MAX_THREADS}, got {cfg.threads}"
    elif cfg.aggregate not in AGGREGATES:
        problem = f"--aggregate must be one of {list(AGGREGATES)}, got {cfg.aggregate!r}"
    elif (why := verdict_argument_problem(cfg.aggregate, cfg.offset_scan)) is not None:
        problem = why
    elif os.path.isdir(cfg.out):
        problem = f"--out {cfg.out} is a folder: give a results file name (e.g. {cfg.out / 'results.jsonl'})"
    if problem is not None:
        raise UsageError(problem)


def scan(cfg: ScanConfig) -> ScanSummary:
    """Scan ``cfg.root``. Fatal problems raise :class:`PinliteError`: :class:`UsageError` for bad options (a
    missing folder or model, an --out that is not this tool's output), :class:`WriteError` when the results cannot
    be written, ``ManifestError`` / ``CheckpointError`` for a bad model. A failure on one file is recorded. A
    second scan into the same results file while this one runs is refused (:class:`JsonlWriter`)."""
    start = time.perf_counter()
    check_config(cfg)
    if cfg.face_crop:
        from pinlite_edge.features import face_detector_available

        if not face_detector_available():
            raise PinliteError("face crop needs OpenCV's Haar cascade, which this OpenCV lacks; install "
                               "opencv-python-headless<5 or pass --no-face-crop for pre-cropped videos")
    check_output(cfg.out, cfg.force)
    writer = JsonlWriter(cfg.out)  # opened and locked before it is read: a second scan into it is refused now
    try:
        return _scan_into(cfg, writer, start)
    except BaseException:
        writer.discard()
        raise
    finally:
        writer.close()


def _scan_into(cfg: ScanConfig, writer: JsonlWriter, start: float) -> ScanSummary:
    """:func:`scan` once its results file is open and locked."""
    from pinlite_edge.detector import Detector

    videos = find_videos(cfg.root, cfg.extensions)
    out = cfg.out.resolve()
    videos = [v for v in videos if v != out]
    prior = read_results(cfg.out)
    retry = {str(v) for v in videos if str(v) in prior.errors} if cfg.retry_errors else set()
    todo = [v for v in videos if str(v) not in prior.paths or str(v) in retry]
    log.info("%d videos under %s, %d already in %s, %d to scan", len(videos), cfg.root, len(videos) - len(todo),
             cfg.out, len(todo))
    options: dict[str, Any] = {}
    if cfg.device:
        options["device"] = cfg.device
    if cfg.threads:
        options["threads"] = cfg.threads
    try:
        detector = Detector.load(cfg.model, threshold=cfg.threshold, aggregate=cfg.aggregate,
                                 stride_seconds=cfg.stride, face_crop=cfg.face_crop, batch_size=cfg.batch,
                                 scan_offsets=DEFAULT_SCAN_OFFSETS if cfg.offset_scan else None, **options)
    except (ManifestError, CheckpointError) as exc:  # the --model argument, as detect and bench treat it (exit 2)
        raise UsageError(f"--model: {exc}") from None
    try:
        settings = scan_settings(cfg, detector)
        check_resume(cfg.out, prior, settings)
        if todo:
            detector.warn_if_synthetic_only(cfg.root)
        if retry:
            log.info("--retry-errors: %d files recorded with an error are scanned again", len(retry))
            drop_error_records(writer, retry)
    except BaseException:
        detector.close()
        raise
    scored = failed = fake = no_face = silent_audio = several_faces = warned = 0
    model_info = {"model_training_data": detector.training_data_text,
                  "model_trained_on_real_video": detector.trained_on_real_video}
    try:
        from pinlite_edge.utils.progress import progress_bar

        bar = progress_bar(total=len(todo), unit="video", enabled=cfg.progress, file=sys.stderr)
        opts = JobOptions(contract=detector.contract.to_dict(), face_crop=cfg.face_crop, stride=cfg.stride,
                          timeout_s=cfg.timeout_s, batch=cfg.batch, max_duration_s=detector.limits.max_duration_s,
                          max_pixels=detector.limits.max_pixels, scan_offsets=detector.scan_offsets)
        processes = min(cfg.workers, len(todo)) if cfg.workers >= 2 else 0  # never more processes than files
        with contextlib.closing(_streams(todo, opts, processes)) as streams:
            for stream in streams:
                result, error = _score(detector, stream)
                if stream.crashed and stream.retry:
                    continue  # re-run alone at the end
                job = stream.info
                rec = record_for(job, result, error, model_info)
                rec["settings"] = settings
                writer.write(rec)
                if processes:  # logged in a decoding process, these reached this one in the job's record only
                    for message in job.get("warnings", []):  # repeats counted per message without the file's path
                        log.warning("%s", message, extra={"repeat_key": message.replace(job["path"], "")})
                warned += bool(rec.get("warnings"))
                if rec["error"] is None:
                    scored += 1
                    fake += rec["verdict"] == "fake"
                    no_face += rec["verdict"] == "no-face"
                    silent_audio += rec["verdict"] == "silent-audio"
                    several_faces += (rec.get("faces_in_view") or 0) > 1
                else:
                    failed += 1
                    log.info("%s: %s", job["path"], rec["error"])
                bar.update(1)
                bar.set_postfix(fake=fake, errors=failed, refresh=False)
        bar.close()
    finally:
        detector.close()
    return ScanSummary(total=len(videos), skipped=len(videos) - len(todo), scored=scored, failed=failed, fake=fake,
                       seconds=time.perf_counter() - start, no_face=no_face, several_faces=several_faces,
                       silent_audio=silent_audio,
                       skipped_fake=sum(str(v) in prior.fake for v in set(videos) - set(todo)),
                       retried=len(retry), warned=warned)


# --------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m pinlite_edge.scan",
        description="Scan a folder tree of videos with a PIN-Lite artefact; one JSON line per file. Re-running "
                    "the same command resumes: files already in --out are skipped. Exit status: 0 when every file "
                    "was scored or was already in --out, 1 when a file could not be scored (its error is in --out; "
                    "--retry-errors scans it again) or the scan failed, 2 for a usage error, 130 when interrupted.")
    p.add_argument("folder", type=Path, help="folder to scan (recursively)")
    add_model_argument(p)
    p.add_argument("--out", type=Path, required=True,
                   help="results file (JSON lines; appended to, resumable). An existing file that is not a scan "
                        "results file is refused")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out that is not a scan results file (atomically) instead of refusing")
    p.add_argument("--workers", type=int, default=2,
                   help=f"decoding processes (0 or 1: decode in the main process; at most {MAX_WORKERS}, and never "
                        "more than the files to scan) (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="windows per inference call (default: %(default)s)")
    p.add_argument("--stride", type=float, default=None,
                   help="window stride in seconds (default: one window, 0.64 s, no overlap)")
    p.add_argument("--retry-errors", action="store_true",
                   help="when resuming, scan again the files --out records with an error (their error lines are "
                        "replaced); without it they are skipped like every recorded file")
    p.add_argument("--extensions", nargs="+", default=list(DEFAULT_EXTENSIONS), metavar="EXT",
                   help="video file extensions to scan (default: %(default)s)")
    p.add_argument("--no-face-crop", action="store_true", help="videos are already face crops (centre crop only)")
    add_timeout_argument(p)
    add_verdict_arguments(p)
    p.add_argument("--device", default=None, help="runner device: cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log every failed file and progress details, and every warning (without it a warning from "
                        "one place is shown 5 times; each file's are in its record). The decoding processes of "
                        "--workers 2 or more send their warnings here, not their INFO lines (--workers 0 shows all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.INFO if args.verbose else logging.WARNING, None if args.verbose else
                      f"each file's are in its record's \"warnings\" in {args.out}; -v shows them all")
    try:
        model = resolve_model(args.model)
    except PinliteError as exc:
        return report(exc, "python -m pinlite_edge.scan")
    cfg = ScanConfig(root=args.folder, model=model, out=args.out, workers=args.workers, batch=args.batch,
                     stride=args.stride, extensions=tuple(args.extensions), face_crop=not args.no_face_crop,
                     timeout_s=args.timeout or None, threshold=args.threshold, aggregate=args.aggregate,
                     offset_scan=not args.no_offset_scan,
                     device=args.device, threads=args.threads, progress=not args.no_progress, force=args.force,
                     retry_errors=args.retry_errors)

    def run() -> int:
        summary = scan(cfg)  # a PinliteError: 2 for a usage error, 1 for a scan that failed
        no_face = f", {summary.no_face} without a face" if summary.no_face else ""
        no_face += f", {summary.silent_audio} with silent audio" if summary.silent_audio else ""
        several = (f", {summary.several_faces} with several faces in view (each verdict follows one face; "
                   "\"faces_in_view\" in the results)") if summary.several_faces else ""
        # where to look: a failed file's error and every file's warnings are in its line of --out, not on stderr
        failed = (f" (their \"error\" in {args.out}; --retry-errors scans them again)" if summary.failed else "")
        warned = f"{summary.warned} with warnings (their \"warnings\" in {args.out}); " if summary.warned else ""
        print(f"{summary.total} videos: {summary.scored} scored ({summary.fake} fake{no_face}{several}), "
              f"{summary.failed} failed{failed}, "
              f"{summary.skipped} already in {args.out}"
              f"{f' ({summary.skipped_fake} of them fake)' if summary.skipped else ''}"
              f"{f', {summary.retried} recorded with an error scanned again' if summary.retried else ''}; "
              f"{warned}{summary.seconds:.1f} s")
        return 1 if summary.failed else 0  # a file that could not be scored: exit 1, after the summary

    return run_command("python -m pinlite_edge.scan", run,
                       f"every file finished so far is in {args.out}: re-run the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
