"""Argument parsing shared by ``python -m pinlite_edge.training.{teacher,distill,prune}``."""
from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from pinlite_edge.utils.cli import OneLineParser, configure_logging, key_value, run_command

from pinlite_edge.training.config import BALANCE_MODES, IN_MEMORY_MODES, TrainConfig

C = TypeVar("C", bound=TrainConfig)
R = TypeVar("R")

#: the arguments each training command needs besides --data and --output (the --help's torchrun example)
REQUIRED_EXAMPLE = {"pinlite_edge.training.distill": " --teacher runs/teacher/best.safetensors",
                    "pinlite_edge.training.prune": " --student runs/distilled/best.safetensors"
                                                   " --teacher runs/teacher/best.safetensors"}

DDP_HELP = """\
Multi-GPU: launch with torchrun, e.g.
  torchrun --nproc_per_node=4 -m {module} --data synthetic{required} --output runs/x
Each process takes every WORLD_SIZE-th sample of the shared (seed, epoch) permutation; rank 0 validates, prints
and writes the checkpoints. On CPU, torchrun uses the gloo backend.
"""


def base_parser(description: str, module: str, defaults: TrainConfig) -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"python -m {module}", description=description,
                      epilog=DDP_HELP.format(module=module, required=REQUIRED_EXAMPLE.get(module, "")),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--data", action="append", default=None, metavar="SPEC",
                   help="dataset: 'synthetic' (generated, no download), 'lavdf:PATH' or 'folder:PATH' (a folder of "
                        "videos, searched recursively); repeat to train on a mix, e.g. --data folder:DIR --data "
                        "synthetic (default: %s)" % defaults.data)
    g.add_argument("--data-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="dataset option (repeatable); values are parsed as JSON when possible. synthetic: "
                        "num_train=2000, fake_fraction=0.5, ...; folder: sync_pairs=true or sync_pairs='{\"far_per_"
                        "window\": 2, ...}' (shifted/swapped fakes from in-sync real videos), split_file=real_av (or a "
                        "JSON path: the speaker-disjoint split), face_crop, stride_seconds, augment=false or "
                        "augment='{...}'. With several --data, prefix the key with the kind or position: "
                        "folder.split_file=real_av, synthetic.num_train=600, 2.KEY=...; KIND.weight=W sets each "
                        "source's share of an epoch. Unknown keys and bad values are refused with the allowed ones")
    g.add_argument("--epoch-size", type=int, default=defaults.epoch_size, metavar="N",
                   help="samples drawn per epoch (default: the data's natural size: every sample once, or for "
                        "balanced/weighted data the balanced size); the draw goes on across epochs, so every sample "
                        "is still used before any repeats")
    g.add_argument("--balance", choices=BALANCE_MODES, default=defaults.balance,
                   help="class balance of training epochs: 'classes' draws equal numbers of real and fake samples "
                        "per epoch (fakes spread over their kinds: near shifts, far shifts, swaps...), deterministic "
                        "from --seed and the epoch; 'auto' does so for sync-pair data; 'none' uses every sample once "
                        "per epoch (default: %(default)s)")
    g.add_argument("--preset", choices=("tiny", "paper"), default=defaults.preset,
                   help="model/input preset: 'paper' (SPEC sizes, 128 px) or 'tiny' (64 px, for tests and the "
                        "quickstart) (default: %(default)s)")
    if hasattr(defaults, "model_options"):
        g.add_argument("--model-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="override a ModelConfig field of the preset (repeatable), e.g. --model-option "
                            "dropout=0.0; stored in the checkpoint so load_checkpoint rebuilds the same model")
    g.add_argument("--cache-dir", default=defaults.cache_dir, help="feature cache folder for video datasets")
    g.add_argument("--in-memory", choices=IN_MEMORY_MODES, default=defaults.in_memory,
                   help="hold the decoded splits in RAM (auto: when under %.1f GB) (default: %%(default)s)"
                        % defaults.in_memory_limit_gb)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=defaults.batch_size, help="batch size (default: %(default)s)")
    g.add_argument("--lr", type=float, default=defaults.lr, help="peak AdamW learning rate, cosine schedule "
                                                                  "(default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="(default: %(default)s)")
    g.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="linear warm-up steps "
                                                                                   "(default: %(default)s)")
    g.add_argument("--grad-clip", type=float, default=defaults.grad_clip,
                   help="max gradient norm, 0 disables (default: %(default)s)")
    g.add_argument("--offset-weight", type=float, default=defaults.offset_weight,
                   help="weight of the offset cross-entropy (default: %(default)s)")
    g.add_argument("--align-weight", type=float, default=defaults.align_weight,
                   help="weight of the attention-alignment loss: on clips with a known audio offset k the attention "
                        "of audio step t is pulled to frame t-k; 0 gives the plain SPEC objective (default: "
                        "%(default)s)")
    g.add_argument("--pair-weight", type=float, default=defaults.pair_weight,
                   help="weight of the pair-ranking loss: a real window's real-vs-fake margin must beat the same "
                        "window's with shifted or swapped audio (what the Detector's offset scan compares); > 0 also "
                        "draws each sync-pair fake next to its real window. 0: off (default: %(default)s)")
    g.add_argument("--seed", type=int, default=defaults.seed, help="seed of init, data order and dropout; two CPU runs "
                        "with one seed and one torch thread count are identical (another count sums in another order: "
                        "the weights differ slightly) (default: %(default)s)")
    g = p.add_argument_group("execution")
    g.add_argument("--device", default=defaults.device, help="auto | cpu | cuda[:N]; auto picks CUDA when present. "
                                                             "AMP (fp16 autocast + GradScaler) is used on CUDA, fp32 "
                                                             "on CPU (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="train in fp32 on CUDA too")
    g.add_argument("--num-workers", type=int, default=defaults.num_workers,
                   help="DataLoader worker processes (default: %(default)s)")
    g.add_argument("--output", default=defaults.output, help="output folder: best.safetensors/.json (best epoch by "
                                                             "validation ROC AUC, ties and undefined AUC by "
                                                             "validation loss), last.*, and last.state.safetensors "
                                                             "for --resume (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint "
                                                         "(model, optimizer, scheduler, scaler, RNG, epoch/step)")
    g.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                   help="steps between mid-epoch resumable checkpoints, 0: epoch ends only (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(cls: type[C], args: argparse.Namespace, **extra: Any) -> C:
    """Fill the dataclass ``cls`` from parsed arguments (names match after '-' -> '_')."""
    values = vars(args)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in values:
            kwargs[f.name] = values[f.name]
    data = values.get("data") or [defaults_of(cls).data]
    kwargs["data"] = data[0] if len(data) == 1 else list(data)
    kwargs["data_options"] = dict(values.get("data_option") or [])
    if "model_options" in {f.name for f in fields(cls)}:
        kwargs["model_options"] = dict(values.get("model_option") or [])
    kwargs["amp"] = not values.get("no_amp", False)
    kwargs["progress"] = not values.get("no_progress", False)
    kwargs.update(extra)
    return cls(**kwargs)


def defaults_of(cls: type[C]) -> C:
    return cls()


def setup_logging(verbose: bool = False) -> None:
    configure_logging(logging.DEBUG if verbose else logging.INFO, None if verbose else "-v shows them all")


def run_cli(main: Callable[[], Any], output: str | Path | None = None,
            prog: str = "python -m pinlite_edge.training") -> int:
    """Run a command in :func:`pinlite_edge.utils.cli.run_command`: a :class:`PinliteError` is one line, exit status 2
    for a usage error and 1 for a failure; on Ctrl-C (130) or SIGTERM (143) it says whether ``output`` holds anything
    ``--resume`` can continue."""
    def resumable() -> str:
        from pinlite_edge.training.engine import STATE_FILE

        # this run's files only: the output folder, or a prune run's step folders (not other runs below it)
        out = Path(output) if output is not None else None
        saved = out is None or any(p.is_file() for pattern in (STATE_FILE, "best.safetensors", f"step*/{STATE_FILE}",
                                                              "step*/best.safetensors") for p in out.glob(pattern))
        return ("continue with --resume" if saved else
                "nothing was saved before the first checkpoint, so re-run the same command (without --resume)")

    def body() -> int:
        main()
        return 0

    return run_command(prog, body, resumable)


def add_distill_args(p: argparse.ArgumentParser, defaults: Any, required_teacher: bool) -> None:
    g = p.add_argument_group("distillation (SPEC §3)")
    g.add_argument("--teacher", dest="teachers", action="append", default=[], required=required_teacher,
                   metavar="CKPT", help="teacher checkpoint (.safetensors); repeat for an ensemble: softened "
                                        "probabilities and attention maps are averaged over teachers")
    g.add_argument("--alpha", type=float, default=defaults.alpha, help="weight of the hard-label CE; the KD term gets "
                                                                       "1-alpha (default: %(default)s)")
    g.add_argument("--beta", type=float, default=defaults.beta, help="weight of the attention MSE "
                                                                     "(default: %(default)s)")
    g.add_argument("--temperature", type=float, default=defaults.temperature, help="softmax temperature T, the KD term "
                                                                                   "is scaled by T^2 "
                                                                                   "(default: %(default)s)")
    g.add_argument("--no-teacher-cache", dest="cache_teacher", action="store_false",
                   help="recompute the teacher on every batch instead of caching its outputs once per dataset")


def add_pretrained_args(p: argparse.ArgumentParser) -> None:
    """``--pretrained`` / ``--no-pretrained``; neither: ImageNet backbone weights when torchvision's cache holds them."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", dest="pretrained", action="store_const", const=True, default=None,
                   help="require ImageNet weights for the frame backbone (paper preset: ResNet-18 for the teacher, "
                        "MobileNetV3-Small for the student) from torchvision's cache; never downloads, fails if "
                        "absent. Default (neither flag): use them if they are there, random weights otherwise; the "
                        "log and the checkpoint's backbone_pretrained say which")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False,
                   help="random backbone weights even where ImageNet weights are on disk")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    return args


def stage_main(build_parser: Callable[[], argparse.ArgumentParser], config_cls: type[C], train: Callable[[C], R],
               report: Callable[[R], None], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line of one training stage: parse ``argv`` (``prog`` renames the parser in help texts, e.g. when
    run as ``python -m pinlite_edge.training distill``), fill ``config_cls``, ``train`` it and ``report`` the result;
    :func:`run_cli` turns a :class:`PinliteError` into one line and exit status 2 (usage) or 1 (failure)."""
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = parse(parser, argv)
    cfg = config_from_args(config_cls, args)

    def run() -> None:
        report(train(cfg))  # each stage checks cfg first (TrainConfig.check), before any data is prepared

    return run_cli(run, getattr(cfg, "output", None), parser.prog)
