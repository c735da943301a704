"""Frame and audio encoders shared by teacher and student (SPEC §2)."""
from __future__ import annotations

import torch
from torch import nn

from pinlite_edge.models.backbones import build_backbone, widen_stem
from pinlite_edge.models.config import ModelConfig


class FrameEncoder(nn.Module):
    """Per-frame CNN, global average pool, linear projection: ``(B, T, 3, S, S) -> (B, T, D)``.

    With ``config.motion_input`` the CNN's input is each frame stacked with its difference to the previous frame
    (zero for the first), 6 channels: lip motion, what lip-sync hinges on, is visible to the first layer. With
    ``config.appearance_input`` False as well, the difference alone (3 channels).
    """

    def __init__(self, config: ModelConfig, pretrained: bool | None = None):
        super().__init__()
        backbone = build_backbone(config.backbone, config.backbone_width, pretrained)
        self.motion_input = config.motion_input
        self.appearance_input = config.appearance_input
        if self.motion_input and self.appearance_input:
            widen_stem(backbone.blocks, 6)
        self.backbone = backbone.blocks
        self.pretrained = backbone.pretrained
        self.frozen_blocks = config.frozen_blocks
        for block in list(self.backbone)[: config.frozen_blocks]:
            for p in block.parameters():
                p.requires_grad_(False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(backbone.out_channels, config.embed_dim)

    def train(self, mode: bool = True) -> "FrameEncoder":
        super().train(mode)
        for block in list(self.backbone)[: self.frozen_blocks]:
            block.eval()  # frozen blocks keep their BatchNorm statistics
        return self

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        if self.motion_input:
            previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
            motion = frames - previous
            frames = torch.cat([frames, motion], dim=2) if self.appearance_input else motion
        x = self.backbone(frames.reshape(b * t, *frames.shape[2:]))
        x = self.pool(x).flatten(1)
        return self.proj(x).reshape(b, t, -1)


class AudioEncoder(nn.Module):
    """Conv1d (k3, s2) x2, LayerNorm, bidirectional GRU, linear: ``(B, 64, 13) -> (B, 16, D)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2 = config.conv_channels
        n_mfcc = config.contract.num_mfcc
        self.convs = nn.Sequential(
            nn.Conv1d(n_mfcc, c1, kernel_size=3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(c1, c2, kernel_size=3, stride=2, padding=1), nn.GELU(),
        )
        self.norm = nn.LayerNorm(c2)
        self.gru = nn.GRU(c2, config.gru_hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * config.gru_hidden, config.embed_dim)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        x = self.convs(mfcc.transpose(1, 2)).transpose(1, 2)  # (B, tokens, c2)
        x, _ = self.gru(self.norm(x))
        return self.proj(x)
