"""Build the teacher / student of a preset with optional ModelConfig overrides (stored in the checkpoint)."""
from __future__ import annotations

from typing import Any

import torch

from pinlite_edge.errors import PinliteError
from pinlite_edge.models import AVSyncDetector, ModelConfig, create_model, student_config, teacher_config


def model_config(kind: str, preset: str, options: dict[str, Any] | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of ``kind`` teacher|student of ``preset`` with ``options`` replacing its fields;
    :class:`PinliteError` names a bad option."""
    config = teacher_config(preset) if kind == "teacher" else student_config(preset)
    if not options:
        return config
    unknown = sorted(set(options) - set(ModelConfig.__dataclass_fields__) - {"contract"})
    if unknown or "contract" in options or "kind" in options or "preset" in options:
        raise PinliteError(f"cannot override model option(s) {unknown or ['contract/kind/preset']}; choose from "
                           f"{sorted(set(ModelConfig.__dataclass_fields__) - {'contract', 'kind', 'preset'})}")
    try:
        return ModelConfig.from_dict({**config.to_dict(), **options})
    except (TypeError, ValueError) as exc:
        raise PinliteError(f"invalid model options {options}: {exc}") from None


def build_model(kind: str, preset: str, options: dict[str, Any] | None = None,
                pretrained: bool = False) -> AVSyncDetector:
    """``kind`` teacher|student of ``preset``; ``options`` replace fields of its :class:`ModelConfig`. A combination
    the model cannot be built with (e.g. more sync lags than the window has frames for) is a :class:`PinliteError`."""
    config = model_config(kind, preset, options)
    try:
        return create_model(config, pretrained=True if pretrained else False)
    except ValueError as exc:
        raise PinliteError(f"invalid model options {options}: {exc}") from None


def check_model_options(kind: str, preset: str, options: dict[str, Any] | None) -> None:
    """Build the model on the meta device (no memory, no weights) so a bad ``options`` fails before any data is
    prepared; raises :class:`PinliteError`."""
    if options:
        with torch.device("meta"):
            build_model(kind, preset, options)
