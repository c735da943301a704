"""``python -m pinlite_edge.bench``: measure deployed artefacts on this machine (SPEC §7).

Without ``--artifacts`` the CLI first builds or finishes the quickstart workspace (``./pinlite-workspace``), and in a
workspace it builds the artefact the asked runtime needs when there is none (``bench/prepare.py``: a TensorRT engine
for this GPU, a ``.pte``...), announcing each step; then :func:`run_bench` measures. Every failure the user can fix
(missing TensorRT or GPU, missing artefact, bad data) is one ``error:`` line: exit code 2 for a usage error (an
option, a missing runtime, device or artefact), 1 for a failure (``pinlite_edge.utils.cli.run_command``). The reports
are written before the table is printed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pinlite_edge.utils.atomic import make_output_folder
from pinlite_edge.utils.cli import OneLineParser, configure_logging, key_value, print_error, run_command

from pinlite_edge.export.formats import default_precision, precisions, precisions_for
from pinlite_edge.runtimes import BACKENDS

from pinlite_edge.bench.core import CUDA_BINDINGS, BenchConfig, run_bench
from pinlite_edge.bench.prepare import prepare
from pinlite_edge.bench.report import terminal_table, write_reports


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="pinlite-bench" if Path(sys.argv[0]).name == "pinlite-bench" else "python -m pinlite_edge.bench",
        description="Latency, memory, end-to-end time, accuracy and EPS of PIN-Lite artefacts on this machine. "
                    "Without arguments: ONNX FP32 on onnxruntime CPU, the ./pinlite-workspace models (built or "
                    "finished by the quickstart first when incomplete), the synthetic test split. In a workspace, "
                    "an artefact the asked runtime needs is built on first use (TensorRT: an engine for this GPU "
                    "and TensorRT version, cached).")
    defaults = ", ".join(f"{r} {default_precision(r)}" for r in BACKENDS)
    p.add_argument("--runtime", choices=BACKENDS, default="ort", help="default: ort")
    p.add_argument("--precision", choices=precisions(), default=None,
                   help=f"default per runtime: {defaults} (" + "; ".join(
                       f"{r}: {'/'.join(precisions_for(r))}" for r in BACKENDS) + ")")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="workspace, folder of artefacts, or one artefact file (default ./pinlite-workspace)")
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="ARTIFACT",
                   help="bench these artefacts together on the same inputs and report their agreement "
                        "(the first is the reference); overrides --runtime/--precision")
    p.add_argument("--data", default="synthetic", help="synthetic | lavdf:PATH | folder:PATH (default: %(default)s)")
    p.add_argument("--data-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="option of the --data dataset, as the training CLI takes them (value parsed as JSON when it "
                        "is JSON), e.g. face_crop=false for a model trained on pre-cropped faces, stride_seconds=0.32")
    p.add_argument("--split", default="test", help="split of the --data dataset to evaluate on: train, val or test; "
                                                   "lavdf: and folder: data also take dev (= val) and all "
                                                   "(default: %(default)s)")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate only the first N clips (model inputs: 0.64 s windows, several per video)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the latency measurement (default: %(default)s)")
    p.add_argument("--eval-batch", type=int, default=8, help="batch size of the accuracy pass (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per model before timing (default 5)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per model (default 50)")
    p.add_argument("--block", type=int, default=5,
                   help="several models are timed in turns: timed calls per model per turn (default 5)")
    p.add_argument("--turn-warmup", type=int, default=1,
                   help="untimed calls at the start of each turn, so each model is timed warm (default 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (torch / onnxruntime / XNNPACK)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, or tensorrt (ORT's TensorRT provider)")
    p.add_argument("--cuda-binding", choices=CUDA_BINDINGS, default="auto",
                   help="TensorRT runner's CUDA binding for buffers and streams (auto: pycuda when importable, "
                        "as on JetPack, else cuda-python)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the memory pass (each model loaded alone in a fresh process)")
    p.add_argument("--memory-calls", type=int, default=3,
                   help="inferences per model in the memory pass (default: %(default)s)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end pass (video -> verdict)")
    p.add_argument("--e2e-data", default=None, metavar="auto|synthetic|DIR|FILE",
                   help="videos of the end-to-end pass (default auto: ../shared/data/real-av when present, else "
                        "synthetic mp4 clips)")
    p.add_argument("--e2e-clips", type=int, default=3, help="videos in the end-to-end pass (default 3)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="folder of the reports: bench.json, bench.md and the plots (created; default: %(default)s)")
    p.add_argument("--teacher", type=Path, default=None, help="FP32 teacher checkpoint (default: the workspace's)")
    p.add_argument("--teacher-cache", type=Path, default=None,
                   help="npz of teacher outputs on this data (for devices that cannot run the teacher)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where reference outputs are cached")
    p.add_argument("--time-teacher", action="store_true", help="also time the FP32 teacher (for the plots)")
    p.add_argument("--no-plots", action="store_true",
                   help="do not write the plots (accuracy_vs_latency.png, eps_vs_latency.png, attention_maps.png)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars while the quickstart workspace is built (its stage lines and the bench's "
                        "status lines stay)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    configure_logging(logging.INFO if args.verbose else logging.WARNING)
    cfg = BenchConfig(runtime=args.runtime, precision=args.precision, artifacts=args.artifacts,
                      compare=list(args.compare), data=args.data, data_options=dict(args.data_option),
                      split=args.split, limit=args.limit,
                      batch=args.batch, eval_batch=args.eval_batch, warmup=args.warmup, iters=args.iters,
                      block=args.block, turn_warmup=args.turn_warmup,
                      threads=args.threads, device=args.device, cuda_binding=args.cuda_binding, out=args.out,
                      teacher=args.teacher, teacher_cache=args.teacher_cache, cache_dir=args.cache_dir,
                      time_teacher=args.time_teacher, plots=not args.no_plots, memory=not args.no_memory,
                      memory_calls=args.memory_calls, e2e=not args.no_e2e, e2e_data=args.e2e_data,
                      e2e_clips=args.e2e_clips, progress=not args.no_progress)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def run() -> int:
        make_output_folder(cfg.out, "--out", keep=False)  # a file, /proc/x: one line before anything is measured
        prepare(cfg, say)
        result = run_bench(cfg, progress=say)
        data = result.to_dict()
        try:  # before anything is printed: the reports do not depend on stdout (| head closes it early)
            written = list(write_reports(data, cfg.out))
            if cfg.plots:
                from pinlite_edge.bench.plots import write_plots

                written += write_plots(data, result.attention_samples, cfg.out)
        except OSError as exc:  # e.g. the device filled up during the run: the table is still printed
            print(terminal_table(data))
            print_error(prog, f"cannot write the reports to {cfg.out} ({exc.strerror or exc})")
            return 1
        print(terminal_table(data))
        for c in data["comparison"]:
            print(f"agreement {c['other']} vs {c['reference']}: max|Δlogits| {c['max_abs_diff']['logits']:.2e}, "
                  f"max|Δattention| {c['max_abs_diff']['attention']:.2e}, labels {c['label_agreement']:.1%}, "
                  f"EPS {c['eps_mean']:.3f}")
        for note in data["notes"]:
            print(f"note: {note}")
        print("wrote " + ", ".join(str(p) for p in written))
        return 0

    return run_command(prog, run, f"no report was written to {cfg.out} (the reports are written at the end)")
