"""The precision plan: which layers stay float in a mixed-precision artefact, and why (SPEC §6).

Layers are named by their torch module path (``blocks.1.attn.softmax``); :func:`resolve_onnx_nodes` maps them to the
node names of an ONNX graph from the classic exporter (whose node names carry the module scope, e.g.
``/blocks.1/attn/softmax/Softmax``). The fixed part of the plan is the SPEC's rule: every GRU, every Softmax, the
activation-by-activation attention MatMuls of every block, and the last block's query/key projections (they compute
the ``attention`` output). The measured part keeps the ``keep_float`` layers with the largest sensitivity. The
onnxruntime INT8 artefact adds the CPU speed entries (kind ``speed``, ``cpu_speed_plan.py``): layers that run faster
float there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from torch import nn

from pinlite_edge.export.rewrite import MatmulGRU
from pinlite_edge.models.sync_features import LaggedSyncFeatures, SyncPeakContrast

REASON_GRU = "recurrent: the GRU stays float (ORT does not quantize it, TensorRT loops are FP32/FP16 only)"
REASON_SOFTMAX = "softmax: attention probabilities need float range"
REASON_ATTN_MATMUL = "attention MatMul (activation x activation): produces / consumes the attention probabilities"
REASON_ATTN_SCORES = "score scaling (Mul) and relative-position bias (Gather + Add) feeding the softmax"
REASON_ATTN_OUTPUT = "computes the exported attention output (last block's query/key path)"
REASON_SYNC_CUE = ("sync cue: Pearson correlations of activations (means, products, a square root, a division over "
                   "small motion values) need FP32 range and precision")
REASON_SENSITIVE = "sensitivity: among the {n} layers whose quantization changes logits/attention most"


#: Kinds of float entries. The protected path (``PROTECTED_KINDS``) stays FP32 in every artefact, with no Q/DQ on its
#: inputs; the other kinds are float by choice (sensitivity, onnxruntime CPU speed).
PROTECTED_KINDS = ("gru", "softmax", "attention_scores", "attention_matmul", "attention_output", "sync_cue")
KINDS = (*PROTECTED_KINDS, "attention_input", "sensitivity", "speed")


@dataclass
class FloatEntry:
    """One layer kept float. ``ops``: only these ONNX op types directly in the module's scope (None = all nodes)."""

    module: str
    reason: str
    kind: str  # one of KINDS
    ops: tuple[str, ...] | None = None
    onnx_nodes: list[str] = field(default_factory=list)
    weight_storage: str = "float"  # "int8": weights stored int8 (+ Cast * scale), compute still float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ops"] = list(self.ops) if self.ops else None
        return d


