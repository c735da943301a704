"""Training: the PinPoint teacher, PIN-Lite distillation and attention-head pruning (SPEC §3).

Commands: ``python -m pinlite_edge.training {teacher,distill,prune}`` (``--help`` lists them; the older
``python -m pinlite_edge.training.teacher | distill | prune`` work too); the same as functions taking dataclass
configs::

    from pinlite_edge.training.teacher import train_teacher    # TeacherConfig
    from pinlite_edge.training.distill import distill          # DistillConfig
    from pinlite_edge.training.prune import prune              # PruneConfig

(``distill``/``prune`` are not re-exported here: the names are taken by their submodules.) Attributes import lazily
so that ``import pinlite_edge.training`` stays light.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "TeacherConfig": "config", "DistillConfig": "config", "PruneConfig": "config",
    "train_teacher": "teacher", "fit": "engine", "evaluate": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f"pinlite_edge.training.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'pinlite_edge.training' has no attribute {name!r}")
