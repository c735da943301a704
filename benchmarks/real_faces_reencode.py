"""Re-encoded genuine clips (issue #12): does the verdict survive what real videos go through on their way to a user?

Real clips reach the detector re-encoded, scaled, mirrored, converted to another frame rate, with their audio
resampled or recorded in noise; the clips the project is judged on come from sources it has not seen. This benchmark
re-encodes every clip of ``pinlite_edge/data/splits/real_av.json`` with each transform of :data:`TRANSFORMS` (one
table), then runs the real-faces harness (``benchmarks/real_faces.py``: the same conditions, windows, offset scan,
operating point and training-free baseline) on the re-encoded files, and compares with the clips as they are:

==================  ====================================================================================
as-is               the clip file itself (the reference row)
reencode            one more generation: H.264 CRF 18, AAC 128 kb/s, everything else kept
crf35               heavy H.264 compression (CRF 35)
half-res            both sides halved (CRF 18)
fps-convert         25 <-> 30 fps by repeating or dropping frames (each output frame shows the source frame on
                    screen at the middle of its own display time, as a frame-rate filter does; audio untouched)
mirror              left and right swapped (selfie cameras)
audio-44k-stereo    audio resampled to 44.1 kHz, two channels, AAC 64 kb/s
audio-noise-10db    white noise added to the audio at 10 dB SNR (a noisy room)
==================  ====================================================================================

How a clip is re-encoded: one decode with the SDK's own decoder (``pinlite_edge.features.decode``: display rotation
applied, audio placed by the streams' timestamps), the audio trimmed or padded so that it starts with the first
video frame, frames written at the stream's declared rate by their order (the clips are constant frame rate), then
the transform. The re-encoded files are cached in ``--work-dir`` (default a temporary folder).

What it reports per transform, for each model and the baseline: on the TEST split (6 clips the models never saw) the
harness's AUCs, in-sync false-positive rate and offset accuracy; over ALL 31 clips (25 of them seen in training,
so this is about stability, not accuracy) the genuine clips called fake at the operating point and at P >= 0.9,
and how far each genuine clip's P(fake) moved from its as-is value. A condition's shift is 5 frames of the
re-encoded clip: 200 ms at 25 fps, 167 ms at 30 fps (so ``fps-convert`` also changes the shifts of the clips it
converts). The baseline's threshold is chosen once, on the as-is train split.

    python benchmarks/real_faces_reencode.py onnx=pinlite-workspace/exports/onnx/pinlite-student.onnx
    python benchmarks/real_faces_reencode.py --baseline-only --transform crf35 --transform mirror

Writes ``benchmarks/results/real_faces_reencode/<machine>.{json,md}``.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces as rf  # noqa: E402
from benchmarks.real_clip_verdicts import LIMIT, detect_files  # noqa: E402
from benchmarks._record import (build_record, fingerprint_json, parse_cli, report_parser, repo_relative,  # noqa: E402
                                write_result)  # noqa: E402
from pinlite_edge.errors import DecodeError, InputError, PinliteError  # noqa: E402
from pinlite_edge.features.deadline import Deadline  # noqa: E402
from pinlite_edge.features.windows import PreparedClip  # noqa: E402
from pinlite_edge.utils.atomic import atomic_path  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces_reencode")

SPLITS = ("train", "dev", "test")
AS_IS = "as-is"


# --- the transforms ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encoding:
    """How one transform re-encodes a clip (``None``: keep the source's)."""

    description: str
    crf: int = 18
    scale: float = 1.0
    mirror: bool = False
    fps: Callable[[float], float] | None = None  # source fps -> output fps
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio_bitrate: int = 128_000
    noise_snr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"] = None if self.fps is None else "25 <-> 30"
        return d


def _swap_25_30(fps: float) -> float:
    """25 fps -> 30 fps; anything else (the 30 and 29.97 fps clips) -> 25 fps."""
    return 30.0 if abs(fps - 25.0) < 0.5 else 25.0


#: The one table of transforms (name -> encoding); :data:`AS_IS` is the clip file itself.
TRANSFORMS: dict[str, Encoding] = {
    "reencode": Encoding("one more generation: H.264 CRF 18, AAC 128 kb/s"),
    "crf35": Encoding("heavy H.264 compression (CRF 35)", crf=35),
    "half-res": Encoding("both sides halved", scale=0.5),
    "fps-convert": Encoding("25 <-> 30 fps by repeating or dropping frames", fps=_swap_25_30),
    "mirror": Encoding("left and right swapped", mirror=True),
    "audio-44k-stereo": Encoding("audio at 44.1 kHz, two channels, AAC 64 kb/s", audio_rate=44_100, audio_channels=2,
                                 audio_bitrate=64_000),
    "audio-noise-10db": Encoding("white noise added to the audio at 10 dB SNR", noise_snr_db=10.0),
}


@dataclass
class DecodedClip:
    """A whole clip decoded for re-encoding: upright RGB frames, the audio from the first frame's time on."""

    frames: list[np.ndarray]
    fps: float
    audio: np.ndarray  # float32 (samples, channels), sample 0 at the first video frame
    sample_rate: int


class _KeepFrames:
    """Video consumer holding every decoded frame upright (full size)."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.declared_fps: float | None = None

    def start(self, declared_fps: float | None) -> None:
        self.declared_fps = declared_fps

    def add(self, frame: Any, seconds: float, turns: int) -> None:
        from pinlite_edge.features.yuvframe import rgb_frame

        self.frames.append(rgb_frame(frame, turns, None))


def decode_clip(path: Path) -> DecodedClip:
    """Decode ``path`` once with the SDK's decoder and line its audio up with its first video frame."""
    from pinlite_edge.features.decode import decode_media

    sink = _KeepFrames()
    media = decode_media(path, Deadline(path, None), video=sink, require_video=True)
    if not sink.declared_fps or media.audio is None or media.sample_rate is None:
        raise DecodeError(path, "needs a declared frame rate and an audio track to be re-encoded")
    audio = media.audio
    lead = int(round(((media.audio_start or 0.0) - (media.video_start or 0.0)) * media.sample_rate))
    if lead > 0:  # the audio starts after the first frame: silence before it
        audio = np.concatenate([np.zeros((lead, audio.shape[1]), np.float32), audio])
    elif lead < 0:  # the audio starts before the first frame: drop what plays before it
        audio = audio[-lead:]
    return DecodedClip(frames=sink.frames, fps=float(sink.declared_fps), audio=np.ascontiguousarray(audio),
                       sample_rate=int(media.sample_rate))


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    if rate == target:
        return audio
    g = gcd(rate, target)
    return resample_poly(audio.astype(np.float64), target // g, rate // g, axis=0).astype(np.float32)


def transform_audio(audio: np.ndarray, rate: int, enc: Encoding, seed: int = 0) -> tuple[np.ndarray, int]:
    """The audio ``(samples, channels)`` as ``enc`` asks: channels (mean, then repeated), rate, noise."""
    out = audio
    if enc.audio_channels is not None and enc.audio_channels != out.shape[1]:
        out = np.repeat(out.mean(axis=1, keepdims=True), enc.audio_channels, axis=1)
    target = enc.audio_rate or rate
    out = _resample(out, rate, target)
    if enc.noise_snr_db is not None:
        power = float(np.mean(out.astype(np.float64) ** 2))
        noise = np.random.default_rng(seed).standard_normal(out.shape) * np.sqrt(power / 10 ** (enc.noise_snr_db / 10))
        out = out + noise.astype(np.float32)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:  # AAC takes [-1, 1]; the noisy copy is scaled down rather than clipped
        out = out / peak
    return np.ascontiguousarray(out, dtype=np.float32), target


def transform_frames(frames: Sequence[np.ndarray], fps: float, enc: Encoding) -> tuple[list[np.ndarray], float]:
    """The frames as ``enc`` asks (frame-rate conversion, scale, mirror), even-sized for H.264 4:2:0."""
    import cv2

    out_fps = fps if enc.fps is None else enc.fps(fps)
    if out_fps != fps:  # output frame j shows the source frame on screen at the middle of j's display time
        n = int(np.floor(len(frames) * out_fps / fps + 1e-6))
        idx = np.minimum(np.floor((np.arange(n) + 0.5) * fps / out_fps + 1e-6).astype(int), len(frames) - 1)
        frames = [frames[i] for i in idx]
    h, w = frames[0].shape[:2]
    oh, ow = max(2, int(round(h * enc.scale)) // 2 * 2), max(2, int(round(w * enc.scale)) // 2 * 2)
    out = []
    for f in frames:
        if (oh, ow) != f.shape[:2]:
            f = cv2.resize(f, (ow, oh), interpolation=cv2.INTER_AREA if enc.scale < 1 else cv2.INTER_LINEAR)
        if enc.mirror:
            f = f[:, ::-1]
        out.append(np.ascontiguousarray(f))
    return out, out_fps


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float, audio: np.ndarray, sample_rate: int, *,
              crf: int, audio_bitrate: int) -> Path:
    """H.264 (``crf``) + AAC mp4 written atomically; both streams start at 0."""
    import av

    layout = {1: "mono", 2: "stereo"}.get(audio.shape[1])
    if layout is None:
        raise InputError(f"{path}: can only write mono or stereo audio, got {audio.shape[1]} channels")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            vstream = container.add_stream("libx264", rate=rate)
            vstream.height, vstream.width = frames[0].shape[:2]
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(crf), "preset": "veryfast"}
            astream = container.add_stream("aac", rate=sample_rate, layout=layout)
            astream.bit_rate = audio_bitrate
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode())
            chunk = 1024
            for s in range(0, audio.shape[0], chunk):
                piece = np.ascontiguousarray(audio[s:s + chunk].reshape(1, -1))  # interleaved, as packed "flt" is
                aframe = av.AudioFrame.from_ndarray(piece, format="flt", layout=layout)
                aframe.sample_rate, aframe.pts, aframe.time_base = sample_rate, s, Fraction(1, sample_rate)
                container.mux(astream.encode(aframe))
            container.mux(astream.encode())
    return path


