"""Display rotation of phone video: the container's display matrix (or an old-style ``rotate`` tag) -> quarter turns.

A phone records sensor-oriented frames and stores how to turn them for display. FFmpeg exposes that as a display
matrix on every decoded frame (PyAV: ``VideoFrame.rotation``, degrees counter-clockwise); older muxers/demuxers used a
``rotate`` stream tag (degrees clockwise). Frames are turned with :func:`numpy.rot90` (counter-clockwise quarter
turns) so faces come out upright. Mirroring in a display matrix is not applied.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def quarter_turns(degrees_ccw: float, source: str = "video") -> int:
    """Counter-clockwise quarter turns (0..3) for a display rotation in degrees counter-clockwise.

    Angles that are not a multiple of 90 are rounded to the nearest one with a warning.
    """
    turns = round(float(degrees_ccw) / 90.0)
    if abs(turns * 90.0 - float(degrees_ccw)) > 1.0:
        log.warning("%s: display rotation %.1f degrees is not a multiple of 90; using %d", source, degrees_ccw,
                    turns * 90)
    return int(turns) % 4


def stream_rotation(stream: Any) -> float:
    """Degrees counter-clockwise from a stream's ``rotate`` tag (clockwise by convention); 0 when absent/invalid."""
    tag = (getattr(stream, "metadata", None) or {}).get("rotate")
    if tag is None:
        return 0.0
    try:
        return -float(tag)
    except (TypeError, ValueError):
        log.warning("ignoring a rotate tag that is not a number: %r", tag)
        return 0.0


def display_turns(frame: Any, stream: Any, source: str = "video") -> int:
    """Quarter turns that make ``frame`` (a decoded PyAV VideoFrame) upright: its display matrix, else the stream's
    ``rotate`` tag."""
    degrees = getattr(frame, "rotation", 0) or 0
    if not degrees:
        degrees = stream_rotation(stream)
    return quarter_turns(degrees, source) if degrees else 0


def rotate(image: np.ndarray, turns: int) -> np.ndarray:
    """``image`` (H, W[, C]) turned ``turns`` quarter turns counter-clockwise (a view; copy if you need contiguity)."""
    return np.rot90(image, turns % 4) if turns % 4 else image
