"""Export-time rewrites that keep the numerics of a model but give exporters an easier graph.

:class:`MatmulGRU` is a drop-in replacement for a one-layer, batch-first (optionally bidirectional) ``nn.GRU`` written
as explicit matmuls: one input projection for all time steps and directions, then an unrolled loop of one batched
``h @ W_hh^T`` per step (both directions together). It
uses the same weights (copied, not retrained) and matches ``nn.GRU`` to float rounding. ExecuTorch lowers it to
XNNPACK quickly and with a dynamic batch (``nn.GRU`` lowers slowly, runs in portable kernels and breaks INT8 PT2E);
in ONNX it becomes plain MatMul/Sigmoid/Tanh nodes instead of one ``GRU`` node.
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class MatmulGRU(nn.Module):
    """``nn.GRU`` (1 layer, batch_first) as explicit matmuls; returns ``(output, None)`` like the call sites use.

    Both directions of a bidirectional GRU run in *one* unrolled recurrence: the hidden states are stacked as
    ``(D, B, H)`` and each step is one batched matmul (``baddbmm``) per gate block, with the reverse direction's
    inputs flipped in time once. That halves the unrolled graph (ExecuTorch lowering time grows with it).
    """

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.num_layers != 1 or not gru.batch_first or getattr(gru, "proj_size", 0):
            raise ValueError("MatmulGRU supports a one-layer, batch_first nn.GRU without projection")
        suffixes = ["_l0"] + (["_l0_reverse"] if gru.bidirectional else [])
        self.num_directions = len(suffixes)
        hidden = gru.hidden_size
        self.hidden = hidden
        w_ih, b_in, w_hh_t, b_hn = [], [], [], []
        for s in suffixes:
            b_ih = getattr(gru, f"bias_ih{s}", None)
            b_hh = getattr(gru, f"bias_hh{s}", None)
            b_ih = b_ih.detach() if b_ih is not None else torch.zeros(3 * hidden)
            b_hh = b_hh.detach() if b_hh is not None else torch.zeros(3 * hidden)
            folded = b_ih.clone()
            folded[: 2 * hidden] += b_hh[: 2 * hidden]  # r/z recurrent biases are plain sums: fold them in
            w_ih.append(getattr(gru, f"weight_ih{s}").detach())
            b_in.append(folded)
            w_hh_t.append(getattr(gru, f"weight_hh{s}").detach().t())
            rec = torch.zeros(3 * hidden)
            rec[2 * hidden:] = b_hh[2 * hidden:]  # b_hn sits inside r * (W_hn h + b_hn)
            b_hn.append(rec)
        # Input projection of every step and direction at once: (B, T, I) -> (B, T, D*3H).
        self.input_proj = nn.Linear(w_ih[0].shape[1], self.num_directions * 3 * hidden)
        with torch.no_grad():
            self.input_proj.weight.copy_(torch.cat(w_ih, dim=0))
            self.input_proj.bias.copy_(torch.cat(b_in, dim=0))
        self.hidden_weight = nn.Parameter(torch.stack(w_hh_t).contiguous())  # (D, H, 3H)
        self.hidden_bias = nn.Parameter(torch.stack(b_hn)[:, None, :].contiguous())  # (D, 1, 3H)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if h0 is not None:
            raise ValueError("MatmulGRU starts from a zero state (the model never passes h0)")
        b, steps, _ = x.shape
        d, hd = self.num_directions, self.hidden
        gi = self.input_proj(x).reshape(b, steps, d, 3 * hd).permute(2, 0, 1, 3)  # (D, B, T, 3H)
        if d == 2:
            gi = torch.stack([gi[0], gi[1].flip(1)])  # the reverse direction walks its inputs backwards
        h = torch.zeros(d, b, hd, dtype=x.dtype, device=x.device)
        outs: list[torch.Tensor] = []
        for t in range(steps):
            g = gi[:, :, t]  # (D, B, 3H)
            gh = torch.baddbmm(self.hidden_bias, h, self.hidden_weight)  # (D, B, 3H)
            rz = torch.sigmoid(g[..., : 2 * hd] + gh[..., : 2 * hd])
            r, z = rz[..., :hd], rz[..., hd:]
            n = torch.tanh(g[..., 2 * hd:] + r * gh[..., 2 * hd:])
            h = n + z * (h - n)  # == (1 - z) * n + z * h
            outs.append(h)
        out = torch.stack(outs, dim=2)  # (D, B, T, H)
        if d == 1:
            return out[0], None
        return torch.cat([out[0], out[1].flip(1)], dim=-1), None


def rewrite_gru(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with every ``nn.GRU`` replaced by :class:`MatmulGRU`."""
    if not inplace:
        model = copy.deepcopy(model)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.GRU):
                setattr(module, child_name, MatmulGRU(child))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    log.debug("rewrote nn.GRU as matmuls: %s", replaced)
    return model
