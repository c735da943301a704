"""Frame rate (issue #12): does a model trained at 25 fps still tell sync from shifted audio at other frame rates?

The model takes 16 frames spread over 0.64 s, i.e. 25 fps. A clip at another rate is sampled at those times
(``pinlite_edge.features.frames.sample_indices``: the frame on screen at the middle of each 40 ms step), so a 30 fps
phone video loses every sixth frame and a 20 fps one repeats every fourth: the mouth motion the model sees is
uneven. Real 30 fps material is scarce here (two of the 31 real clips, both in the test split), so this measures it
on the synthetic talking faces, which can be rendered at any rate whose audio samples per frame are whole (16 kHz:
20, 25, 32, 40, 50 fps; 32 fps drops frames as 30 fps does).

For each rate the same seeds give ``--clips`` in-sync clips of 4 s (frames rendered at that rate, no face crop:
the synthetic frames are the crop), scored as the real-faces harness scores a clip (``benchmarks/real_faces.py``:
windows half a window apart, the offset scan's P(fake)) in five conditions with shifts in seconds: original, audio
delayed / advanced by 200 ms, delayed by 80 ms, and audio of the next clip (swap). The training-free baseline runs on
the same windows at the clip's own rate. Reported: AUC of originals vs each condition, the originals' mean P(fake),
the offset accuracy within one 40 ms frame on the 200 ms clips.

The default generator settings are harder than training's (pixel noise 25, audio SNR -5..5 dB, head motion 6 px,
blur 2 px) so the AUCs are not all 1.0 at 25 fps; ``--easy`` uses the training defaults.

    python benchmarks/frame_rate.py onnx=pinlite-workspace/exports/onnx/pinlite-student.onnx

Writes ``benchmarks/results/frame_rate/<machine>.{json,md}``.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces as rf  # noqa: E402
from benchmarks._record import build_record, fingerprint_json, parse_cli, report_parser, write_result  # noqa: E402
from benchmarks.sync_baseline import BaselineConfig, mouth_motion  # noqa: E402
from pinlite_edge.contract import InputContract  # noqa: E402
from pinlite_edge.errors import InputError, PinliteError  # noqa: E402
from pinlite_edge.features.windows import PreparedClip, window_starts  # noqa: E402
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.frame_rate")

STEM = "frame_rate"
#: condition -> audio delay in seconds (None: the next clip's audio)
CONDITIONS: dict[str, float | None] = {"original": 0.0, "delay200": 0.2, "advance200": -0.2, "delay80": 0.08,
                                       "swap": None}
MANIPULATED = tuple(k for k in CONDITIONS if k != "original")
DEFAULT_RATES = (20.0, 25.0, 32.0, 40.0, 50.0)
#: harder than the training defaults, so that 25 fps is not at AUC 1.0 (module doc)
HARD = {"noise_std": 25.0, "snr_db": (-5.0, 5.0), "jitter": 6.0, "blur": 2.0}
CLIP_SECONDS = 4.0
MARGIN_SECONDS = 0.2  # keeps every shifted window's audio inside the clip


@dataclass(frozen=True)
class Setting:
    rates: tuple[float, ...] = DEFAULT_RATES
    clips: int = 24
    seed: int = 1000
    generator: tuple[tuple[str, Any], ...] = tuple(HARD.items())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["generator"] = dict(self.generator)
        return d


def render_clips(rate: float, contract: InputContract, setting: Setting) -> list[PreparedClip]:
    """``setting.clips`` in-sync synthetic clips rendered at ``rate`` (seeds ``seed .. seed + clips - 1``)."""
    from pinlite_edge.data.synthetic import SyntheticConfig, generate_clip

    gen = SyntheticConfig(**dict(setting.generator))
    at_rate = replace(contract, fps=rate, num_frames=int(round(CLIP_SECONDS * rate)))
    out = []
    for i in range(setting.clips):
        c = generate_clip(setting.seed + i, at_rate, gen, manipulation="real")
        out.append(PreparedClip(frames=c.frames, fps=rate, audio=c.audio, sample_rate=c.sample_rate))
    return out


def score_rate(clips: Sequence[PreparedClip], contract: InputContract, runners: dict[str, Any]
               ) -> dict[str, dict[str, Any]]:
    """Per method (each runner, and the baseline): AUCs, originals' mean score, offset accuracy."""
    scores: dict[str, dict[str, list[float]]] = {m: {k: [] for k in CONDITIONS} for m in [*runners, rf.BASELINE_NAME]}
    offsets: dict[str, list[tuple[int | None, int]]] = {m: [] for m in runners}
    for i, clip in enumerate(clips):
        partner = clips[(i + 1) % len(clips)]
        inner = clip.duration - 2 * MARGIN_SECONDS
        starts = [MARGIN_SECONDS + s for s in window_starts(inner, contract, contract.window_seconds / 2,
                                                             fps=clip.fps)]
        motion = mouth_motion(clip.frames)
        for cond, shift in CONDITIONS.items():
            windows = rf.delayed_windows(clip, contract, starts, shift, partner, DEFAULT_SCAN_OFFSETS)
            for name, runner in runners.items():
                cs = rf.score_windows(runner, windows)
                scores[name][cond].append(cs.scan)
                if cond in ("delay200", "advance200"):
                    offsets[name].append((cs.offset, 5 if shift and shift > 0 else -5))
            scores[rf.BASELINE_NAME][cond].append(
                rf.delayed_baseline(clip, contract, starts, shift, partner, BaselineConfig(), motion).mean)
    out: dict[str, dict[str, Any]] = {}
    for method, by_cond in scores.items():
        out[method] = {f"auc_{k}": rf.auc_vs_original(by_cond["original"], by_cond[k]) for k in MANIPULATED}
        out[method]["original_mean"] = float(np.mean(by_cond["original"]))
        out[method]["offset_acc_200"] = rf.offset_accuracy(offsets[method]) if method in offsets else None
        out[method]["scores"] = {k: [round(x, 5) for x in v] for k, v in by_cond.items()}
    return out


