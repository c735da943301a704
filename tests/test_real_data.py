"""Real GRID clips (MPEG-1 video + MP2 44.1 kHz stereo): decode, resample, face crop, featurise; decode errors."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from pinlite_edge.contract import PAPER_CONTRACT, TINY_CONTRACT
from pinlite_edge.errors import DecodeError, NoAudioError, PinliteError
from pinlite_edge.features import (
    decode_audio,
    decode_video,
    detect_face_box,
    featurise_arrays,
    featurise_file,
    resample_audio,
)

from conftest import GRID_DIR as GRID  # ../shared beside the checkout
CLIP = GRID / "bbaf2n.mpg"
pytestmark = pytest.mark.skipif(not CLIP.exists(), reason=f"GRID sample clips not found at {GRID}")


@pytest.fixture(scope="session")
def grid_decoded():
    audio = decode_audio(CLIP, require_video=True)
    video = decode_video(CLIP)
    return audio, video


def test_grid_decodes_with_expected_properties(grid_decoded):
    audio, video = grid_decoded
    assert audio.sample_rate == 44100 and audio.samples.shape[1] == 2  # MP2 stereo
    assert audio.samples.dtype == np.float32 and np.abs(audio.samples).max() <= 1.0
    assert video.fps == 25.0 and video.frames.shape == (75, 288, 360, 3) and video.frames.dtype == np.uint8
    assert audio.video_frames == 75  # PyAV's integrity pass saw the same frames as OpenCV
    mono = resample_audio(audio.samples, audio.sample_rate, 16000)
    assert abs(mono.shape[0] / 16000 - 75 / 25) < 0.05  # same duration as the video
    assert np.sqrt(np.mean(mono ** 2)) > 1e-3  # speech, not silence


def test_face_is_found_and_box_covers_lower_face(grid_decoded):
    _, video = grid_decoded
    box = detect_face_box(video.frames)
    assert box.found, "the Haar cascade must find the speaker's face in a GRID clip"
    h, w = video.frames.shape[1:3]
    assert 0 <= box.x and box.x + box.size <= w and 0 <= box.y and box.y + box.size <= h
    assert box.size >= 0.4 * min(h, w)  # a face-sized square, enlarged for mouth and chin
    assert box.y + box.size > 0.6 * h  # reaches down to the chin


@pytest.mark.parametrize("contract", [PAPER_CONTRACT, TINY_CONTRACT], ids=["paper", "tiny"])
@pytest.mark.parametrize("face_crop", [True, False], ids=["face", "noface"])
def test_grid_featurises_to_contract_shapes(grid_decoded, contract, face_crop):
    audio, video = grid_decoded
    wins = featurise_arrays(video.frames, audio.samples, audio.sample_rate, video.fps, contract, face_crop=face_crop)
    assert [w.start_seconds for w in wins] == pytest.approx([0.0, 0.64, 1.28, 1.92, 3.0 - 0.64], abs=0.03)
    for w in wins:
        assert w.frames.shape == contract.frames_shape() and w.mfcc.shape == contract.mfcc_shape()
        assert w.frames.dtype == np.float32 and w.mfcc.dtype == np.float32
        assert np.isfinite(w.frames).all() and np.isfinite(w.mfcc).all()
        assert w.frames.std() > 0.1 and w.mfcc.std() > 0.5  # real content, not padding


def test_featurise_file_end_to_end():
    wins = featurise_file(GRID / "lbax4n.mpg", TINY_CONTRACT, stride_seconds=1.0)
    assert [w.start_seconds for w in wins] == pytest.approx([0.0, 1.0, 2.0, 3.0 - 0.64], abs=0.03)
    assert all(np.isfinite(w.frames).all() and np.isfinite(w.mfcc).all() for w in wins)


def _assert_names_file(exc: pytest.ExceptionInfo, path: Path):
    assert isinstance(exc.value, PinliteError)
    assert str(path) in str(exc.value)


def test_truncated_grid_file_is_a_decode_error(tmp_path):
    data = CLIP.read_bytes()
    bad = tmp_path / "truncated.mpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated or corrupt") as exc:
        featurise_file(bad, TINY_CONTRACT, face_crop=False)
    _assert_names_file(exc, bad)


def test_zero_byte_file_is_a_decode_error(tmp_path):
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty") as exc:
        featurise_file(bad, TINY_CONTRACT)
    _assert_names_file(exc, bad)


def test_missing_and_non_video_files(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(DecodeError, match="does not exist") as exc:
        featurise_file(missing, TINY_CONTRACT)
    _assert_names_file(exc, missing)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video at all\n" * 20)
    with pytest.raises(DecodeError) as exc:
        featurise_file(text, TINY_CONTRACT)
    _assert_names_file(exc, text)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    with pytest.raises(DecodeError, match="not a video") as exc:
        featurise_file(wav, TINY_CONTRACT)
    _assert_names_file(exc, wav)


def test_wav_audio_decodes_with_soundfile(tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros((22050, 2), np.float32), 22050)
    out = decode_audio(wav)
    assert out.sample_rate == 22050 and out.samples.shape == (22050, 2)


def test_video_without_audio_track_raises_no_audio(tmp_path):
    silent = tmp_path / "silent.mp4"
    with av.open(str(silent), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(20):
            img = np.full((64, 64, 3), i * 10, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(NoAudioError) as exc:
        featurise_file(silent, TINY_CONTRACT, face_crop=False)
    _assert_names_file(exc, silent)


def test_decoding_time_limit(tmp_path):
    with pytest.raises(DecodeError, match="time limit") as exc:
        featurise_file(CLIP, TINY_CONTRACT, face_crop=False, timeout_s=1e-9)
    _assert_names_file(exc, CLIP)
