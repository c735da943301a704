"""``python -m pinlite_edge.export --checkpoint CKPT --format FMT --output DIR [options]``."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Iterable

from pathlib import Path

from pinlite_edge.errors import PinliteError, UsageError
from pinlite_edge.export.formats import COMMON, FORMATS, artifact_path, check_options, get_format
from pinlite_edge.export.options import (ACTIVATION_TYPES, CALIB_METHODS, EXPORTERS, GRU_MODES, QUANT_FORMATS,
                                         SPEED_FLOAT_MODES, WEIGHT_ONLY_MODES, ExportOptions)
from pinlite_edge.utils.cli import OneLineParser, configure_logging, report, run_command


def _format_table(flags: dict[str, str]) -> str:
    """The format table, each option named by its flag (``flags``: option name -> flag)."""
    def names(options: Iterable[str]) -> str:
        return ", ".join(sorted(flags.get(o, "--" + o.replace("_", "-")) for o in options))

    rows = [f"  {'format':<10} {'suffix':<13} {'runtime':<11} {'GPU':<4} options"]
    for f in FORMATS.values():
        rows.append(f"  {f.name:<10} {f.suffix:<13} {f.runtime:<11} {'yes' if f.needs_gpu else 'no':<4} "
                    f"{names(f.options)}")
        rows.append(f"  {'':<10} {f.description}")
    rows.append(f"  every format also takes: {names(COMMON)}")
    return "\n".join(rows)


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's flag (its longest spelling): ``dynamic_batch`` -> ``--static-batch``."""
    return {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m pinlite_edge.export",
        description="Export a PIN-Lite / PinPoint checkpoint to ONNX (FP32/FP16/INT8), TensorRT or ExecuTorch. "
                    "Every artefact gets a manifest (X.manifest.json) with the precision plan, the source "
                    "checkpoint hash, calibration set and tool versions.",
        formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors; its record is embedded, the .json beside it is a readable copy)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="artefact format (table below)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite an existing artefact")
    p.add_argument("--name", help="artefact file stem (default pinlite-<kind>)")
    p.add_argument("--seed", type=int, help="seed for calibration subset selection (default 0)")
    g = p.add_argument_group("ONNX")
    g.add_argument("--opset", type=int, help="ONNX opset, >= 17 (default 17)")
    g.add_argument("--exporter", choices=EXPORTERS, help="torch.onnx exporter for format onnx (default classic: "
                                                        "same ORT speed here, 20x faster to export)")
    g.add_argument("--gru", choices=GRU_MODES, help="GRU as one ONNX GRU node (native, default) or explicit "
                                                   "matmuls (same weights)")
    g.add_argument("--static-batch", dest="dynamic_batch", action="store_false",
                   help="format onnx: a fixed batch axis (size --batch, default 1) instead of a dynamic one")
    g.add_argument("--batch", type=int, help="ONNX: max batch recorded (or the static batch); TensorRT: profile max "
                                             "batch (default 8); .pte: static batch (default 1)")
    g = p.add_argument_group("ExecuTorch and TensorRT")
    g.add_argument("--shared-rows", dest="shared_rows", type=int,
                   help="frame sharing: mfcc rows per frames row that the .pte's second method forward_shared takes, "
                        "or that a TensorRT engine's profile allows, so that a window's frames are encoded once for "
                        "all of them (the offset scan: 7, the default); 1: no sharing")
    g = p.add_argument_group("quantization / mixed precision")
    g.add_argument("--calib-data", dest="calib_data", help="calibration dataset: synthetic (default), lavdf:PATH, "
                                                          "folder:PATH")
    g.add_argument("--calib-split", dest="calib_split", help="dataset split used for calibration (default train)")
    g.add_argument("--calib-size", dest="calib_size", type=int, help="calibration clips (default 256)")
    g.add_argument("--calib-method", dest="calib_method", choices=CALIB_METHODS,
                   help="activation range calibration (default minmax)")
    g.add_argument("--keep-float", dest="keep_float", type=int,
                   help="keep the N most sensitive quantizable layers float (default 0)")
    g.add_argument("--no-sensitivity", dest="sensitivity", action="store_false",
                   help="skip the per-layer sensitivity table")
    g.add_argument("--sensitivity-size", dest="sensitivity_size", type=int,
                   help="calibration clips used for the sensitivity table (default 32)")
    g.add_argument("--quant-format", dest="quant_format", choices=QUANT_FORMATS,
                   help="onnx-int8 layout: qdq (default; portable, TensorRT-ready) or qoperator (ORT CPU kernels)")
    g.add_argument("--per-tensor", dest="per_channel", action="store_false", help="per-tensor weight scales")
    g.add_argument("--asymmetric-activations", dest="symmetric_activations", action="store_false",
                   help="onnx-int8 for onnxruntime only: asymmetric activation quantization instead of the default "
                        "symmetric (zero point 0, as TensorRT needs); weights are always symmetric per channel")
    g.add_argument("--activation-type", dest="activation_type", choices=ACTIVATION_TYPES,
                   help="onnx-int8: storage of the activations: uint8 (default; a symmetric range gets zero point 128, "
                        "the same grid as int8, and runs on onnxruntime's u8 x s8 x86 kernels) or int8")
    g.add_argument("--full-range-weights", dest="reduce_range", action="store_false",
                   help="onnx-int8 with uint8 activations: 8-bit weights instead of the default 7-bit ones. Only for "
                        "targets with VNNI (or ARM): without VNNI, onnxruntime's x86 u8 x s8 kernels can saturate")
    g.add_argument("--speed-float", dest="speed_float", choices=SPEED_FLOAT_MODES,
                   help="onnx-int8: auto (default) keeps float the layers measured to run faster float in onnxruntime "
                        "on the CPU (depthwise convs, early high-resolution stages); none quantizes all it may")
    g.add_argument("--weight-only", dest="weight_only", choices=WEIGHT_ONLY_MODES,
                   help="onnx-int8: float layers whose weights are stored int8 (Cast * scale) while they still "
                        "compute in FP32: float (default: every float layer with a weight except the GRU), "
                        "float+gru and gru also / only round the GRU's weights to int8 (opt-in), none")
    g = p.add_argument_group("TensorRT")
    g.add_argument("--opt-batch", dest="opt_batch", type=int, help="optimisation profile opt batch (default 1)")
    g.add_argument("--workspace-mb", dest="workspace_mb", type=int, help="workspace memory pool (default 1024)")
    g.add_argument("--timing-cache", dest="timing_cache", help="timing cache file (read if present, then updated)")
    g.add_argument("--weak-typing", dest="weak_typing", action="store_true",
                   help="TensorRT 10 only: builder precision flags + per-layer constraints instead of strong typing")
    g.add_argument("--device", type=int, help="CUDA device index (default 0)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar for the per-layer sensitivity table (onnx-int8, pte-int8, trt-int8)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    p.epilog = ("formats:\n" + _format_table(_flags(p)) + "\n\nAn option a format does not take is an error. "
                "Existing artefacts are kept unless --force.")
    return p


