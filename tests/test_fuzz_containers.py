"""Property test over generated containers (issue #15 item 8): whatever the channel layout, sample format, rate,
timestamp gaps, rotation or file name, decoding as ``Detector.detect`` does (``open_windows``) in a child process
ends with windows or a ``PinliteError``, never a signal death or another exception, and its peak memory stays under
a bound.

Containers are written with PyAV (``test_reliability_decode.write_av``). The default run is small (a few examples
plus the pinned ones); ``pytest -m slow tests/test_fuzz_containers.py`` runs many more.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import pyav_writes_rotation
from test_reliability_decode import write_av

REPO = Path(__file__).resolve().parents[1]
#: Peak resident memory allowed to the decoding child (imports included: about 150 MB of it).
MEMORY_BOUND = 1024 * 2**20

# container -> audio codecs it takes; codec -> rates it takes (None: any) and the most channels used with it
CODECS = {"mkv": ["pcm_s16le", "pcm_s32le", "pcm_u8", "pcm_f32le", "flac", "aac", "libopus"],
          "mp4": ["aac"], "mov": ["aac", "pcm_s16le"]}
RATES = {"libopus": [48000], "aac": [8000, 11025, 16000, 22050, 44100, 48000, 96000]}
ANY_RATE = [4000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000]
LAYOUTS = ["mono", "stereo", "5.1", "7.1", "hexadecagonal"]
MAX_CHANNELS = {"aac": 8, "libopus": 2, "flac": 8}
NAMES = [b"clip", "clip \u00e9\u6f22".encode(), b"clip\xff\xfe", b"-starts with dash", b"a" * 200]


@st.composite
def containers(draw: Any) -> dict[str, Any]:
    ext = draw(st.sampled_from(sorted(CODECS)))
    codec = draw(st.sampled_from(CODECS[ext]))
    layouts = [lay for lay in LAYOUTS if {"mono": 1, "stereo": 2, "5.1": 6, "7.1": 8, "hexadecagonal": 16}[lay]
               <= MAX_CHANNELS.get(codec, 16)]
    spec = {"ext": ext, "codec": codec, "layout": draw(st.sampled_from(layouts)),
            "rate": draw(st.sampled_from(RATES.get(codec, ANY_RATE))),
            "seconds": draw(st.sampled_from([0.2, 0.5, 1.0, 2.5])),
            "size": (draw(st.integers(8, 48)) * 2, draw(st.integers(8, 48)) * 2),
            "rotation": draw(st.sampled_from([0, 90, 180, -90] if pyav_writes_rotation() else [0])),
            "video_gap": draw(st.none() | st.tuples(st.just(0.3), st.sampled_from([0.08, 0.5, 20.0, 600.0]))),
            "audio_gap": draw(st.none() | st.tuples(st.just(0.2), st.sampled_from([0.05, 0.3, 20.0]))),
            "name": draw(st.sampled_from(NAMES))}
    return spec


CHILD = r"""
import json, os, sys
from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.errors import PinliteError
from pinlite_edge.features import open_windows
out = {"windows": 0, "error": None}
try:
    stream, windows = open_windows(sys.argv[1], TINY_CONTRACT, timeout_s=60)
    for w in windows:
        out["windows"] += 1
except PinliteError as exc:
    out["error"] = type(exc).__name__
with open("/proc/self/status") as fh:
    out["peak"] = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps(out))
"""


def check_container(spec: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        rotation = spec["rotation"] if pyav_writes_rotation() else 0  # an old PyAV: the pinned example unrotated
        src = write_av(folder / f"src.{spec['ext']}", seconds=spec["seconds"], size=spec["size"], rate=spec["rate"],
                       layout=spec["layout"], codec=spec["codec"], rotation=rotation,
                       video_gap=spec["video_gap"], audio_gap=spec["audio_gap"])
        target = os.path.join(os.fsencode(folder), spec["name"] + b"." + spec["ext"].encode())
        os.rename(src, target)
        proc = subprocess.run([sys.executable, "-c", CHILD, target], capture_output=True, timeout=300, cwd=REPO)
        stderr = proc.stderr.decode(errors="replace")[-1500:]
        assert proc.returncode >= 0, f"signal {-proc.returncode} while decoding {spec}: {stderr}"
        assert proc.returncode == 0, f"not a PinliteError for {spec}: {stderr}"
        out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        assert out["windows"] > 0 or out["error"], (spec, out)
        assert out["peak"] < MEMORY_BOUND, (spec, out)
        if spec["seconds"] >= 1.0 and spec["video_gap"] is None and spec["audio_gap"] is None:
            assert out["windows"] >= 1 and out["error"] is None, (spec, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


PINNED = [
    {"ext": "mkv", "codec": "pcm_s16le", "layout": "7.1", "rate": 48000, "seconds": 1.0, "size": (64, 48),
     "rotation": 90, "video_gap": (0.3, 600.0), "audio_gap": None, "name": b"clip\xff\xfe"},
    {"ext": "mp4", "codec": "aac", "layout": "5.1", "rate": 44100, "seconds": 2.5, "size": (32, 32), "rotation": 0,
     "video_gap": None, "audio_gap": (0.2, 20.0), "name": "clip \u00e9\u6f22".encode()},
]

_SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=4, **_SETTINGS)
@example(PINNED[0])
@example(PINNED[1])
@given(spec=containers())
def test_generated_containers_give_windows_or_a_pinlite_error(spec):
    check_container(spec)


@pytest.mark.slow
@settings(max_examples=80, **(_SETTINGS | {"derandomize": False}))
@given(spec=containers())
def test_generated_containers_many(spec):
    check_container(spec)
