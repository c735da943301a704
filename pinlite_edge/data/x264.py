"""The libx264 options every H.264 file the SDK writes uses: the same frames give the same stream, every time.

libx264's macroblock-tree rate control (``mbtree``, on from the veryfast preset up) reads memory it has not
initialised. Through PyAV the same frames then gave different H.264 streams from call to call, depending on what
the process had freed before, and the operating point measured on re-encoded copies (``python -m
pinlite_edge.calibrate``) moved with it: ``benchmarks/results/calibration_repeat/`` (30-35 of 121 copies scored
differently from run to run with mbtree; none without). Without mbtree the stream depends only on the frames and
these options (``tests/test_real_faces_reencode.py`` fills new heap memory four ways and checks); CRF still sets
the quality, the files are somewhat larger at one CRF.
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
