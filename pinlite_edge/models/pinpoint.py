"""PinPoint, the FP32 teacher (SPEC §2)."""
from __future__ import annotations

from pinlite_edge.models.config import teacher_config
from pinlite_edge.models.detector_net import AVSyncDetector


def create_teacher(preset: str = "paper", pretrained: bool | None = None) -> AVSyncDetector:
    """ResNet-18 + BiGRU-256 + 3×8-head fusion (``paper``, 15.0 M params) or its ``tiny`` variant.

    ``pretrained=None`` uses ImageNet weights only if torchvision's cache already has them (never downloads).
    """
    return AVSyncDetector(teacher_config(preset), pretrained)
