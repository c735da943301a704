"""``python -m pinlite_edge.calibrate CHECKPOINT --data DIR``: measure a model's operating point on genuine clips.

Every clip under ``DIR`` (or those of ``--splits`` in ``--split-file``) must be genuine and in sync. Each is scored as
:class:`pinlite_edge.Detector` scores a file (same featurisation, windows and aggregates), and so is each of its
``--reencode`` copies (by default re-encoded at CRF 35, at half resolution, and with 44.1 kHz stereo AAC audio:
a genuine clip's score moves by about 0.1 under such re-encoding, ``benchmarks/results/real_faces_reencode/``, and
the videos users check have been re-encoded on their way; and its middle 1.2 s and 2 s as short clips); per
aggregate the threshold is the lowest one at which at most ``--target-fpr`` of the whole-clip scores would be called
fake, never below 0.5 for the window probabilities, and the scores resting on fewer than 3 windows (short clips)
get thresholds of their own the same way (:mod:`pinlite_edge.operating_point`). The record is written into the checkpoint (atomically, weights unchanged),
and ``python -m pinlite_edge.export`` copies it into every artefact's manifest.

The copies are written the same way every run (:mod:`pinlite_edge.data.x264`), so calibrating one checkpoint twice
on the same clips on one machine gives the same operating point (``benchmarks/calibration_repeat.py`` checks it).
Until 2026-12-05 they were not: libx264's mbtree read uninitialised memory, the copies' scores varied from run to run
and so did the thresholds (``benchmarks/results/calibration_repeat/``).

Calibrate on clips that are NOT in your evaluation split: the quickstart uses the train and dev clips of the
speaker-disjoint ``real_av`` split and reports on its test clips.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pinlite_edge.data.reencode import CALIBRATION_REENCODINGS, TRANSFORMS, check_reencodings, reencode
from pinlite_edge.errors import InputError, PinliteError, UsageError
from pinlite_edge.operating_point import DEFAULT_TARGET_FPR, OperatingPoint, check_target_fpr, fit_operating_point
from pinlite_edge.utils.atomic import folder_lock
from pinlite_edge.utils.cli import OneLineParser, configure_logging, run_command

log = logging.getLogger(__name__)


@dataclass
class ClipScore:
    file: str
    fake_prob_max: float
    fake_prob_mean: float
    fake_prob_scan: float
    face_found: bool | None
    reencoding: str | None = None  # the clip as it is (None), or the name of the copy's re-encoding
    #: the windows each aggregate's verdict rests on (DetectionResult.evidence_windows): few make a short clip
    windows: dict[str, int] = field(default_factory=dict)


def genuine_clips(root: Path, split_file: str | None, splits: Sequence[str] | None) -> list[Path]:
    """The calibration clips under ``root``: those of ``splits`` in ``split_file``; without a split file, those
    ``folder:`` training puts in ``splits`` (a hash of each clip's speaker group, as ``pinlite_edge.data.folder``
    splits a folder); every clip when ``splits`` is None. Clips a split file lists but the folder lacks are refused."""
    from pinlite_edge.data.folder import find_videos, hash_split, provenance_groups
    from pinlite_edge.data.splits import read_split_file

    if not root.is_dir():
        raise InputError(f"--data {root} is not a folder of genuine clips")
    unknown = sorted(set(splits or ()) - {"train", "dev", "test"})
    if unknown:
        raise InputError(f"unknown split(s) {unknown}: choose from train, dev, test (or 'all')")
    if split_file is None:
        found = find_videos(root)
        if splits is not None:
            groups = provenance_groups(root, found)
            found = [f for f in found if hash_split(groups.get(f) or f) in set(splits)]
        files = [root / f for f in found]
    else:
        if splits is None:
            raise InputError("a split file needs the splits to calibrate on")
        records = read_split_file(split_file)
        wanted = set(splits)
        files = [root / rel for rel, rec in sorted(records.items()) if rec.split in wanted]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{len(missing)} clip(s) of split file {split_file} are missing under {root}, e.g. "
                             f"{missing[0]}")
    if not files:
        raise InputError(f"no calibration clips under {root}" + (f" in splits {sorted(splits)}" if splits else ""))
    return files


def score_clips(checkpoint: Path, files: Sequence[Path], *, threads: int | None = None,
                stride_seconds: float | None = None, face_crop: bool = True, reencodings: Sequence[str] = (),
                progress: bool = True) -> list[ClipScore]:
    """Score each clip with the model as :class:`Detector` does, and each of its ``reencodings`` (copies written to a
    temporary folder, :func:`pinlite_edge.data.reencode.reencode`, scored and deleted); undecodable clips and copies
    that cannot be made are skipped with a warning."""
    from pinlite_edge.utils.progress import progress_bar

    from pinlite_edge.detector import Detector

    names = check_reencodings(reencodings)
    options = {} if threads is None else {"threads": threads}
    scores: list[ClipScore] = []
    jobs = [(f, name) for f in files for name in (None, *names)]
    with Detector.load(checkpoint, stride_seconds=stride_seconds, face_crop=face_crop, **options) as det, \
            tempfile.TemporaryDirectory(prefix="pinlite-calibrate-") as tmp:
        desc = "scoring genuine clips" + (" and copies" if names else "")
        for i, (f, name) in enumerate(progress_bar(jobs, desc=desc, unit="clip", enabled=progress)):
            # the copy is named after its clip and re-encoding: the warnings about it (no face, ...) name this file
            copy = Path(tmp) / f"{i}-{f.stem[:100]}-{name}.mp4"
            try:
                path = f if name is None else reencode(f, copy, TRANSFORMS[name], seed=sum(f.name.encode()))
                r = det.detect(path)
            except PinliteError as exc:
                log.warning("skipping %s%s: %s", f, "" if name is None else f" re-encoded ({name})", exc)
                continue
            finally:
                if name is not None:
                    copy.unlink(missing_ok=True)
            assert r.fake_prob_scan is not None  # Detector's default scans
            scores.append(ClipScore(str(f), r.fake_prob_max, r.fake_prob_mean, r.fake_prob_scan, r.face_found, name,
                                    windows={agg: r.evidence_windows(agg) for agg in ("max", "mean", "scan")}))
    return scores


def calibrate_checkpoint(checkpoint: str | Path, data: str | Path, *, split_file: str | None = None,
                         splits: Sequence[str] | None = ("train", "dev"), target_fpr: float = DEFAULT_TARGET_FPR,
                         threads: int | None = None, stride_seconds: float | None = None,
                         face_crop: bool = True, reencodings: Sequence[str] = (), write: bool = True,
                         progress: bool = True) -> OperatingPoint:
    """Measure the operating point of ``checkpoint`` on genuine clips (and ``reencodings`` of each: copies re-encoded
    as videos are on their way to a user, so the threshold holds for them too) and (``write``) store it in its
    record."""
    from pinlite_edge.checkpoint import load_checkpoint, save_checkpoint
    from pinlite_edge.utils.hashing import sha256_file

    checkpoint, root = Path(checkpoint), Path(data)
    names = check_reencodings(reencodings)
    check_target_fpr(target_fpr, "--target-fpr")
    check_checkpoint(checkpoint)
    files = genuine_clips(root, split_file, splits)
    scored_sha256 = sha256_file(checkpoint)
    scored = [s for s in score_clips(checkpoint, files, threads=threads, stride_seconds=stride_seconds,
                                     face_crop=face_crop, reencodings=names, progress=progress)
              if s.face_found is not False]
    if not scored:
        raise InputError(f"none of the {len(files)} clips under {root} could be scored with a face in view")
    originals = len({s.file for s in scored})
    if originals < needed_clips(target_fpr):
        log.warning("only %d genuine clip(s) with a face: a false-positive rate of %g cannot be measured on fewer "
                    "than %d; the thresholds only keep these clips below them", originals, target_fpr,
                    needed_clips(target_fpr))
    where = f"folder {root}" + (f", split file {split_file}" if split_file else "") + (
        f", splits {'+'.join(splits)}" if splits else ", every clip")
    if names:
        where += f", each clip also re-encoded ({', '.join(names)})"
    if not face_crop:
        where += " (no face crop)"
    point = fit_operating_point({"max": [s.fake_prob_max for s in scored], "mean": [s.fake_prob_mean for s in scored],
                                 "scan": [s.fake_prob_scan for s in scored]},
                                target_fpr=target_fpr, data=where, stride_seconds=stride_seconds,
                                reencodings=names, originals=originals, face_crop=face_crop,
                                windows={agg: [s.windows[agg] for s in scored] for agg in ("max", "mean", "scan")})
    if write:
        # the check and the rewrite as one step: another calibration of it waits here, then finds it changed
        with folder_lock(Path(checkpoint).parent, "calibrating"):
            if sha256_file(checkpoint) != scored_sha256:
                raise PinliteError(f"{checkpoint} changed while its clips were being scored (another training run or "
                                   "calibration wrote it?): the operating point measured is not that model's; nothing "
                                   "was written, re-run calibrate")
            model, record = load_checkpoint(checkpoint)
            record = {k: v for k, v in record.items() if k != "weights_sha256"}
            record["operating_point"] = point.to_dict()
            record.setdefault("feature_version", None)  # not recorded stays so: save_checkpoint would stamp it
            save_checkpoint(checkpoint, model, record)
    return point


def needed_clips(target_fpr: float) -> int:
    """The fewest clips on which a false-positive rate of ``target_fpr`` can be told apart from 0 (one clip in
    ``1 / target_fpr``)."""
    return math.ceil(1.0 / target_fpr - 1e-9) if target_fpr > 1e-9 else 1  # (a rate of 1e-320 has no count)


def check_checkpoint(checkpoint: Path) -> None:
    """:class:`InputError` before any clip is scored when ``checkpoint`` is not a training checkpoint whose record
    can take the operating point (an exported artefact, a missing or corrupt file)."""
    from pinlite_edge.checkpoint import read_record

    if not checkpoint.is_file():
        raise InputError(f"checkpoint {checkpoint} does not exist or is not a file")
    if checkpoint.suffix != ".safetensors":
        raise InputError(f"{checkpoint} is not a training checkpoint (.safetensors): calibrate writes the operating "
                         "point into the checkpoint an artefact is exported from (its manifest's "
                         "source_checkpoint); calibrate that, then export again")
    try:
        read_record(checkpoint)
    except PinliteError as exc:
        raise InputError(f"cannot calibrate {checkpoint}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m pinlite_edge.calibrate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.safetensors); the operating point is written "
                                                 "into its record")
    p.add_argument("--data", type=Path, required=True, help="folder of genuine, in-sync talking-face clips")
    p.add_argument("--split-file", default=None,
                   help="split file (path or shipped name, e.g. real_av) selecting the clips by --splits")
    p.add_argument("--splits", default="train,dev",
                   help="comma-separated splits to calibrate on (default: train,dev; keep your evaluation split "
                        "out): those of --split-file, or without one those folder: training assigns by a hash of "
                        "each clip's speaker group; 'all': every clip under --data")
    p.add_argument("--target-fpr", type=float, default=DEFAULT_TARGET_FPR,
                   help=f"largest fraction of the genuine clips that may be called fake (default {DEFAULT_TARGET_FPR})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    p.add_argument("--stride-seconds", type=float, default=None,
                   help="window stride (default: the model's, as Detector uses)")
    p.add_argument("--no-face-crop", action="store_true",
                   help="score whole frames, as Detector(face_crop=False) does (default: face tracking + mouth crop)")
    p.add_argument("--reencode", default=",".join(CALIBRATION_REENCODINGS), metavar="NAME[,NAME...]",
                   help="also score each clip re-encoded these ways, so the threshold holds for videos that were "
                        f"re-encoded on their way to you ({', '.join(TRANSFORMS)}; 'none' for the clips alone; "
                        "default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="measure and print, do not write the checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.INFO)
    splits: tuple[str, ...] | None = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if splits == ("all",):
        splits = None
    reencodings = () if args.reencode.strip() in ("", "none") else tuple(
        n.strip() for n in args.reencode.split(",") if n.strip())

    def run() -> int:
        try:
            point = calibrate_checkpoint(args.checkpoint, args.data, split_file=args.split_file, splits=splits,
                                         target_fpr=args.target_fpr, threads=args.threads,
                                         stride_seconds=args.stride_seconds, face_crop=not args.no_face_crop,
                                         reencodings=reencodings, write=not args.dry_run,
                                         progress=not args.no_progress)
        except InputError as exc:  # an argument that cannot work (--data, --target-fpr, ...): exit 2
            raise UsageError(str(exc)) from None
        for agg, thr in point.thresholds.items():
            whole = point.clips - point.short_clips.get(agg, 0)
            print(f"{agg:>4}: threshold {thr:.4f}  (of {whole} whole-clip scores, called fake: "
                  f"{point.fpr_at_threshold[agg]:.2f} here, {point.fpr_at_default[agg]:.2f} at 0.5; "
                  f"{point.describe_clips()})")
            if agg in point.short_thresholds:
                print(f"      short clips (verdict on < {point.short_clip_windows} windows): threshold "
                      f"{point.short_thresholds[agg]:.4f}  ({point.fpr_short[agg]:.2f} of "
                      f"{point.short_clips[agg]} short scores called fake)")
        if args.dry_run:
            print("dry run: checkpoint unchanged")
        else:
            print(f"written into {args.checkpoint}. Artefacts exported from it before keep their old threshold: "
                  "export them again (python -m pinlite_edge.export; the quickstart rebuilds its own)")
        return 0

    # Ctrl-C / SIGTERM: one line, exit 130 / 143
    return run_command("python -m pinlite_edge.calibrate", run,
                       f"{args.checkpoint} is unchanged (it is written only at the end)")


if __name__ == "__main__":
    sys.exit(main())
