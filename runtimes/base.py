"""The runner contract shared by every backend (SPEC §7), in the style of Polygraphy's runners.

A runner is built cheaply (manifest checks only), *activated* to load the backend session (``with runner:`` or
:meth:`BaseRunner.activate`), then :meth:`BaseRunner.infer` is called any number of times and returns the three model
outputs as float32 numpy arrays. :meth:`BaseRunner.infer` validates the inputs once; backends only implement
:meth:`BaseRunner.infer_impl` and receive arrays that are already correct.

Input dtype policy: ``float32`` is used as is (no copy when C-contiguous). ``float64`` and ``float16`` are cast to
``float32`` explicitly (lossless for float16; float64 values beyond float32's range become inf and are then
rejected by the finiteness check, never passed on silently). Any other dtype (integers, bool, complex) is rejected
with :class:`InputError`: integer frames almost always mean un-normalised uint8 pixels, a silent cast would hide that.

Batch policy: a batch larger than the artefact's ``max_batch`` (e.g. a static batch-1 ``.pte``) is split into
chunks and the outputs concatenated when ``batch_policy="split"`` (default), or refused with :class:`InputError`
when ``batch_policy="reject"``. A static-batch backend pads a shorter last chunk to its batch (:func:`pad_to_batch`)
and cuts the outputs.

Frame sharing: ``mfcc`` may hold ``k`` rows per ``frames`` row (batch ``k * B``; mfcc rows ``i * k .. i * k + k - 1``
pair with frames row ``i``), and the outputs then have one row per mfcc row: how the offset scan scores a window
against its audio at several shifts. A runner whose artefact shares frames (:attr:`BaseRunner.shares_frames`, read
from the artefact itself) encodes each frames row once; any other runner gets the frames repeated ``k`` times, the
same answer at ``k`` times the frame encoder's cost. ``max_batch`` counts frames rows per call, each with its ``k``
mfcc rows.

Options (``threads``, ``device``, ``batch_policy``, a backend's own) are checked when the runner is built and a bad
one raises :class:`RunnerOptionError` naming it. Outputs are checked after every call: a missing output, a wrong
shape, or NaN/inf values (an FP16 overflow, a broken kernel) raise :class:`RunnerOutputError` instead of handing
a wrong answer on.

Memory: nothing is sampled inside :meth:`BaseRunner.infer` (it is the timed call). The process RSS is read before
and after :meth:`BaseRunner.activate`, and whenever the caller asks with :meth:`BaseRunner.sample_memory` (between
timed calls).
"""
from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES, InputContract, NUM_OFFSET_CLASSES
from pinlite_edge.errors import InputError, PinliteError, UsageError
from pinlite_edge.utils.checks import is_whole

log = logging.getLogger(__name__)

_CASTABLE = (np.dtype(np.float64), np.dtype(np.float16))
BATCH_POLICIES = ("split", "reject")


#: mfcc rows one frames row may serve (frame sharing): the offset scan uses 7 (at most 51); 10**6 rows for one
#: frames row grew a 3.3 GB input to 22 GB before the kernel killed the process
MAX_ROWS_PER_FRAMES = 64


class RunnerStateError(PinliteError, RuntimeError):
    """A runner was used while not activated (call ``activate()`` or use ``with runner:``)."""


class RunnerOptionError(UsageError):
    """A runner option (threads, device, batch policy, a backend's own option) has an invalid value."""


class RunnerOutputError(PinliteError, RuntimeError):
    """A backend returned outputs that break the contract: missing, wrongly shaped, or not finite (NaN/inf)."""


def max_threads() -> int:
    """The largest ``threads`` option accepted: four per CPU core of this machine."""
    return 4 * (os.cpu_count() or 1)


def check_threads(value: Any, option: str = "threads") -> int | None:
    """``None`` (the backend's default) or an int in ``1..max_threads()``; else :class:`RunnerOptionError`."""
    if value is None:
        return None
    if not is_whole(value, numpy=True):
        raise RunnerOptionError(f"runner option {option}={value!r} must be a whole number of threads "
                                f"(1..{max_threads()}) or None for the backend's default")
    if not 1 <= int(value) <= max_threads():
        raise RunnerOptionError(f"runner option {option}={value} is out of range: use 1..{max_threads()} "
                                f"(this machine has {os.cpu_count()} CPU cores) or None for the backend's default")
    return int(value)


