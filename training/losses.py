"""Training objectives (SPEC §3): the teacher loss and the PIN-Lite distillation loss.

``L = α·CE_hard + (1−α)·T²·KL(p_T ‖ p_S) + β·MSE(A_T, A_S)`` (+ ``offset_weight``·offset CE + ``align_weight``·
alignment NLL), where ``p_T`` and ``p_S`` are temperature-softened distributions over BOTH classes (real, fake). A
single-logit head passed through a softmax is a constant 1.0, which makes the KD term identically zero; the models here
have two logits and the KD term is computed on their two-class softmax.

The alignment term is an addition to SPEC §3: on clips whose audio offset ``k`` is known (real
clips: 0; audio shifted by ``k`` frames), audio token ``t`` is in sync with frame ``t − k``, and the term is the
negative log of the attention the returned (last-layer, head-averaged) map puts there. Without it the tiny models
trained on a CPU for minutes stay at chance on the synthetic task (they memorise clips instead of learning
audio-visual correspondence); with it they learn it in a few epochs (benchmarks/results/learnability/).

The pair-ranking term (``pair_weight``, also an addition) compares a real window with the same window given wrong
audio (shifted or swapped), both in the batch (the sampler pairs them, ``training/sampling.py``):
``softplus(m_fake − m_real)`` with ``m = logit_real − logit_fake``, i.e. the logistic loss of "the recorded audio
fits these lips better than the wrong one". That is the comparison the Detector's offset scan makes
(``pinlite_edge/offset_scan.py``); the cross-entropy asks instead for an absolute margin, which on real faces also
depends on the speaker and the recording.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from pinlite_edge.contract import MAX_OFFSET, OFFSET_IGNORE_INDEX
from pinlite_edge.data.sample import pair_key
from pinlite_edge.models import ModelOutput
from pinlite_edge.models.attention import aligned_key_positions


def offset_loss(offset_logits: torch.Tensor, offset_class: torch.Tensor) -> torch.Tensor:
    """Offset CE over samples with a defined offset only; 0 (with a gradient path) when a batch has none."""
    valid = offset_class != OFFSET_IGNORE_INDEX
    if not bool(valid.any()):
        return offset_logits.sum() * 0.0
    return F.cross_entropy(offset_logits.float(), offset_class, ignore_index=OFFSET_IGNORE_INDEX)


def alignment_loss(attention: torch.Tensor, offset_class: torch.Tensor) -> torch.Tensor:
    """Mean ``−log A[b, t, t − k_b]`` over clips with a defined offset and rows whose sync frame is in the window.

    ``attention``: ``(B, Q, F)`` rows summing to 1, query ``t`` at frame position ``round(t·F/Q)``; ``offset_class``:
    ``k + MAX_OFFSET`` or ``OFFSET_IGNORE_INDEX``. 0 (with a gradient path) when nothing in the batch is defined.
    """
    valid = offset_class != OFFSET_IGNORE_INDEX
    if not bool(valid.any()):
        return attention.sum() * 0.0
    att = attention[valid].float()
    shift = offset_class[valid] - MAX_OFFSET  # audio delayed by k frames: audio at t shows the mouth of t - k
    q, f = att.shape[-2:]
    aligned = aligned_key_positions(q, f, att.device)
    target = aligned[None, :] - shift[:, None]  # (b, Q)
    inside = (target >= 0) & (target < f)
    if not bool(inside.any()):
        return attention.sum() * 0.0
    picked = att.gather(2, target.clamp(0, f - 1).unsqueeze(-1)).squeeze(-1)
    nll = -torch.log(picked.clamp_min(1e-8))
    return (nll * inside).sum() / inside.sum()


def batch_pairs(clip_ids: Sequence[str], label: torch.Tensor) -> tuple[list[int], list[int]]:
    """Positions ``(reals, fakes)`` of the (real window, fake made from it) pairs in a batch (by ``pair_key``); a
    fake whose real window is not in the batch is left out."""
    labels = label.tolist()
    real_at = {pair_key(c): i for i, (c, y) in enumerate(zip(clip_ids, labels)) if y == 0}
    reals, fakes = [], []
    for j, (c, y) in enumerate(zip(clip_ids, labels)):
        i = real_at.get(pair_key(c)) if y == 1 else None
        if i is not None:
            reals.append(i)
            fakes.append(j)
    return reals, fakes


def pair_ranking_loss(logits: torch.Tensor, label: torch.Tensor, clip_ids: Sequence[str]) -> torch.Tensor:
    """Mean ``softplus(m_fake − m_real)`` over the batch's pairs (module docstring); 0 (with a gradient path) when the
    batch holds none."""
    reals, fakes = batch_pairs(clip_ids, label)
    if not reals:
        return logits.sum() * 0.0
    margin = logits[:, 0].float() - logits[:, 1].float()
    return F.softplus(margin[fakes] - margin[reals]).mean()


def _with_pairs(total: torch.Tensor, parts: dict[str, torch.Tensor], out: ModelOutput, label: torch.Tensor,
                clip_ids: Sequence[str] | None, weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Add ``weight`` · :func:`pair_ranking_loss` (nothing when the weight is 0)."""
    if not weight:
        return total, parts
    if clip_ids is None:
        raise ValueError("the pair-ranking loss needs the batch's clip ids")
    pairs = pair_ranking_loss(out.logits, label, clip_ids)
    return total + weight * pairs, {**parts, "pairs": pairs.detach()}


