"""End-to-end time per video and real-time factor, beside model-only latency (SPEC §7, issue #14 item 5).

A video is scored the way an app scores it, through the SDK's own path: :class:`pinlite_edge.detector.Detector`
(``detect(path)``: one PyAV decode pass, face track + mouth crop, resampling, MFCC, windows, then the model on every
window and, as Detector does by default, on every window's shifted audio for the offset scan: 7 model calls per
window, :mod:`pinlite_edge.offset_scan`). Per video the bench also times the featurisation alone
(``pinlite_edge.features.prepare_windows`` with the scan's shifted MFCCs, shared by every model) and the model alone
on those windows (``Detector.score_windows``, scan included). The real-time factor is
end-to-end time / video duration (below 1: faster than real time). One untimed featurisation of the first video
warms the decoder and loads the face detector first; the models are warm from the latency pass.

Videos: ``--e2e-data DIR|FILE``; by default the real clips of ``../shared/data/real-av`` when present, else a few
synthetic clips written as H.264/AAC mp4 files (``pinlite_edge.data.write_clip_video``) into the bench's cache.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import PinliteError
from pinlite_edge.runtimes import BaseRunner
from pinlite_edge.utils.files import VIDEO_EXTENSIONS
from pinlite_edge.utils.files import find_videos as walk_videos
from pinlite_edge.workspace_layout import real_data_places

log = logging.getLogger(__name__)

SYNTHETIC_SECONDS = 3.0
SYNTHETIC_SIZE = 256  # px: a small phone video, bigger than the model's input so the crop has work to do


@dataclass
class Videos:
    paths: list[Path]
    source: str


def find_videos(spec: str | None, count: int, cache_dir: Path, contract: InputContract) -> Videos:
    """``spec``: None/"auto" (real clips if present, else synthetic), "synthetic", a folder or a video file."""
    if count < 1:
        raise PinliteError(f"--e2e-clips must be >= 1, got {count}")
    if spec in (None, "auto"):
        for folder in real_data_places():
            found = walk_videos(folder) if folder.is_dir() else []
            if found:
                return Videos(found[:count], f"real clips in {folder}")
        spec = "synthetic"
    if spec == "synthetic":
        from pinlite_edge.data.synthetic import MP4_VIDEO_OPTIONS, write_clip_video
        from pinlite_edge.utils.hashing import json_sha256

        folder = cache_dir / "e2e-videos"
        # the encoder's options are in the name: a clip cached by another writer (before H.264 was written
        # reproducibly, say) is another stream to decode, so it is not reused
        encoder = json_sha256(MP4_VIDEO_OPTIONS)[:8]
        paths = []
        for i in range(count):
            path = folder / f"synthetic-{i}-{int(SYNTHETIC_SECONDS * 1000)}ms-{SYNTHETIC_SIZE}px-{encoder}.mp4"
            if not path.is_file():
                write_clip_video(path, seed=1000 + i, contract=contract, duration_s=SYNTHETIC_SECONDS,
                                 frame_size=SYNTHETIC_SIZE)
            paths.append(path)
        return Videos(paths, f"synthetic mp4 clips ({SYNTHETIC_SECONDS:g} s, {SYNTHETIC_SIZE} px) in {folder}")
    path = Path(spec)
    if path.is_file():
        return Videos([path], str(path))
    if path.is_dir():
        found = walk_videos(path)
        if not found:
            raise PinliteError(f"--e2e-data {path} holds no video ({', '.join(VIDEO_EXTENSIONS)})")
        return Videos(found[:count], f"videos in {path}")
    raise PinliteError(f"--e2e-data {spec!r} is neither 'auto', 'synthetic', a folder nor a video file")


def check_end_to_end_backends() -> None:
    """Fail before any measurement when the end-to-end pass cannot run: it decodes with PyAV and crops faces with
    OpenCV's Haar cascades. :class:`BackendUnavailableError` naming what is missing and ``--no-e2e``."""
    from pinlite_edge.errors import BackendUnavailableError
    from pinlite_edge.features.facecrop import require_face_detector
    from pinlite_edge.features.facetrack import CASCADE_INSTALL_HINT

    try:
        import av  # noqa: F401, PLC0415 - only checked here

        require_face_detector()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(exc.backend, f"end-to-end timing needs it: {exc.reason}",
                                      f"{CASCADE_INSTALL_HINT}; or pass --no-e2e to bench the model alone") from None
    except ImportError as exc:
        raise BackendUnavailableError("av (PyAV)", f"end-to-end timing decodes with it: {exc}",
                                      "pip install av; or pass --no-e2e to bench the model alone") from None


def _summary(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def measure_end_to_end(runners: Sequence[BaseRunner], videos: Videos, contract: InputContract, *,
                       batch_size: int = 8) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Time every (active) runner on every video. Returns (per-video featurisation facts, one dict per runner)."""
    from pinlite_edge.detector import Detector
    from pinlite_edge.features import prepare_windows

    detectors = [Detector(r, batch_size=batch_size) for r in runners]
    prepare_windows(videos.paths[0], contract)  # untimed warm-up: face detector loaded, decoder paths warm
    durations, featurise, per_runner = [], [], [{"model_s": [], "e2e_s": [], "rtf": []} for _ in runners]
    for path in videos.paths:
        t0 = time.perf_counter()
        clip, windows = prepare_windows(path, contract, scan_offsets=detectors[0].scan_offsets if detectors else ())
        featurise.append(time.perf_counter() - t0)
        durations.append(clip.duration)
        for det, acc in zip(detectors, per_runner):
            t0 = time.perf_counter()
            det.score_windows(windows, str(path), face_found=clip.face_found, face_coverage=clip.face_coverage)
            acc["model_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            det.detect(path)
            e2e = time.perf_counter() - t0
            acc["e2e_s"].append(e2e)
            acc["rtf"].append(e2e / clip.duration if clip.duration > 0 else float("nan"))
    info = {"source": videos.source, "videos": [str(p) for p in videos.paths], "num_videos": len(videos.paths),
            "seconds_of_video": _summary(durations), "featurise_s": _summary(featurise),
            "featurise_rtf_median": float(np.median(np.asarray(featurise) / np.asarray(durations)))}
    rows = [{"num_videos": len(videos.paths), "model_s": _summary(a["model_s"]), "end_to_end_s": _summary(a["e2e_s"]),
             "rtf": _summary(a["rtf"])} for a in per_runner]
    return info, rows
