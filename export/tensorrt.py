"""TensorRT engines (SPEC §6), built from the FP16 or the FP16 + QDQ ONNX of this package.

Default: a *strongly typed* network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): TensorRT takes every tensor's
type from the ONNX (FP16 with FP32 Cast islands; for INT8 the same FP16 graph with Q/DQ around the INT8 layers, opset
19 so the Q/DQ scales are FP16: layers without Q/DQ run FP16, the plan's layers FP32), so the precision plan lives in
the ONNX file and the same build works on TensorRT 10.x (JetPack 6 ships 10.3) and 11.x (which removed the builder precision
flags, precision constraints and calibrators). ``weak_typing=True`` (TensorRT 10 only) instead builds the FP32 ONNX
(fp16) or the QDQ ONNX (int8) with ``BuilderFlag.FP16``/``INT8`` and pins the plan's layers (GRU loop, softmax,
attention) to FP32 with ``OBEY_PRECISION_CONSTRAINTS``.

After the build the engine is deserialized and its engine inspector (``ProfilingVerbosity.DETAILED`` at build,
``get_engine_information(LayerInformationFormat.JSON)``) gives each layer's input/output types: they go into the
manifest (``precision_plan.graph_precision.tensorrt_engine``), and a protected layer below FP32 fails the export.

An engine is bound to the GPU model and TensorRT version it was built with: the manifest records both, and the
compute capability. ``tensorrt`` is imported only when a ``trt-*`` format runs.

API checked against NVIDIA's documentation (no TensorRT runs in this workplace; tests use a fake module):
- Builder / ``create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))`` / ``create_builder_config`` /
  ``create_optimization_profile`` / ``build_serialized_network``: TensorRT Python API "Builder"
  (docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html). In 11.x the
  STRONGLY_TYPED flag is deprecated and ignored (strong typing is always on; .../11.0.0/_static/python-api/infer/
  Core/Builder.html), so 11.x gets flags 0.
- ``OnnxParser(network, logger).parse_from_file(path)``, ``num_errors``, ``get_error(i)``: "Onnx Parser" page.
- ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, ``add_optimization_profile``, ``set_flag``,
  ``create_timing_cache(bytes)`` / ``set_timing_cache(cache, ignore_mismatch)`` / ``get_timing_cache()`` and
  ``ITimingCache.serialize()``: "IBuilderConfig" and "ITimingCache" pages (TimingCache.html).
- Strong typing + Q/DQ: "Explicit Quantization" (inference-library/quantized-types-explicit-quantization.html):
  precision-control builder flags are not required and should not be set.
- Weak typing (10.x only): ``BuilderFlag.FP16``/``INT8``/``OBEY_PRECISION_CONSTRAINTS``, ``ILayer.precision``,
  ``ILayer.set_output_type(i, dtype)`` -- all removed in 11.x ("Removed Python APIs and Replacements",
  api/migration/tensorrt-10x-to-11x-python-api-reference.html); output types are only pinned on float outputs
  (a loop's trip counters and shape tensors are integers).
- The QDQ ONNX built for TensorRT keeps biases float: the parser rejects a DequantizeLinear on INT32 data (see
  ``onnx_formats.build_int8_onnx(for_tensorrt=True)``).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pinlite_edge.contract import INPUT_NAMES
from pinlite_edge.errors import BackendUnavailableError, ExportError, ExportOptionError
from pinlite_edge.export.api import ExportContext, HandlerOutput
from pinlite_edge.export.plan import PROTECTED_KINDS, PrecisionPlan
from pinlite_edge.runtimes.trt.loader import INSTALL_HINT, import_tensorrt  # one import + install hint (runtime's)
from pinlite_edge.utils.atomic import atomic_path, atomic_write_bytes

log = logging.getLogger(__name__)
DEFAULT_MAX_BATCH = 8


def trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        raise ExportError(f"cannot read the TensorRT version from {trt!r}") from None


@dataclass
class GpuInfo:
    name: str
    compute_capability: str
    index: int


def cuda_device(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index`` (via torch), or BackendUnavailableError."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("tensorrt", "no CUDA GPU is visible (torch.cuda.is_available() is False); "
                                      "TensorRT engines are built on the GPU they will run on", INSTALL_HINT)
    if not 0 <= index < torch.cuda.device_count():
        raise ExportError(f"CUDA device {index} does not exist ({torch.cuda.device_count()} visible)")
    major, minor = torch.cuda.get_device_capability(index)
    return GpuInfo(torch.cuda.get_device_name(index), f"{major}.{minor}", index)


def layer_precisions(plan: PrecisionPlan, layer_names: Iterable[str]) -> dict[str, str]:
    """Weak-typing path: ``{TensorRT layer name: "float32"}`` for every layer coming from a plan node.

    The ONNX parser names a layer after its ONNX node (``/model/blocks.1/attn/softmax/Softmax``); nodes that become
    several layers (the GRU becomes an ``ILoop`` with many layers) get the node name plus a suffix, so a layer belongs
    to a plan node when its name equals the node name or starts with it followed by a non-name character.
    """
    nodes = sorted(plan.float_onnx_nodes(), key=len, reverse=True)
    out = {}
    for layer in layer_names:
        for node in nodes:
            if layer == node or (layer.startswith(node) and not layer[len(node)].isalnum()):
                out[layer] = "float32"
                break
    return out


def profile_shapes(input_shapes: dict[str, tuple[int, ...]], max_batch: int, opt_batch: int,
                   audio_rows: int = 1) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input for a batch of 1..max_batch (the batch axis is 0). ``audio_rows > 1``: the
    ``mfcc`` rows go up to ``audio_rows`` per frames row (frame sharing, for a graph with separate batch axes), tuned
    for that many (the offset scan's calls)."""
    if not 1 <= opt_batch <= max_batch:
        raise ExportOptionError(f"opt_batch {opt_batch} must lie in 1..{max_batch} (max batch)")
    out = {}
    for name, shape in input_shapes.items():
        rows = audio_rows if name == INPUT_NAMES[1] else 1
        out[name] = ((1, *shape), (opt_batch * rows, *shape), (max_batch * rows, *shape))
    return out


