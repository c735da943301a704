"""A runner stand-in for Detector tests: BaseRunner's state interface without a model; subclasses write ``infer``."""
from __future__ import annotations

from typing import Any

import numpy as np

from pinlite_edge.contract import TINY_CONTRACT, InputContract


class StandInRunner:
    """``name``, ``contract``, ``operating_point``, ``training_data``, ``activate`` / ``deactivate`` and a call count,
    as :class:`pinlite_edge.runtimes.base.BaseRunner` offers them to ``Detector``."""

    name = "stand-in"
    operating_point: Any = None
    training_data: Any = None

    def __init__(self, contract: InputContract = TINY_CONTRACT, *, active: bool = False):
        self.contract = contract
        self.is_active = active
        self.calls = 0

    def activate(self) -> None:
        self.is_active = True

    def deactivate(self) -> None:
        self.is_active = False

    @staticmethod
    def one_frames_row_per_mfcc_row(frames: np.ndarray, mfcc: np.ndarray) -> np.ndarray:
        """``frames`` repeated to one row per mfcc row: the runner contract lets ``k`` mfcc rows share a frames row
        (``runtimes.base``, "Frame sharing"), and a stand-in that does not share answers as if repeated."""
        return np.repeat(frames, mfcc.shape[0] // frames.shape[0], axis=0)
