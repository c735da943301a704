"""torchvision frame backbones. ImageNet weights are used only when already on disk: nothing is downloaded."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from pinlite_edge.errors import UsageError

log = logging.getLogger(__name__)

#: BatchNorm momentum of every backbone (torchvision's ResNets already use it).
BATCHNORM_MOMENTUM = 0.1


@dataclass
class Backbone:
    """A feature extractor ``(N, 3, S, S) -> (N, C, h, w)`` split into blocks (for freezing) and its width."""

    blocks: nn.Sequential
    out_channels: int
    pretrained: bool


def _local_weights(weights: tvm.WeightsEnum) -> dict[str, torch.Tensor] | None:
    """The weights' state dict if torchvision's cache already holds the file, else None (never downloads)."""
    filename = os.path.basename(weights.url)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_pretrained(model: nn.Module, weights: tvm.WeightsEnum, pretrained: bool | None) -> bool:
    """pretrained=None: use local weights if present; True: require them; False: random init."""
    if pretrained is False:
        return False
    state = _local_weights(weights)
    if state is None:
        if pretrained:
            from pinlite_edge.errors import CheckpointError

            raise CheckpointError(
                f"ImageNet weights {weights} are not in {torch.hub.get_dir()}/checkpoints; pinlite-edge never downloads "
                "at run time. Fetch them once with torchvision (e.g. on a connected machine) and copy the file there."
            )
        log.info("ImageNet weights %s not on disk: backbone randomly initialised", weights)
        return False
    model.load_state_dict(state)
    log.info("loaded local ImageNet weights %s", weights)
    return True


def resnet18_backbone(pretrained: bool | None = None) -> Backbone:
    net = tvm.resnet18(weights=None)
    used = _load_pretrained(net, tvm.ResNet18_Weights.IMAGENET1K_V1, pretrained)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return Backbone(nn.Sequential(stem, net.layer1, net.layer2, net.layer3, net.layer4), 512, used)


def resnet_narrow_backbone(width: float = 0.25, layers: tuple[int, ...] = (1, 1, 1, 1)) -> Backbone:
    """ResNet family (torchvision BasicBlock) with stage widths scaled by ``width``; no pretrained weights exist."""
    widths = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
    stem = nn.Sequential(
        nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stages: list[nn.Module] = [stem]
    in_ch = widths[0]
    for i, (ch, n) in enumerate(zip(widths, layers)):
        stride = 1 if i == 0 else 2
        blocks = []
        for j in range(n):
            down = None
            if j == 0 and (stride != 1 or in_ch != ch):
                down = nn.Sequential(nn.Conv2d(in_ch, ch, 1, stride=stride, bias=False), nn.BatchNorm2d(ch))
            blocks.append(BasicBlock(in_ch, ch, stride=stride if j == 0 else 1, downsample=down))
            in_ch = ch
        stages.append(nn.Sequential(*blocks))
    return Backbone(nn.Sequential(*stages), in_ch, False)


def mobilenet_v3_small_backbone(width: float = 1.0, pretrained: bool | None = None) -> Backbone:
    net = tvm.mobilenet_v3_small(weights=None, width_mult=width)
    used = False
    if backbone_has_imagenet_weights("mobilenet_v3_small", width):
        used = _load_pretrained(net, tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1, pretrained)
    elif pretrained:
        raise UsageError("pretrained=True: ImageNet weights exist only for width 1.0 MobileNetV3-Small")
    # torchvision builds MobileNetV3 with BatchNorm momentum 0.01 (tuned for 600-epoch ImageNet runs). After the few
    # hundred steps of a CPU training run the running statistics are then still mostly their initial values, and
    # the model in eval mode predicts one class whatever the input; 0.1 (PyTorch's default) tracks the data.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = BATCHNORM_MOMENTUM
    out_channels = net.features[-1].out_channels if hasattr(net.features[-1], "out_channels") else None
    if out_channels is None:
        out_channels = net.features[-1][0].out_channels  # Conv2dNormActivation: conv is its first module
    return Backbone(nn.Sequential(*net.features), out_channels, used)


def widen_stem(blocks: nn.Sequential, in_channels: int) -> None:
    """Give the first convolution of ``blocks`` ``in_channels`` inputs (a multiple of its current count); every group
    of new channels starts as a copy of the original (possibly pretrained) filters."""
    for parent in blocks.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if in_channels % child.in_channels:
                    raise ValueError(f"cannot widen a {child.in_channels}-channel stem to {in_channels} channels")
                wide = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                 child.dilation, child.groups, child.bias is not None)
                with torch.no_grad():
                    wide.weight.copy_(child.weight.repeat(1, in_channels // child.in_channels, 1, 1))
                    if child.bias is not None:
                        wide.bias.copy_(child.bias)
                wide.weight.requires_grad_(child.weight.requires_grad)
                setattr(parent, name, wide)
                return
    raise ValueError("the backbone has no convolution to widen")


def backbone_has_imagenet_weights(name: str, width: float) -> bool:
    """Whether torchvision has ImageNet weights for backbone ``name`` at ``width``."""
    return name == "resnet18" or (name == "mobilenet_v3_small" and width == 1.0)


def build_backbone(name: str, width: float, pretrained: bool | None) -> Backbone:
    """The frame backbone ``name``: ImageNet weights if on disk (``pretrained=None``), required (True) or not (False);
    a backbone they do not exist for starts from random weights, logged (SPEC §2: reported as such)."""
    if pretrained is not None and not isinstance(pretrained, bool):
        raise UsageError(f"pretrained must be True, False or None, got {pretrained!r}")
    if pretrained is not False and not backbone_has_imagenet_weights(name, width):
        if pretrained:
            raise UsageError(f"pretrained=True: ImageNet weights exist only for resnet18 and width 1.0 "
                             f"mobilenet_v3_small, not {name} width {width:g}")
        log.info("backbone %s (width %g) has no ImageNet weights: randomly initialised", name, width)
    if name == "resnet18":
        return resnet18_backbone(pretrained)
    if name == "resnet_narrow":
        return resnet_narrow_backbone(width)
    if name == "mobilenet_v3_small":
        return mobilenet_v3_small_backbone(width, pretrained)
    raise ValueError(f"unknown backbone {name!r}")