def reencode(src: Path, dst: Path, enc: Encoding, seed: int = 0) -> Path:
    """Write ``src`` re-encoded as ``enc`` asks to ``dst`` (an mp4)."""
    clip = decode_clip(src)
    frames, fps = transform_frames(clip.frames, clip.fps, enc)
    audio, rate = transform_audio(clip.audio, clip.sample_rate, enc, seed)
    return write_mp4(dst, frames, fps, audio, rate, crf=enc.crf, audio_bitrate=enc.audio_bitrate)


class ReencodedStore(rf.ClipStore):
    """The harness's clip store over re-encoded copies: ``get(path)`` prepares ``path`` re-encoded by ``name``
    (cached under ``work_dir``; :data:`AS_IS` prepares the file itself)."""

    def __init__(self, name: str, work_dir: Path):
        from pinlite_edge.features.pipeline import prepare_file

        def prepare(path: Path, contract: Any) -> PreparedClip:
            return prepare_file(self.copy_of(Path(path)), contract)

        super().__init__(prepare)
        self.name, self.work_dir = name, work_dir
        self.encode_seconds = 0.0

    def copy_of(self, path: Path) -> Path:
        if self.name == AS_IS:
            return path
        dst = self.work_dir / self.name / f"{path.parent.name}__{path.stem}.mp4"
        if not dst.is_file():
            t0 = time.perf_counter()
            reencode(path, dst, TRANSFORMS[self.name], seed=sum(path.name.encode()))
            self.encode_seconds += time.perf_counter() - t0
            log.info("%s: re-encoded %s", self.name, path.name)
        return dst