def build_engine(trt, onnx_path: Path, *, input_shapes: dict[str, tuple[int, ...]], max_batch: int, opt_batch: int,
                 workspace_mb: int, strongly_typed: bool = True, weak_precision: str | None = None,
                 plan: PrecisionPlan | None = None, timing_cache: Path | None = None,
                 audio_rows: int = 1) -> tuple[bytes, dict[str, Any]]:
    """Parse ``onnx_path`` and build a serialized engine; returns (engine bytes, build facts for the manifest)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = trt_major(trt)
    if not strongly_typed and major >= 11:
        raise ExportError(f"weak typing was removed in TensorRT {trt.__version__}; build strongly typed")
    # 10.x: strong typing is opt-in with this flag; 11.x: always on, the flag is deprecated and ignored.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed and major < 11 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    # DETAILED: the engine inspector then reports each layer's input/output types (read back into the manifest)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(input_shapes, max_batch, opt_batch, audio_rows)
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in shapes:
            raise ExportError(f"ONNX input {name!r} of {onnx_path.name} is not in the input contract")
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    pinned = {}
    if not strongly_typed:
        if weak_precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif weak_precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        pinned = layer_precisions(plan, [layer.name for layer in layers]) if plan else {}
        floats = {getattr(trt, n) for n in ("float32", "float16", "bfloat16") if hasattr(trt, n)}
        for layer in layers:
            if layer.name not in pinned:
                continue
            float_outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
            if not float_outs:  # a loop's trip counter / shape arithmetic: integer, nothing to pin
                del pinned[layer.name]
                continue
            layer.precision = trt.float32
            for j in float_outs:
                layer.set_output_type(j, trt.float32)
    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log above)")
    if cache is not None and timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    facts = {"strongly_typed": strongly_typed, "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
             "workspace_mb": workspace_mb, "layers": network.num_layers, "fp32_pinned_layers": len(pinned),
             "timing_cache": str(timing_cache) if timing_cache else None}
    return bytes(serialized), facts


def engine_information(trt, engine_bytes: bytes) -> tuple[str, dict[str, list[list[int]]]]:
    """What a serialized engine does, read back from it: the engine inspector's JSON description of every layer
    (``Runtime.deserialize_cuda_engine`` -> ``ICudaEngine.create_engine_inspector()`` ->
    ``get_engine_information(LayerInformationFormat.JSON)``; detailed when built with ProfilingVerbosity.DETAILED),
    and each input's optimisation profile (``get_tensor_profile_shape(name, 0)``: min, opt, max)."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise ExportError("TensorRT could not deserialize the engine it just built (see the TensorRT log above)")
    inspector = engine.create_engine_inspector()
    profiles = {name: [[int(d) for d in shape] for shape in engine.get_tensor_profile_shape(name, 0)]
                for name in INPUT_NAMES}
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON)), profiles


