"""Comparator: run several runners on the same inputs and report how far their outputs are apart."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pinlite_edge.contract import OUTPUT_NAMES
from pinlite_edge.metrics import explainability_preservation_score, softmax_fake_prob
from pinlite_edge.runtimes.base import BaseRunner


@dataclass
class PairComparison:
    """One runner against the reference on the same inputs."""

    reference: str
    other: str
    max_abs_diff: dict[str, float]
    mean_abs_diff: dict[str, float]
    max_fake_prob_diff: float
    label_agreement: float  # fraction of clips with the same real/fake decision
    eps_mean: float  # EPS of the other's attention against the reference's
    eps_std: float
    eps: dict[str, Any] = field(default_factory=dict)  # the full EPS summary (spearman, IoU, constant maps)

    def within(self, atol: float) -> bool:
        return all(v <= atol for v in self.max_abs_diff.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ComparisonReport:
    reference: str
    num_clips: int
    pairs: list[PairComparison] = field(default_factory=list)
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def within(self, atol: float) -> bool:
        return all(p.within(atol) for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "num_clips": self.num_clips, "pairs": [p.to_dict() for p in self.pairs]}

    def table(self) -> str:
        head = f"{'runner':<44} {'max|dlogits|':>12} {'max|dattn|':>11} {'max|dp|':>9} {'agree':>6} {'EPS':>6}"
        rows = [head, "-" * len(head)]
        for p in self.pairs:
            rows.append(f"{p.other[:44]:<44} {p.max_abs_diff['logits']:>12.2e} {p.max_abs_diff['attention']:>11.2e} "
                        f"{p.max_fake_prob_diff:>9.2e} {p.label_agreement:>6.1%} {p.eps_mean:>6.3f}")
        return "\n".join(rows)


def compare_outputs(reference: str, ref: Mapping[str, np.ndarray], other: str,
                    out: Mapping[str, np.ndarray]) -> PairComparison:
    diffs = {k: np.abs(np.asarray(out[k], np.float64) - np.asarray(ref[k], np.float64)) for k in OUTPUT_NAMES}
    p_ref, p_out = softmax_fake_prob(ref["logits"]), softmax_fake_prob(out["logits"])
    eps = explainability_preservation_score(ref["attention"], out["attention"])
    return PairComparison(
        reference=reference, other=other,
        max_abs_diff={k: float(d.max()) for k, d in diffs.items()},
        mean_abs_diff={k: float(d.mean()) for k, d in diffs.items()},
        max_fake_prob_diff=float(np.abs(p_ref - p_out).max()),
        label_agreement=float(((p_ref >= 0.5) == (p_out >= 0.5)).mean()),
        eps_mean=eps.mean, eps_std=eps.std, eps=eps.to_dict(),
    )


class Comparator:
    """``Comparator([torch_runner, ort_runner]).run(frames, mfcc)``: the first runner is the reference.

    ``report.outputs`` holds every runner's outputs; :func:`compare_outputs` compares any of them with outputs
    computed elsewhere (the bench's cached FP32 references).

    Runners that are not active are activated for the run and deactivated afterwards. Inputs may be one batch or
    an iterable of ``(frames, mfcc)`` batches, read ONCE (a generator over a large dataset is never held in memory):
    every runner runs each batch in turn, then the outputs are concatenated and compared with the first runner's.
    """

    def __init__(self, runners: Sequence[BaseRunner] | Mapping[str, BaseRunner]):
        items = list(runners.items()) if isinstance(runners, Mapping) else [(r.name, r) for r in runners]
        if not items:
            raise ValueError("a comparison needs at least one runner (one alone is run and compared with nothing; "
                             "the bench compares it with cached reference outputs)")
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            items = [(f"{i}:{n}", r) for i, (n, r) in enumerate(items)]
        self.runners = dict(items)

    def run(self, frames: np.ndarray | None = None, mfcc: np.ndarray | None = None, *,
            batches: Iterable[tuple[np.ndarray, np.ndarray]] | None = None) -> ComparisonReport:
        if batches is None:
            if frames is None or mfcc is None:
                raise ValueError("give frames and mfcc, or batches")
            batches = [(frames, mfcc)]
        parts: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in self.runners}
        activated: list[BaseRunner] = []
        try:
            for runner in self.runners.values():
                if not runner.is_active:
                    runner.activate()
                    activated.append(runner)
            for f, m in batches:
                for name, runner in self.runners.items():
                    parts[name].append(runner.infer(f, m))
        finally:
            for runner in activated:
                runner.deactivate()
        if not parts[next(iter(parts))]:
            raise ValueError("no input batch to compare on")
        outputs = {name: {k: np.concatenate([p[k] for p in ps]) for k in OUTPUT_NAMES} for name, ps in parts.items()}
        ref_name = next(iter(outputs))
        report = ComparisonReport(reference=ref_name, num_clips=int(outputs[ref_name]["logits"].shape[0]),
                                  outputs=outputs)
        for name, out in list(outputs.items())[1:]:
            report.pairs.append(compare_outputs(ref_name, outputs[ref_name], name, out))
        return report
