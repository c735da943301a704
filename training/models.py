"""Build the teacher / student of a preset with optional ModelConfig overrides (stored in the checkpoint)."""
from __future__ import annotations

from typing import Any

import torch

from pinlite_edge.errors import PinliteError, UsageError
from pinlite_edge.models import AVSyncDetector, ModelConfig, create_model, student_config, teacher_config
from pinlite_edge.models.backbones import backbone_has_imagenet_weights


def model_config(kind: str, preset: str, options: dict[str, Any] | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of ``kind`` teacher|student of ``preset`` with ``options`` replacing its fields;
    :class:`UsageError` names a bad option."""
    config = teacher_config(preset) if kind == "teacher" else student_config(preset)
    if not options:
        return config
    unknown = sorted(set(options) - set(ModelConfig.__dataclass_fields__) - {"contract"})
    if unknown or "contract" in options or "kind" in options or "preset" in options:
        raise PinliteError(f"cannot override model option(s) {unknown or ['contract/kind/preset']}; choose from "
                           f"{sorted(set(ModelConfig.__dataclass_fields__) - {'contract', 'kind', 'preset'})}")
    defaults = config.to_dict()
    for name, value in options.items():
        if isinstance(defaults.get(name), list) and not isinstance(value, (list, tuple)):
            raise UsageError(f"invalid model option {name}={value!r}: must be a list (the preset has "
                             f"{defaults.get(name)!r})")
    try:  # ModelConfig checks every field's type and range (UsageError)
        return ModelConfig.from_dict({**defaults, **options})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid model options {options}: {exc}") from None


def check_pretrained(kind: str, preset: str, options: dict[str, Any] | None, pretrained: bool | None) -> None:
    """``pretrained=True`` (``--pretrained``) needs a backbone ImageNet weights exist for: a :class:`UsageError`
    naming the flag otherwise, before any data is prepared."""
    if pretrained is not True:
        return
    config = model_config(kind, preset, options)
    if not backbone_has_imagenet_weights(config.backbone, config.backbone_width):
        raise UsageError(f"--pretrained: no ImageNet weights exist for the {preset} {kind}'s backbone "
                         f"({config.backbone}, width {config.backbone_width:g}); only the paper preset's ResNet-18 "
                         "and MobileNetV3-Small (width 1) have them")


def build_model(kind: str, preset: str, options: dict[str, Any] | None = None,
                pretrained: bool | None = False) -> AVSyncDetector:
    """``kind`` teacher|student of ``preset``; ``options`` replace fields of its :class:`ModelConfig`;
    ``pretrained``: ImageNet backbone weights if on disk (None), required (True) or not used (False). A combination
    the model cannot be built with (e.g. more sync lags than the window has frames for) is a :class:`PinliteError`."""
    check_pretrained(kind, preset, options, pretrained)
    config = model_config(kind, preset, options)
    try:
        return create_model(config, pretrained=pretrained)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as exc:  # e.g. a zero head size
        raise PinliteError(f"invalid model options {options}: the model cannot be built with them "
                           f"({type(exc).__name__}: {exc})") from None


def check_model_options(kind: str, preset: str, options: dict[str, Any] | None,
                        pretrained: bool | None = None) -> None:
    """Build the model on the meta device (no memory, no weights) so a bad ``options`` (or a ``pretrained=True`` no
    weights exist for) fails before any data is prepared; raises :class:`PinliteError`."""
    check_pretrained(kind, preset, options, pretrained)
    if options:
        with torch.device("meta"):
            build_model(kind, preset, options)
