"""Face-found rate and featurisation time on every real clip of ``../shared/data/real-av`` (issue #12, item 2).

For each clip (``grid/*.mpg`` and ``talking/*.mp4``) it runs what ``Detector.detect`` runs before the model:
``pinlite_edge.features.prepare_windows`` = one PyAV decode of audio + video, face tracking, mouth crop, audio
alignment and resampling, and the MFCC + frame normalisation of every window (default stride). It reports per clip
``face_found``, ``face_coverage`` (fraction of the frames the detector ran on where it found the tracked face),
``faces_in_view`` (the most faces the tracker's whole-image searches saw at once: more than one, and the verdict
follows one person of several), and
the wall time per second of video: the median over ``--repeats`` runs, beside this process's CPU time (robust to other
processes sharing the core) and the wall time of the decode alone (the same PyAV pass with no consumer), so the share
of decoding is visible.

Run it on one core, as the target (<= 0.1 s per second of 720p 25 fps video) is stated::

    taskset -c 0 python benchmarks/featurise_real.py --repeats 3

With ``--model ARTIFACT`` (the contract is then the model's) it also times the whole ``Detector.detect(path)`` per
clip, end to end as an app runs it: with the offset scan (the default, 7 model calls per window; ``--scan-offsets``
another grid) and without it (``scan_offsets=None``), the model on one thread.

With ``--model`` it also measures what counting the faces in view costs (``faces_in_view``: the tracker's census,
a cheaper whole-image pass every ``facetrack.CENSUS_SECONDS``): ``Detector.detect`` on the 720p clip with the census
on and off, alternating, ``--repeats`` times each, in the same run.

Threads of OpenCV / BLAS are set to 1 here. The machine may be shared: the load average before and after is recorded.
Writes ``benchmarks/results/featurise_real/<machine>.{json,md}`` with the run's record (``benchmarks/_record.py``;
``--out-dir`` is the results root, ``--stem`` the bench name).
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # before numpy loads its BLAS; not when imported (a test importing it leaked them)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import RESULTS_DIR, build_record, fingerprint_files, repo_relative, write_result  # noqa: E402
from benchmarks.real_faces import add_scan_offsets_argument  # noqa: E402
from pinlite_edge.contract import contract_for_preset  # noqa: E402
from pinlite_edge.features import FaceCropConfig, prepare_windows  # noqa: E402
from pinlite_edge.features.deadline import Deadline  # noqa: E402
from pinlite_edge.features.decode import decode_media  # noqa: E402

log = logging.getLogger("featurise_real")

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "real-av"
TARGET_S_PER_S = 0.1  # issue #12: end to end <= 0.1 s per second of 720p 25 fps video on one core
#: The code this benchmark runs (an uncommitted change there is recorded in the report).
CODE_PATHS = ("pinlite_edge/features", "pinlite_edge/contract.py", "pinlite_edge/errors.py", "pinlite_edge/detector.py",
              "pinlite_edge/offset_scan.py", "benchmarks/featurise_real.py")
KEY_CLIPS = {"720p": "facebookresearch_VisualVoice__test_videos__interview.mp4",
             "1080p": "jixinya_EAMM__test__crop__M030_sad_3_001.mp4"}


@dataclass
class ClipResult:
    folder: str
    name: str
    width: int
    height: int
    fps: float
    frames: int
    video_seconds: float
    windows: int
    face_found: bool | None
    face_coverage: float | None
    seconds: list[float]  # featurisation wall time of each repeat
    cpu_seconds: list[float]  # featurisation CPU time (this process) of each repeat
    decode_seconds: list[float]  # decode-only wall time of each repeat
    e2e_seconds: list[float] | None = None  # Detector.detect wall time (offset scan on), with --model
    e2e_noscan_seconds: list[float] | None = None  # the same with the scan off
    faces_in_view: int | None = None  # most faces seen at once by the tracker's whole-image searches

    @property
    def s_per_s(self) -> float:
        return float(np.median(self.seconds)) / self.video_seconds

    @property
    def cpu_s_per_s(self) -> float:
        return float(np.median(self.cpu_seconds)) / self.video_seconds

    @property
    def decode_s_per_s(self) -> float:
        return float(np.median(self.decode_seconds)) / self.video_seconds

    @property
    def e2e_s_per_s(self) -> float | None:
        return None if not self.e2e_seconds else float(np.median(self.e2e_seconds)) / self.video_seconds

    @property
    def e2e_noscan_s_per_s(self) -> float | None:
        return None if not self.e2e_noscan_seconds else \
            float(np.median(self.e2e_noscan_seconds)) / self.video_seconds


class _Null:
    """Video consumer that drops frames (decode-only timing)."""

    def start(self, declared_fps: float | None) -> None:
        pass

    def add(self, frame: Any, seconds: float, turns: int) -> None:
        pass


def _clip_geometry(path: Path) -> tuple[int, int]:
    import av

    from pinlite_edge.features.decode import main_streams

    with av.open(str(path)) as c:
        ctx = main_streams(c)[0].codec_context
        return int(ctx.width), int(ctx.height)


def measure(path: Path, contract: Any, repeats: int, config: FaceCropConfig,
            detectors: tuple[Any, Any] | None = None) -> ClipResult:
    times, cpu_times, decode_times = [], [], []
    e2e: list[float] = []
    e2e_noscan: list[float] = []
    clip = windows = None
    for _ in range(repeats):
        if detectors is not None:
            for det, acc in zip(detectors, (e2e, e2e_noscan)):
                t0 = time.perf_counter()
                det.detect(path)
                acc.append(round(time.perf_counter() - t0, 4))
        t0 = time.perf_counter()
        decode_media(path, Deadline(path, None), video=_Null(), require_video=True)
        decode_times.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        clip, windows = prepare_windows(path, contract, face_config=config, timeout_s=None)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    width, height = _clip_geometry(path)
    return ClipResult(folder=path.parent.name, name=path.name, width=width, height=height, fps=round(clip.fps, 3),
                      frames=int(clip.frames.shape[0]), video_seconds=round(clip.video_seconds, 3),
                      windows=len(windows), face_found=clip.face_found,
                      face_coverage=None if clip.face_coverage is None else round(clip.face_coverage, 4),
                      seconds=[round(t, 4) for t in times], cpu_seconds=[round(t, 4) for t in cpu_times],
                      decode_seconds=[round(t, 4) for t in decode_times],
                      e2e_seconds=e2e or None, e2e_noscan_seconds=e2e_noscan or None,
                      faces_in_view=clip.faces_in_view)


def breakdown(path: Path, contract: Any, config: FaceCropConfig) -> dict[str, float]:
    """CPU seconds per second of video of the parts of one ``prepare_windows`` run (after one warm-up run): each
    part is timed around the function the pipeline calls (the parts nest: ``decode pass`` includes ``frame
    consumer``, which includes ``face detection`` and ``crop to RGB``, and ``audio resampling``; ``windows`` includes
    ``MFCC`` and ``frame normalisation``). The decode pass is the generator ``iter_media``: each step is timed."""
    import pinlite_edge.features.clipstream as clipstream
    import pinlite_edge.features.cropstream as cropstream
    import pinlite_edge.features.facetrack as facetrack
    import pinlite_edge.features.pipeline as pipeline
    import pinlite_edge.features.streamresample as streamresample
    import pinlite_edge.features.windows as windows
    from collections import defaultdict

    spent: dict[str, float] = defaultdict(float)
    decode_pass = "decode pass (demux + decode audio/video + frame and audio consumers)"
    frame_consumer = "frame consumer (planes, face track, crops)"
    resampling = "audio resampling"
    targets = [(clipstream, "iter_media", decode_pass),
               (cropstream.CropStream, "add", frame_consumer),
               (facetrack.FaceTrack, "observe", "face detection (Haar search/follow)"),
               (cropstream.YuvFrame, "crop_rgb", "crop to RGB"),
               (streamresample.StreamResampler, "add", resampling),
               (streamresample.StreamResampler, "finish", resampling),
               (pipeline, "clip_windows", "windows (MFCC + frame normalisation)"),
               (windows, "compute_mfcc", "MFCC"), (windows, "normalise_frames", "frame normalisation")]
    generators = {"iter_media"}
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]

    called: set[str] = set()

    def timed(fn: Any, key: str) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            called.add(key)
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - t0
        return run

    def timed_steps(fn: Any, key: str) -> Any:
        def run(*a: Any, **k: Any) -> Any:  # a generator: time every step, pass its return value on
            called.add(key)
            it = fn(*a, **k)
            while True:
                t0 = time.process_time()
                try:
                    item = next(it)
                except StopIteration as stop:
                    return stop.value
                finally:
                    spent[key] += time.process_time() - t0
                yield item
        return run

    prepare_windows(path, contract, face_config=config, timeout_s=None)  # warm-up (imports, cascade files)
    try:
        for (owner, name, key), (_, _, fn) in zip(targets, originals):
            setattr(owner, name, (timed_steps if name in generators else timed)(fn, key))
        t0 = time.process_time()
        clip, _ = pipeline.prepare_windows(path, contract, face_config=config, timeout_s=None)
        total = time.process_time() - t0
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    if decode_pass not in called:  # the pipeline no longer calls what is patched: the parts would be zeros
        raise RuntimeError(f"breakdown: prepare_windows did not call clipstream.iter_media; update {__file__}")
    for key in sorted({key for _, _, key in targets} - called):
        log.warning("breakdown: %r was never called on %s (reported as 0)", key, path.name)
    out = {"total": total / clip.video_seconds}
    out.update({key: spent[key] / clip.video_seconds for _, _, key in targets})
    out["decoding itself (decode pass - frame consumer - audio resampling)"] = \
        out[decode_pass] - out[frame_consumer] - out[resampling]
    return {k: round(v, 4) for k, v in out.items()}


# --------------------------------------------------------------------------------------------- provenance
def versions() -> dict[str, Any]:
    import av
    import cv2
    import python_speech_features
    import scipy

    return {"numpy": np.__version__, "av": av.__version__,
            "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
            "opencv": cv2.__version__, "scipy": scipy.__version__,
            "python_speech_features": getattr(python_speech_features, "__version__", "unknown")}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------- report
def summary(results: list[ClipResult]) -> dict[str, Any]:
    def rate(rs: list[ClipResult]) -> dict[str, Any]:
        cov = [r.face_coverage for r in rs if r.face_coverage is not None]
        return {"clips": len(rs), "face_found": sum(bool(r.face_found) for r in rs),
                "face_found_rate": round(sum(bool(r.face_found) for r in rs) / len(rs), 4) if rs else None,
                "mean_face_coverage": round(float(np.mean(cov)), 4) if cov else None,
                "several_faces": sum((r.faces_in_view or 0) > 1 for r in rs),
                "median_s_per_s": round(float(np.median([r.s_per_s for r in rs])), 4) if rs else None,
                "median_cpu_s_per_s": round(float(np.median([r.cpu_s_per_s for r in rs])), 4) if rs else None}

    out: dict[str, Any] = {"all": rate(results)}
    for folder in sorted({r.folder for r in results}):
        out[folder] = rate([r for r in results if r.folder == folder])
    for key, name in KEY_CLIPS.items():
        hit = [r for r in results if r.name == name]
        if hit:
            r = hit[0]
            out[key] = {"clip": name, "s_per_s": round(r.s_per_s, 4), "cpu_s_per_s": round(r.cpu_s_per_s, 4),
                        "decode_s_per_s": round(r.decode_s_per_s, 4),
                        "meets_target": r.s_per_s <= TARGET_S_PER_S if key == "720p" else None}
            if r.e2e_s_per_s is not None:
                out[key].update(e2e_s_per_s=round(r.e2e_s_per_s, 4),
                                e2e_noscan_s_per_s=round(r.e2e_noscan_s_per_s or math.nan, 4),
                                e2e_meets_target=r.e2e_s_per_s <= TARGET_S_PER_S if key == "720p" else None)
    return out


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# Featurisation of the real clips: face-found rate and time per second of video",
        "",
        f"Uncommitted changes in the code it runs: {', '.join(report['code_changed']) or 'none'}  ",
        f"Run on CPUs {report['affinity']}; load average before {report['load_before']}, after "
        f"{report['load_after']}  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in report['library_versions'].items() if k != 'ffmpeg')}; "
        f"FFmpeg {', '.join(f'{k} {v}' for k, v in report['library_versions']['ffmpeg'].items())}  ",
        f"Preset `{report['preset']}` ({report['frame_size']} px crops), {report['repeats']} repeats per clip (median "
        f"quoted); face crop config: `{report['face_config']}`",
        "",
        "What is timed: `prepare_windows` (one PyAV decode of audio and video, face tracking, mouth crop, audio "
        "alignment + resampling, MFCC and frame normalisation of every window). `decode` is the same PyAV pass "
        "with no consumer (frames decoded, nothing converted).",
        "",
        "## Summary",
        "",
        "| set | clips | face found | mean face coverage | clips with several faces in view | median s per s of "
        "video (wall) | (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ("grid", "talking", "all"):
        if key in s:
            r = s[key]
            lines.append(f"| {key} | {r['clips']} | {r['face_found']}/{r['clips']} | {r['mean_face_coverage']} | "
                         f"{r.get('several_faces', 'n/a')} | {r['median_s_per_s']} | {r['median_cpu_s_per_s']} |")
    lines.append("")
    for key in ("720p", "1080p"):
        if key in s:
            r = s[key]
            target = (f" (target <= {TARGET_S_PER_S}: {'met' if r['meets_target'] else 'MISSED'})"
                      if key == "720p" else "")
            lines.append(f"- {key} clip `{r['clip']}`: {r['s_per_s']} s per second of video (wall; CPU "
                         f"{r['cpu_s_per_s']}), of which decode {r['decode_s_per_s']}{target}")
            if "e2e_s_per_s" in r:
                e2e_target = (f" (target <= {TARGET_S_PER_S}: {'met' if r['e2e_meets_target'] else 'MISSED'})"
                              if key == "720p" else "")
                lines.append(f"  - end to end with `{report.get('model')}` (`Detector.detect`, offset scan on): "
                             f"{r['e2e_s_per_s']} s per second{e2e_target}; scan off: {r['e2e_noscan_s_per_s']}")
    lines += ["", "## Per clip", "",
              "| folder | clip | size | fps | s | windows | face found | coverage | faces in view | s/s wall | s/s CPU "
              "| decode s/s | end to end s/s (scan / no scan) | runs wall (s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["clips"]:
        lines.append(f"| {r['folder']} | {r['name']} | {r['width']}x{r['height']} | {r['fps']} | {r['video_seconds']} "
                     f"| {r['windows']} | {r['face_found']} | {r['face_coverage']} | {r.get('faces_in_view')} "
                     f"| {r['s_per_s']:.4f} | "
                     f"{r['cpu_s_per_s']:.4f} | {r['decode_s_per_s']:.4f} | {r.get('e2e', 'n/a')} | "
                     f"{', '.join(f'{t:.3f}' for t in r['seconds'])} |")
    if report.get("census_cost"):
        c = report["census_cost"]
        lines += ["", f"## What counting the faces in view costs: `{c['clip']}`, end to end", "",
                  f"`Detector.detect` with the face census (a frontal-only whole-image pass every "
                  f"{c['census_seconds']:g} s) on and off, alternating, {c['repeats']} runs each (median): "
                  f"{c['e2e_s_per_s_census_on']} vs {c['e2e_s_per_s_census_off']} s per second of video, a cost of "
                  f"{c['cost_s_per_s']} s/s. Faces in view: {c['faces_in_view_census_on']} with it, "
                  f"{c['faces_in_view_census_off']} from the track's own searches alone."]
    if report.get("breakdown"):
        b = report["breakdown"]
        lines += ["", f"## Where the time goes: `{b['clip']}` (CPU s per second of video, one run)", "",
                  "| part | s/s |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in b["parts"].items()]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def census_cost(path: Path, detector: Any, repeats: int, video_seconds: float) -> dict[str, Any]:
    """``Detector.detect(path)`` timed with the face census on and off (``facetrack.CENSUS_SECONDS``; the searches
    the track needs still count faces), alternating, ``repeats`` times each: what counting the faces in view costs,
    measured in one run so the machine's drift between runs does not enter."""
    from pinlite_edge.features import facetrack

    default = facetrack.CENSUS_SECONDS
    times: dict[str, list[float]] = {"on": [], "off": []}
    faces: dict[str, int | None] = {}
    try:
        for _ in range(repeats):
            for mode in ("off", "on"):
                facetrack.CENSUS_SECONDS = default if mode == "on" else None
                t0 = time.perf_counter()
                result = detector.detect(path)
                times[mode].append(time.perf_counter() - t0)
                faces[mode] = result.faces_in_view
    finally:
        facetrack.CENSUS_SECONDS = default
    clip_s = float(video_seconds)
    return {"clip": path.name, "census_seconds": default, "repeats": repeats,
            **{f"e2e_s_per_s_census_{m}": round(float(np.median(v)) / clip_s, 4) for m, v in times.items()},
            "cost_s_per_s": round((float(np.median(times["on"])) - float(np.median(times["off"]))) / clip_s, 4),
            **{f"faces_in_view_census_{m}": v for m, v in faces.items()}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/featurise_real.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with grid/ and talking/ (default: %(default)s)")
    p.add_argument("--preset", default="paper", choices=("paper", "tiny"), help="input contract (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per clip; the median is quoted")
    p.add_argument("--only", nargs="*", default=None, help="substrings of clip names to run (default: all)")
    p.add_argument("--note", action="append", default=[], help="free-text note for the report (repeatable)")
    p.add_argument("--breakdown", default=KEY_CLIPS["720p"],
                   help="clip (file name) whose time is split into parts (default: the 720p clip; '' for none)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                   help="results root: writes OUT_DIR/STEM/<machine>.{json,md}")
    p.add_argument("--stem", default="featurise_real", help="bench name (default: %(default)s)")
    p.add_argument("--model", type=Path, default=None,
                   help="also time Detector.detect end to end with this artefact (offset scan on and off); the "
                        "contract is then the model's")
    add_scan_offsets_argument(p, "for the end-to-end time")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("pinlite_edge").setLevel(logging.ERROR)  # no-face / VFR warnings are in the table
    import cv2

    cv2.setNumThreads(1)
    clips = sorted(args.data.glob("grid/*.mpg")) + sorted(args.data.glob("talking/*.mp4"))
    if args.only:
        clips = [c for c in clips if any(s in c.name for s in args.only)]
    if not clips:
        print(f"error: no clips under {args.data}/grid or {args.data}/talking", file=sys.stderr)
        return 2
    contract = contract_for_preset(args.preset)
    config = FaceCropConfig()
    detectors = None
    if args.model is not None:
        from pinlite_edge.detector import Detector

        detectors = (Detector.load(args.model, threads=1, timeout_s=None, scan_offsets=args.scan_offsets),
                     Detector.load(args.model, threads=1, timeout_s=None, aggregate="max", scan_offsets=None))
        contract = detectors[0].contract
        detectors[0].detect(clips[0])  # warm-up: model session, face detector
    record = build_record(args.stem, "benchmarks/featurise_real.py", argv, code_paths=CODE_PATHS,
                          data={"root": repo_relative(args.data), "num_clips": len(clips),
                                "fingerprint": fingerprint_files(clips),
                                "fingerprint_of": "sorted (file, sha256) of the clips measured"})
    load_before = load_average()
    results = []
    for path in clips:
        r = measure(path, contract, args.repeats, config, detectors)
        log.info("%s: face %s coverage %s, %.4f s/s (decode %.4f)", path.name, r.face_found, r.face_coverage,
                 r.s_per_s, r.decode_s_per_s)
        results.append(r)
    census = None
    key = [r for r in results if r.name == KEY_CLIPS["720p"]]
    if detectors is not None and key:
        census = census_cost(args.data / "talking" / key[0].name, detectors[0], args.repeats, key[0].video_seconds)
    parts = None
    hits = [c for c in clips if args.breakdown and c.name == args.breakdown]
    if hits:
        parts = {"clip": hits[0].name, "parts": breakdown(hits[0], contract, config)}
    report = {
        "breakdown": parts, "census_cost": census,
        "code_changed": record["git"]["code_changed"] or [],
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "library_versions": versions(), "load_before": load_before, "load_after": load_average(),
        "preset": args.preset if args.model is None else f"the model's ({args.model})",
        "model": None if args.model is None else repo_relative(args.model),
        "scan_offsets": list(args.scan_offsets),
        "frame_size": contract.frame_size, "repeats": args.repeats,
        "face_config": asdict(config), "target_s_per_s_720p": TARGET_S_PER_S,
        "summary": summary(results),
        "clips": [{**asdict(r), "s_per_s": round(r.s_per_s, 4), "cpu_s_per_s": round(r.cpu_s_per_s, 4),
                   "decode_s_per_s": round(r.decode_s_per_s, 4),
                   **({} if r.e2e_s_per_s is None else
                      {"e2e": f"{r.e2e_s_per_s:.4f} / {r.e2e_noscan_s_per_s:.4f}"})}
                  for r in results],
        "notes": args.note,
    }
    write_result(record, report, markdown(report), results_dir=args.out_dir)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
