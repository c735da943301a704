"""PinPoint (teacher) and PIN-Lite (student) models."""
from pinlite_edge.models.attention import MultiHeadCrossAttention
from pinlite_edge.models.config import ModelConfig, student_config, teacher_config
from pinlite_edge.models.detector_net import AVSyncDetector, ModelOutput, count_parameters, mean_head_outputs
from pinlite_edge.models.pinlite import create_student
from pinlite_edge.models.pinpoint import create_teacher


def create_model(config: ModelConfig, pretrained: bool | None = False) -> AVSyncDetector:
    """Rebuild a model (including pruned head counts) from its config; used when loading checkpoints."""
    return AVSyncDetector(config, pretrained)


__all__ = [
    "AVSyncDetector", "ModelConfig", "ModelOutput", "MultiHeadCrossAttention", "count_parameters", "create_model",
    "create_student", "create_teacher", "mean_head_outputs", "student_config", "teacher_config",
]
