"""Build the teacher / student of a preset with optional ModelConfig overrides (stored in the checkpoint)."""
from __future__ import annotations

from typing import Any

from pinlite_edge.errors import PinliteError
from pinlite_edge.models import AVSyncDetector, ModelConfig, create_model, student_config, teacher_config


def build_model(kind: str, preset: str, options: dict[str, Any] | None = None,
                pretrained: bool = False) -> AVSyncDetector:
    """``kind`` teacher|student of ``preset``; ``options`` replace fields of its :class:`ModelConfig`."""
    config = teacher_config(preset) if kind == "teacher" else student_config(preset)
    if options:
        unknown = sorted(set(options) - set(ModelConfig.__dataclass_fields__) - {"contract"})
        if unknown or "contract" in options or "kind" in options or "preset" in options:
            raise PinliteError(f"cannot override model option(s) {unknown or ['contract/kind/preset']}; choose from "
                               f"{sorted(set(ModelConfig.__dataclass_fields__) - {'contract', 'kind', 'preset'})}")
        try:
            config = ModelConfig.from_dict({**config.to_dict(), **options})
        except (TypeError, ValueError) as exc:
            raise PinliteError(f"invalid model options {options}: {exc}") from None
    return create_model(config, pretrained=True if pretrained else False)
