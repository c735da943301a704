"""Layers an onnxruntime-CPU INT8 artefact keeps float because they run *faster* float (``--speed-float auto``).

Measured on the paper-preset student (MobileNetV3-Small frames, 16 x 128 x 128), onnxruntime 1.32, 1 thread, x86_64
with AVX-512 VNNI: benchmarks/results/ort_int8_speed/ (this speed plan against quantizing all, per activation type)
and benchmarks/results/ort_int8_plan/ (the INT8 artefact with the fixed precision plan and this speed plan: size,
speed and agreement against FP32):

* onnxruntime's CPU int8 depthwise kernels ran 2-3x slower than its blocked (NCHWc) FP32 depthwise convolutions
  (e.g. 88 channels at 16 x 16: 0.32 ms int8 against 0.14 ms FP32);
* the 3-channel stem was slower in int8 than in FP32, and in the early high-resolution stages every float <-> int8
  boundary (QuantizeLinear / DequantizeLinear over a full-size feature map, plus NHWC <-> NCHWc layout changes)
  costs more than the int8 convolutions there save;
* the squeeze-and-excitation convolutions (``fc1``/``fc2``) run on globally pooled 1 x 1 maps: int8 saves no
  arithmetic there, and each costs a QuantizeLinear / DequantizeLinear pair, two layout transposes and the FP32
  Conv + HardSigmoid / Relu fusion (on the Intel Xeon of benchmarks/results/ort_int8_plan/: the same median time
  float as int8, and the file 26 kB (0.4 points of FP32 size) smaller: their int32 biases, bias scales and zero points
  give way to plain biases);
* a pointwise convolution followed by HardSwish (the expand convs of the HardSwish stages, the last 1 x 1 conv):
  onnxruntime has no int8 HardSwish and does not fuse it into QLinearConv, so the int8 output is transposed back to
  NCHW, dequantized and run through HardSigmoid + Mul (~0.9 ms on the paper student), where the FP32 NCHWc conv fuses
  the HardSwish; float, they made the model 2-4% faster (the plan that keeps them int8 measured 0.97-0.99x of FP32,
  this one 1.01-1.05x, in turns on the same loaded machine);
* with those float, the projection conv of a block without a residual connection (stride 2 or a channel change)
  feeds a float conv directly: its output gets no QuantizeLinear, so onnxruntime cannot fuse it into QLinearConv and
  would run it FP32 on int8-rounded inputs -- it is kept float (int8 weight storage) instead;
* outside the backbone, a Linear layer applied to a 2-D input (exported as ``Gemm``: the frame projection of the pooled
  backbone features, the classification / offset heads) whose output is not quantized again: onnxruntime 1.32 leaves
  that DequantizeLinear -> Gemm unfused (FP32 on int8-rounded inputs, the weight dequantized on every call), so it is
  kept float with int8 weight storage.

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
REASON_HARDSWISH = ("speed (onnxruntime CPU): pointwise conv followed by HardSwish; onnxruntime has no int8 HardSwish "
                    "and runs it unfused after a dequantize and a layout transpose, the FP32 conv fuses it")
REASON_NO_RESIDUAL = ("speed (onnxruntime CPU): projection conv of a block without a residual connection; its "
                      "output feeds a float conv, so onnxruntime cannot fuse it into an int8 kernel (no output "
                      "QuantizeLinear)")
REASON_GEMM = ("speed (onnxruntime CPU): Linear on a 2-D input (ONNX Gemm) with a float consumer; onnxruntime leaves "
               "DequantizeLinear -> Gemm unfused (FP32 on int8-rounded inputs)")
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
    ``max_stride``, and every depthwise, squeeze-and-excitation and HardSwish-activated convolution of the later
    stages, and the projection conv of a later block without a residual connection (what stays int8 in the backbone: the
    projection convs of residual blocks). Empty for other backbones."""
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
        hardswish = {_join(name, "0") for name, module in stage.named_modules() if _conv_then_hardswish(module)}
        last_conv = [n for n, m in stage.named_modules() if isinstance(m, nn.Conv2d)][-1:]
        no_residual = set(last_conv) if getattr(stage, "use_res_connect", True) is False else set()
        for name, module in stage.named_modules():
            if not isinstance(module, nn.Conv2d):
                continue
            if module.groups > 1 and module.groups == module.in_channels:
                entries.append(FloatEntry(f"{scope}.{name}", REASON_DEPTHWISE, "speed", ops=("Conv",)))
            elif name in se_convs:
                entries.append(FloatEntry(f"{scope}.{name}", REASON_SE, "speed", ops=("Conv",)))
            elif name in hardswish:
                entries.append(FloatEntry(f"{scope}.{name}", REASON_HARDSWISH, "speed", ops=("Conv",)))
            elif name in no_residual:
                entries.append(FloatEntry(f"{scope}.{name}", REASON_NO_RESIDUAL, "speed", ops=("Conv",)))
    return entries + _gemm_entries(model)


def _gemm_entries(model: nn.Module) -> list[FloatEntry]:
    """Linear layers that see a 2-D input in a batch-1 forward pass (they export as Gemm; none of this model's Gemm
    outputs is quantized again)."""
    from pinlite_edge.models.inputs import example_inputs

    seen: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: seen.append(name) if args[0].dim() == 2
                                     else None)
             for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs(model, 1, seed=0))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [FloatEntry(name, REASON_GEMM, "speed") for name in dict.fromkeys(seen)]


def _is_squeeze_excitation(module: nn.Module) -> bool:
    """torchvision's SqueezeExcitation: an average pool and two 1 x 1 convolutions ``fc1`` / ``fc2``."""
    return all(isinstance(getattr(module, n, None), nn.Conv2d) for n in ("fc1", "fc2")) and hasattr(module, "avgpool")


def _conv_then_hardswish(module: nn.Module) -> bool:
    """A conv -> norm -> HardSwish sequence (torchvision's Conv2dNormActivation) whose conv is at index 0."""
    if not isinstance(module, nn.Sequential) or len(module) < 2 or not isinstance(module[0], nn.Conv2d):
        return False
    return isinstance(module[-1], nn.Hardswish)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