def check_choice(option: str, value: Any, choices: tuple[str, ...] | list[str], backend: str = "") -> str:
    """``value`` if it is one of ``choices``; else :class:`RunnerOptionError` naming the option and the choices."""
    if value not in choices:
        who = f" of the {backend} runner" if backend else ""
        raise RunnerOptionError(f"runner option {option}{who} must be one of {list(choices)}, got {value!r}")
    return value


def check_cuda_device(device: Any, backend: str) -> int:
    """``"cuda"`` or ``"cuda:N"`` -> N (0 for ``"cuda"``); else :class:`RunnerOptionError`."""
    if isinstance(device, str) and device == "cuda":
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise RunnerOptionError(f"runner option device of the {backend} runner must be 'cuda' or 'cuda:N', "
                            f"got {device!r}")


@dataclass(frozen=True)
class TensorMeta:
    """Name, shape (``None`` = dynamic batch) and dtype of one input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


@dataclass
class RunnerInfo:
    """What a runner runs: backend, artefact, precision, device and its I/O."""

    backend: str  # "torch" | "ort" | "trt" | "executorch"
    artifact: str
    precision: str
    device: str
    preset: str
    model_kind: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    max_batch: int | None  # None: any batch size
    format: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "artifact": self.artifact, "precision": self.precision, "device": self.device,
            "preset": self.preset, "model_kind": self.model_kind, "format": self.format, "max_batch": self.max_batch,
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.outputs],
            **({"extra": self.extra} if self.extra else {}),
        }


def contract_io(contract: InputContract) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """The I/O every artefact of ``contract`` exposes (batch dimension dynamic)."""
    inputs = [TensorMeta(INPUT_NAMES[0], (None, *contract.frames_shape())),
              TensorMeta(INPUT_NAMES[1], (None, *contract.mfcc_shape()))]
    outputs = [TensorMeta(OUTPUT_NAMES[0], (None, 2)), TensorMeta(OUTPUT_NAMES[1], (None, NUM_OFFSET_CLASSES)),
               TensorMeta(OUTPUT_NAMES[2], (None, contract.num_frames, contract.num_frames))]
    return inputs, outputs


def _process_rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing or the platform refuses: memory is reported as unknown (0)
        return 0


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor; converted without importing torch here
        return x.detach().cpu().numpy()
    raise InputError(f"{name} must be a numpy array, got {type(x).__name__}")


def validate_input(x: Any, name: str, expected: tuple[int, ...]) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array of shape ``(B, *expected)`` or raise :class:`InputError`."""
    a = _to_numpy(x, name)
    if a.ndim != len(expected) + 1:
        hint = " (add a batch axis: x[None])" if a.shape == expected else ""
        raise InputError(f"{name} must have shape (B, {', '.join(map(str, expected))}), got {a.shape}{hint}")
    if tuple(a.shape[1:]) != expected:
        raise InputError(f"{name} must have shape (B, {', '.join(map(str, expected))}), got {a.shape}")
    if a.shape[0] == 0:
        raise InputError(f"{name} has an empty batch: shape {a.shape}")
    if a.dtype != np.float32:
        if a.dtype not in _CASTABLE:
            raise InputError(f"{name} must be float32 (normalised features), got dtype {a.dtype}")
        with np.errstate(over="ignore"):
            a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(a)


def pad_to_batch(frames: np.ndarray, mfcc: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """A chunk of fewer than ``batch`` frames rows padded to ``batch`` for a static-batch artefact: its last frames
    row repeated, with that row's ``k`` mfcc rows. The outputs' first ``len(mfcc)`` rows are the chunk's answer."""
    pad = batch - frames.shape[0]
    if pad <= 0:
        return frames, mfcc
    k = mfcc.shape[0] // frames.shape[0]
    return (np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]),
            np.concatenate([mfcc, np.tile(mfcc[-k:], (pad, 1, 1))]))


