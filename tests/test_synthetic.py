"""The synthetic talking-face generator: sample format, determinism, labels, no single-modality shortcut, video files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pinlite_edge.contract import (
    MANIPULATIONS,
    MAX_OFFSET,
    OFFSET_IGNORE_INDEX,
    PAPER_CONTRACT,
    TINY_CONTRACT,
)
from pinlite_edge.data.synthetic import SyntheticConfig, SyntheticDataset, generate_clip, write_clip_video
from pinlite_edge.errors import DatasetError
from pinlite_edge.features.mfcc import raw_mfcc

SPF = TINY_CONTRACT.sample_rate // int(TINY_CONTRACT.fps)  # audio samples per video frame (640)


@pytest.mark.parametrize("contract", [TINY_CONTRACT, PAPER_CONTRACT], ids=["tiny", "paper"])
def test_sample_format(contract):
    ds = SyntheticDataset("train", contract, SyntheticConfig(num_train=3))
    assert len(ds) == 3
    for i in range(len(ds)):
        s = ds[i]
        assert s["frames"].shape == contract.frames_shape() and s["frames"].dtype == torch.float32
        assert s["mfcc"].shape == contract.mfcc_shape() and s["mfcc"].dtype == torch.float32
        for key in ("label", "manipulation", "offset_class"):
            assert s[key].dtype == torch.int64 and s[key].shape == ()
        assert torch.isfinite(s["frames"]).all() and torch.isfinite(s["mfcc"]).all()
        # ImageNet normalisation of uint8 frames: values within [(0-mean)/std, (1-mean)/std].
        assert s["frames"].min() >= -2.2 and s["frames"].max() <= 2.7
        assert isinstance(s["clip_id"], str) and "train" in s["clip_id"]
    clip = generate_clip(0, contract)
    assert clip.frames.shape == (16, contract.frame_size, contract.frame_size, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (contract.window_samples,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0 and clip.audio.std() > 1e-3


def test_default_collate_batches_samples():
    ds = SyntheticDataset("val", TINY_CONTRACT, SyntheticConfig(num_val=4))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["frames"].shape == TINY_CONTRACT.frames_shape(4)
    assert batch["mfcc"].shape == TINY_CONTRACT.mfcc_shape(4)
    assert len(batch["clip_id"]) == 4


def test_deterministic_and_disjoint_splits():
    cfg = SyntheticConfig(num_train=5, num_val=5, num_test=5)
    a = SyntheticDataset("train", TINY_CONTRACT, cfg)[2]
    b = SyntheticDataset("train", TINY_CONTRACT, SyntheticConfig(num_train=5, num_val=5, num_test=5))[2]
    for key in ("frames", "mfcc", "label", "manipulation", "offset_class"):
        assert torch.equal(a[key], b[key]), key
    assert a["clip_id"] == b["clip_id"]
    # Order of access does not matter (pure function of the index).
    ds = SyntheticDataset("train", TINY_CONTRACT, cfg)
    _ = ds[4]
    assert torch.equal(ds[2]["frames"], a["frames"])
    others = [SyntheticDataset(split, TINY_CONTRACT, cfg)[2] for split in ("val", "test")]
    others.append(SyntheticDataset("train", TINY_CONTRACT, SyntheticConfig(seed=1, num_train=5))[2])
    for o in others:
        assert not torch.equal(o["frames"], a["frames"]) and o["clip_id"] != a["clip_id"]
    # "dev" is the validation split; "all" is train + val + test in order.
    assert torch.equal(SyntheticDataset("dev", TINY_CONTRACT, cfg)[2]["frames"], others[0]["frames"])
    everything = SyntheticDataset("all", TINY_CONTRACT, cfg)
    assert len(everything) == 15 and everything.clip_id(7) == SyntheticDataset("val", TINY_CONTRACT, cfg).clip_id(2)
    with pytest.raises(IndexError):
        ds[5]


def test_labels_offsets_and_manipulations_agree():
    cfg = SyntheticConfig(num_train=200)
    ds = SyntheticDataset("train", TINY_CONTRACT, cfg)
    seen = set()
    labels = []
    for i in range(len(ds)):
        label, name, offset = ds.sample_info(i)
        labels.append(label)
        seen.add(name)
        assert (label == 0) == (name == "real")
        if name == "real":
            assert offset == 0
        elif name == "audio_shift":
            assert cfg.min_shift <= abs(offset) <= cfg.max_shift
        else:
            assert offset is None
    assert seen == {"real", "audio_shift", "audio_replace", "visual_replace", "both_replace"}
    assert 0.4 < np.mean(labels) < 0.6
    for i in range(12):  # the rendered sample carries the same ground truth
        s, (label, name, offset) = ds[i], ds.sample_info(i)
        assert int(s["label"]) == label and MANIPULATIONS[int(s["manipulation"])] == name
        expected = OFFSET_IGNORE_INDEX if offset is None else offset + MAX_OFFSET
        assert int(s["offset_class"]) == expected
        assert 0 <= expected <= 10 or expected == OFFSET_IGNORE_INDEX


@pytest.mark.parametrize("k", [3, -2])
def test_matched_pairs_differ_only_in_correspondence(k):
    """Same seed: a fake keeps the real clip's face and audio content; only their alignment changes."""
    real = generate_clip(11, TINY_CONTRACT, manipulation="real")
    np.testing.assert_array_equal(real.mouth_open, real.audio_envelope)  # in sync by construction
    shifted = generate_clip(11, TINY_CONTRACT, manipulation="audio_shift", shift=k)
    assert shifted.offset == k and shifted.offset_class == k + MAX_OFFSET
    np.testing.assert_array_equal(shifted.frames, real.frames)
    # A pure delay of the same rendering (context on both sides: no padding or silence at the edges).
    n = real.audio.size - abs(k) * SPF
    if k > 0:
        np.testing.assert_allclose(shifted.audio[k * SPF:], real.audio[:n], atol=1e-6)
        np.testing.assert_array_equal(shifted.audio_envelope[k:], real.mouth_open[:-k])
    else:
        np.testing.assert_allclose(shifted.audio[:n], real.audio[-k * SPF:], atol=1e-6)
    edge = shifted.audio[:k * SPF] if k > 0 else shifted.audio[k * SPF:]
    assert np.count_nonzero(edge) > 0.95 * edge.size  # rendered context, not zero padding

    a_rep = generate_clip(11, TINY_CONTRACT, manipulation="audio_replace")
    np.testing.assert_array_equal(a_rep.frames, real.frames)
    start, end = a_rep.segment
    assert 0 <= start < end <= 16 and a_rep.offset_class == OFFSET_IGNORE_INDEX
    assert not np.allclose(a_rep.audio[start * SPF:end * SPF], real.audio[start * SPF:end * SPF])
    v_rep = generate_clip(11, TINY_CONTRACT, manipulation="visual_replace")
    np.testing.assert_allclose(v_rep.audio, real.audio, atol=1e-6)
    outside = [t for t in range(16) if not start <= t < end]
    np.testing.assert_array_equal(v_rep.mouth_open[outside], real.mouth_open[outside])


