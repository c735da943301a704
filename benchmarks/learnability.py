"""How fast the tiny preset learns the synthetic task on a CPU: accuracy vs epochs and wall time.

Trains the tiny teacher with the project's own training code (``pinlite_edge.training.teacher.train_teacher``), then
distils the tiny student from it (``pinlite_edge.training.distill.distill``), on synthetic splits generated ONCE into
memory (the generation time is reported apart). Every epoch's validation accuracy and time come from the training
history; the best checkpoint of each stage is then scored on the test split, overall and per manipulation.

    python benchmarks/learnability.py                                   # defaults: the quickstart's recommendation
    python benchmarks/learnability.py --teacher-epochs 6 --lr 2e-3 --threads 2 --tag lr2e-3
    python benchmarks/learnability.py --data-option segment_frames=[5,10]     # a harder generator setting

Each run writes ``benchmarks/results/learnability/<machine>.{json,md}`` with its record (``benchmarks/_record.py``),
replacing that machine's previous run; ``--stem NAME`` keeps a run apart (``results/NAME/<machine>.*``).
The CPU may be shared: per-epoch seconds are wall-clock seconds of this process, reported as measured.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._record import RESULTS_DIR, build_record, fingerprint_json, write_result  # noqa: E402
from pinlite_edge.contract import MANIPULATIONS, contract_for_preset  # noqa: E402
from pinlite_edge.utils.cli import key_value  # noqa: E402
from pinlite_edge.training.config import DistillConfig, TeacherConfig  # noqa: E402
from pinlite_edge.training.context import load_data  # noqa: E402
from pinlite_edge.training.data import make_loader  # noqa: E402
from pinlite_edge.training.evaluate import predict  # noqa: E402

log = logging.getLogger("learnability")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-train", type=int, default=800)
    p.add_argument("--num-val", type=int, default=160)
    p.add_argument("--num-test", type=int, default=200)
    p.add_argument("--data-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="extra SyntheticConfig field, e.g. segment_frames=[5,10] or min_shift=3")
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--student-epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="teacher peak learning rate")
    p.add_argument("--student-lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-student", action="store_true")
    p.add_argument("--workdir", default=None, help="where checkpoints go (default: a temporary folder)")
    p.add_argument("--results", default=str(RESULTS_DIR), help="results root: writes RESULTS/STEM/<machine>.*")
    p.add_argument("--stem", default="learnability", help="bench name (default: %(default)s)")
    p.add_argument("--tag", default="", help="a label for this run in the results")
    p.add_argument("--teacher-model", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="try another tiny teacher ModelConfig field (e.g. backbone_width=0.375, dropout=0.0)")
    p.add_argument("--student-model", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="try another tiny student ModelConfig field (e.g. embed_dim=48)")
    return p.parse_args(argv)


def override_models(teacher: dict[str, Any], student: dict[str, Any]) -> None:
    """Build the tiny models with some ModelConfig fields replaced (for sweeps; checkpoints record the result)."""
    from pinlite_edge.models import pinlite, pinpoint
    from pinlite_edge.models.config import student_config, teacher_config

    def patched(factory: Any, changes: dict[str, Any]) -> Any:
        def make(preset: str = "paper") -> Any:
            fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
            return dataclasses.replace(factory(preset), **fixed)
        return make

    if teacher:
        pinpoint.teacher_config = patched(teacher_config, teacher)  # type: ignore[assignment]
    if student:
        pinlite.student_config = patched(student_config, student)  # type: ignore[assignment]


def test_scores(path: Path, test: Any) -> dict[str, Any]:
    """Accuracy of a checkpoint on the test split, overall and per manipulation."""
    from pinlite_edge.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    logits, _, _, labels, _ = predict(model, make_loader(test, 32), torch.device("cpu"))
    pred = logits.argmax(-1)
    manip = test.dataset.base.tensors["manipulation"].numpy()
    per = {MANIPULATIONS[m]: float((pred[manip == m] == labels[manip == m]).mean()) for m in np.unique(manip)}
    return {"accuracy": float((pred == labels).mean()), "per_manipulation": per}


def run_stage(name: str, train_fn: Any, cfg: Any, test: Any) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_fn(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    epochs = [{"epoch": h["epoch"], "seconds": h["seconds"], "train_accuracy": h["train_accuracy"],
               "val_accuracy": h["val_accuracy"]} for h in res.history]
    out = {"stage": name, "wall_s": wall, "cpu_s": cpu, "load_after": round(os.getloadavg()[0], 2), "epochs": epochs,
           "best_epoch": res.best_metrics.get("epoch"), "best_val_accuracy": res.best_metrics.get("accuracy"),
           "best_path": str(res.best_path)}
    if "eps" in res.best_metrics:
        out["best_val_eps"] = res.best_metrics["eps"]
    out["test"] = test_scores(res.best_path, test)
    log.info("%s: %.1f s (cpu %.1f s), best val %.3f (epoch %s), test %.3f", name, wall, cpu, out["best_val_accuracy"],
             out["best_epoch"], out["test"]["accuracy"])
    return out


def to_markdown(run: dict[str, Any]) -> str:
    a = run["args"]
    lines = [f"## {run['tag'] or 'run'} ({run['when']})", "",
             f"{run['torch_threads']} torch threads, load average at start "
             f"{run['load_at_start']}; data: {a['num_train']}/{a['num_val']}/{a['num_test']} clips "
             f"(generated in {run['data_s']:.1f} s), options {run['data_options']}; batch {a['batch_size']}, "
             f"teacher lr {a['lr']}, student lr {a['student_lr']}, warm-up {a['warmup_steps']} steps; model overrides "
             f"teacher {run['teacher_model'] or '-'} student {run['student_model'] or '-'}", ""]
    for st in run["stages"]:
        lines += [f"**{st['stage']}**: {st['wall_s']:.0f} s wall ({st['cpu_s']:.0f} s process CPU time, load average "
                  f"{st['load_after']} at the end); best val {st['best_val_accuracy']:.3f} at epoch "
                  f"{st['best_epoch']}; **test {st['test']['accuracy']:.3f}**"
                  + (f"; val EPS {st['best_val_eps']:.3f}" if "best_val_eps" in st else ""), "",
                  "| epoch | s/epoch | cumulative s | train acc | val acc |", "|---|---|---|---|---|"]
        cum = 0.0
        for e in st["epochs"]:
            cum += e["seconds"]
            lines.append(f"| {e['epoch']} | {e['seconds']:.1f} | {cum:.0f} | {e['train_accuracy']:.3f} | "
                         f"{e['val_accuracy']:.3f} |")
        per = ", ".join(f"{k} {v:.2f}" for k, v in st["test"]["per_manipulation"].items())
        lines += ["", f"test accuracy per manipulation: {per}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    override_models(dict(args.teacher_model), dict(args.student_model))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="learnability-"))
    options = {"num_train": args.num_train, "num_val": args.num_val, "num_test": args.num_test,
               **dict(args.data_option)}
    common = dict(data="synthetic", preset="tiny", batch_size=args.batch_size, seed=args.seed, device="cpu",
                  data_options=options, progress=False, in_memory="yes", warmup_steps=args.warmup_steps,
                  checkpoint_every=0)
    contract = contract_for_preset("tiny")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    splits = {s: load_data(TeacherConfig(**common), contract, s, progress=False) for s in ("train", "val", "test")}
    data_s = time.perf_counter() - t0  # the training commands reuse these in-memory splits
    log.info("generated %s clips in %.1f s", {k: len(v) for k, v in splits.items()}, data_s)

    from pinlite_edge.training.distill import distill
    from pinlite_edge.training.teacher import train_teacher

    stages = [run_stage("teacher", train_teacher, TeacherConfig(**common, epochs=args.teacher_epochs, lr=args.lr,
                                                                output=str(workdir / "teacher")), splits["test"])]
    if not args.skip_student:
        stages.append(run_stage("student", distill, DistillConfig(
            **common, epochs=args.student_epochs, lr=args.student_lr, output=str(workdir / "student"),
            teachers=[stages[0]["best_path"]]), splits["test"]))
    record = build_record(args.stem, "benchmarks/learnability.py", argv,
                          data={"spec": "synthetic", **options, "seed": args.seed,
                                "fingerprint": fingerprint_json({s: sp.fingerprint for s, sp in splits.items()}),
                                "fingerprint_of": "the train/val/test split fingerprints (dataset_fingerprint)"})
    run = {"tag": args.tag, "when": time.strftime("%Y-%m-%d %H:%M"), "torch_threads": torch.get_num_threads(),
           "load_at_start": round(load, 2), "args": vars(args), "data_s": data_s,
           "data_options": options, "teacher_model": dict(args.teacher_model),
           "student_model": dict(args.student_model), "stages": stages}
    write_result(record, run, "# Learnability of the synthetic task by the tiny preset (CPU)\n\n" + to_markdown(run),
                 results_dir=args.results)
    print(to_markdown(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
