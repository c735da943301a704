"""Learning sync on real, unlabelled talking-face folders: sync pairs, option validation, split files, class-balanced
sampling, augmentation, one-class refusal, AUC-based checkpoint selection, provenance and the training entry point.

Videos are tiny files written with PyAV into a temporary folder (nested, with PROVENANCE.json speaker groups and a
split file); the shipped real-av split is checked against ../shared/data/real-av when it is there.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pinlite_edge.checkpoint import read_record
from pinlite_edge.contract import MAX_OFFSET, OFFSET_IGNORE_INDEX, TINY_CONTRACT
from pinlite_edge.data import build_dataset
from pinlite_edge.data.augment import AugmentConfig, augment_frames, augmentation_rng, draw
from pinlite_edge.data.sample import pair_key
from pinlite_edge.data.folder import FolderDataset
from pinlite_edge.data.splits import REAL_AV_SPLIT, read_split_file
from pinlite_edge.data.synthetic import write_clip_video
from pinlite_edge.data.syncpairs import SyncPairConfig
from pinlite_edge.errors import DatasetError, PinliteError
from pinlite_edge.features import compute_mfcc
from pinlite_edge.training.config import TeacherConfig
from pinlite_edge.training.data import EpochSampler, load_split
from pinlite_edge.models import ModelOutput
from pinlite_edge.training.engine import _better
from pinlite_edge.training.losses import batch_pairs, pair_ranking_loss, teacher_loss
from pinlite_edge.training.sampling import SamplingPlan, Strata
from pinlite_edge.training.teacher import train_teacher

from conftest import REPO_ROOT, SHARED

C = TINY_CONTRACT
REAL_AV = SHARED / "data" / "real-av"
#: file -> speaker group; b/s4 is the same speaker as a/s1
GROUPS = {"a/s1.mp4": "spk1", "a/s2.mp4": "spk2", "b/s3.mp4": "spk3", "b/s4.mp4": "spk1", "b/s5.mp4": "spk4"}
SPLITS = {"a/s1.mp4": "train", "b/s4.mp4": "train", "a/s2.mp4": "train", "b/s3.mp4": "dev", "b/s5.mp4": "dev"}
FEW_PAIRS = {"shifts_per_window": 2, "far_per_window": 1, "swaps_per_window": 1}


@pytest.fixture(scope="module")
def talking_root(tmp_path_factory) -> Path:
    """root/{a,b}/*.mp4 (2 s generated talking faces) with PROVENANCE.json per folder and split.json."""
    root = tmp_path_factory.mktemp("talking")
    for n, rel in enumerate(GROUPS):
        (root / rel).parent.mkdir(exist_ok=True)
        write_clip_video(root / rel, seed=n, contract=C, duration_s=2.0, manipulation="real")
    for folder in ("a", "b"):
        records = [{"file": Path(rel).name, "speaker_group": g} for rel, g in GROUPS.items() if rel.startswith(folder)]
        (root / folder / "PROVENANCE.json").write_text(json.dumps(records))
    split = {"clips": [{"file": rel, "split": SPLITS[rel], "speaker_group": GROUPS[rel]} for rel in GROUPS]}
    (root / "split.json").write_text(json.dumps(split))
    return root


def _folder(root: Path, split: str, **options) -> FolderDataset:
    options = {"face_crop": False, "sync_pairs": True, "split_file": str(root / "split.json"), **options}
    return build_dataset(f"folder:{root}", split, C, **options)


# --- sync pairs ---------------------------------------------------------------------------------------------------
def test_sync_pairs_cover_every_offset_far_shifts_and_cross_speaker_swaps(talking_root):
    ds = _folder(talking_root, "train")
    assert ds.augment is not None  # train split of real video: augmented by default
    refs = ds.refs
    reals = [r for r in refs if r.label == 0]
    assert len({r.path for r in reals}) == 3 and len(reals) >= 6
    group = {talking_root / rel: g for rel, g in GROUPS.items()}
    for real in reals:
        fakes = [r for r in refs if r.path == real.path and r.start == real.start and r.label == 1]
        near = sorted(r.offset_class - MAX_OFFSET for r in fakes if r.offset_class != OFFSET_IGNORE_INDEX)
        assert near == [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]
        assert all(r.audio_shift_frames == r.offset_class - MAX_OFFSET for r in fakes
                   if r.offset_class != OFFSET_IGNORE_INDEX)
        far = [r for r in fakes if r.audio_shift_frames and r.offset_class == OFFSET_IGNORE_INDEX]
        assert len(far) == 2 and all(6 <= abs(r.audio_shift_frames) <= 25 for r in far)
        for r in far:  # the shifted audio stays inside the clip: no zero padding to give the fake away
            a0 = r.start - r.audio_shift_frames / 25.0
            assert a0 >= -1e-6 and a0 + C.window_seconds <= 2.0 + 1e-6
        swaps = [r for r in fakes if r.audio_path is not None]
        others = sum(1 for r in {q.path for q in reals} if group[r] != group[real.path])
        assert len(swaps) == min(2, others) and all(r.offset_class == OFFSET_IGNORE_INDEX for r in swaps)
        assert all(group[r.audio_path] != group[r.path] for r in swaps)  # another speaker (s1/s4 are one)
    labels, kinds = ds.strata()
    assert set(kinds) == {"real", "near_shift", "far_shift", "swap"} and labels == [r.label for r in refs]

    # a far shift really moves the audio by k frames (split "all": not augmented)
    plain = _folder(talking_root, "all")
    assert plain.augment is None
    i = next(j for j, r in enumerate(plain.refs) if r.audio_shift_frames and r.offset_class == OFFSET_IGNORE_INDEX)
    r = plain.refs[i]
    clip = plain.loader.load(r.path)
    a0 = int(round((r.start - r.audio_shift_frames / clip.fps) * clip.sample_rate))
    np.testing.assert_allclose(plain[i]["mfcc"].numpy(), compute_mfcc(clip.audio[a0:a0 + C.window_samples], C),
                               atol=1e-5)


def test_rewrite_fakes_follow_another_speakers_audio_and_are_computed_once_per_pair(talking_root, tmp_path,
                                                                                     monkeypatch):
    from pinlite_edge.data.lip_rewrite import driving_track

    cache = str(tmp_path / "cache")
    plain = _folder(talking_root, "all", sync_pairs=dict(FEW_PAIRS), cache_dir=cache)
    ds = _folder(talking_root, "all", sync_pairs={**FEW_PAIRS, "rewrites_per_window": 1}, cache_dir=cache)
    assert [r for r in ds.refs if not r.rewrite] == plain.refs  # the other fakes are drawn as before
    reals = [r for r in ds.refs if r.label == 0]
    rewrites = [r for r in ds.refs if r.rewrite]
    assert len(rewrites) == len(reals) and set(ds.strata()[1]) == {"real", "near_shift", "far_shift", "swap",
                                                                      "rewrite"}
    group = {talking_root / rel: g for rel, g in GROUPS.items()}
    partners: dict[Path, set[Path]] = {}
    for r in rewrites:
        partners.setdefault(r.path, set()).add(r.audio_path)
        assert r.label == 1 and r.offset_class == OFFSET_IGNORE_INDEX and r.manipulation == 4  # both_replace
    assert all(len(p) == 1 and group[k] != group[next(iter(p))] for k, p in partners.items())  # one, another speaker

    i = ds.refs.index(rewrites[1])
    r = ds.refs[i]
    sample = ds[i]
    real = plain[plain.refs.index(next(q for q in reals if q.path == r.path and q.start == r.start))]
    clip, partner = ds.loader.load(r.path), ds.loader.load(r.audio_path)
    track = driving_track(partner.audio, int(round(clip.frames.shape[0] / clip.fps * clip.sample_rate)))
    a0 = int(round(r.start * clip.sample_rate))
    np.testing.assert_allclose(sample["mfcc"].numpy(), compute_mfcc(track[a0:a0 + C.window_samples], C), atol=1e-5)
    assert not torch.equal(sample["frames"], real["frames"])  # the mouth was redrawn
    ds[ds.refs.index(next(q for q in rewrites if q.path == r.path and q is not r))]
    assert ds.loader.rewrites == 1  # one rewrite per (clip, partner), not per window

    again = _folder(talking_root, "all", sync_pairs={**FEW_PAIRS, "rewrites_per_window": 1}, cache_dir=cache)
    assert torch.equal(again[i]["frames"], sample["frames"]) and again.loader.rewrites == 0  # read from the cache
    import pinlite_edge.data.lip_rewrite as lip_rewrite

    monkeypatch.setattr(lip_rewrite, "REWRITE_VERSION", lip_rewrite.REWRITE_VERSION + 1)
    changed = _folder(talking_root, "all", sync_pairs={**FEW_PAIRS, "rewrites_per_window": 1}, cache_dir=cache)
    changed[i]
    assert changed.loader.rewrites == 1  # another generator version: not reused


def test_sync_pair_config_from_options(talking_root):
    ds = _folder(talking_root, "train", sync_pairs=dict(FEW_PAIRS))
    count = Counter(ds.strata()[1])
    assert count["near_shift"] == 2 * count["real"] and count["far_shift"] == count["swap"] == count["real"]


@pytest.mark.parametrize("options, match", [
    ({"sync_pairs": {"shifts_per_window": "two"}}, r"'sync_pairs.shifts_per_window'.*expected an integer"),
    ({"sync_pairs": {"shifts_per_windw": 2}}, r"unknown key\(s\) \['shifts_per_windw'\].*shifts_per_window"),
    ({"sync_pairs": {"shifts": [0, 3]}}, r"'sync_pairs'.*non-zero"),
    ({"sync_pairs": {"far_shift_range": [3, 9]}}, r"far_shift_range"),
    ({"sync_pairs": 3}, r"'sync_pairs'.*expected true or false or an object"),
    ({"augment": {"min_scale": 0.1}}, r"'augment'.*min_scale"),
    ({"face_crop": "maybe"}, r"'face_crop'.*true or false"),
    ({"stride_seconds": "fast"}, r"'stride_seconds'.*a number"),
    ({"stride_seconds": 1e-6}, r"stride_seconds.*at least"),  # used to grow memory without end
    ({"train_stride_seconds": 0}, r"train_stride_seconds.*positive"),
    ({"colour": "blue"}, r"unknown option.*colour.*allowed"),
    ({"split_file": "/no/such/split.json"}, r"split file /no/such/split.json not found.*real_av"),
])
def test_bad_folder_options_name_the_option_and_the_allowed_values(talking_root, options, match):
    with pytest.raises(DatasetError, match=match):
        _folder(talking_root, "train", **options)


@pytest.mark.parametrize("options, match", [
    ({"noise_snr_db": (float("nan"), float("nan"))}, r"'noise_snr_db'.*expected a list of 2 values"),
    ({"noise_snr_db": (float("-inf"), 40.0)}, r"noise_snr_db must be a finite \[lo, hi\]"),
    ({"noise_snr_db": "10"}, r"'noise_snr_db'.*expected a list of 2 values"),  # was TypeError
    ({"noise_snr_db": ("a", "b")}, r"'noise_snr_db'.*expected a list of 2 values"),  # was ValueError
    ({"brightness": "0.2"}, r"'brightness'.*expected a number"),  # was TypeError
    ({"seed": 1.5}, r"'seed'.*expected an integer"),
])
def test_augment_config_refuses_nan_inf_and_strings_when_made(options, match):
    """noise_snr_db NaN or -inf was accepted and overflowed at the first augmented sample; strings failed with a
    TypeError or ValueError. The direct API now has the type check of --data-option augment={...} values."""
    with pytest.raises(DatasetError, match=match):
        AugmentConfig(**options)
    assert AugmentConfig(noise_snr_db=[5, 20]).noise_snr_db == (5.0, 20.0)


def test_a_clip_skipped_for_sync_pairs_gives_no_audio_to_other_clips_swaps(tmp_path):
    """A clip too short for a window was skipped, but still drawn as the audio donor of other clips' swap fakes,
    so training died later decoding it."""
    from pinlite_edge.data.syncpairs import SourceClip, sync_pair_refs

    sources = [SourceClip(tmp_path / f"{n}.mp4", n, duration, 25.0, n) for n, duration in
               (("a", 3.0), ("b", 3.0), ("short", 0.2))]
    refs = sync_pair_refs(sources, C, SyncPairConfig(swaps_per_window=1))
    donors = {r.audio_path for r in refs if r.audio_path is not None}
    assert donors == {tmp_path / "a.mp4", tmp_path / "b.mp4"}
    assert all(r.path != tmp_path / "short.mp4" for r in refs)


def test_bad_synthetic_options_are_dataset_errors():
    with pytest.raises(DatasetError, match=r"'num_train'.*expected an integer"):
        build_dataset("synthetic", "train", C, num_train="many")
    with pytest.raises(DatasetError, match=r"'segment_frames'.*list of 2"):
        build_dataset("synthetic", "train", C, segment_frames=5)


def _cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pinlite_edge.training", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),  # was ZeroDivisionError
    (["--lr", "-1"], "--lr must be a number >= 0"),  # was torch's ValueError
    (["--offset-weight", "-1"], "--offset-weight must be a number >= 0"),  # trained silently, ascending
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--model-option", "dropout=abc"], "dropout must be a number in [0, 1), got 'abc'"),  # was TypeError
    (["--model-option", "head_dim=0"], "head_dim must be a whole number in 1..256, got 0"),  # was ZeroDivisionError
    (["--model-option", "frozen_blocks=99"], "frozen_blocks must be a whole number in 0..5"),  # froze it all
    (["--model-option", "ffn_dim=0"], "ffn_dim must be a whole number"),  # trained without a feed-forward layer
    (["--model-option", "motion_input=maybe"], "must be true or false"),  # was stored as the string
])
def test_cli_bad_training_flag_is_a_one_line_error(tmp_path, flags, words):
    res = _cli("teacher", "--data", "synthetic", "--data-option", "num_train=4", "--data-option", "num_val=2",
               "--device", "cpu", "--epochs", "1", "--output", str(tmp_path / "run"), "--no-progress", *flags)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if ": error: " in line]  # prog: error: ...
    assert len(errors) == 1 and words in errors[0], res.stderr


@pytest.mark.parametrize("option, words", [
    ('sync_pairs={"shifts_per_window": "two"}', "sync_pairs.shifts_per_window"),
    ("synthetic.num_train=12", "no --data source of kind 'synthetic'"),
])
def test_cli_bad_data_option_is_a_one_line_error(talking_root, tmp_path, option, words):
    res = _cli("teacher", "--data", f"folder:{talking_root}", "--data-option", option, "--device", "cpu",
               "--output", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if ": error: " in line]  # prog: error: ...
    assert len(errors) == 1 and words in errors[0], res.stderr
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_training_entry_point_lists_subcommands():
    res = _cli("--help", timeout=60)
    assert res.returncode == 0
    for name in ("teacher", "distill", "prune"):
        assert f"    {name} " in res.stdout
    sub = _cli("prune", "--help", timeout=60)
    assert sub.returncode == 0 and "python -m pinlite_edge.training prune" in sub.stdout and "--student" in sub.stdout
    assert _cli("bogus", timeout=60).returncode == 2


# --- split files --------------------------------------------------------------------------------------------------
def test_split_file_is_respected_and_keeps_speakers_in_one_split(talking_root):
    by_split = {s: _folder(talking_root, s, sync_pairs=dict(FEW_PAIRS)) for s in ("train", "dev")}
    files = {s: {p.relative_to(talking_root).as_posix() for p in {r.path for r in ds.refs}}
             for s, ds in by_split.items()}
    assert files == {s: {f for f, sp in SPLITS.items() if sp == s} for s in ("train", "dev")}
    assert by_split["train"].split_counts["train"] == {"clips": 3, "speakers": 2, "speakers_known": True}
    with pytest.raises(DatasetError, match="no usable clips in split 'test'"):
        _folder(talking_root, "test")

    # a split file that puts one speaker in two splits is refused
    bad = talking_root.parent / "bad_split.json"
    bad.write_text(json.dumps([{"file": "a/s1.mp4", "split": "train", "speaker_group": "x"},
                               {"file": "a/s2.mp4", "split": "test", "speaker_group": "x"}]))
    with pytest.raises(DatasetError, match="speaker group 'x' is in both"):
        read_split_file(bad)


@pytest.mark.parametrize("first, second", [("train", "dev"), ("dev", "test"), ("test", "train")])
def test_a_speaker_in_two_splits_is_refused_whichever_split_comes_first(tmp_path, first, second):
    """A split file that lists one speaker group in two splits is refused naming the speaker, whatever the two splits
    and their order: a check that only fired when the second record was in test let a speaker span train and dev (or
    test then train) silently, so dev-based checkpoint selection saw training speakers."""
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({"clips": [{"file": "a/s0.mp4", "split": "train", "speaker_group": "other"},
                                         {"file": "a/s1.mp4", "split": first, "speaker_group": "spk7"},
                                         {"file": "b/s2.mp4", "split": second, "speaker_group": "spk7"}]}))
    with pytest.raises(DatasetError, match=f"speaker group 'spk7' is in both {first} and {second}"):
        read_split_file(bad)


def test_hash_split_without_split_file_hashes_the_speaker_group(talking_root, tmp_path):
    clips = FolderDataset._list_clips(talking_root, talking_root / "labels.csv", SyncPairConfig(), None)
    assert {c.rel: c.speaker_group for c in clips} == GROUPS  # from the PROVENANCE.json files, recursively
    split_of = {c.rel: c.split for c in clips}
    assert split_of["a/s1.mp4"] == split_of["b/s4.mp4"]  # one speaker, one split

    # 30 files of two speakers (listing only: the files are not decoded): two splits at most, one per speaker
    for i in range(30):
        (tmp_path / "many" / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "many" / f"d{i % 3}" / f"f{i:02d}.mp4").write_bytes(b"")
    for d in range(3):
        records = [{"file": f"f{i:02d}.mp4", "speaker_group": f"spk{i % 2}"} for i in range(d, 30, 3)]
        (tmp_path / "many" / f"d{d}" / "PROVENANCE.json").write_text(json.dumps(records))
    many = FolderDataset._list_clips(tmp_path / "many", tmp_path / "many" / "labels.csv", SyncPairConfig(), None)
    assert len(many) == 30
    assert {(c.speaker_group, c.split) for c in many} == {(g, next(c.split for c in many if c.speaker_group == g))
                                                           for g in ("spk0", "spk1")}


@pytest.mark.skipif(not (REAL_AV / "talking").is_dir(), reason=f"real clips not found in {REAL_AV}")
def test_shipped_real_av_split_is_speaker_disjoint_on_the_real_clips():
    records = read_split_file(REAL_AV_SPLIT)
    groups: dict[str, set[str]] = {}
    for split in ("train", "dev", "test"):
        clips = FolderDataset._list_clips(REAL_AV, REAL_AV / "labels.csv", SyncPairConfig(), REAL_AV_SPLIT)
        mine = [c for c in clips if c.split == split]
        assert {c.rel for c in mine} == {f for f, r in records.items() if r.split == split}
        groups[split] = {c.speaker_group for c in mine}
    assert all(groups.values())
    assert not (groups["train"] & groups["dev"]) and not (groups["train"] & groups["test"]) \
        and not (groups["dev"] & groups["test"])


# --- class balance ------------------------------------------------------------------------------------------------
def _strata(kinds_per_source: list[dict[str, int]], weights=None, balance_default=None) -> Strata:
    src, labels, kinds = [], [], []
    for s, counts in enumerate(kinds_per_source):
        for kind, n in counts.items():
            src += [s] * n
            labels += [0 if kind == "real" else 1] * n
            kinds += [kind] * n
    n_src = len(kinds_per_source)
    return Strata(np.asarray(src), np.asarray(labels), np.asarray(kinds, dtype=object),
                  tuple(f"src{s}" for s in range(n_src)), tuple(weights or [None] * n_src),
                  tuple(balance_default or [True] * n_src))


def test_balanced_sampler_draws_equal_classes_spreads_fakes_and_resumes():
    strata = _strata([{"real": 10, "near_shift": 100, "far_shift": 20, "swap": 4}])
    plan = SamplingPlan(strata, "auto")
    assert plan.size == 20
    seen_fakes: list[int] = []
    for epoch in range(3):
        order = plan.epoch_indices(seed=7, epoch=epoch)
        assert order == plan.epoch_indices(seed=7, epoch=epoch)  # a pure function of (seed, epoch)
        kinds = Counter(strata.kinds[order].tolist())
        assert kinds["real"] == 10 and sum(kinds.values()) - kinds["real"] == 10
        assert kinds["swap"] == 3 and kinds["far_shift"] == 4 and kinds["near_shift"] == 3  # even, capped: 3+4+3
        assert sorted(i for i in order if strata.kinds[i] == "real") == list(range(10))  # every real once
        seen_fakes += [i for i in order if strata.kinds[i] == "far_shift"]
    assert len(set(seen_fakes)) == 12  # epoch after epoch new far shifts (20 of them), no repeat before all are used
    assert plan.epoch_indices(7, 0) != plan.epoch_indices(7, 1) != plan.epoch_indices(8, 1)

    full = EpochSampler(plan.size, 7, 2, plan=plan).order()
    assert list(EpochSampler(plan.size, 7, 2, start=6, plan=plan)) == full[6:]  # mid-epoch resume: same batches
    ranks = [EpochSampler(plan.size, 7, 2, rank=r, world_size=3, plan=plan).order() for r in range(3)]
    assert [len(r) for r in ranks] == [6, 6, 6] and sorted(sum(ranks, [])) == sorted(full[:18])

    assert SamplingPlan(strata, "none").size == len(strata)  # --balance none: every sample once
    unbalanced = _strata([{"real": 10, "near_shift": 100}], balance_default=[False])
    assert SamplingPlan(unbalanced, "auto").trivial and SamplingPlan(unbalanced, "classes").size == 20


def test_source_weights_set_each_sources_share():
    strata = _strata([{"real": 50, "swap": 150}, {"real": 100, "audio_shift": 100}], weights=[1.0, 3.0],
                     balance_default=[True, False])
    plan = SamplingPlan(strata, "auto")
    order = plan.epoch_indices(0, 0)
    per_source = Counter(strata.sources[order].tolist())
    assert plan.size == 300 and per_source == {0: 75, 1: 225}  # total 100 + 200, shared 1:3
    first = [i for i in order if strata.sources[i] == 0]
    assert Counter(strata.labels[first].tolist()) == {0: 37, 1: 38}


def test_epoch_size_sets_the_draw_per_epoch_and_keeps_shares_and_the_stream():
    strata = _strata([{"real": 50, "swap": 150}, {"real": 100, "audio_shift": 100}], weights=[1.0, 3.0],
                     balance_default=[True, False])
    plan = SamplingPlan(strata, "auto", epoch_size=40)
    order = plan.epoch_indices(0, 0)
    assert plan.size == len(order) == 40 and Counter(strata.sources[order].tolist()) == {0: 10, 1: 30}
    reals = [i for e in range(5) for i in plan.epoch_indices(0, e) if strata.sources[i] == 0 and strata.labels[i] == 0]
    assert len(reals) == 25 and len(set(reals)) == 25  # small epochs still walk through the samples without repeats
    unweighted = SamplingPlan(_strata([{"real": 10, "near_shift": 30}]), "auto", epoch_size=8)
    assert unweighted.size == 8 and Counter(strata.labels[unweighted.epoch_indices(0, 0)].tolist())
    with pytest.raises(PinliteError, match="epoch_size"):
        SamplingPlan(strata, "auto", epoch_size=0)


# --- pair ranking -------------------------------------------------------------------------------------------------
def test_pair_keys_tie_each_sync_pair_fake_to_its_own_real_window(talking_root):
    ds = _folder(talking_root, "train", sync_pairs=dict(FEW_PAIRS))
    keys = ds.pair_keys()
    real_key = {(r.path, r.start): k for r, k in zip(ds.refs, keys) if r.label == 0}
    assert len(set(real_key.values())) == len(real_key)  # one key per real window
    for r, k in zip(ds.refs, keys):
        assert k == real_key[(r.path, r.start)]  # shifts, far shifts and swaps: the window they were made from
    assert pair_key("a#b.mp4@1.20#swap0:c#d.mp4") == pair_key("a#b.mp4@1.20") == "a#b.mp4@1.20"
    assert pair_key("a#b.mp4@1.20") != pair_key("a#b.mp4@1.52")
    assert pair_key("synthetic/train/000012") == "synthetic/train/000012"  # no window id: pairs with nothing


def _paired_strata() -> Strata:
    """Source 0: 6 real windows w0..w5, each with 3 near shifts, 1 far shift, 1 swap (sync pairs); source 1:
    synthetic samples (no keys)."""
    src, labels, kinds, keys = [], [], [], []
    for w in range(6):
        for kind, n in (("real", 1), ("near_shift", 3), ("far_shift", 1), ("swap", 1)):
            src += [0] * n
            labels += [0 if kind == "real" else 1] * n
            kinds += [kind] * n
            keys += [f"clip.mp4@{w}.00"] * n
    src += [1] * 8
    labels += [0, 1] * 4
    kinds += ["real", "audio_shift"] * 4
    keys += [None] * 8
    return Strata(np.asarray(src), np.asarray(labels), np.asarray(kinds, dtype=object), ("folder:x", "synthetic"),
                  (None, None), (True, False), np.asarray(keys, dtype=object))


def test_pair_sampler_puts_each_fake_next_to_its_own_real_and_keeps_the_balance():
    strata = _paired_strata()
    plain, paired = SamplingPlan(strata, "auto"), SamplingPlan(strata, "auto", pairs=True)
    assert paired.pairs and "pairs" in paired.describe() and "pairs" not in plain.describe()
    assert paired.size == plain.size == 20
    for epoch in range(3):
        order = paired.epoch_indices(seed=3, epoch=epoch)
        assert order == paired.epoch_indices(seed=3, epoch=epoch)  # a pure function of (seed, epoch)
        unpaired = plain.epoch_indices(seed=3, epoch=epoch)
        assert Counter(strata.labels[order].tolist()) == Counter(strata.labels[unpaired].tolist())  # same balance
        fakes = [i for i in order if strata.sources[i] == 0 and strata.labels[i] == 1]
        assert sorted(fakes) == sorted(i for i in unpaired if strata.sources[i] == 0 and strata.labels[i] == 1)
        for f in fakes:  # right before each fake: the real window it was made from
            before = order[order.index(f) - 1]
            assert strata.labels[before] == 0 and strata.keys[before] == strata.keys[f]
        assert sorted(i for i in order if strata.sources[i] == 1) == list(range(36, 44))  # synthetic: unchanged


def test_pair_sampler_without_pairable_source_warns_and_draws_unpaired(caplog):
    strata = _strata([{"real": 10, "near_shift": 30}])  # no keys
    with caplog.at_level(logging.WARNING):
        plan = SamplingPlan(strata, "auto", pairs=True)
    assert not plan.pairs and "pairs" not in plan.describe()
    assert plan.epoch_indices(0, 0) == SamplingPlan(strata, "auto").epoch_indices(0, 0)
    assert any("no balanced source" in r.getMessage() for r in caplog.records)


def test_pair_ranking_loss_compares_a_window_with_its_own_wrong_audio():
    logits = torch.tensor([[2.0, 0.0], [0.5, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.0]], requires_grad=True)
    label = torch.tensor([0, 1, 1, 0, 1])
    ids = ["v.mp4@1.00", "v.mp4@1.00#shift+3", "v.mp4@1.00#swap0:w.mp4", "v.mp4@2.00", "v.mp4@9.00#shift-2"]
    assert batch_pairs(ids, label) == ([0, 0], [1, 2])  # the last fake's real window is not in the batch
    loss = pair_ranking_loss(logits, label, ids)
    expected = (F.softplus(torch.tensor(0.5 - 2.0)) + F.softplus(torch.tensor(-1.0 - 2.0))) / 2
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[1, 0]  # descent raises the real window's margin, lowers the fake's
    assert logits.grad[3].abs().sum() == 0 and logits.grad[4].abs().sum() == 0  # unpaired samples: no gradient
    none = pair_ranking_loss(logits, label, ["a", "b", "c", "d", "e"])
    assert float(none) == 0.0 and none.requires_grad

    out = ModelOutput(logits.detach(), torch.zeros(5, 11), torch.full((5, 4, 4), 0.25))
    offsets = torch.full((5,), OFFSET_IGNORE_INDEX)
    base, parts = teacher_loss(out, label, offsets, align_weight=0.0)
    total, parts = teacher_loss(out, label, offsets, align_weight=0.0, pair_weight=0.5, clip_ids=ids)
    assert float(total - base) == pytest.approx(0.5 * float(expected), rel=1e-5) and "pairs" in parts
    with pytest.raises(ValueError, match="clip ids"):
        teacher_loss(out, label, offsets, pair_weight=0.5)


def test_negative_pair_weight_is_a_usage_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pinlite_edge.training", "teacher", "--pair-weight", "-1",
                          "--output", str(tmp_path / "t"), "--no-progress"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300)
    assert run.returncode == 2 and "--pair-weight must be a number >= 0" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_training_split_with_one_class_is_an_error(talking_root, caplog):
    (talking_root / "only_real.csv").write_text("file,label,split\na/s1.mp4,0,train\na/s2.mp4,0,dev\n")
    options = {"labels": "only_real.csv", "face_crop": False}
    with pytest.raises(DatasetError, match=r"folder:.*split 'train', holds only real.*sync_pairs=true"):
        load_split(f"folder:{talking_root}", "train", C, options=options, in_memory="no", role="train")
    with caplog.at_level(logging.WARNING):
        load_split(f"folder:{talking_root}", "dev", C, options=options, in_memory="no", role="val")
    assert any("holds only real" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


# --- augmentation -------------------------------------------------------------------------------------------------
def _still_video(path: Path, seconds: float = 2.0, size: int = 64) -> None:
    """A video whose frames are all the same picture (with speech-like noise as audio)."""
    import av

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    with av.open(str(path), mode="w", format="mp4") as out:
        v = out.add_stream("libx264", rate=25)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        v.options = {"crf": "0", "preset": "veryfast"}
        a = out.add_stream("aac", rate=16000, layout="mono")
        for i in range(int(25 * seconds)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(v.encode(f))
        out.mux(v.encode())
        for s in range(0, audio.size, 1024):
            af = av.AudioFrame.from_ndarray(audio[None, s:s + 1024], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, s, Fraction(1, 16000)
            out.mux(a.encode(af))
        out.mux(a.encode())


def test_augmentation_is_one_crop_and_colour_per_window_and_deterministic(tmp_path):
    (tmp_path / "v").mkdir()
    for name in ("x.mp4", "y.mp4"):
        _still_video(tmp_path / "v" / name)
    (tmp_path / "v" / "labels.csv").write_text("file,label,split\nx.mp4,0,train\ny.mp4,1,train\n")
    train = build_dataset(f"folder:{tmp_path / 'v'}", "train", C, face_crop=False)
    plain = build_dataset(f"folder:{tmp_path / 'v'}", "train", C, face_crop=False, augment=False)
    a, ref = train[0], plain[0]
    assert torch.allclose(ref["frames"], ref["frames"][:1].expand_as(ref["frames"]), atol=0.05)  # a still video
    assert torch.allclose(a["frames"], a["frames"][:1].expand_as(a["frames"]), atol=0.05)  # still after augmenting
    assert (a["frames"] - ref["frames"]).abs().mean() > 0.05  # ... but changed
    assert torch.equal(a["frames"], train[0]["frames"]) and torch.equal(a["mfcc"], train[0]["mfcc"])
    train.set_epoch(1)
    assert not torch.equal(a["frames"], train[0]["frames"])  # another epoch, another draw

    # on an arbitrary (moving) window: every frame gets the same transform as if augmented alone
    frames = np.random.default_rng(0).standard_normal((16, 3, 64, 64)).astype(np.float32)
    cfg = AugmentConfig(contrast=0.0)  # contrast uses the window's mean grey, the rest is per pixel
    aug = draw(cfg, augmentation_rng(0, 0, 5))
    assert aug.crop[2] < 1.0 or aug.crop[0] > 0 or aug.crop[1] > 0
    whole = augment_frames(frames, aug, C)
    for t in (0, 7, 15):
        np.testing.assert_allclose(whole[t], augment_frames(frames[t:t + 1], aug, C)[0], atol=1e-5)
    assert draw(cfg, augmentation_rng(0, 0, 5)) == aug and draw(cfg, augmentation_rng(0, 1, 5)) != aug


def test_validation_split_is_not_augmented(talking_root):
    dev = _folder(talking_root, "dev", sync_pairs=dict(FEW_PAIRS))
    assert dev.augment is None
    on = _folder(talking_root, "dev", sync_pairs=dict(FEW_PAIRS), augment=True)
    assert on.augment is not None and not torch.equal(on[0]["frames"], dev[0]["frames"])


# --- selection and records ----------------------------------------------------------------------------------------
def test_checkpoint_selection_by_auc_then_loss():
    best = {"auc": 0.70, "loss": 0.50, "accuracy": 0.90}
    assert _better({"auc": 0.80, "loss": 0.90, "accuracy": 0.50}, best)  # higher AUC wins over accuracy and loss
    assert not _better({"auc": 0.60, "loss": 0.10, "accuracy": 0.99}, best)
    assert _better({"auc": 0.70, "loss": 0.40, "accuracy": 0.10}, best)  # AUC tie: lower loss
    assert not _better({"auc": 0.70, "loss": 0.60, "accuracy": 0.99}, best)
    nan = float("nan")
    assert _better({"auc": nan, "loss": 0.40}, {"auc": nan, "loss": 0.50})  # undefined AUC: loss decides
    assert not _better({"auc": nan, "loss": 0.60}, best)


def test_trained_checkpoint_records_training_data_and_balanced_sampling(talking_root, tmp_path):
    pairs = json.dumps(FEW_PAIRS)
    cfg = TeacherConfig(
        data=[f"folder:{talking_root}", "synthetic"], preset="tiny", epochs=1, batch_size=8, device="cpu",
        output=str(tmp_path / "run"), progress=False, checkpoint_every=0, lr=1e-3,
        data_options={"folder.face_crop": False, "folder.sync_pairs": json.loads(pairs),
                      "folder.split_file": str(talking_root / "split.json"), "synthetic.num_train": 8,
                      "synthetic.num_val": 4})
    res = train_teacher(cfg)
    rec = read_record(res.best_path)
    td = rec["training_data"]
    assert td["real_video"] is True and td["synthetic"] is True
    folder, synthetic = td["sources"]
    assert folder["kind"] == "folder" and folder["root"] == str(talking_root.resolve())
    assert folder["split_file"] == str((talking_root / "split.json").resolve())
    assert folder["splits"]["train"] == {"clips": 3, "speakers": 2, "speakers_known": True}
    assert folder["splits"]["dev"]["clips"] == 2 and folder["sync_pairs"]["far_per_window"] == 1
    assert folder["used"]["val"]["split"] == "dev"
    assert synthetic["kind"] == "synthetic" and synthetic["real_video"] is False
    sampling = rec["sampling"]["sources"]
    assert sampling[0]["balanced"] and sampling[0]["draws"]["real"]["real"] * 2 == sampling[0]["per_epoch"]
    assert not sampling[1]["balanced"]
    assert rec["selection"]["metric"] == "val auc" and "auc" in rec["best"]