class BaseRunner(ABC):
    """Load an artefact, activate it, infer; subclasses implement :meth:`activate_impl` and :meth:`infer_impl`."""

    backend: str = "base"
    #: the artefact encodes a frames row once for all the mfcc rows it serves (module doc, "Frame sharing"); set by a
    #: backend from what the artefact itself declares, never assumed
    shares_frames: bool = False

    def __init__(self, artifact: str | Path, contract: InputContract, *, precision: str, device: str,
                 preset: str, model_kind: str, max_batch: int | None = None, fmt: str = "",
                 batch_policy: str = "split", threads: int | None = None):
        check_choice("batch_policy", batch_policy, BATCH_POLICIES)
        if max_batch is not None and not is_whole(max_batch, 1, numpy=True):
            raise RunnerOptionError(f"max_batch of {artifact} must be a whole number >= 1, got {max_batch!r}")
        self.threads = check_threads(threads)
        self.artifact = Path(artifact)
        self.contract = contract
        self.precision = precision
        self.device = device
        self.preset = preset
        self.model_kind = model_kind
        self.max_batch = max_batch
        self.format = fmt
        self.batch_policy = batch_policy
        self.is_active = False
        self.last_inference_time_s: float | None = None
        #: device-side time of the last call (CUDA events) where the backend measures it; None on CPU
        self.last_device_time_s: float | None = None
        #: highest process RSS read at activation and by :meth:`sample_memory` (never inside ``infer``)
        self.peak_rss_bytes = 0
        self._gpu_memory_at_deactivate: int | None = None
        #: what the model was trained on (manifest / checkpoint record; pinlite_edge.trained_on); None: unknown
        self.training_data: dict[str, Any] | None = None
        #: the P(fake) thresholds measured on genuine clips (pinlite_edge.operating_point); None: not calibrated
        self.operating_point: Any = None

    # --- metadata -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        # checkpoints are all called best.safetensors: name them by their stage folder (distilled/, pruned/)
        shown = f"{self.artifact.parent.name}/{self.artifact.name}" if self.artifact.suffix == ".safetensors" \
            else self.artifact.name
        return f"{self.backend}-{self.precision}:{shown}"

    @property
    def info(self) -> RunnerInfo:
        inputs, outputs = contract_io(self.contract)
        return RunnerInfo(backend=self.backend, artifact=str(self.artifact), precision=self.precision,
                          device=self.device, preset=self.preset, model_kind=self.model_kind, inputs=inputs,
                          outputs=outputs, max_batch=self.max_batch, format=self.format, extra=self.extra_info())

    @property
    def input_metadata(self) -> list[TensorMeta]:
        return contract_io(self.contract)[0]

    @property
    def peak_memory_bytes(self) -> int:
        """Highest process RSS read around activation and by :meth:`sample_memory` calls."""
        return self.peak_rss_bytes

    @property
    def peak_gpu_memory_bytes(self) -> int | None:
        """GPU memory this runner's backend reports (see each backend); None on the CPU or when unknown."""
        return self.gpu_memory_bytes() if self.is_active else self._gpu_memory_at_deactivate

    def gpu_memory_bytes(self) -> int | None:
        """Backends on a GPU override this (read on request, never inside ``infer``); kept at deactivation."""
        return None

    def sample_memory(self) -> int:
        """Read the process RSS now (call it between timed inferences), keep the peak, return the reading."""
        rss = _process_rss()
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return rss

    def extra_info(self) -> dict[str, Any]:
        return {}

    # --- lifecycle ----------------------------------------------------------------------------------------
    def activate(self) -> "BaseRunner":
        if self.is_active:
            log.warning("%s is already active", self.name)
            return self
        try:
            self.activate_impl()
        except BaseException:
            self._release_partial_activation()
            raise
        self.is_active = True
        self.sample_memory()
        return self

    def _release_partial_activation(self) -> None:
        """An activation failed half-way: free what it allocated and undo what it set (threads, contexts)."""
        try:
            self.deactivate_impl()
        except Exception as exc:  # the activation error is the one to report
            log.warning("%s: cleaning up after a failed activation also failed: %s", self.name, exc)

    def deactivate(self) -> None:
        if not self.is_active:
            log.warning("%s is not active", self.name)
            return
        try:
            self._gpu_memory_at_deactivate = self.gpu_memory_bytes()
            self.deactivate_impl()
        finally:
            self.is_active = False

    def __enter__(self) -> "BaseRunner":
        return self.activate()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.deactivate()

    @abstractmethod
    def activate_impl(self) -> None:
        """Load the backend session / engine / program."""

    @abstractmethod
    def deactivate_impl(self) -> None:
        """Free what :meth:`activate_impl` allocated and restore what it changed (e.g. thread counts). Also called
        after a failed activation, so it must cope with a half-done one."""

    @abstractmethod
    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch (at most ``max_batch`` frames rows) of validated float32 C-contiguous inputs: mfcc has one
        row per frames row, or ``k`` where :meth:`frames_shared_for` says so."""

    # --- inference ----------------------------------------------------------------------------------------
    def validate(self, frames: Any, mfcc: Any) -> tuple[np.ndarray, np.ndarray]:
        """Both inputs checked (:func:`validate_input`) and their batches: mfcc has one row per frames row, or
        ``k`` (module doc, "Frame sharing")."""
        f = validate_input(frames, INPUT_NAMES[0], self.contract.frames_shape())
        m = validate_input(mfcc, INPUT_NAMES[1], self.contract.mfcc_shape())
        if m.shape[0] % f.shape[0]:
            raise InputError(f"frames and mfcc batch sizes differ: {f.shape[0]} vs {m.shape[0]} (mfcc needs one row "
                             "per frames row, or the same whole number k of rows per frames row: rows i*k..i*k+k-1 "
                             "pair with frames row i)")
        if m.shape[0] // f.shape[0] > MAX_ROWS_PER_FRAMES:
            raise InputError(f"{m.shape[0] // f.shape[0]} mfcc rows per frames row; at most {MAX_ROWS_PER_FRAMES} "
                             "(the offset scan uses 7, at most 51): the model's memory grows with them")
        return f, m

    def frames_shared_for(self, k: int) -> bool:
        """Whether this runner encodes a frames row once for ``k`` mfcc rows (:attr:`shares_frames`; a backend whose
        artefact shares frames for some ``k`` only overrides this)."""
        return self.shares_frames

    def infer(self, frames: Any, mfcc: Any) -> dict[str, np.ndarray]:
        """Validate once, run the backend, return ``{"logits", "offset_logits", "attention"}`` float32 arrays (one
        row per mfcc row)."""
        if not self.is_active:
            raise RunnerStateError(f"{self.name} is not active: use `with runner:` or call runner.activate() first")
        f, m = self.validate(frames, mfcc)
        k = m.shape[0] // f.shape[0]
        if k > 1 and not self.frames_shared_for(k):
            f, k = np.repeat(f, k, axis=0), 1
        rows = f.shape[0]  # max_batch counts frames rows, each with its k mfcc rows
        if self.max_batch is not None and rows > self.max_batch and self.batch_policy == "reject":
            raise InputError(f"batch {rows} exceeds this artefact's max batch {self.max_batch} "
                             f"({self.artifact.name}); use batch_policy='split' or smaller batches")
        start = time.perf_counter()
        if self.max_batch is None or rows <= self.max_batch:
            out = self.infer_impl(f, m)
            device_time = self.last_device_time_s
        else:
            parts, device_time = [], 0.0
            step = self.max_batch
            for i in range(0, rows, step):
                parts.append(self.infer_impl(f[i:i + step], m[i * k:(i + step) * k]))
                device_time = None if self.last_device_time_s is None or device_time is None \
                    else device_time + self.last_device_time_s
            out = {name: np.concatenate([p[name] for p in parts]) for name in OUTPUT_NAMES}
        self.last_inference_time_s = time.perf_counter() - start
        self.last_device_time_s = device_time
        return self._check_outputs(out, m.shape[0])

    def _check_outputs(self, out: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        expected = {"logits": (batch, 2), "offset_logits": (batch, NUM_OFFSET_CLASSES),
                    "attention": (batch, self.contract.num_frames, self.contract.num_frames)}
        result = {}
        for key, shape in expected.items():
            if key not in out:
                raise RunnerOutputError(f"{self.name} produced no {key!r} output (outputs: {sorted(out)})")
            arr = np.asarray(out[key])
            if arr.shape != shape:
                raise RunnerOutputError(f"{self.name} produced {key} of shape {arr.shape}, expected {shape}")
            arr = arr.astype(np.float32, copy=False)
            finite = np.isfinite(arr)
            if not finite.all():
                rows = sorted({int(i) for i in np.nonzero(~finite.reshape(batch, -1).all(axis=1))[0]})
                raise RunnerOutputError(
                    f"{self.name} returned {int((~finite).sum())} NaN/inf values in {key!r} (batch rows "
                    f"{rows[:8]}{'...' if len(rows) > 8 else ''}) for finite inputs: the backend computed a wrong "
                    f"answer (e.g. an FP16 overflow or a broken kernel); compare with the fp32 artefact "
                    f"(pinlite_edge.runtimes.Comparator) or run another precision/backend")
            result[key] = arr
        return result
