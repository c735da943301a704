"""The audio-visual sync detector network shared by PinPoint (teacher) and PIN-Lite (student)."""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from pinlite_edge.contract import NUM_OFFSET_CLASSES
from pinlite_edge.models.blocks import GatedCrossAttentionBlock
from pinlite_edge.models.config import ModelConfig
from pinlite_edge.models.encoders import AudioEncoder, FrameEncoder
from pinlite_edge.models.inputs import share_rows
from pinlite_edge.models.sync_features import LaggedSyncFeatures, SyncPeakContrast


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, 2) real/fake
    offset_logits: torch.Tensor  # (B, 11) audio offset -5..+5 frames
    attention: torch.Tensor  # (B, audio tokens, frames): last layer, head-averaged, rows sum to 1


class AVSyncDetector(nn.Module):
    """Frame encoder + audio encoder -> gated cross-attention (audio queries, video keys) -> pooled heads.

    ``forward(frames (B, ...), mfcc (k * B, ...))``: each frames row may serve ``k`` audio rows (mfcc rows
    ``i * k .. i * k + k - 1`` pair with frames row ``i``; the outputs have ``k * B`` rows). The frames are then encoded
    once, not ``k`` times: the offset scan scores each window against its audio at several shifts, and the frame encoder
    is nearly all of the model's compute (97% of the tiny student's CPU time). ``k = 1`` is the plain contract.
    """

    def __init__(self, config: ModelConfig, pretrained: bool | None = None):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.frame_encoder = FrameEncoder(config, pretrained)
        self.audio_encoder = AudioEncoder(config)
        self.video_pos = nn.Parameter(torch.zeros(1, config.contract.num_frames, d))
        self.audio_pos = nn.Parameter(torch.zeros(1, config.audio_tokens, d))
        nn.init.trunc_normal_(self.video_pos, std=0.02)
        nn.init.trunc_normal_(self.audio_pos, std=0.02)
        tokens = (config.audio_tokens, config.contract.num_frames) if config.relative_position_bias else None
        self.blocks = nn.ModuleList(
            GatedCrossAttentionBlock(d, h, config.head_dim, config.ffn_dim, config.dropout, tokens=tokens)
            for h in config.heads_per_layer
        )
        self.norm = nn.LayerNorm(d)
        # the classical synchrony cue (config.sync_lags > 0): lagged correlations -> MLP -> added to the pooled features
        self.sync_features = (LaggedSyncFeatures(config.contract, config.sync_lags, config.sync_learned_audio)
                              if config.sync_lags else None)
        self.sync_proj = (nn.Sequential(nn.Linear(self.sync_features.num_features, d), nn.GELU(), nn.Linear(d, d))
                          if self.sync_features is not None else None)
        # its peak contrast (config.sync_contrast), the baseline's decision statistic, added linearly
        self.sync_contrast = SyncPeakContrast(config.sync_lags) if config.sync_contrast else None
        self.sync_contrast_proj = nn.Linear(1, d) if self.sync_contrast is not None else None
        self.cls_head = nn.Linear(d, 2)
        self.offset_head = nn.Linear(d, NUM_OFFSET_CLASSES)

    @property
    def contract(self):
        return self.config.contract

    @property
    def backbone_pretrained(self) -> bool:
        return self.frame_encoder.pretrained

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> ModelOutput:
        if isinstance(frames.shape[0], int) and isinstance(mfcc.shape[0], int) and mfcc.shape[0] % frames.shape[0]:
            raise ValueError(f"mfcc batch {mfcc.shape[0]} is not a multiple of frames batch {frames.shape[0]}: "
                             "each frames row serves the same number of audio rows")
        video = share_rows(self.frame_encoder(frames) + self.video_pos, mfcc.shape[0])
        audio = self.audio_encoder(mfcc) + self.audio_pos
        attn = None
        for block in self.blocks:
            audio, attn = block(audio, video)
        pooled = self.norm(audio).mean(dim=1)
        if self.sync_features is not None and self.sync_proj is not None:
            corr = self.sync_features(frames, mfcc)
            cue = self.sync_proj(corr)
            if self.sync_contrast is not None and self.sync_contrast_proj is not None:
                cue = cue + self.sync_contrast_proj(self.sync_contrast(corr))
            if self.training and self.config.sync_dropout > 0:  # whole samples lose the cue, unscaled: at inference
                keep = torch.rand(cue.shape[0], 1, device=cue.device) >= self.config.sync_dropout  # it is always on
                cue = cue * keep.to(cue.dtype)
            pooled = pooled + cue
        assert attn is not None
        return ModelOutput(self.cls_head(pooled), self.offset_head(pooled), attn.mean(dim=1))

    # --- pruning -------------------------------------------------------------------------------------------
    def head_importance(self) -> list[torch.Tensor]:
        """Per layer, the L1 importance of each remaining head (SPEC §3)."""
        return [block.attn.head_importance() for block in self.blocks]

    def prune_heads(self, heads: Mapping[int, Sequence[int]],
                    mean_head_outputs: Sequence[torch.Tensor] | None = None) -> None:
        """Remove ``{layer: [head, ...]}`` for real and update ``self.config`` accordingly.

        ``mean_head_outputs``: per layer, each head's mean output (:meth:`mean_head_outputs`); when given, removed
        heads are replaced by their mean instead of zero (see ``MultiHeadCrossAttention.prune_heads``).
        """
        for layer, idx in heads.items():
            if not 0 <= int(layer) < len(self.blocks):
                raise ValueError(f"layer {layer} out of range for {len(self.blocks)} layers")
            mean = None if mean_head_outputs is None else mean_head_outputs[int(layer)]
            self.blocks[int(layer)].attn.prune_heads(idx, mean_head_output=mean)
        self.config = self.config.with_heads(tuple(b.attn.num_heads for b in self.blocks))


@torch.no_grad()
def mean_head_outputs(model: AVSyncDetector,
                      batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Per attention layer, every head's output ``(num_heads, head_dim)`` averaged over ``(frames, mfcc)`` batches
    and query positions (the input of each layer's output projection), in eval mode."""
    sums: list[torch.Tensor | None] = [None] * len(model.blocks)
    counts = [0] * len(model.blocks)

    def hook(layer: int):
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().double()  # (B, Nq, H*Dh)
            total = x.reshape(-1, x.shape[-1]).sum(dim=0)
            sums[layer] = total if sums[layer] is None else sums[layer] + total
            counts[layer] += x.shape[0] * x.shape[1]
        return record

    handles = [block.attn.out_proj.register_forward_pre_hook(hook(i)) for i, block in enumerate(model.blocks)]
    was_training = model.training
    model.eval()
    try:
        for frames, mfcc in batches:
            model(frames, mfcc)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not all(counts):
        raise ValueError("mean_head_outputs needs at least one batch")
    return [(s / c).float().reshape(b.attn.num_heads, b.attn.head_dim)
            for s, c, b in zip(sums, counts, model.blocks)]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
