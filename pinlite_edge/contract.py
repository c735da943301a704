"""The input contract: what one clip looks like to every model, artefact and runtime (SPEC §1).

A contract is recorded in every checkpoint and manifest; artefacts built for another contract are refused.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from pinlite_edge.errors import UsageError
from pinlite_edge.utils.checks import is_finite_number, is_whole

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Offsets are classified in video frames, -MAX_OFFSET..+MAX_OFFSET -> class index offset + MAX_OFFSET.
MAX_OFFSET = 5
NUM_OFFSET_CLASSES = 2 * MAX_OFFSET + 1
#: Target value for samples whose offset is undefined (e.g. swapped audio); ignored by the offset loss.
OFFSET_IGNORE_INDEX = -100

#: Manipulation types of the shared sample format (index = value stored in a sample's "manipulation").
MANIPULATIONS = ("real", "audio_shift", "audio_replace", "visual_replace", "both_replace", "audio_swap")

INPUT_NAMES = ("frames", "mfcc")
OUTPUT_NAMES = ("logits", "offset_logits", "attention")
#: Batch axes of a dynamic-batch graph: frames rows, and audio rows (mfcc and every output). A graph whose two input
#: batch axes are separate lets each frames row serve ``k`` consecutive mfcc rows (mfcc batch ``k * B``, outputs one
#: row per mfcc row) and encodes the frames once for all ``k``: the offset scan's frame sharing
#: (``models.detector_net.AVSyncDetector``); with one shared axis both batches are equal.
FRAMES_BATCH_AXIS = "batch"
AUDIO_BATCH_AXIS = "audio_batch"


def shares_frames(frames_batch: object, mfcc_batch: object) -> bool:
    """Whether a graph's inputs let one frames row serve several mfcc rows, read from their batch dims as the graph
    declares them (ONNX ``dim_param`` strings, ints for fixed sizes): both dynamic and different."""
    return isinstance(frames_batch, str) and isinstance(mfcc_batch, str) and frames_batch != mfcc_batch


#: InputContract's whole-number fields: (lowest, highest). ``num_mfcc``: python_speech_features' 26 mel filters (SPEC
#: §1) give at most 26 cepstra (more were cut to 26 silently).
CONTRACT_INTS = {"num_frames": (1, 1024), "frame_size": (8, 4096), "mfcc_steps": (1, 100_000), "num_mfcc": (1, 26),
                 "sample_rate": (1000, 768_000)}
#: InputContract's number fields: finite, above 0 and at most this.
CONTRACT_FLOATS = {"fps": 240.0, "window_seconds": 3600.0, "mfcc_winlen": 10.0, "mfcc_winstep": 10.0}


def contract_problem(values: Mapping[str, Any]) -> str | None:
    """What is wrong with the contract fields in ``values`` (those present), as ``"<field> must be ..., got ..."``, or
    None. One check for :class:`InputContract` and the contracts manifests and records carry."""
    for key, (lo, hi) in CONTRACT_INTS.items():
        v = values.get(key, lo)
        if not is_whole(v, lo, hi, numpy=True):
            return f"{key} must be a whole number in {lo}..{hi}, got {v!r}"
    for key, hi in CONTRACT_FLOATS.items():
        v = values.get(key, 1.0)
        if not is_finite_number(v, numpy=True) or not 0 < v <= hi:
            return f"{key} must be a finite number above 0 and at most {hi:g}, got {v!r}"
    for key in ("mean", "std"):
        v = values.get(key, (1.0, 1.0, 1.0))
        if (not isinstance(v, (list, tuple)) or len(v) != 3
                or not all(is_finite_number(x, numpy=True) for x in v)
                or (key == "std" and not all(x > 0 for x in v))):
            above = " above 0" if key == "std" else ""
            return f"{key} must be 3 finite numbers (one per RGB channel){above}, got {v!r}"
    return None


@dataclass(frozen=True)
class InputContract:
    """Shapes and preprocessing of one clip (one window). A field that cannot work (``contract_problem``) is a
    :class:`~pinlite_edge.errors.UsageError` naming it."""

    num_frames: int = 16
    frame_size: int = 128
    mfcc_steps: int = 64
    num_mfcc: int = 13
    sample_rate: int = 16000
    fps: float = 25.0
    window_seconds: float = 0.64
    mfcc_winlen: float = 0.025
    mfcc_winstep: float = 0.01
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        problem = contract_problem({f.name: getattr(self, f.name) for f in fields(self)})
        if problem is not None:
            raise UsageError(f"InputContract.{problem}")

    def frames_shape(self, batch: int | None = None) -> tuple[int, ...]:
        shape = (self.num_frames, 3, self.frame_size, self.frame_size)
        return shape if batch is None else (batch, *shape)

    def mfcc_shape(self, batch: int | None = None) -> tuple[int, ...]:
        shape = (self.mfcc_steps, self.num_mfcc)
        return shape if batch is None else (batch, *shape)

    @property
    def window_samples(self) -> int:
        """Audio samples in one window at ``sample_rate``."""
        return int(round(self.window_seconds * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputContract":
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(x) for x in d[key])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


PAPER_CONTRACT = InputContract()
#: The tiny preset keeps the sequence layout and shrinks the frames (SPEC §2: "smaller frames/widths").
TINY_CONTRACT = InputContract(frame_size=64)

_CONTRACTS = {"paper": PAPER_CONTRACT, "tiny": TINY_CONTRACT}
#: the model presets (every model, config and training command takes one of these)
PRESETS = tuple(sorted(_CONTRACTS))


def check_preset(preset: object, name: str = "preset") -> str:
    """``preset`` if it names a preset, else a :class:`UsageError` naming ``name`` and listing the presets."""
    if not isinstance(preset, str) or preset not in _CONTRACTS:
        raise UsageError(f"unknown {name} {preset!r}; choose one of {list(PRESETS)}")
    return preset


def contract_for_preset(preset: str) -> InputContract:
    return _CONTRACTS[check_preset(preset)]