def run(setting: Setting, models: Sequence[rf.ModelSpec], threads: int | None = 1) -> dict[str, Any]:
    from pinlite_edge.runtimes import load_runner

    rates: dict[str, Any] = {}
    with ExitStack() as stack:
        runners = {m.name: stack.enter_context(load_runner(m.path, **({"threads": threads} if threads else {})))
                   for m in models}
        contracts = {r.contract for r in runners.values()}
        if len(contracts) > 1:
            raise InputError("the models take different inputs (contracts); run them separately")
        contract = next(iter(contracts)) if contracts else InputContract()
        for rate in setting.rates:
            t0 = time.perf_counter()
            clips = render_clips(rate, contract, setting)
            rates[f"{rate:g}"] = score_rate(clips, contract, runners)
            log.info("%g fps: mean AUC %s (%.0f s)", rate,
                     {m: round(float(np.mean([v[f"auc_{k}"] for k in MANIPULATED])), 3)
                      for m, v in rates[f"{rate:g}"].items()}, time.perf_counter() - t0)
    return {"setting": setting.to_dict(), "contract_frame_size": contract.frame_size, "rates": rates,
            "models": [{"name": m.name, "path": str(m.path)} for m in models]}


def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render_markdown(result: dict[str, Any]) -> str:
    s = result["setting"]
    lines = ["# Frame rate", "",
             f"{s['clips']} synthetic in-sync clips of {CLIP_SECONDS:g} s per rate (seeds {s['seed']}..."
             f"{s['seed'] + s['clips'] - 1}, generator {s['generator']}), scored as the real-faces harness scores a "
             "clip; shifts in seconds. AUC: originals vs each condition. Models are trained at 25 fps.", ""]
    methods = list(next(iter(result["rates"].values())))
    lines += ["| method | fps | AUC delay200 | advance200 | delay80 | swap | originals' mean score | "
              "offset ±1 frame (±200 ms) |", "|---|---|---|---|---|---|---|---|"]
    for method in methods:
        for rate, by_method in result["rates"].items():
            r = by_method[method]
            lines.append(f"| {method} | {rate} | " + " | ".join(_f(r[f'auc_{k}']) for k in MANIPULATED)
                         + f" | {_f(r['original_mean'])} | {_f(r['offset_acc_200'])} |")
    if result.get("notes"):
        lines += ["", "## Findings", "", result["notes"].strip()]
    return "\n".join(lines) + "\n"


def build_parser() -> Any:
    p = report_parser(__doc__)
    p.add_argument("models", nargs="*", default=[], metavar="NAME=PATH",
                   help="models to evaluate: checkpoint .safetensors or artefact .onnx/.pte/engine")
    p.add_argument("--rate", type=float, action="append", default=None,
                   help=f"a frame rate to render (repeatable; default {', '.join(f'{r:g}' for r in DEFAULT_RATES)})")
    p.add_argument("--clips", type=int, default=Setting.clips, help="clips per rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=Setting.seed, help="first clip's seed (default %(default)s)")
    p.add_argument("--easy", action="store_true", help="the generator's training defaults instead of harder clips")
    p.add_argument("--threads", type=int, default=1, help="runner threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv, args = parse_cli(build_parser(), argv)
    try:
        models = [rf.parse_model_spec(m) for m in args.models]
        if args.clips < 2:
            raise InputError(f"--clips must be at least 2 (an AUC needs both classes, swap a partner), "
                             f"got {args.clips}")
        setting = Setting(rates=tuple(args.rate or DEFAULT_RATES), clips=args.clips, seed=args.seed,
                          generator=() if args.easy else tuple(HARD.items()))
        t0 = time.perf_counter()
        result = run(setting, models, args.threads or None)
    except PinliteError as exc:
        log.error("%s", exc)
        return 2
    result = {"wall_seconds": round(time.perf_counter() - t0, 1), **result,
              "notes": args.notes.read_text() if args.notes else None}
    record = build_record(STEM, "benchmarks/frame_rate.py", argv,
                          data={"fingerprint": fingerprint_json(setting.to_dict()),
                                "fingerprint_of": "the generator settings and seeds", "synthetic": True})
    json_path, md_path = write_result(record, rf._jsonable(result), render_markdown(result), results_dir=args.out_dir)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