# --- the run ----------------------------------------------------------------------------------------------------
def _score(d: dict[str, Any]) -> rf.ConditionScore:
    return rf.ConditionScore(scan=d["scan"], mean=d["mean"], max=d["max"], offset=d["offset"],
                             offset_head=d.get("offset_head"))


def _moves(scores: dict[str, float], reference: dict[str, float] | None) -> dict[str, float | None] | None:
    """How far each file's score moved from ``reference`` (its as-is score): median |move|, largest up and down."""
    if reference is None:
        return None
    moves = [scores[f] - reference[f] for f in scores if f in reference]
    if not moves:
        return {"median_abs": None, "max_up": None, "max_down": None}
    return {"median_abs": float(np.median(np.abs(moves))), "max_up": float(np.max(moves)),
            "max_down": float(np.min(moves))}


def verdict_counts(rows: Sequence[dict[str, Any]], reference: dict[str, float] | None) -> dict[str, Any]:
    """``Detector.detect`` rows of genuine clips (``benchmarks/real_clip_verdicts.detect_files``): how many were called
    fake, reached P(fake) >= ``LIMIT`` (0.9, issue #12), had no face or failed; how far their P(fake) moved from ``reference``."""
    scored = [r for r in rows if "fake_prob" in r]
    return {"num_clips": len(rows),
            "called_fake": sum(r["verdict"] == "fake" for r in scored),
            "called_fake_files": sorted(r["file"] for r in scored if r["verdict"] == "fake"),
            "at_p09": sum(r["fake_prob"] >= LIMIT for r in scored),
            "no_face": sum(r["verdict"] == "no-face" for r in scored),
            "errors": [{"file": r["file"], "error": r["error"]} for r in rows if "error" in r],
            "move": _moves({r["file"]: r["fake_prob"] for r in scored}, reference)}


