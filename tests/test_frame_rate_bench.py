"""The frame-rate benchmark (benchmarks/frame_rate.py): clips rendered at each rate hold that rate's frames for the
same seconds, the conditions shift the audio by seconds whatever the rate, a run writes a record, and a rate the
generator cannot render is a clear error."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import frame_rate as fr  # noqa: E402
from benchmarks import real_faces as rf  # noqa: E402
from pinlite_edge.contract import TINY_CONTRACT  # noqa: E402
from pinlite_edge.features.mfcc import compute_mfcc  # noqa: E402
from pinlite_edge.features.windows import audio_segment  # noqa: E402


@pytest.mark.parametrize("rate", [20.0, 40.0])
def test_clips_at_a_rate_hold_its_frames_and_the_shifts_are_seconds(rate):
    setting = fr.Setting(rates=(rate,), clips=2)
    clips = fr.render_clips(rate, TINY_CONTRACT, setting)
    assert len(clips) == 2 and clips[0].fps == rate
    assert clips[0].frames.shape[0] == int(fr.CLIP_SECONDS * rate)
    assert clips[0].audio.shape[0] == int(fr.CLIP_SECONDS * TINY_CONTRACT.sample_rate)
    start = 1.0
    (delayed,) = rf.delayed_windows(clips[0], TINY_CONTRACT, [start], 0.2, clips[1])
    expected = compute_mfcc(audio_segment(clips[0].audio, int(round((start - 0.2) * 16000)),
                                          TINY_CONTRACT.window_samples), TINY_CONTRACT)
    np.testing.assert_allclose(delayed.mfcc, expected, atol=1e-5)  # 200 ms at any rate
    (swapped,) = rf.delayed_windows(clips[0], TINY_CONTRACT, [start], None, clips[1])
    assert not np.allclose(swapped.mfcc, delayed.mfcc)


def test_a_run_writes_a_record(tmp_path):
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", create_student("tiny", pretrained=False).eval(),
                           {"note": "random init for the benchmark test"})
    rc = fr.main([f"tiny={ckpt}", "--rate", "25", "--rate", "32", "--clips", "2", "--out-dir", str(tmp_path / "o")])
    assert rc == 0
    (json_path,) = (tmp_path / "o" / "frame_rate").glob("*.json")
    result = json.loads(json_path.read_text())
    assert list(result["rates"]) == ["25", "32"]
    for by_method in result["rates"].values():
        assert set(by_method) == {"tiny", rf.BASELINE_NAME}
        for row in by_method.values():
            assert all(row[f"auc_{k}"] is None or 0.0 <= row[f"auc_{k}"] <= 1.0 for k in fr.MANIPULATED)
            assert len(row["scores"]["original"]) == 2
        assert by_method["tiny"]["offset_acc_200"] is not None and by_method[rf.BASELINE_NAME]["offset_acc_200"] is None
    assert result["record"]["data"]["synthetic"] is True
    assert "| tiny | 32 |" in json_path.with_suffix(".md").read_text()


def test_a_rate_the_generator_cannot_render_is_a_clear_error(tmp_path, caplog):
    assert fr.main(["--rate", "30", "--clips", "2", "--out-dir", str(tmp_path)]) == 2
    assert "integer number of audio samples per frame" in caplog.text
    assert fr.main(["--clips", "1", "--out-dir", str(tmp_path)]) == 2
    assert "--clips must be at least 2" in caplog.text
