"""Decoded PyAV frames as upright YUV 4:2:0 planes: small grey copies for the face detector and RGB crops.

Converting a whole HD frame to RGB costs more than decoding it; the model only needs a small square of it. So a frame
is kept as its Y, U, V planes (views of the decoder's buffers when it is 8-bit planar 4:2:0, 4:2:2 or 4:4:4 with even
sides within ``max_side``, else one swscale conversion to 4:2:0), turned upright with views
(:mod:`~pinlite_edge.features.rotation`), and only the crop square is resized and converted to RGB (BT.601 limited range, as swscale's default). The face detector reads the luma plane.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from pinlite_edge.features.facecrop import FaceBox
from pinlite_edge.features.rotation import rotate
from pinlite_edge.utils.opencv import cv2


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


def _plane(plane: Any) -> np.ndarray:
    """A PyAV video plane as a 2-D uint8 view (row padding dropped)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]


def bounded_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Even (width, height) with the longest side at most ``max_side`` (aspect kept)."""
    scale = 1.0 if max_side is None or max(width, height) <= max_side else max_side / float(max(width, height))
    return _even(round(width * scale)), _even(round(height * scale))


#: 8-bit planar YUV formats used as decoded (no conversion), with their chroma subsampling read from the planes.
DIRECT_FORMATS = frozenset({"yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p"})
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full-range YUV


@functools.lru_cache(maxsize=1)
def _full_to_limited() -> tuple[np.ndarray, np.ndarray]:
    """uint8 tables mapping full-range luma / chroma to the limited range cv2's YUV->RGB expects."""
    v = np.arange(256, dtype=np.float64)
    luma = np.clip(np.round(16 + v * 219 / 255), 0, 255).astype(np.uint8)
    chroma = np.clip(np.round(128 + (v - 128) * 224 / 255), 0, 255).astype(np.uint8)
    return luma, chroma


@dataclass
class YuvFrame:
    """Upright planes of one frame: ``y`` (H, W), ``u`` and ``v`` (H / sy, W / sx) for 4:2:0, 4:2:2 or 4:4:4; H and W
    even. Views of the decoded frame, not copies. ``full_range``: JPEG-range values (converted per crop)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    full_range: bool = False

    @classmethod
    def from_av(cls, frame: Any, turns: int, max_side: int | None) -> "YuvFrame":
        width, height = bounded_size(frame.width, frame.height, max_side)
        name = frame.format.name
        if name not in DIRECT_FORMATS or (width, height) != (frame.width, frame.height):
            # swscale keeps a full-range flag's values full range (and says so in the new frame's color_range); it
            # converts only what the format itself makes full range (yuvj*, gray) to limited
            frame = frame.reformat(format="yuv420p", width=width, height=height)
        full = frame.format.name.startswith("yuvj") or getattr(frame, "color_range", 0) == _JPEG_RANGE
        y, u, v = (_plane(p) for p in frame.planes[:3])
        return cls(rotate(y, turns), rotate(u, turns), rotate(v, turns), full)

    @classmethod
    def from_rgb(cls, rgb: np.ndarray) -> "YuvFrame":
        """An upright RGB uint8 ``(H, W, 3)`` frame (an app's arrays) as limited-range 4:2:0 planes, the form a decoder
        gives, so arrays are tracked and cropped as files are. An odd side gets one repeated row or column."""
        height, width = rgb.shape[:2]
        if height % 2 or width % 2:
            rgb = cv2.copyMakeBorder(rgb, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
            height, width = rgb.shape[:2]
        flat = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).reshape(-1)
        luma, quarter = height * width, (height // 2) * (width // 2)
        chroma = (height // 2, width // 2)
        return cls(flat[:luma].reshape(height, width), flat[luma:luma + quarter].reshape(chroma),
                   flat[luma + quarter:].reshape(chroma))

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
        sx, sy = self.width // self.u.shape[1], self.height // self.u.shape[0]
        even = size + size % 2
        # area averaging where the crop shrinks a lot; bilinear for small factors (cheaper, no visible aliasing)
        interp = cv2.INTER_AREA if side > 1.5 * even else cv2.INTER_LINEAR
        yc = np.ascontiguousarray(self.y[y0:y0 + side, x0:x0 + side])
        window = (slice(y0 // sy, (y0 + side) // sy), slice(x0 // sx, (x0 + side) // sx))
        uc, vc = np.ascontiguousarray(self.u[window]), np.ascontiguousarray(self.v[window])
        half = (even // 2, even // 2)
        planes = [cv2.resize(yc, (even, even), interpolation=interp),
                  cv2.resize(uc, half, interpolation=interp),
                  cv2.resize(vc, half, interpolation=interp)]
        if self.full_range:
            luma, chroma = _full_to_limited()
            planes = [cv2.LUT(planes[0], luma), cv2.LUT(planes[1], chroma), cv2.LUT(planes[2], chroma)]
        i420 = np.concatenate([p.ravel() for p in planes]).reshape(even * 3 // 2, even)
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
        return rgb if even == size else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def rgb_frame(frame: Any, turns: int, max_side: int | None) -> np.ndarray:
    """Whole frame as upright RGB uint8 ``(H, W, 3)``, longest side at most ``max_side``."""
    if max_side is not None and max(frame.width, frame.height) > max_side:
        scale = max_side / float(max(frame.width, frame.height))
        rgb = frame.to_ndarray(format="rgb24", width=max(1, round(frame.width * scale)),
                               height=max(1, round(frame.height * scale)))
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(rotate(rgb, turns))