def summarise_transform(reports: dict[str, dict[str, Any]], reference: dict[str, dict[str, float]] | None
                        ) -> dict[str, Any]:
    """One transform's harness rows per method: the TEST split's row, AUCs over every clip of every split, and (used
    for the baseline, which has no Detector) the originals at or above the method's threshold and how far each
    original's score moved against ``reference`` (``method -> {file: as-is original score}``)."""
    test = reports["test"]
    out: dict[str, Any] = {}
    for row in test["table"]:
        method = row["method"]
        clips = [c for r in reports.values() for c in r["clips"] if method in c["scores"]]
        per_clip = [{k: _score(v) for k, v in c["scores"][method].items()} for c in clips]
        originals = {c["file"]: c["scores"][method]["original"]["scan"] for c in clips}
        out[method] = {"test": row, "all": rf.summarise(per_clip, row["threshold"]), "num_clips_all": len(clips),
                       "originals_at_threshold": sum(v >= row["threshold"] for v in originals.values()),
                       "original_move": _moves(originals, None if reference is None else reference.get(method))}
    return out


def run(cfg: rf.EvalConfig, transforms: Sequence[str], work_dir: Path) -> dict[str, Any]:
    """Every transform on every split (the harness's ``evaluate``) and every model's ``Detector.detect`` on every
    copy; the baseline's threshold from the as-is train split unless ``cfg.baseline_threshold`` is given."""
    if cfg.run_baseline and cfg.baseline_threshold is None:
        train = rf.evaluate(replace(cfg, split="train", run_models=False), ReencodedStore(AS_IS, work_dir))
        cfg = replace(cfg, baseline_threshold=float(train["baseline"]["threshold"]))
        log.info("baseline threshold %.4f (as-is train split)", cfg.baseline_threshold)
    clips = {split: rf.load_split(cfg.split_file, cfg.root, split) for split in SPLITS}
    split_of = {c.file: split for split, cs in clips.items() for c in cs}
    results: dict[str, Any] = {}
    harness_ref: dict[str, dict[str, float]] | None = None
    detect_ref: dict[str, dict[str, float]] = {}
    for name in [AS_IS, *[t for t in transforms if t != AS_IS]]:
        store = ReencodedStore(name, work_dir)
        t0 = time.perf_counter()
        reports = {split: rf.evaluate(replace(cfg, split=split), store) for split in SPLITS}
        rows = summarise_transform(reports, harness_ref)
        files = [(c.file, store.copy_of(c.path)) for cs in clips.values() for c in cs]
        detections = {}
        for spec in cfg.models if cfg.run_models else []:
            found = detect_files(spec.path, files, split_of, threads=cfg.threads or 1)
            detections[spec.name] = {"counts": verdict_counts(found, detect_ref.get(spec.name)), "clips": found}
            if name == AS_IS:
                detect_ref[spec.name] = {r["file"]: r["fake_prob"] for r in found if "fake_prob" in r}
        if name == AS_IS:
            harness_ref = {m: {c["file"]: c["scores"][m]["original"]["scan"] for r in reports.values()
                               for c in r["clips"] if m in c["scores"]} for m in rows}
        results[name] = {"description": "the clip file itself" if name == AS_IS else TRANSFORMS[name].description,
                         "encoding": None if name == AS_IS else TRANSFORMS[name].to_dict(),
                         "seconds": round(time.perf_counter() - t0, 1), "encode_seconds": round(store.encode_seconds, 1),
                         "methods": rows, "detect": detections,
                         "skipped": [s for r in reports.values() for s in r["data"]["skipped"]],
                         "fingerprints": {s: r["data"]["fingerprint"] for s, r in reports.items()},
                         "clips": {s: r["clips"] for s, r in reports.items()}}
        log.info("%s done in %.0f s", name, results[name]["seconds"])
    return {"transforms": results, "baseline_threshold": cfg.baseline_threshold}


