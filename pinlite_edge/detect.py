"""``python -m pinlite_edge.detect VIDEO [--model ARTIFACT] [--explain out.png] [--json]``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pinlite_edge.errors import DecodeError, PinliteError, UsageError
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS
from pinlite_edge.utils.cli import (OneLineParser, add_timeout_argument, add_verdict_arguments, configure_logging,
                                    print_error, run_command, timeout_problem, verdict_argument_problem)
from pinlite_edge.workspace_layout import add_model_argument, resolve_model


PROG = "python -m pinlite_edge.detect"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG,
                      description="Score a video for audio-visual (lip-sync) manipulation. Exit status: 0 scored, 1 "
                                  "the video could not be scored (e.g. a corrupt file), 2 a usage error (an option, a "
                                  "missing file or model).")
    p.add_argument("video", help="the video file (any container PyAV/FFmpeg reads, with an audio track)")
    add_model_argument(p)
    p.add_argument("--explain", type=Path, default=None, help="write a PNG explanation (saliency overlay) here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--crops", type=Path, default=None, metavar="FILE",
                   help="also write the mouth-crop square of every decoded frame here (JSON: frame, x, y, side in "
                        "upright frame pixels, face), to check a port of the face track (docs/android.md)")
    add_verdict_arguments(p)
    p.add_argument("--stride", type=float, default=None,
                   help="window stride in seconds (default: one window, 0.64 s, no overlap)")
    p.add_argument("--no-face-crop", action="store_true", help="frames are already face crops")
    add_timeout_argument(p)
    p.add_argument("--device", default=None, help="cpu (default), cuda; TensorRT engines always use cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads (default: the runtime's own choice)")
    p.add_argument("-v", "--verbose", action="store_true", help="log decoding and model details")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = verdict_argument_problem(args.aggregate, not args.no_offset_scan) or timeout_problem(args.timeout or None)
    if problem:
        print_error(PROG, problem)
        return 2
    configure_logging(logging.INFO if args.verbose else logging.WARNING)
    def run() -> int:
        from pinlite_edge.detector import Detector  # inside: a Ctrl-C during these imports ends as one line too
        from pinlite_edge.features.audio import check_file

        try:
            model = resolve_model(args.model)
        except UsageError as exc:
            print_error(PROG, exc)
            return 2
        try:  # the checks Detector.detect makes, before the model is loaded (str: argparse's Path would turn "" into
            video = check_file(args.video)  # "." and a URL's "//" into "/")
        except PinliteError as exc:
            print_error(PROG, exc)
            # a file that is there but cannot be decoded (empty) is a failure, 1; no such file, a folder, a URL:
            # usage, 2
            return 1 if isinstance(exc, DecodeError) and os.path.isfile(args.video) else 2
        options = {"threads": args.threads}
        if args.device:
            options["device"] = args.device
        try:
            with Detector.load(model, threshold=args.threshold, aggregate=args.aggregate,
                               stride_seconds=args.stride, face_crop=not args.no_face_crop,
                               timeout_s=args.timeout or None,
                               scan_offsets=None if args.no_offset_scan else DEFAULT_SCAN_OFFSETS, **options) as det:
                result = det.detect(video)
        except (PinliteError, ValueError) as exc:  # ValueError: an option the runner rejects (e.g. --device)
            print_error(PROG, exc)
            return 1 if isinstance(exc, DecodeError) else 2  # the video could not be scored / a usage error
        _print_result(args, result)
        sys.stdout.flush()  # a pipe's buffer is written here: a closed stdout (| head) ends before the files below
        if args.crops:  # after the result is printed: a failed write does not lose it
            from pinlite_edge.features import crop_squares
            from pinlite_edge.utils.atomic import atomic_write_json

            try:
                squares = crop_squares(video, face_crop=not args.no_face_crop, timeout_s=args.timeout or None)
                atomic_write_json(args.crops, {"video": str(video), "squares": squares})
            except (PinliteError, OSError) as exc:
                print_error(PROG, f"the result above was computed, but the crop squares could not be written to "
                                  f"{args.crops}: {exc}")
                return 1
        if args.explain:  # after the result is printed: a failed write does not lose it
            try:
                result.save_explanation(args.explain)
            except (PinliteError, OSError) as exc:
                print_error(PROG, f"the result above was computed, but the explanation could not be written to "
                                  f"{args.explain}: {exc}")
                return 1
            if not args.json:
                print(f"explanation written to {args.explain}")
        return 0

    # Ctrl-C / SIGTERM: one line, 130 / 143; stdout closed by its reader: quietly, 0
    return run_command(PROG, run)


def _print_result(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        print(result.to_json())
    else:
        scan = "" if result.fake_prob_scan is None else f"scan {result.fake_prob_scan:.3f}, "
        print(f"{args.video}: {result.verdict.upper()}  P(fake) {scan}max {result.fake_prob_max:.3f} "
              f"mean {result.fake_prob_mean:.3f} over {len(result.windows)} window(s); "
              f"audio offset estimate {result.offset_frames:+d} frames ({result.offset_source}, "
              f"{result.offset_confidence:.0%})")
        if result.scan is not None:
            print("  offset scan (frames: real-vs-fake margin): "
                  + "  ".join(f"{k:+d}: {v:+.2f}" for k, v in result.scan.curve.items()))
        print(f"  verdict on {result.aggregate} P(fake) >= {result.threshold:.3f}: {result.threshold_source}")
        if result.verdict == "no-face":
            print("  no face found in the clip (centre crop scored): the probabilities above say little")
        elif result.verdict == "silent-audio":
            print("  the audio track is digitally silent: no lip-sync evidence, so no verdict (the probabilities "
                  "above say nothing about the lips)")
        elif result.face_coverage is not None:
            print(f"  face detected in {result.face_coverage:.0%} of the frames searched")
        if result.windows:
            basis = ("the verdict above is the clip's offset scan, not these" if result.aggregate == "scan"
                     else f"the verdict above is their {result.aggregate}")
            print(f"  per window: the classifier's P(fake) at the given alignment and its offset head ({basis})"
                  + ("; local scan: the offset scan over the window and its neighbours, a hint where the clip looks "
                     "out of sync, not a located manipulation" if result.scan is not None else ""))
        for w in result.windows:
            local = "" if w.fake_prob_local_scan is None else f"  local scan {w.fake_prob_local_scan:.3f}"
            print(f"  {w.start_seconds:7.2f} s  P(fake) {w.fake_prob:.3f}{local}  offset head {w.offset_frames:+d}")


if __name__ == "__main__":
    sys.exit(main())
