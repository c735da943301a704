"""Re-run the paper's Table 3 distillation ablation on the synthetic set with the tiny preset.

    python benchmarks/ablation.py [--workdir runs/ablation] [--teacher CKPT] [--epochs 6] [--num-train 600]

Grid (α, β) ∈ {(0.3, 0.3), (0.5, 0.3), (0.5, 5.0), (0.7, 0.3)}, T = 2.0, with this SDK's attention-alignment term
(weight 1, training/losses.py) as in every distillation it runs, plus one row at the paper default (0.5, 5.0)
WITHOUT the alignment term (the paper's objective as written). One teacher shared by every run (trained here unless
``--teacher`` is given), the same seed, data and schedule for every student. Reports test-split accuracy
and EPS against the teacher in ``benchmarks/results/ablation/<machine>.{json,md}`` with the run's record
(``benchmarks/_record.py``: command, commit, versions, machine, test-split fingerprint).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._record import RESULTS_DIR, build_record, write_result  # noqa: E402
from pinlite_edge.checkpoint import load_checkpoint  # noqa: E402
from pinlite_edge.contract import TINY_CONTRACT  # noqa: E402
from pinlite_edge.training.config import DistillConfig, TeacherConfig, TrainConfig  # noqa: E402
from pinlite_edge.training.context import load_data  # noqa: E402
from pinlite_edge.training.data import make_loader  # noqa: E402
from pinlite_edge.training.distill import distill  # noqa: E402
from pinlite_edge.training.engine import is_complete  # noqa: E402
from pinlite_edge.training.evaluate import evaluate  # noqa: E402
from pinlite_edge.training.teacher import train_teacher  # noqa: E402

#: (alpha, beta, alignment-loss weight)
GRID = ((0.3, 0.3, 1.0), (0.5, 0.3, 1.0), (0.5, 5.0, 1.0), (0.7, 0.3, 1.0), (0.5, 5.0, 0.0))
PAPER = {(0.3, 0.3): (0.9710, 0.55), (0.5, 0.3): (0.9726, 0.52), (0.5, 5.0): (0.9753, 0.60), (0.7, 0.3): (0.9685, 0.48)}
log = logging.getLogger("ablation")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/ablation")
    p.add_argument("--teacher", help="reuse this teacher checkpoint instead of training one")
    p.add_argument("--epochs", type=int, default=6, help="distillation epochs per grid point")
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--num-train", type=int, default=600)
    p.add_argument("--num-val", type=int, default=120)
    p.add_argument("--num-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(RESULTS_DIR), help="results root: writes RESULTS/ablation/<machine>.*")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    t_start = time.perf_counter()
    work = Path(args.workdir)
    opts = {"num_train": args.num_train, "num_val": args.num_val, "num_test": args.num_test}
    common = dict(data="synthetic", preset="tiny", batch_size=16, seed=args.seed, device="cpu", data_options=opts,
                  progress=False, in_memory="yes", cache_dir=str(work / "cache"))
    teacher = Path(args.teacher) if args.teacher else work / "teacher" / "best.safetensors"
    if not args.teacher and not is_complete(teacher.parent):
        train_teacher(TeacherConfig(**common, epochs=args.teacher_epochs, lr=args.lr, output=str(teacher.parent),
                                    resume=teacher.parent.exists()))
    test = load_data(TrainConfig(**common), TINY_CONTRACT, "test", progress=False)
    loader = make_loader(test, 32)
    device = torch.device("cpu")
    t_model, _ = load_checkpoint(teacher)
    t_res = evaluate(t_model, loader, device)
    rows = []
    for alpha, beta, align in GRID:
        out = work / (f"a{alpha}_b{beta}" + ("" if align == 1.0 else f"_align{align}"))
        t0 = time.perf_counter()
        if not is_complete(out):
            distill(DistillConfig(**common, epochs=args.epochs, lr=args.lr, output=str(out), resume=out.exists(),
                                  teachers=[str(teacher)], alpha=alpha, beta=beta, temperature=2.0,
                                  align_weight=align))
        model, _ = load_checkpoint(out / "best.safetensors")
        m = evaluate(model, loader, device, reference_attention=t_res.attention).metrics
        rows.append({"alpha": alpha, "beta": beta, "align_weight": align, "accuracy": m["accuracy"], "f1": m["f1"],
                     "auc": m["auc"], "eps": m["eps"], "eps_std": m["eps_std"],
                     "paper_accuracy": PAPER[(alpha, beta)][0],
                     "paper_eps": PAPER[(alpha, beta)][1], "seconds": round(time.perf_counter() - t0, 1)})
        log.info("alpha %.1f beta %.1f align %.1f: accuracy %.4f EPS %.3f", alpha, beta, align, m["accuracy"],
                 m["eps"])
    argv = list(sys.argv[1:] if argv is None else argv)
    record = build_record("ablation", "benchmarks/ablation.py", argv,
                          data={"spec": "synthetic", **opts, "seed": args.seed, "fingerprint": test.fingerprint,
                                "fingerprint_of": "the test split (pinlite_edge.data.dataset_fingerprint)"})
    report = {"torch_threads": torch.get_num_threads(), "dataset": {"spec": "synthetic", **opts},
              "preset": "tiny", "distill_epochs": args.epochs, "lr": args.lr, "temperature": 2.0, "seed": args.seed,
              "teacher": {"path": str(teacher), "test_accuracy": t_res.metrics["accuracy"]},
              "wall_seconds": round(time.perf_counter() - t_start, 1), "rows": rows}
    write_result(record, report, render_markdown(report), results_dir=args.results)
    print(render_markdown(report))
    return 0


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Distillation ablation (paper Table 3) on synthetic data, tiny preset", "",
        f"torch threads: {r['torch_threads']}  ",
        f"Data: synthetic, {r['dataset']['num_train']} train / {r['dataset']['num_val']} val / "
        f"{r['dataset']['num_test']} test clips; {r['distill_epochs']} distillation epochs, lr {r['lr']}, "
        f"T = {r['temperature']}, seed {r['seed']}; one shared teacher (test accuracy "
        f"{r['teacher']['test_accuracy']:.4f}). Wall time {r['wall_seconds']:.0f} s.", "",
        "| α | β | alignment term | accuracy | F1 | AUC | EPS (mean ± std) | seconds | paper accuracy | paper EPS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['alpha']} | {row['beta']} | {row.get('align_weight', 1.0)} | {row['accuracy']:.2%} | "
                     f"{row['f1']:.3f} | {row['auc']:.3f} | {row['eps']:.3f} ± {row['eps_std']:.3f} | "
                     f"{row['seconds']:.0f} | {row['paper_accuracy']:.2%} | {row['paper_eps']:.2f} |")
    lines += ["", "## Findings", "", r.get("findings", "_(see the table; written by hand after the run)_"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