@dataclass
class SensitivityRow:
    """Effect of quantizing one layer alone (weights + input activations) on calibration data."""

    module: str
    op: str  # "Conv" | "Linear"
    params: int
    logits_max_abs: float
    logits_mse: float
    attention_max_abs: float
    score: float  # normalised logits MSE + normalised attention L1 change, the ranking key
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PrecisionPlan:
    """Precision of an artefact: the target precision, the layers kept float with reasons, the sensitivity table."""

    precision: str  # "fp32" | "fp16" | "int8"
    float_layers: list[FloatEntry] = field(default_factory=list)
    quantized_layers: list[str] = field(default_factory=list)
    keep_float: int = 0
    sensitivity: list[SensitivityRow] = field(default_factory=list)
    sensitivity_mode: str | None = None  # "int8" | "fp16"
    notes: list[str] = field(default_factory=list)
    #: What the final graph(s) compute, node by node (``graph_precision.py``): filled after export, never by intent.
    graph_precision: dict[str, Any] = field(default_factory=dict)

    @property
    def float_modules(self) -> list[str]:
        return [e.module for e in self.float_layers]

    def float_onnx_nodes(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.float_layers:
            for n in e.onnx_nodes:
                seen[n] = None
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "float_layers": [e.to_dict() for e in self.float_layers],
            "float_onnx_nodes": self.float_onnx_nodes(),
            "quantized_layers": list(self.quantized_layers),
            "keep_float": self.keep_float,
            "sensitivity_mode": self.sensitivity_mode,
            "sensitivity": [r.to_dict() for r in self.sensitivity],
            "notes": list(self.notes),
            "graph_precision": self.graph_precision,
        }


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers in execution-ish (registration) order, GRU internals excluded."""
    out = []
    gru_prefixes = [n + "." for n, m in model.named_modules() if isinstance(m, (nn.GRU, MatmulGRU))]
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and not any(name.startswith(p) for p in gru_prefixes):
            out.append((name, module))
    return out


def fixed_float_entries(model: nn.Module) -> list[FloatEntry]:
    """The SPEC's always-float layers for this model (GRU, softmax, score scaling/bias, attention MatMuls, attention
    output path) and the sync cue (``models.sync_features``). ``ops`` entries match nodes directly in the attention
    module's scope (``blocks.1.attn``), not in its projections'."""
    entries: list[FloatEntry] = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.GRU, MatmulGRU)):
            entries.append(FloatEntry(name, REASON_GRU, "gru"))
        elif isinstance(module, nn.Softmax):
            entries.append(FloatEntry(name, REASON_SOFTMAX, "softmax"))
        elif isinstance(module, (LaggedSyncFeatures, SyncPeakContrast)):
            entries.append(FloatEntry(name, REASON_SYNC_CUE, "sync_cue"))
    attn_modules = [n for n, m in model.named_modules() if hasattr(m, "q_proj") and hasattr(m, "k_proj")
                    and hasattr(m, "softmax")]
    for name in attn_modules:
        entries.append(FloatEntry(name, REASON_ATTN_SCORES, "attention_scores",
                                  ops=("Mul", "Add", "Gather", "Constant")))
        entries.append(FloatEntry(name, REASON_ATTN_MATMUL, "attention_matmul", ops=("MatMul",)))
    if attn_modules:
        last = attn_modules[-1]
        for proj in ("q_proj", "k_proj"):
            entries.append(FloatEntry(f"{last}.{proj}", REASON_ATTN_OUTPUT, "attention_output"))
    return entries


def build_plan(model: nn.Module, precision: str, sensitivity: Sequence[SensitivityRow] = (), keep_float: int = 0,
               sensitivity_mode: str | None = None, extra: Sequence[FloatEntry] = ()) -> PrecisionPlan:
    """Fixed float layers (+ ``extra`` entries, e.g. the CPU speed plan) + the ``keep_float`` most sensitive
    quantizable layers not already float."""
    plan = PrecisionPlan(precision=precision, float_layers=fixed_float_entries(model), keep_float=keep_float,
                         sensitivity_mode=sensitivity_mode)
    add_float_entries(plan, extra)
    ranked = sorted(sensitivity, key=lambda r: r.score, reverse=True)
    for i, row in enumerate(ranked, 1):
        row.rank = i
    chosen = [r for r in ranked if not _covered(r.module, plan.float_layers)][:keep_float]
    if keep_float > len(chosen):
        raise ValueError(f"keep_float={keep_float} but only {len(chosen)} ranked quantizable layers are not already "
                         "float (run the sensitivity analysis, or lower keep_float)")
    for r in chosen:
        plan.float_layers.append(FloatEntry(r.module, REASON_SENSITIVE.format(n=keep_float), "sensitivity"))
    plan.sensitivity = list(ranked)
    if precision != "fp32":
        plan.quantized_layers = [n for n, _ in quantizable_layers(model) if not _covered(n, plan.float_layers)]
    return plan


def _covered(module: str, by: Iterable[FloatEntry]) -> bool:
    """``module`` is the module of an entry of ``by``, or inside an entry that takes all its nodes (``ops`` None):
    an entry limited to some op types (``blocks.1.attn`` MatMul/Mul/Add) covers none of its submodules."""
    return any(module == e.module or (e.ops is None and module.startswith(e.module + ".")) for e in by)


def add_float_entries(plan: PrecisionPlan, entries: Sequence[FloatEntry]) -> None:
    """Append ``entries`` not already covered by the plan (same module, or inside a float module); ``build_plan``
    derives ``quantized_layers`` from the float entries afterwards."""
    added = [e for e in entries if not _covered(e.module, plan.float_layers)]
    plan.float_layers.extend(added)
    if added:
        kinds = ", ".join(sorted({e.kind for e in added}))
        plan.notes.append(f"{len(added)} float entries of kind {kinds} added to the SPEC plan (reasons per entry)")


# --- ONNX node resolution ---------------------------------------------------------------------------------------
#: The exporter wraps the model in a module whose attribute ``model`` holds it (see ``prepare.TupleOutputs``).
EXPORT_ROOT = "model"


def onnx_node_scope(node_name: str, root: str = EXPORT_ROOT) -> tuple[str, str]:
    """``/audio_encoder/convs/convs.0/Conv`` -> (``audio_encoder.convs.0``, ``Conv``).

    The classic exporter names a node ``/<scope>/.../<Op>[_k]``, where a child of a container appears as
    ``parent/parent.k``; collapsing such pairs gives the torch module path.
    """
    parts = [p for p in node_name.split("/") if p]
    if not parts:
        return "", ""
    op, scope = parts[-1], parts[:-1]
    # A segment that the next one extends ("backbone" then "backbone.0") is dropped: the longer one holds it.
    collapsed = [seg for i, seg in enumerate(scope) if not (i + 1 < len(scope) and scope[i + 1].startswith(seg + "."))]
    if collapsed and collapsed[0] == root:
        collapsed = collapsed[1:]
    return ".".join(collapsed), op


def resolve_onnx_nodes(plan: PrecisionPlan, nodes: Iterable[Any]) -> None:
    """Fill ``entry.onnx_nodes`` for every float entry from an ONNX graph's nodes (classic-exporter names)."""
    scoped = [(n.name, n.op_type, *onnx_node_scope(n.name)) for n in nodes]
    for entry in plan.float_layers:
        hits = []
        for name, op_type, scope, _ in scoped:
            if entry.ops is not None:
                if scope == entry.module and op_type in entry.ops:
                    hits.append(name)
            elif scope == entry.module or scope.startswith(entry.module + "."):
                hits.append(name)
        entry.onnx_nodes = hits
