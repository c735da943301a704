"""Parameters and FLOPs of a model, from the model config recorded in every manifest and checkpoint.

Weights do not change either figure, so the model is rebuilt from its config (random init). FLOPs are counted by
``torch.utils.flop_counter`` on one clip (batch 1), in its convention (a multiply-add counts 2).
"""
from __future__ import annotations

import functools
import json
from typing import Any


@functools.lru_cache(maxsize=16)
def _stats(config_json: str) -> tuple[int, int]:
    from pinlite_edge.models import ModelConfig, count_parameters, create_model
    from pinlite_edge.models.flops import count_flops

    model = create_model(ModelConfig.from_dict(json.loads(config_json)), pretrained=False)
    return count_parameters(model), count_flops(model)


def params_and_flops(model_config: dict[str, Any]) -> tuple[int, int]:
    """``(parameters, FLOPs per clip)`` of the model described by ``model_config``."""
    return _stats(json.dumps(model_config, sort_keys=True))
