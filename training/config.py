"""Dataclass configs of the three training commands (the CLIs are thin wrappers that fill these)."""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from pinlite_edge.contract import check_preset
from pinlite_edge.data.sample import canonical_split
from pinlite_edge.errors import DatasetError, PinliteError, UsageError
from pinlite_edge.utils.checks import is_finite_number, is_whole

#: the values of ``in_memory`` (``--in-memory``), any case
IN_MEMORY_MODES = ("auto", "yes", "no")
#: the values of ``balance`` (``--balance``; see training/sampling.py)
BALANCE_MODES = ("auto", "none", "classes")
#: the values of ``importance`` (``prune --importance``; see training/prune.py)
IMPORTANCE_CRITERIA = ("l1", "ablation")
#: ``device``: auto, cpu, cuda or cuda:N, any case (whether CUDA is present is checked when the run starts)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?", re.IGNORECASE)


def check_device(value: Any) -> str:
    """``device`` in lower case, else a :class:`UsageError` naming ``--device`` (the name only: whether the machine
    has CUDA is :func:`pinlite_edge.training.runtime.resolve_device`'s question)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value.strip()):
        raise UsageError(f"unknown device {value!r}; use auto, cpu or cuda (or cuda:N)")
    return value.strip().lower()


def in_memory_mode(value: Any) -> str:
    """``in_memory`` in lower case (None or "": ``auto``), else a :class:`UsageError` naming ``--in-memory``."""
    mode = "auto" if value is None or value == "" else value
    if not isinstance(mode, str) or mode.lower() not in IN_MEMORY_MODES:
        raise UsageError(f"--in-memory must be one of {', '.join(IN_MEMORY_MODES)}, got {value!r}")
    return mode.lower()


def check_pair_weight(value: Any) -> float:
    """``--pair-weight`` of the quickstart (training stages check it with the other options in
    :meth:`TrainConfig.check`): a finite number >= 0 (0: off), else a :class:`UsageError` naming the option."""
    if not is_finite_number(value) or value < 0:
        raise UsageError(f"--pair-weight must be a number >= 0 (0: off), got {value!r}")
    return float(value)


#: (option, lowest value, highest value, what it must be) checked by TrainConfig.check; options a stage lacks are
#: skipped
_RANGES: tuple[tuple[str, float, float, str], ...] = (
    ("epochs", 1, math.inf, "an integer >= 1"), ("batch_size", 1, math.inf, "an integer >= 1"),
    ("eval_batch_size", 1, math.inf, "an integer >= 1"), ("lr", 0.0, math.inf, "a number >= 0"),
    ("weight_decay", 0.0, math.inf, "a number >= 0"), ("warmup_steps", 0, math.inf, "an integer >= 0"),
    ("grad_clip", 0.0, math.inf, "a number >= 0 (0: no clipping)"), ("num_workers", 0, math.inf, "an integer >= 0"),
    ("checkpoint_every", 0, math.inf, "an integer >= 0 (0: at epoch ends only)"),
    ("offset_weight", 0.0, math.inf, "a number >= 0"), ("align_weight", 0.0, math.inf, "a number >= 0"),
    ("epoch_size", 1, math.inf, "an integer >= 1"), ("in_memory_limit_gb", 0.0, math.inf, "a number >= 0"),
    ("alpha", 0.0, 1.0, "a number in 0..1"), ("beta", 0.0, math.inf, "a number >= 0"),
    ("temperature", 1e-6, math.inf, "a number > 0"), ("prune_steps", 1, math.inf, "an integer >= 1"),
    ("target_heads", 1, math.inf, "an integer >= 1"),
    ("compensation_clips", 0, math.inf, "an integer >= 0 (0: plain removal)"),
    ("pair_weight", 0.0, math.inf, "a number >= 0 (0: off)"), ("seed", 0, 2**32 - 1, "an integer in 0..2**32-1"),
)
_INTEGERS = frozenset({"seed", "epochs", "batch_size", "eval_batch_size", "warmup_steps", "num_workers",
                       "checkpoint_every", "epoch_size", "prune_steps", "target_heads", "compensation_clips"})
_MAY_BE_NONE = frozenset({"epoch_size", "target_heads"})
#: flags checked by TrainConfig.check (True or False; ``pretrained`` may also be None); options a stage lacks are
#: skipped
_FLAGS = ("resume", "amp", "progress", "cache_teacher", "pretrained")
#: (option, its values) checked by TrainConfig.check; options a stage lacks are skipped
_CHOICES: tuple[tuple[str, tuple[str, ...]], ...] = (("balance", BALANCE_MODES), ("importance", IMPORTANCE_CRITERIA))


@dataclass
class TrainConfig:
    """Options every training command shares.

    ``data``: ``synthetic`` | ``lavdf:PATH`` | ``folder:PATH``, or a list of them to train on a mix (e.g. real sync
    pairs and the synthetic generator); ``data_options`` go to the dataset (for synthetic: the fields of
    ``SyntheticConfig`` such as ``num_train``; with several datasets prefixed ``KIND.`` or ``N.``, see
    :mod:`pinlite_edge.data.mix`). ``balance``: ``auto`` (balance real/fake per epoch for sync-pair data),
    ``classes`` (every source) or ``none`` (see ``training/sampling.py``). ``in_memory``: render/decode every split
    once and keep the samples in RAM (``auto``: when the train split is below ``in_memory_limit_gb``).
    ``checkpoint_every``: steps between mid-epoch resumable checkpoints (0: only at epoch ends).
    """

    data: str | list[str] = "synthetic"
    preset: str = "tiny"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    output: str = "runs/train"
    resume: bool = False
    num_workers: int = 0
    amp: bool = True  # only used on CUDA; CPU runs are fp32
    checkpoint_every: int = 25
    offset_weight: float = 0.5
    #: attention-alignment NLL on clips with a known offset (training/losses.py; an addition to SPEC §3)
    align_weight: float = 1.0
    #: pair ranking of a real window against the same window with wrong audio (training/losses.py; an addition to
    #: SPEC §3); > 0 also makes the sampler put each drawn fake next to its real window (training/sampling.py)
    pair_weight: float = 0.0
    cache_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    in_memory: str = "auto"  # auto | yes | no
    balance: str = "auto"  # auto | none | classes
    epoch_size: int | None = None  # samples drawn per epoch (None: the data's natural size)
    in_memory_limit_gb: float = 2.0
    eval_batch_size: int = 32
    progress: bool = True
    train_split: str = "train"
    val_split: str = "val"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """:class:`UsageError` naming the flag for a value no run can use (before any data is prepared; several of
        these used to end in a library traceback, or to train silently: a negative loss weight ascends)."""
        problems = []
        for name, low, high, why in _RANGES:
            if not hasattr(self, name):
                continue
            value = getattr(self, name)
            if value is None and name in _MAY_BE_NONE:
                continue
            ok = (is_finite_number(value) and low <= value <= high
                  and (name not in _INTEGERS or is_whole(value)))
            if not ok:
                problems.append(f"--{name.replace('_', '-')} must be {why}, got {value!r}")
        for name in _FLAGS:
            value = getattr(self, name, False)
            if not isinstance(value, bool) and not (value is None and name == "pretrained"):
                problems.append(f"{name} must be True or False, got {value!r}")
        data = [self.data] if isinstance(self.data, str) else self.data
        if not isinstance(data, (list, tuple)) or not data or not all(isinstance(s, str) and s for s in data):
            problems.append(f"--data must be a dataset spec (synthetic, folder:PATH, lavdf:PATH) or a non-empty list "
                            f"of them, got {self.data!r}")
        for name, values in _CHOICES:
            if hasattr(self, name) and getattr(self, name) not in values:
                problems.append(f"--{name} must be one of {', '.join(values)}, got {getattr(self, name)!r}")
        for name in ("train_split", "val_split"):
            try:
                canonical_split(getattr(self, name))
            except DatasetError as exc:
                problems.append(f"{name}: {exc}")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, (str, os.PathLike))
                                           or not os.fspath(self.cache_dir)):
            problems.append(f"--cache-dir must be a folder path or None, got {self.cache_dir!r}")
        teachers = getattr(self, "teachers", [])
        if not isinstance(teachers, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in teachers):
            problems.append(f"teachers must be a list of checkpoint paths, got {teachers!r}")
        if not isinstance(getattr(self, "student", ""), (str, os.PathLike)):
            problems.append(f"student must be a checkpoint path, got {getattr(self, 'student')!r}")
        for check, value in ((lambda v: check_preset(v, "--preset"), self.preset), (in_memory_mode, self.in_memory),
                             (check_device, self.device)):
            try:
                check(value)
            except UsageError as exc:
                problems.append(str(exc))
        if problems:
            raise UsageError("; ".join(problems))
        self._check_model_options()

    def _check_model_options(self) -> None:
        """A stage that builds a model (``model_kind``) builds it on the meta device with ``model_options``, so an
        option no model can be built with fails here, before any data is read (a :class:`UsageError`)."""
        kind = getattr(self, "model_kind", None)
        if kind is None:
            return
        from pinlite_edge.training.models import check_model_options  # torch and the models: only when needed

        try:
            check_model_options(kind, self.preset, getattr(self, "model_options", None),
                                getattr(self, "pretrained", None))
        except PinliteError as exc:
            raise exc if isinstance(exc, UsageError) else UsageError(str(exc)) from None


@dataclass
class TeacherConfig(TrainConfig):
    """``python -m pinlite_edge.training.teacher``: PinPoint trained with CE(real/fake) + offset CE + the attention
    alignment term (``align_weight``)."""

    model_kind: ClassVar[str] = "teacher"  # the model this stage builds (its --model-option are checked against it)
    output: str = "runs/teacher"
    #: ImageNet backbone weights (paper preset): None uses them when torchvision's cache holds them (SPEC §2), True
    #: requires them, False starts from random weights; never downloaded
    pretrained: bool | None = None
    model_options: dict[str, Any] = field(default_factory=dict)  # ModelConfig field overrides, e.g. dropout


@dataclass
class DistillConfig(TrainConfig):
    """``python -m pinlite_edge.training.distill``: PIN-Lite from one teacher or an ensemble (SPEC §3)."""

    model_kind: ClassVar[str] = "student"
    output: str = "runs/distilled"
    teachers: list[str] = field(default_factory=list)
    alpha: float = 0.5
    beta: float = 5.0
    temperature: float = 2.0
    cache_teacher: bool = True
    pretrained: bool | None = None  # as TeacherConfig.pretrained
    model_options: dict[str, Any] = field(default_factory=dict)  # ModelConfig field overrides, e.g. dropout


@dataclass
class PruneConfig(TrainConfig):
    """``python -m pinlite_edge.training.prune``: iterative L1 head pruning with fine-tuning (SPEC §3).

    ``prune_steps`` heads are removed, one per iteration (the globally least important head), each followed by
    ``epochs`` epochs of fine-tuning at ``lr``. ``target_heads`` (total heads left over all layers) overrides it.
    With ``teachers`` the fine-tuning uses the distillation objective and EPS is measured against the teacher(s);
    without, fine-tuning uses CE + offset CE and EPS is measured against the unpruned student.
    """

    output: str = "runs/pruned"
    student: str = ""
    teachers: list[str] = field(default_factory=list)
    prune_steps: int = 2
    target_heads: int | None = None
    #: head importance: "l1" (SPEC §3: L1 norms of Q/K/V weights) or "ablation" (loss increase when removed)
    importance: str = "l1"
    #: replace a removed head by its mean output on ``compensation_clips`` training clips (0: zero ablation)
    compensation_clips: int = 128
    epochs: int = 3
    lr: float = 1e-5
    warmup_steps: int = 0
    alpha: float = 0.5
    beta: float = 5.0
    temperature: float = 2.0
    cache_teacher: bool = True
