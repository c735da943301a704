"""PIN-Lite, the distilled student (SPEC §2)."""
from __future__ import annotations

from pinlite_edge.models.config import student_config
from pinlite_edge.models.detector_net import AVSyncDetector


def create_student(preset: str = "paper", pretrained: bool | None = None) -> AVSyncDetector:
    """MobileNetV3-Small + BiGRU-128 + 2×4-head fusion (``paper``, 1.69 M params) or its ``tiny`` variant."""
    return AVSyncDetector(student_config(preset), pretrained)
