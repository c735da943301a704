"""Gated cross-attention fusion block (SPEC §2)."""
from __future__ import annotations

import torch
from torch import nn

from pinlite_edge.models.attention import MultiHeadCrossAttention


class GatedCrossAttentionBlock(nn.Module):
    """``a = a + tanh(g) * Attn(LN(a), LN(v))`` then ``a = a + FFN(LN(a))``; audio queries, video keys/values.

    ``tokens=(audio tokens, frames)`` enables the attention's relative position bias.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, ffn_dim: int, dropout: float = 0.0,
                 gate_init: float = 1.0, tokens: tuple[int, int] | None = None):
        super().__init__()
        self.norm_audio = nn.LayerNorm(dim)
        self.norm_video = nn.LayerNorm(dim)
        self.attn = MultiHeadCrossAttention(dim, num_heads, head_dim=head_dim, dropout=dropout,
                                            num_queries=tokens[0] if tokens else None,
                                            num_keys=tokens[1] if tokens else None)
        # tanh(1.0) ~ 0.76: the gate starts open so attention is trained from the first step.
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, attn = self.attn(self.norm_audio(audio), self.norm_video(video))
        audio = audio + torch.tanh(self.gate) * attended
        audio = audio + self.ffn(self.norm_ffn(audio))
        return audio, attn
