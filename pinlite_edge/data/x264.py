"""The libx264 options every H.264 file the SDK writes uses: the same frames give the same stream, every time.

libx264's macroblock-tree rate control (``mbtree``, on in every preset but ultrafast) reads memory it has not
initialised. Through PyAV the same frames then gave different H.264 streams from call to call, depending on what
the process had freed before (measured here: with glibc's ``MALLOC_PERTURB_`` set to 0, 1 and 165, 31 and 38 of 60
re-encoded copies of the shared real clips came out different; with ``mbtree=0``, none). The operating point
measured on re-encoded copies (``python -m pinlite_edge.calibrate``) moved with it. Without mbtree the stream
depends only on the frames and these options; CRF still sets the quality (files are somewhat larger at one CRF).
"""
from __future__ import annotations

#: x264's own parameters (``x264-params``): macroblock-tree rate control off (see the module's docs)
REPRODUCIBLE_X264_PARAMS = "mbtree=0"


def x264_options(crf: int, preset: str = "veryfast") -> dict[str, str]:
    """Options for a PyAV ``libx264`` stream: quality ``crf``, speed ``preset``, one encoder thread (x264's frame
    threads change the stream with their number, which libx264 would pick from the machine's cores), and
    :data:`REPRODUCIBLE_X264_PARAMS`."""
    return {"crf": str(int(crf)), "preset": preset, "threads": "1", "x264-params": REPRODUCIBLE_X264_PARAMS}


__all__ = ["REPRODUCIBLE_X264_PARAMS", "x264_options"]
