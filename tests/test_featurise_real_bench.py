"""benchmarks/featurise_real.py: the time breakdown patches the functions the pipeline really calls."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import featurise_real as fr  # noqa: E402
from pinlite_edge.contract import TINY_CONTRACT  # noqa: E402
from pinlite_edge.features import FaceCropConfig  # noqa: E402
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS  # noqa: E402


def test_breakdown_times_every_part_of_the_pipeline(tmp_path):
    from pinlite_edge.data.synthetic import write_clip_video

    clip = tmp_path / "clip.mp4"
    write_clip_video(clip, seed=0, contract=TINY_CONTRACT, duration_s=1.5)
    parts = fr.breakdown(clip, TINY_CONTRACT, FaceCropConfig())
    for key in ("decode pass (demux + decode audio/video + frame and audio consumers)",
                "frame consumer (planes, face track, crops)", "crop to RGB", "audio resampling",
                "windows (MFCC + frame normalisation)", "MFCC", "frame normalisation"):
        assert parts[key] > 0, (key, parts)
    decode_pass = parts["decode pass (demux + decode audio/video + frame and audio consumers)"]
    assert parts["frame consumer (planes, face track, crops)"] <= decode_pass <= parts["total"] * 1.05


def test_the_end_to_end_time_uses_the_scan_grid_it_is_given(tmp_path, monkeypatch):
    import pinlite_edge.detector as detector

    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "a.mpg").write_bytes(b"x")
    calls = []

    class Stop(Exception):
        pass

    def load(path, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(detector.Detector, "load", staticmethod(load))
    package_logger = logging.getLogger("pinlite_edge")
    level = package_logger.level
    try:  # main() quietens the package's logger for its table: give the other tests their logging back
        fr.main(["--data", str(tmp_path), "--model", str(tmp_path / "m.onnx"), "--scan-offsets=-1,0,1"])
    except Stop:
        pass
    finally:
        package_logger.setLevel(level)
    assert calls[0]["scan_offsets"] == (-1, 0, 1)
    assert fr.build_parser().parse_args([]).scan_offsets == DEFAULT_SCAN_OFFSETS
