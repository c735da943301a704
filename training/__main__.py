"""``python -m pinlite_edge.training {teacher,distill,prune} ...``: one entry point for the training commands.

Each sub-command is the same command as ``python -m pinlite_edge.training.<name>`` (which keeps working) with the
same options; ``python -m pinlite_edge.training <name> --help`` lists them.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from pinlite_edge.utils.cli import OneLineParser

PROG = "python -m pinlite_edge.training"
#: sub-command -> (module, one-line description)
COMMANDS = {
    "teacher": ("pinlite_edge.training.teacher", "train the PinPoint teacher (CE real/fake + offset CE)"),
    "distill": ("pinlite_edge.training.distill", "distil the PIN-Lite student from one teacher or an ensemble"),
    "prune": ("pinlite_edge.training.prune", "prune attention heads of a distilled student, with fine-tuning"),
}

EPILOG = """\
examples:
  %(prog)s teacher --data synthetic --epochs 10 --output runs/teacher
  %(prog)s teacher --data folder:../shared/data/real-av --data-option sync_pairs=true \\
      --data-option split_file=real_av --output runs/teacher-real
  %(prog)s distill --teacher runs/teacher/best.safetensors --output runs/distilled
  %(prog)s prune --student runs/distilled/best.safetensors --output runs/pruned
Each sub-command has its own --help."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Training commands of pinlite-edge (SPEC §3).",
                      epilog=EPILOG % {"prog": PROG}, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", title="sub-commands")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        return int(module.main(argv[1:], prog=f"{PROG} {argv[0]}"))
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    parser.parse_args(argv)  # --help prints and exits 0; an unknown sub-command is a usage error (exit 2)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