def test_invalid_requests_raise_clear_errors():
    with pytest.raises(DatasetError, match="min_shift"):
        SyntheticConfig(min_shift=0)
    with pytest.raises(DatasetError, match="unknown manipulations"):
        SyntheticConfig(manipulation_mix={"face_swap": 1.0})
    with pytest.raises(DatasetError, match="split"):
        SyntheticDataset("holdout", TINY_CONTRACT)
    with pytest.raises(DatasetError, match="shift"):
        generate_clip(0, TINY_CONTRACT, manipulation="real", shift=2)
    with pytest.raises(DatasetError, match="suffix"):
        write_clip_video("/tmp/never-written.gif", contract=TINY_CONTRACT)


# --- no single-modality shortcut -------------------------------------------------------------------------------


def _mouth_darkness(clip) -> np.ndarray:
    """Mouth opening measured from the pixels: darkness of a box around the mouth (the cavity is dark)."""
    size = clip.frames.shape[1]
    r = max(3, int(0.12 * size))
    lum = clip.frames.astype(np.float32).mean(-1)
    out = []
    for frame, (x, y) in zip(lum, clip.mouth_centers):
        x0, y0 = int(round(x)), int(round(y))
        out.append(-frame[max(y0 - r // 2, 0):y0 + r // 2 + 1, max(x0 - r, 0):x0 + r + 1].mean())
    return np.asarray(out)


def _rms_envelope(clip) -> np.ndarray:
    return np.sqrt((clip.audio.reshape(clip.frames.shape[0], -1) ** 2).mean(axis=1))


def _cv_logreg_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """2-fold cross-validated accuracy of an L2 logistic regression (plain numpy gradient descent)."""
    idx = np.random.default_rng(0).permutation(len(y))
    half = len(y) // 2
    accs = []
    for tr, te in ((idx[:half], idx[half:]), (idx[half:], idx[:half])):
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-9
        xt = np.c_[(x[tr] - mu) / sd, np.ones(len(tr))]
        xe = np.c_[(x[te] - mu) / sd, np.ones(len(te))]
        w = np.zeros(xt.shape[1])
        for _ in range(300):
            p = 1.0 / (1.0 + np.exp(-xt @ w))
            w -= 0.5 * (xt.T @ (p - y[tr]) / len(tr) + 1e-2 * w)
        accs.append(float(((xe @ w > 0) == y[te]).mean()))
    return float(np.mean(accs))


@pytest.fixture(scope="module")
def feature_table():
    ds = SyntheticDataset("train", TINY_CONTRACT, SyntheticConfig(num_train=200))
    audio, video, av, labels, names = [], [], [], [], []
    for i in range(len(ds)):
        clip = ds.clip(i)
        mf = raw_mfcc(clip.audio, TINY_CONTRACT)
        rms = _rms_envelope(clip)
        audio.append(np.concatenate([mf.mean(0), mf.std(0), np.abs(np.diff(mf, axis=0)).mean(0),
                                     [np.log(rms).std(), np.abs(clip.audio).mean()]]))
        frames = clip.frames.astype(np.float32)
        mouth = _mouth_darkness(clip)
        video.append(np.concatenate([frames.mean((0, 1, 2)), frames.std((0, 1, 2)),
                                     [np.abs(np.diff(frames, axis=0)).mean(), mouth.mean(), mouth.std(),
                                      np.abs(np.diff(mouth)).mean()]]))
        av.append([np.nan_to_num(np.corrcoef(mouth, rms)[0, 1])])
        labels.append(clip.label)
        names.append(clip.manipulation)
    return {k: np.asarray(v) for k, v in
            dict(audio=audio, video=video, av=av, labels=labels, names=names).items()}


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("options,words", [
    ({"jitter": NAN}, "'jitter'.*expected a number, got nan"),  # ValueError deep in synthetic_render.py
    ({"noise_std": NAN}, "'noise_std'.*expected a number"),  # rendered without noise
    ({"blur": NAN}, "'blur'.*expected a number"),  # rendered without blur
    ({"noise_std": INF}, "noise_std, blur, jitter, tilt_deg and crossfade_s must be finite"),  # OverflowError
    ({"snr_db": (40.0, 20.0)}, r"snr_db must be a finite \(lo, hi\) range"),  # numpy error
    ({"snr_db": (NAN, NAN)}, "'snr_db'.*expected a list of 2 values"),  # OverflowError
    ({"manipulation_mix": {"audio_shift": NAN}}, "'manipulation_mix'.*expected an object of a number"),
    ({"manipulation_mix": {"audio_shift": INF}}, "manipulation_mix weights must be finite"),
    ({"segment_frames": (8, 100)}, r"segment_frames must satisfy 1 <= lo <= hi <= 16"),  # clamped silently
    ({"segment_frames": (8,)}, "'segment_frames'.*expected a list of 2 values"),
    ({"num_train": 1.5}, "'num_train'.*expected an integer, got 1.5"),
    ({"num_train": "600"}, "'num_train'.*expected an integer, got '600'"),
    ({"min_shift": 2.5}, "'min_shift'.*expected an integer"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"seed": 1.5}, "'seed'.*expected an integer"),
])
def test_synthetic_config_refuses_what_the_data_option_layer_refuses(options, words):
    """The direct API took NaN past the ``x < 0`` checks and strings or fractions into int fields; it now goes through
    the type check of --data-option values, and the range checks are finite-aware."""
    with pytest.raises(DatasetError, match=words):
        SyntheticConfig(**options)


def test_synthetic_config_keeps_valid_values_and_json_shapes():
    config = SyntheticConfig(num_train=600.0, segment_frames=[5, 10], snr_db=[-5, 40], seed=3)
    assert config.num_train == 600 and isinstance(config.num_train, int)
    assert config.segment_frames == (5, 10) and config.snr_db == (-5.0, 40.0)
    assert SyntheticConfig.from_dict(config.to_dict()) == config


def test_fractional_shift_or_index_is_refused():
    """generate_clip(shift=2.5) used a 2-frame shift and dataset[1.5] returned item 1."""
    with pytest.raises(DatasetError, match="'shift'.*expected an integer, got 2.5"):
        generate_clip(0, TINY_CONTRACT, manipulation="audio_shift", shift=2.5)
    assert generate_clip(0, TINY_CONTRACT, manipulation="audio_shift", shift=2.0).offset == 2
    dataset = SyntheticDataset("train", TINY_CONTRACT, SyntheticConfig(num_train=3))
    with pytest.raises(DatasetError, match="index must be an integer, got 1.5"):
        dataset[1.5]
    assert dataset.clip_id(np.int64(1)) == dataset.clip_id(torch.tensor(1)) == "synthetic:train:0:000001"


def test_mouth_is_visible_and_follows_the_envelope_at_tiny_size():
    """The cue the detector needs survives 64 px frames: a mouth in the lower face whose pixels track the envelope."""
    size = TINY_CONTRACT.frame_size
    for seed in range(6):
        clip = generate_clip(seed, TINY_CONTRACT, manipulation="real")
        darkness = _mouth_darkness(clip)
        assert np.corrcoef(darkness, clip.mouth_open)[0, 1] > 0.85, seed
        assert darkness.max() - darkness.min() > 25, seed  # open vs closed: tens of grey levels in the mouth box
        assert 0.55 * size < clip.mouth_centers[:, 1].mean() < 0.8 * size, seed  # a talking-head crop: lower face


def test_single_modality_features_are_near_chance(feature_table):
    y = feature_table["labels"]
    assert 0.35 < y.mean() < 0.65
    audio_acc = _cv_logreg_accuracy(feature_table["audio"], y)
    video_acc = _cv_logreg_accuracy(feature_table["video"], y)
    assert audio_acc < 0.65, f"audio-only features predict the label ({audio_acc:.2f}): a shortcut"
    assert video_acc < 0.65, f"video-only features predict the label ({video_acc:.2f}): a shortcut"


def test_audio_visual_correspondence_separates_real_from_fake(feature_table):
    names, av, y = feature_table["names"], feature_table["av"], feature_table["labels"]
    sel = (names == "real") | (names == "audio_shift")
    acc = _cv_logreg_accuracy(av[sel], y[sel])
    assert acc > 0.8, f"mouth/audio correlation should expose shifted audio (acc {acc:.2f})"
    real_corr = av[names == "real", 0]
    assert np.median(real_corr) > 0.5
    for fake in ("audio_shift", "audio_replace", "visual_replace", "both_replace"):
        assert np.median(av[names == fake, 0]) < np.median(real_corr) - 0.15, fake


# --- video files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_write_clip_video_decodes_with_audio(tmp_path, suffix):
    av = pytest.importorskip("av")
    path = tmp_path / f"clip{suffix}"
    clip = write_clip_video(path, seed=5, contract=TINY_CONTRACT, duration_s=2.0, manipulation="audio_shift",
                            shift=2)
    assert clip.frames.shape == (50, 64, 64, 3) and clip.audio.shape == (32000,) and clip.offset == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # atomic: no temporary left behind
    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.audio
        assert container.streams.audio[0].rate == 16000
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 50 and frames[0].shape == (64, 64, 3)
    assert np.abs(frames[10].astype(np.float32) - clip.frames[10]).mean() < 12  # lossy, but the same picture
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert audio.size >= 32000 * 0.95
    if suffix == ".avi":  # PCM: exact up to 16-bit quantisation
        np.testing.assert_allclose(audio[:32000].astype(np.float32) / 32768.0, clip.audio, atol=2e-4)


_WRITE_ON_CPUS = """
import hashlib, os, sys
from pathlib import Path
os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})  # before any codec counts the cores
from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.data.synthetic import write_clip_video
for suffix in (".avi", ".mp4"):
    path = Path(sys.argv[1]) / ("clip" + suffix)
    write_clip_video(path, 3, TINY_CONTRACT, duration_s=2.0, manipulation="real", frame_size=320)
    # (320 px: at 96 px one and two cores gave the same .mp4 even without libx264's one-thread option)
    print(suffix, hashlib.sha256(path.read_bytes()).hexdigest())
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity")
                    or len(__import__("os").sched_getaffinity(0)) < 2,
                    reason="needs two CPUs this process may run on, and sched_setaffinity (Linux)")
def test_written_clips_do_not_depend_on_the_number_of_cores(tmp_path):
    """FFmpeg's MPEG-4 encoder (.avi) runs a slice thread per core by default and libx264 (.mp4) frame threads, and
    each writes a different stream for another thread count: the same seed gave another clip on another machine."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cpus = sorted(os.sched_getaffinity(0))
    outputs = []
    for i, allowed in enumerate((cpus[:1], cpus)):
        out = tmp_path / str(i)
        out.mkdir()
        run = subprocess.run([sys.executable, "-c", _WRITE_ON_CPUS, str(out), ",".join(map(str, allowed))],
                             capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append(dict(line.split() for line in run.stdout.splitlines()))
    assert outputs[0] == outputs[1], f"one core vs {len(cpus)}: {outputs}"