# --- the report -------------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _mean_auc(row: dict[str, Any]) -> float | None:
    aucs = [row.get(f"auc_{k}") for k in rf.MANIPULATED]
    known = [a for a in aucs if a is not None]
    return float(np.mean(known)) if known else None


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Re-encoded genuine clips", "",
             "Each transform re-encodes every clip of the real split, then the real-faces harness runs on the copies "
             "and each model's `Detector.detect` runs on every copy (`benchmarks/real_faces_reencode.py`, module "
             "doc). TEST: the 6 test clips, never seen in training. ALL: every clip of train, dev and test (25 of "
             "them seen in training: stability, not accuracy). AUCs: the offset scan's P(fake) for models, the sync "
             "score for the baseline. Verdicts: `Detector.detect` on each genuine copy with the artefact's "
             "defaults (a `fake` verdict is a false positive).", ""]
    first = next(iter(report["transforms"].values()))
    for method in first["methods"]:
        is_model = method in first["detect"]
        if is_model:
            head = ("| transform | TEST AUC delay200 | advance200 | delay80 | swap | TEST FPR | ALL mean AUC | "
                    "genuine called fake (Detector) | at P >= 0.9 | no face | median abs move of P(fake) |")
        else:
            head = ("| transform | TEST AUC delay200 | advance200 | delay80 | swap | TEST FPR | ALL mean AUC | "
                    "originals at its threshold | median abs move of the score |")
        lines += [f"## {method}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for name, t in report["transforms"].items():
            e = t["methods"].get(method)
            if e is None:
                continue
            row = e["test"]
            cells = [name, *[_f(row.get(f"auc_{k}")) for k in rf.MANIPULATED], _f(row.get("fpr")),
                     _f(_mean_auc(e["all"]))]
            if is_model:
                d = t["detect"][method]["counts"]
                move = (d.get("move") or {}).get("median_abs")
                cells += [f"{d['called_fake']} of {d['num_clips']}", f"{d['at_p09']} of {d['num_clips']}",
                          str(d["no_face"]), "reference" if name == AS_IS else _f(move, 3)]
            else:
                move = (e.get("original_move") or {}).get("median_abs")
                cells += [f"{e['originals_at_threshold']} of {e['num_clips_all']}",
                          "reference" if name == AS_IS else _f(move, 3)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Transforms", "", "| transform | what | seconds (encode) | clips skipped |", "|---|---|---|---|"]
    for name, t in report["transforms"].items():
        skipped = ", ".join(f"{s['file']} ({s['reason'][:60]})" for s in t["skipped"]) or "none"
        lines.append(f"| {name} | {t['description']} | {t['seconds']:.0f} ({t['encode_seconds']:.0f}) | {skipped} |")
    lines.append("")
    lines.append(f"Baseline threshold: {_f(report.get('baseline_threshold'), 4)} (as-is train split, Youden's J).")
    if report.get("notes"):
        lines += ["", "## Findings", "", report["notes"].strip()]
    return "\n".join(lines) + "\n"


def build_parser() -> Any:
    p = report_parser(__doc__)
    p.add_argument("models", nargs="*", default=[], metavar="NAME=PATH",
                   help="models to evaluate: checkpoint .safetensors or artefact .onnx/.pte/engine")
    p.add_argument("--transform", action="append", default=None, choices=[AS_IS, *TRANSFORMS],
                   help="a transform to run (repeatable; default all; as-is always runs as the reference)")
    p.add_argument("--baseline-only", action="store_true", help="skip the models")
    p.add_argument("--baseline-threshold", type=float, default=None,
                   help="the baseline's threshold (default: chosen on the as-is train split)")
    p.add_argument("--root", type=Path, default=None,
                   help=f"the real-av folder (default {repo_relative(rf.DEFAULT_ROOT)}; skipped with a note if absent)")
    p.add_argument("--split-file", type=Path, default=rf.DEFAULT_SPLIT_FILE)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where the re-encoded copies are kept (default: a temporary folder, removed afterwards)")
    p.add_argument("--threads", type=int, default=1, help="runner threads (default 1)")
    p.add_argument("--no-hash-check", action="store_true", help="do not re-hash the clips against the split file")
    return p


def main(argv: list[str] | None = None) -> int:
    argv, args = parse_cli(build_parser(), argv)
    root = rf.real_av_root(args.root)
    if isinstance(root, int):
        return root
    try:
        models = [] if args.baseline_only else [rf.parse_model_spec(m) for m in args.models]
        if not models and not args.baseline_only:
            raise InputError("give at least one model NAME=PATH, or --baseline-only")
        cfg = rf.EvalConfig(root=root, split_file=args.split_file, models=models, run_models=bool(models),
                            baseline_threshold=args.baseline_threshold, threads=args.threads or None,
                            verify_hashes=not args.no_hash_check)
        transforms = args.transform or list(TRANSFORMS)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pinlite-reencode-") as tmp:
            work = args.work_dir or Path(tmp)
            report = run(cfg, transforms, work)
    except PinliteError as exc:
        log.error("%s", exc)
        return 2
    report = {"wall_seconds": round(time.perf_counter() - t0, 1), **report}
    if args.notes is not None:
        report["notes"] = args.notes.read_text()
    fingerprints = report["transforms"][AS_IS]["fingerprints"]
    record = build_record("real_faces_reencode", "benchmarks/real_faces_reencode.py", argv,
                          data={"root": repo_relative(root), "split_file": repo_relative(args.split_file),
                                "fingerprint": fingerprint_json(fingerprints), "split_fingerprints": fingerprints,
                                "fingerprint_of": "sha256 of the harness's fingerprints of each split's clips",
                                "models": [{"name": m.name, "path": repo_relative(m.path)} for m in models]})
    json_path, md_path = write_result(record, rf._jsonable(report), render_markdown(report), args.out_dir)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