def _print_sensitivity(result) -> None:
    rows = result.sensitivity
    if not rows:
        return
    kept = set(result.plan.float_modules) if result.plan else set()
    print(f"\nper-layer sensitivity ({result.plan.sensitivity_mode}, quantizing one layer alone):")
    print(f"  {'rank':>4} {'layer':<48} {'op':<7} {'params':>8} {'logit max':>10} {'logit mse':>10} "
          f"{'attn max':>9} {'score':>8}  float")
    for r in rows:
        print(f"  {r.rank:>4} {r.module:<48} {r.op:<7} {r.params:>8} {r.logits_max_abs:>10.4f} {r.logits_mse:>10.2e} "
              f"{r.attention_max_abs:>9.4f} {r.score:>8.3f}  {'yes' if r.module in kept else ''}")


def check_arguments(checkpoint: str, fmt: str, output: str, options: dict, flags: dict[str, str]) -> None:
    """Usage errors, found before anything is loaded: a missing checkpoint, an output that is a file, an option the
    format does not take or an out-of-range value, an existing artefact without --force. ``flags`` names each option
    as the command line spells it (:func:`_flags`)."""
    ckpt, out = Path(checkpoint), Path(output)
    if not ckpt.is_file():
        raise UsageError(f"--checkpoint {ckpt}: {'not a regular file' if ckpt.exists() else 'no such file'}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} is a file, not a folder: give a folder for the artefact and its manifest")
    f = get_format(fmt)
    check_options(f, set(options), spell=lambda name: flags.get(name, name))
    opts = ExportOptions(**options)
    opts.validate()
    artifact = artifact_path(f, out, _kind_of(ckpt), opts.name)
    if artifact.exists() and not opts.force:
        raise UsageError(f"{artifact} already exists; pass --force to replace it")


def _kind_of(checkpoint: Path) -> str:
    """The model kind a checkpoint's record names (the default artefact stem), without loading the weights."""
    from pinlite_edge.checkpoint import read_record

    try:
        return str(read_record(checkpoint, allow_unverified=True)["model_config"]["kind"])
    except (PinliteError, KeyError, TypeError):
        return "student"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    verbose = args.pop("verbose", False)
    progress = not args.pop("no_progress", False)
    configure_logging(logging.INFO if verbose else logging.WARNING)
    checkpoint, fmt, output = args.pop("checkpoint"), args.pop("format"), args.pop("output")
    prog = "python -m pinlite_edge.export"
    try:
        check_arguments(checkpoint, fmt, output, args, _flags(parser))
    except PinliteError as exc:
        return report(exc if isinstance(exc, UsageError) else UsageError(str(exc)), prog)  # exit 2
    from pinlite_edge.export.api import export_model

    def run() -> int:
        # a PinliteError: exit 1, the export failed
        result = export_model(checkpoint, fmt, output, progress=progress, **args)
        _print_sensitivity(result)
        if result.plan and result.plan.float_layers:
            print(f"\nkept float ({len(result.plan.float_layers)} layers):")
            for e in result.plan.float_layers:
                storage = "int8 weights" if getattr(e, "weight_storage", "float") == "int8" else ""
                print(f"  {e.module:<48} {e.kind:<17} {len(e.onnx_nodes) or '':>3} {storage}")
        print(f"\nwrote {result.artifact} ({result.artifact.stat().st_size / 1e6:.2f} MB) in {result.seconds:.1f} s")
        print(f"manifest {result.manifest}")
        return 0

    # Ctrl-C / SIGTERM: one line, exit 130 / 143; the export is staged and published at the end, so nothing is left
    return run_command(prog, run, "no partial artefact is left (an export is published only when complete)")


if __name__ == "__main__":
    sys.exit(main())