def shared_frames_of(profiles: dict[str, list[list[int]]]) -> dict[str, int] | None:
    """The manifest's ``shared_frames`` from an engine's profiles: its mfcc rows per frames row when the profile takes
    at least 2 (the runner reads the same from the engine), else None."""
    from pinlite_edge.runtimes.trt.loader import shared_rows

    rows = shared_rows(profiles[INPUT_NAMES[0]][2][0], profiles[INPUT_NAMES[1]][2][0])
    return {"mfcc_rows_per_frames_row": rows} if rows else None


_DTYPE = re.compile(r"\b(FP32|FP16|BF16|FP8|Int8|Int32|Int64|UInt8|Bool|Float|Half)\b", re.IGNORECASE)
_DTYPE_NAMES = {"fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bf16": "bf16", "fp8": "fp8",
                "int8": "int8", "uint8": "int8", "int32": "int32", "int64": "int64", "bool": "bool"}
_ONNX_LAYER = re.compile(r"ONNX Layer: ([^\]\x1e]+)")
_LOW = ("fp16", "bf16", "fp8", "int8")


def _tensor_dtypes(tensors: Any) -> list[str]:
    out = []
    for t in tensors or []:
        m = _DTYPE.search(t.get("Format/Datatype", "") if isinstance(t, dict) else str(t))
        if m:
            out.append(_DTYPE_NAMES[m.group(1).lower()])
    return out


def _layer_nodes(layer: dict) -> list[str]:
    """The ONNX nodes a layer was built from: its ``Metadata`` (``[ONNX Layer: name]`` per fused node), else its
    name split on `` + `` (how TensorRT names fused layers)."""
    return (_ONNX_LAYER.findall(str(layer.get("Metadata", "")))
            or [p.strip() for p in str(layer.get("Name", "")).split(" + ")])


def engine_layer_precisions(info_json: str, plan: PrecisionPlan) -> dict[str, Any]:
    """Per-layer precision of a built engine from the inspector's JSON, matched to the plan's ONNX nodes.

    A layer's ``compute`` is ``int8`` when an input is Int8 (a fused Q/DQ convolution / matmul), else the float type
    of its inputs (``fp16`` if any is FP16). A layer all of whose ONNX nodes are protected (GRU, softmax, score
    scaling/bias, attention MatMuls, last block's q/k projections) must compute FP32 with no lower-precision output:
    otherwise it is a violation. A layer fusing protected and other nodes (e.g. a Myelin ``ForeignNode``) is listed
    under ``fused_with_protected``: inside it the ONNX types rule (strongly typed), which the inspector does not
    report per node."""
    import json

    try:
        info = json.loads(info_json)
    except json.JSONDecodeError as exc:
        raise ExportError(f"the engine inspector's JSON does not parse: {exc}") from None
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    if any(not isinstance(layer, dict) for layer in layers):
        raise ExportError("the engine inspector reported layer names only: build with ProfilingVerbosity.DETAILED")
    protected = {n: e.kind for e in plan.float_layers if e.kind in PROTECTED_KINDS for n in e.onnx_nodes}
    rows, violations, mixed, covered = [], [], [], set()
    for layer in layers:
        name = str(layer.get("Name", ""))
        nodes = _layer_nodes(layer)
        covered.update(nodes)
        ins, outs = _tensor_dtypes(layer.get("Inputs")), _tensor_dtypes(layer.get("Outputs"))
        floats_in = [d for d in ins if d in ("fp32", "fp16", "bf16", "fp8")]
        if "int8" in ins:
            compute = "int8"
        elif "fp16" in floats_in:
            compute = "fp16"
        else:
            compute = floats_in[0] if floats_in else (outs[0] if outs else "unknown")
        kinds = sorted({protected[n] for n in nodes if n in protected})
        row: dict[str, Any] = {"name": name, "type": layer.get("LayerType"), "compute": compute, "inputs": ins,
                               "outputs": outs}
        if kinds:
            row["kinds"] = kinds
        rows.append(row)
        if kinds and all(n in protected for n in nodes):
            if compute != "fp32" or any(d in _LOW for d in outs):
                violations.append(f"{name}: protected ({', '.join(kinds)}) layer computes {compute}, outputs {outs}")
        elif kinds:
            mixed.append(name)
    summary: dict[str, int] = {}
    for r in rows:
        summary[r["compute"]] = summary.get(r["compute"], 0) + 1
    return {"graph": "tensorrt_engine", "summary": dict(sorted(summary.items())), "layers": rows,
            "violations": violations, "fused_with_protected": mixed,
            "protected_nodes_not_named_by_any_layer": sorted(n for n in protected if n not in covered)}


