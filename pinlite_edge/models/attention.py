"""Multi-head cross-attention with explicit heads, so pruning removes real weights (SPEC §2, §3)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def aligned_key_positions(num_queries: int, num_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """Key index each query is in sync with when both cover the same window: ``round(i·Nk/Nq)``."""
    return torch.round(torch.arange(num_queries, device=device) * num_keys / num_queries).long()


class MultiHeadCrossAttention(nn.Module):
    """Queries from one modality attend to keys/values of another.

    Q, K and V are separate ``nn.Linear`` layers of width ``num_heads * head_dim`` (not a fused in-projection), and
    the softmax is an explicit :class:`torch.nn.Softmax` module so exporters see (and can keep in higher precision) a
    Softmax node. :meth:`prune_heads` physically removes heads: the layer really gets smaller.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, dropout: float = 0.0,
                 num_queries: int | None = None, num_keys: int | None = None):
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
            head_dim = dim // num_heads
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)
        self.softmax = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(head_dim)
        self.rel_bias: nn.Parameter | None = None
        if num_queries is not None and num_keys is not None:
            self._init_relative_bias(num_queries, num_keys)

    def _init_relative_bias(self, num_queries: int, num_keys: int) -> None:
        """Learned per-head bias on the scores by the time distance between a query and a key.

        Queries and keys cover the same 0.64 s window, so query i sits at key position round(i·Nk/Nq). Each head
        starts ALiBi-like (``-slope_h·|distance|``, slopes from 2^(-4/H) down to 1/16), i.e. attending around the
        aligned frame: the model starts out comparing each audio step with its own frames, which is what lip-sync
        checking needs, instead of having to discover alignment from uniform attention.
        """
        aligned = aligned_key_positions(num_queries, num_keys)
        distance = aligned[:, None] - torch.arange(num_keys)[None, :]  # (Nq, Nk) in -(Nk-1)..(Nk-1)
        self.register_buffer("rel_index", distance + num_keys - 1, persistent=False)
        slopes = torch.tensor([2.0 ** (-(h + 1) * 4.0 / self.num_heads) for h in range(self.num_heads)])
        offsets = torch.arange(-(num_keys - 1), num_keys).abs().float()
        self.rel_bias = nn.Parameter(-slopes[:, None] * offsets[None, :])  # (H, 2·Nk - 1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(output (B, Nq, dim), attention (B, H, Nq, Nk))``; attention rows sum to 1."""
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(context))
        v = self._split(self.v_proj(context))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.rel_bias is not None:
            if scores.shape[-2:] != self.rel_index.shape:
                raise ValueError(f"relative position bias built for {tuple(self.rel_index.shape)} query x key "
                                 f"tokens, got {tuple(scores.shape[-2:])}")
            scores = scores + self.rel_bias[:, self.rel_index]  # (H, Nq, Nk), broadcast over the batch
        attn = self.softmax(scores)
        out = torch.matmul(self.dropout(attn), v)  # (B, H, Nq, Dh)
        b, _, nq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, nq, self.num_heads * self.head_dim)
        return self.out_proj(out), attn

    @torch.no_grad()
    def head_importance(self) -> torch.Tensor:
        """L1 norm of each head's Q, K and V weights (SPEC §3): ``(num_heads,)``."""
        total = torch.zeros(self.num_heads)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            w = proj.weight.detach().abs().reshape(self.num_heads, self.head_dim, -1)
            total += w.sum(dim=(1, 2)).cpu()
        return total

    @torch.no_grad()
    def prune_heads(self, indices: Iterable[int], mean_head_output: torch.Tensor | None = None) -> None:
        """Physically remove the heads in ``indices`` (rows of Q/K/V, columns of the output projection).

        ``mean_head_output`` ``(num_heads, head_dim)``: each head's mean output (before the output projection) on
        representative data. When given, a removed head is replaced by that mean rather than by zero: its projected
        mean is folded into the output projection's bias ("mean ablation"), which is exact for a head whose output
        does not depend on the input and much gentler than zero ablation for the others.
        """
        drop = sorted({int(i) for i in indices})
        if not drop:
            return
        bad = [i for i in drop if not 0 <= i < self.num_heads]
        if bad:
            raise ValueError(f"head indices {bad} out of range for {self.num_heads} heads")
        keep_heads = [h for h in range(self.num_heads) if h not in drop]
        if not keep_heads:
            raise ValueError("cannot prune every head of an attention layer")
        keep = torch.cat([torch.arange(h * self.head_dim, (h + 1) * self.head_dim) for h in keep_heads])
        for name in ("q_proj", "k_proj", "v_proj"):
            old: nn.Linear = getattr(self, name)
            new = nn.Linear(old.in_features, len(keep), device=old.weight.device, dtype=old.weight.dtype)
            new.weight.copy_(old.weight[keep])
            new.bias.copy_(old.bias[keep])
            new.weight.requires_grad_(old.weight.requires_grad)
            new.bias.requires_grad_(old.bias.requires_grad)
            setattr(self, name, new)
        old = self.out_proj
        new = nn.Linear(len(keep), old.out_features, device=old.weight.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight[:, keep])
        new.bias.copy_(old.bias)
        if mean_head_output is not None:
            if tuple(mean_head_output.shape) != (self.num_heads, self.head_dim):
                raise ValueError(f"mean_head_output must have shape {(self.num_heads, self.head_dim)}, got "
                                 f"{tuple(mean_head_output.shape)}")
            gone = torch.cat([torch.arange(h * self.head_dim, (h + 1) * self.head_dim) for h in drop])
            mean = mean_head_output.to(old.weight)[drop].reshape(-1)
            new.bias.add_(old.weight[:, gone] @ mean)
        self.out_proj = new
        if self.rel_bias is not None:
            self.rel_bias = nn.Parameter(self.rel_bias.detach()[keep_heads].clone(),
                                         requires_grad=self.rel_bias.requires_grad)
        self.num_heads = len(keep_heads)
