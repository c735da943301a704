"""Layers an onnxruntime-CPU INT8 artefact keeps float because they run *faster* float (``--speed-float auto``).

Measured on the paper-preset student (MobileNetV3-Small frames, 16 x 128 x 128), onnxruntime 1.32, 1 thread, x86_64
with AVX-512 VNNI: benchmarks/results/ort_int8_speed/ (this speed plan against quantizing all, per activation type)
and benchmarks/results/ort_int8_plan/ (the INT8 artefact with the fixed precision plan and this speed plan: size,
speed and agreement against FP32):

* onnxruntime's CPU int8 depthwise kernels ran 2-3x slower than its blocked (NCHWc) FP32 depthwise convolutions
  (e.g. 88 channels at 16 x 16: 0.32 ms int8 against 0.14 ms FP32);
* the 3-channel stem was slower in int8 than in FP32, and in the early high-resolution stages every float <-> int8
  boundary (QuantizeLinear / DequantizeLinear over a full-size feature map, plus NHWC <-> NCHWc layout changes)
  costs more than the int8 convolutions there save.

* the squeeze-and-excitation convolutions (``fc1``/``fc2``) run on globally pooled 1 x 1 maps: int8 saves no
  arithmetic there, and each costs a QuantizeLinear / DequantizeLinear pair, two layout transposes and the FP32
  Conv + HardSigmoid / Relu fusion (on the Intel Xeon of benchmarks/results/ort_int8_plan/: the same median time
  float as int8, and the file 1% of FP32 smaller, as their int32 biases and bias scales give way to FP16 biases).

Quantizing everything the SPEC allows made the INT8 model 40% *slower* than FP32; keeping these float made it faster.
The rule is written for the MobileNetV3 frame backbone it was measured on; other backbones get no speed entries.
TensorRT (GPU int8 depthwise kernels) and XNNPACK builds do not use it.
"""
from __future__ import annotations

import torch
from torch import nn

from pinlite_edge.export.plan import FloatEntry

REASON_DEPTHWISE = ("speed (onnxruntime CPU): depthwise conv; onnxruntime's int8 depthwise kernels measured 2-3x "
                    "slower than its NCHWc FP32 ones")
REASON_SE = ("speed (onnxruntime CPU): squeeze-and-excitation conv on a pooled 1 x 1 map; int8 saves no arithmetic "
             "there and costs Q/DQ, layout transposes and the FP32 activation fusion")
REASON_HIGH_RES = ("speed (onnxruntime CPU): early high-resolution stage (output stride <= {stride}); its int8 convs "
                   "do not repay the Q/DQ and layout conversions of full-size feature maps")
#: Backbones the rule was measured on.
MEASURED_BACKBONES = ("mobilenet_v3_small",)
BACKBONE_SCOPE = "frame_encoder.backbone"


def stage_strides(backbone: nn.Sequential, frame_size: int) -> list[int]:
    """Output stride of every stage of ``backbone`` (input side / output side) for one ``frame_size`` frame."""
    strides: list[int] = []
    first = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    x = torch.zeros(1, first.in_channels, frame_size, frame_size)  # 6 channels with a motion input
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            for stage in backbone:
                x = stage(x)
                strides.append(max(1, frame_size // max(1, int(x.shape[-1]))))
    finally:
        backbone.train(was_training)
    return strides


def cpu_speed_entries(model: nn.Module, max_stride: int = 8) -> list[FloatEntry]:
    """Float entries (kind ``speed``) for the MobileNetV3 frame backbone: every stage whose output stride is at most
    ``max_stride``, and every depthwise and squeeze-and-excitation convolution of the later stages. Empty for other
    backbones."""
    config = getattr(model, "config", None)
    if config is None or config.backbone not in MEASURED_BACKBONES:
        return []
    backbone = model.frame_encoder.backbone
    entries: list[FloatEntry] = []
    strides = stage_strides(backbone, config.contract.frame_size)
    for index, (stage, stride) in enumerate(zip(backbone, strides)):
        scope = f"{BACKBONE_SCOPE}.{index}"
        if stride <= max_stride:
            entries.append(FloatEntry(scope, REASON_HIGH_RES.format(stride=max_stride), "speed"))
            continue
        se_convs = {f"{name}.{child}" for name, module in stage.named_modules() if _is_squeeze_excitation(module)
                    for child in ("fc1", "fc2")}
        for name, module in stage.named_modules():
            if not isinstance(module, nn.Conv2d):
                continue
            if module.groups > 1 and module.groups == module.in_channels:
                entries.append(FloatEntry(f"{scope}.{name}", REASON_DEPTHWISE, "speed", ops=("Conv",)))
            elif name in se_convs:
                entries.append(FloatEntry(f"{scope}.{name}", REASON_SE, "speed", ops=("Conv",)))
    return entries


def _is_squeeze_excitation(module: nn.Module) -> bool:
    """torchvision's SqueezeExcitation: an average pool and two 1 x 1 convolutions ``fc1`` / ``fc2``."""
    return all(isinstance(getattr(module, n, None), nn.Conv2d) for n in ("fc1", "fc2")) and hasattr(module, "avgpool")