def _export_trt(ctx: ExportContext, precision: str) -> HandlerOutput:
    from pinlite_edge.export.onnx_formats import build_fp16_onnx, build_int8_onnx, onnx_shares_frames
    from pinlite_edge.export.prepare import write_fp32_onnx

    o = ctx.options
    trt = import_tensorrt()  # fail fast, before any ONNX work
    gpu = cuda_device(o.device)
    major = trt_major(trt)
    if o.weak_typing and major >= 11:
        raise ExportError(f"weak typing (builder precision flags, layer constraints) was removed in TensorRT "
                          f"{trt.__version__}; use the default strongly typed build")
    if o.dynamic_batch is False:
        raise ExportError("TensorRT engines here use a dynamic batch profile (1..batch)")
    source = ctx.work_dir / f"{precision}.onnx"
    if precision == "fp16":
        plan, onnx_facts = build_fp16_onnx(ctx, source)
    else:
        plan, onnx_facts = build_int8_onnx(ctx, source, for_tensorrt=True)
    build_from = source
    if o.weak_typing and precision == "fp16":
        build_from = ctx.work_dir / "fp32.onnx"  # weak typing: FP32 graph + FP16 flag + FP32 pins
        if not build_from.is_file():
            write_fp32_onnx(ctx, build_from)
        # what was read from the FP16 ONNX does not describe the graph the engine is built from: only the engine's
        # own layer precisions (read back below) say what runs
        plan.graph_precision.pop("artefact", None)
        onnx_facts = {"built_from": build_from.name, "note": "weak typing: the FP32 ONNX with TensorRT's FP16 "
                      "builder flag and FP32 constraints on the plan's layers; graph_precision.tensorrt_engine says "
                      "what runs in which precision"}
        plan.notes.append("weak typing: built from the FP32 ONNX (FP16 flag, plan layers constrained to FP32); "
                          "precisions are those read from the engine")
    contract = ctx.model.config.contract
    max_batch = o.batch or DEFAULT_MAX_BATCH
    # frame sharing where the graph has separate batch axes (read from it): the profile takes shared_rows mfcc rows
    # per frames row, so the offset scan encodes each window's frames once
    audio_rows = o.shared_rows if onnx_shares_frames(build_from) else 1
    engine, facts = build_engine(
        trt, build_from, input_shapes={"frames": contract.frames_shape(), "mfcc": contract.mfcc_shape()},
        max_batch=max_batch, opt_batch=o.opt_batch or 1, workspace_mb=o.workspace_mb,
        strongly_typed=not o.weak_typing, weak_precision=precision, plan=plan,
        timing_cache=Path(o.timing_cache) if o.timing_cache else None, audio_rows=audio_rows)
    info, profiles = engine_information(trt, engine)
    report = engine_layer_precisions(info, plan)
    if report["violations"]:
        raise ExportError(f"the TensorRT engine runs protected layers below FP32: {report['violations'][:4]}")
    plan.graph_precision["tensorrt_engine"] = report
    with atomic_path(ctx.artifact) as tmp:
        tmp.write_bytes(engine)
    target = {"tensorrt_version": str(trt.__version__), "gpu_name": gpu.name,
              "compute_capability": gpu.compute_capability, "device_index": gpu.index}
    calibration = ctx.calibration().describe() if (precision == "int8" or o.sensitivity) else None
    if calibration is not None and precision == "int8":
        calibration["method"] = o.calib_method
    return HandlerOutput(plan=plan, dynamic_batch=True, max_batch=max_batch, calibration=calibration, target=target,
                         tool_versions={"tensorrt": str(trt.__version__)},
                         extra={"source_onnx": build_from.name, "onnx": onnx_facts, "build": facts,
                                "engine_profile": profiles, "shared_frames": shared_frames_of(profiles)})


def export_trt_fp16(ctx: ExportContext) -> HandlerOutput:
    return _export_trt(ctx, "fp16")


def export_trt_int8(ctx: ExportContext) -> HandlerOutput:
    return _export_trt(ctx, "int8")