def _with_alignment(total: torch.Tensor, parts: dict[str, torch.Tensor], out: ModelOutput,
                    offset_class: torch.Tensor, weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Add ``weight`` · :func:`alignment_loss` to a loss and its logged parts (nothing when the weight is 0)."""
    if not weight:
        return total, parts
    align = alignment_loss(out.attention, offset_class)
    return total + weight * align, {**parts, "align": align.detach()}


def teacher_loss(out: ModelOutput, label: torch.Tensor, offset_class: torch.Tensor,
                 offset_weight: float = 0.5, align_weight: float = 1.0, pair_weight: float = 0.0,
                 clip_ids: Sequence[str] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CE(real/fake) + ``offset_weight`` · offset CE + ``align_weight`` · alignment NLL + ``pair_weight`` ·
    pair ranking (which needs the batch's ``clip_ids``)."""
    ce = F.cross_entropy(out.logits.float(), label)
    off = offset_loss(out.offset_logits, offset_class)
    total, parts = _with_alignment(ce + offset_weight * off, {"ce": ce.detach(), "offset": off.detach()}, out,
                                   offset_class, align_weight)
    return _with_pairs(total, parts, out, label, clip_ids, pair_weight)


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softened teacher probabilities; ``(K, B, 2)`` ensemble logits are averaged AFTER the softmax."""
    probs = torch.softmax(teacher_logits.float() / temperature, dim=-1)
    return probs.mean(dim=0) if probs.dim() == 3 else probs


def kd_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(p_T ‖ softmax(s/T))`` averaged over the batch (2-class distributions)."""
    if student_logits.shape[-1] < 2:
        raise ValueError("the KD term needs at least 2 logits per sample; one logit makes softmax constant")
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_ps, teacher_probs, reduction="batchmean") * temperature**2


def attention_mse(student_attention: torch.Tensor, teacher_attention: torch.Tensor) -> torch.Tensor:
    """MSE between attention maps; a student map of another shape is bilinearly resized to the teacher's."""
    s = student_attention.float()
    t = teacher_attention.float()
    if s.shape[-2:] != t.shape[-2:]:
        s = F.interpolate(s.unsqueeze(1), size=t.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    return F.mse_loss(s, t)


@dataclass(frozen=True)
class DistillWeights:
    alpha: float = 0.5
    beta: float = 5.0
    temperature: float = 2.0
    offset_weight: float = 0.5
    align_weight: float = 1.0
    pair_weight: float = 0.0


def distillation_loss(out: ModelOutput, label: torch.Tensor, offset_class: torch.Tensor, teacher_logits: torch.Tensor,
                      teacher_attention: torch.Tensor, w: DistillWeights,
                      clip_ids: Sequence[str] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The composite PIN-Lite objective. ``teacher_logits``: ``(B, 2)`` or ensemble ``(K, B, 2)``;
    ``teacher_attention``: ``(B, Q, F)`` (already averaged over an ensemble); ``clip_ids``: the batch's, for the
    pair-ranking term (``w.pair_weight``)."""
    hard = F.cross_entropy(out.logits.float(), label)
    kd = kd_kl(out.logits, soft_targets(teacher_logits, w.temperature), w.temperature)
    att = attention_mse(out.attention, teacher_attention)
    off = offset_loss(out.offset_logits, offset_class)
    total = w.alpha * hard + (1.0 - w.alpha) * kd + w.beta * att + w.offset_weight * off
    parts = {"ce": hard.detach(), "kd": kd.detach(), "attn": att.detach(), "offset": off.detach()}
    total, parts = _with_alignment(total, parts, out, offset_class, w.align_weight)
    return _with_pairs(total, parts, out, label, clip_ids, w.pair_weight)
