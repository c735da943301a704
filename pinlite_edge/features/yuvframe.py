"""Decoded PyAV frames as upright YUV 4:2:0 planes: small grey copies for the face detector and RGB crops.

Converting a whole HD frame to RGB costs more than decoding it; the model only needs a small square of it. So a frame
is kept as its Y, U, V planes (views of the decoder's buffers when it already is 8-bit 4:2:0 with even sides, else one
swscale conversion), turned upright with views (:mod:`~pinlite_edge.features.rotation`), and only the crop square is
resized and converted to RGB (BT.601 limited range, as swscale's default). The detector's grey copy is scaled from the
luma plane by swscale directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pinlite_edge.features.facecrop import FaceBox
from pinlite_edge.features.rotation import rotate


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


def _plane(plane: Any) -> np.ndarray:
    """A PyAV video plane as a 2-D uint8 view (row padding dropped)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]


def bounded_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Even (width, height) with the longest side at most ``max_side`` (aspect kept)."""
    scale = 1.0 if max_side is None or max(width, height) <= max_side else max_side / float(max(width, height))
    return _even(round(width * scale)), _even(round(height * scale))


@dataclass
class YuvFrame:
    """Upright planes of one frame: ``y`` (H, W), ``u`` and ``v`` (H/2, W/2); H and W even. Views, not copies."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @classmethod
    def from_av(cls, frame: Any, turns: int, max_side: int | None) -> "YuvFrame":
        width, height = bounded_size(frame.width, frame.height, max_side)
        if frame.format.name != "yuv420p" or (width, height) != (frame.width, frame.height):
            frame = frame.reformat(format="yuv420p", width=width, height=height)
        y, u, v = (_plane(p) for p in frame.planes[:3])
        return cls(rotate(y, turns), rotate(u, turns), rotate(v, turns))

    @property
    def height(self) -> int:
        return self.y.shape[0]

    @property
    def width(self) -> int:
        return self.y.shape[1]

    def crop_rgb(self, box: FaceBox, size: int) -> np.ndarray:
        """RGB uint8 ``(size, size, 3)`` of the square ``box`` (snapped to even pixels for the chroma planes)."""
        x0, y0 = box.x // 2 * 2, box.y // 2 * 2
        side = _even(min(box.size, self.width - x0, self.height - y0))
        even = size + size % 2
        interp = cv2.INTER_AREA if side > even else cv2.INTER_LINEAR
        yc = np.ascontiguousarray(self.y[y0:y0 + side, x0:x0 + side])
        cy, cx, cs = y0 // 2, x0 // 2, side // 2
        uc = np.ascontiguousarray(self.u[cy:cy + cs, cx:cx + cs])
        vc = np.ascontiguousarray(self.v[cy:cy + cs, cx:cx + cs])
        half = (even // 2, even // 2)
        i420 = np.concatenate([cv2.resize(yc, (even, even), interpolation=interp).ravel(),
                               cv2.resize(uc, half, interpolation=interp).ravel(),
                               cv2.resize(vc, half, interpolation=interp).ravel()]).reshape(even * 3 // 2, even)
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
        return rgb if even == size else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def grey_for_detection(frame: Any, turns: int, size: tuple[int, int]) -> np.ndarray:
    """Equalised upright grey image of ``size`` = (width, height) (upright orientation) scaled by swscale."""
    w, h = size if turns % 2 == 0 else (size[1], size[0])
    grey = frame.to_ndarray(format="gray", width=w, height=h)
    return cv2.equalizeHist(np.ascontiguousarray(rotate(grey, turns)))


def rgb_frame(frame: Any, turns: int, max_side: int | None) -> np.ndarray:
    """Whole frame as upright RGB uint8 ``(H, W, 3)``, longest side at most ``max_side``."""
    if max_side is not None and max(frame.width, frame.height) > max_side:
        scale = max_side / float(max(frame.width, frame.height))
        rgb = frame.to_ndarray(format="rgb24", width=max(1, round(frame.width * scale)),
                               height=max(1, round(frame.height * scale)))
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(rotate(rgb, turns))
