"""Export-time rewrites that keep the numerics of a model but give exporters an easier graph.

:class:`MatmulGRU` is a drop-in replacement for a one-layer, batch-first (optionally bidirectional) ``nn.GRU`` written
as explicit matmuls: one input projection for all time steps, then an unrolled loop of ``h @ W_hh^T`` per step. It
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


class _GRUDirection(nn.Module):
    """One direction of a GRU layer: ``x (B, T, I) -> h_all (B, T, H)``."""

    def __init__(self, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor | None,
                 b_hh: torch.Tensor | None, reverse: bool):
        super().__init__()
        hidden = w_hh.shape[1]
        self.hidden = hidden
        self.reverse = reverse
        # Input projection of all steps at once; the r and z parts of b_hh fold into it (they are plain sums).
        self.input_proj = nn.Linear(w_ih.shape[1], 3 * hidden)
        b_in = b_ih.detach().clone() if b_ih is not None else torch.zeros(3 * hidden)
        b_rec = b_hh.detach().clone() if b_hh is not None else torch.zeros(3 * hidden)
        with torch.no_grad():
            self.input_proj.weight.copy_(w_ih.detach())
            folded = b_in.clone()
            folded[: 2 * hidden] += b_rec[: 2 * hidden]
            self.input_proj.bias.copy_(folded)
        # Recurrent projection: r/z rows without bias, n rows with b_hn (it sits inside r * (...)).
        self.hidden_proj = nn.Linear(hidden, 3 * hidden)
        with torch.no_grad():
            self.hidden_proj.weight.copy_(w_hh.detach())
            bias = torch.zeros(3 * hidden)
            bias[2 * hidden:] = b_rec[2 * hidden:]
            self.hidden_proj.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        hd = self.hidden
        gi = self.input_proj(x)  # (B, T, 3H)
        h = torch.zeros(x.shape[0], hd, dtype=x.dtype, device=x.device)
        outs: list[torch.Tensor] = [h] * steps
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        for t in order:
            g = gi[:, t]
            gh = self.hidden_proj(h)
            rz = torch.sigmoid(g[:, : 2 * hd] + gh[:, : 2 * hd])
            r, z = rz[:, :hd], rz[:, hd:]
            n = torch.tanh(g[:, 2 * hd:] + r * gh[:, 2 * hd:])
            h = n + z * (h - n)  # == (1 - z) * n + z * h
            outs[t] = h
        return torch.stack(outs, dim=1)


class MatmulGRU(nn.Module):
    """``nn.GRU`` (1 layer, batch_first) as explicit matmuls; returns ``(output, None)`` like the call sites use."""

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.num_layers != 1 or not gru.batch_first or getattr(gru, "proj_size", 0):
            raise ValueError("MatmulGRU supports a one-layer, batch_first nn.GRU without projection")
        self.bidirectional = gru.bidirectional
        suffixes = ["_l0"] + (["_l0_reverse"] if gru.bidirectional else [])
        self.directions = nn.ModuleList(
            _GRUDirection(getattr(gru, f"weight_ih{s}"), getattr(gru, f"weight_hh{s}"),
                          getattr(gru, f"bias_ih{s}", None), getattr(gru, f"bias_hh{s}", None), reverse=i == 1)
            for i, s in enumerate(suffixes)
        )

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if h0 is not None:
            raise ValueError("MatmulGRU starts from a zero state (the model never passes h0)")
        outs = [d(x) for d in self.directions]
        return (torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]), None


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


def gru_module_names(model: nn.Module) -> list[str]:
    """Qualified names of the GRUs (``nn.GRU`` or :class:`MatmulGRU`) in ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.GRU, MatmulGRU))]
