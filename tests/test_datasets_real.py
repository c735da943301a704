"""Real-video datasets on GRID clips: LAV-DF layout, folder + sync pairs, feature cache, registry, fingerprints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pinlite_edge.data.cache as cache_mod
from pinlite_edge.contract import MANIPULATIONS, OFFSET_IGNORE_INDEX, TINY_CONTRACT
from pinlite_edge.data import build_dataset, dataset_fingerprint
from pinlite_edge.data.cache import ClipLoader
from pinlite_edge.errors import DatasetError
from pinlite_edge.features import compute_mfcc

from conftest import GRID_DIR as GRID  # ../shared beside the checkout
NAMES = ["bbaf2n.mpg", "lbax4n.mpg", "swiz3n.mpg"]
pytestmark = pytest.mark.skipif(not (GRID / NAMES[0]).exists(), reason=f"GRID sample clips not found at {GRID}")
C = TINY_CONTRACT


@pytest.fixture(scope="session")
def grid_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid_folder")
    for n in NAMES:
        shutil.copyfile(GRID / n, root / n)
    return root


@pytest.fixture(scope="session")
def lavdf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lavdf")
    (root / "train").mkdir()
    (root / "test").mkdir()
    records = [
        {"file": "train/000001.mpg", "split": "train", "n_fakes": 0, "fake_periods": [], "modify_video": False,
         "modify_audio": False, "duration": 2.98},
        {"file": "train/000002.mpg", "split": "train", "n_fakes": 1, "fake_periods": [[1.0, 1.5]],
         "modify_video": False, "modify_audio": True, "duration": 2.98},
        {"file": "test/000003.mpg", "split": "test", "n_fakes": 1, "fake_periods": [[0.0, 0.3]],
         "modify_video": True, "modify_audio": True, "duration": 2.98},
    ]
    for rec, name in zip(records, NAMES):
        shutil.copyfile(GRID / name, root / rec["file"])
    (root / "metadata.min.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="session")
def syncpair_dataset(grid_folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache_sync")
    return build_dataset(f"folder:{grid_folder}", "all", C, cache_dir=cache, face_crop=False, sync_pairs=True)


def _check_sample(s):
    assert s["frames"].shape == C.frames_shape() and s["frames"].dtype == torch.float32
    assert s["mfcc"].shape == C.mfcc_shape() and s["mfcc"].dtype == torch.float32
    assert torch.isfinite(s["frames"]).all() and torch.isfinite(s["mfcc"]).all()
    for key in ("label", "manipulation", "offset_class"):
        assert s[key].dtype == torch.int64 and s[key].shape == ()
    assert isinstance(s["clip_id"], str)


def test_lavdf_windows_labels_and_manipulations(lavdf_root):
    ds = build_dataset(f"lavdf:{lavdf_root}", "train", C)
    by_id = {r.clip_id: r for r in ds.refs}
    assert sorted(by_id) == sorted(f"train/00000{i}.mpg@{s}" for i in (1, 2)
                                   for s in ("0.00", "0.64", "1.28", "1.92", "2.34"))
    real = MANIPULATIONS.index("real")
    for rid, r in by_id.items():
        fake = rid.startswith("train/000002") and rid.endswith(("@0.64", "@1.28"))  # overlap [1.0, 1.5]
        assert r.label == int(fake)
        assert r.manipulation == (MANIPULATIONS.index("audio_replace") if fake else real)
        assert r.offset_class == (OFFSET_IGNORE_INDEX if fake else 5)
    s = ds[1]
    _check_sample(s)
    assert s["clip_id"] == ds.refs[1].clip_id
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["frames"].shape == (4, *C.frames_shape()) and len(batch["clip_id"]) == 4

    test = build_dataset(f"lavdf:{lavdf_root}", "test", C)
    assert [r.label for r in test.refs] == [1, 0, 0, 0, 0]
    assert test.refs[0].manipulation == MANIPULATIONS.index("both_replace")
    assert dataset_fingerprint(test) != dataset_fingerprint(ds)
    assert dataset_fingerprint(ds) == dataset_fingerprint(build_dataset(f"lavdf:{lavdf_root}", "train", C))
    # the training-data record counts every split of the metadata (it listed the loaded one only)
    assert {k: v["clips"] for k, v in ds.provenance()["splits"].items()} == {"train": 2, "test": 1}


def test_sync_pairs_labels_and_real_audio_shift(syncpair_dataset):
    ds = syncpair_dataset
    shift, swap = MANIPULATIONS.index("audio_shift"), MANIPULATIONS.index("audio_swap")
    refs = ds.refs
    assert {r.manipulation for r in refs} == {0, shift, swap}
    reals = [r for r in refs if r.label == 0]
    for real in reals:  # every in-sync window gets every near offset -5..+5 except 0, far shifts and swaps
        mine = [r for r in refs if r.path == real.path and r.start == real.start and r.label == 1]
        assert sorted(r.offset_class - 5 for r in mine if r.manipulation == shift
                      and r.offset_class != OFFSET_IGNORE_INDEX) == [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]
        assert sum(r.manipulation == swap for r in mine) == 2
    shifted = [i for i, r in enumerate(refs) if r.manipulation == shift and r.offset_class != OFFSET_IGNORE_INDEX]
    for i in shifted[:4]:
        r = refs[i]
        k = r.offset_class - 5
        assert 1 <= abs(k) <= 5 and r.label == 1 and r.audio_shift_frames == k
        s = ds[i]
        _check_sample(s)
        clip = ds.loader.load(r.path)
        hop = int(round(clip.sample_rate / clip.fps))  # 640 samples per video frame at 25 fps
        a0 = int(round(r.start * clip.sample_rate)) - k * hop
        expected = compute_mfcc(clip.audio[a0:a0 + C.window_samples], C)
        np.testing.assert_allclose(s["mfcc"].numpy(), expected, atol=1e-5)  # audio really moved by k frames
        unshifted = compute_mfcc(clip.audio[a0 + k * hop:a0 + k * hop + C.window_samples], C)
        assert np.abs(s["mfcc"].numpy() - unshifted).max() > 0.5
        real_i = next(j for j, q in enumerate(refs) if q.path == r.path and q.start == r.start and q.label == 0)
        torch.testing.assert_close(s["frames"], ds[real_i]["frames"])  # same pictures, only the sound moved
    for i in [j for j, r in enumerate(refs) if r.manipulation == swap][:2]:
        r = refs[i]
        assert r.offset_class == OFFSET_IGNORE_INDEX and r.audio_path is not None and r.audio_path != r.path
        other = ds.loader.load(r.audio_path)
        a0 = int(round(r.start * other.sample_rate))
        np.testing.assert_allclose(ds[i]["mfcc"].numpy(),
                                   compute_mfcc(other.audio[a0:a0 + C.window_samples], C), atol=1e-5)


def test_cache_hit_avoids_decoding(syncpair_dataset, grid_folder, monkeypatch):
    first = syncpair_dataset
    for i in range(len(first)):  # epoch 1 fills the on-disk cache
        first[i]
    cache_dir = first.loader.cache.cache_dir
    assert len(list(cache_dir.glob("*.npz"))) == len(NAMES)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the feature cache holds this clip")

    monkeypatch.setattr(cache_mod, "prepare_file", no_decoding)
    second = build_dataset(f"folder:{grid_folder}", "all", C, cache_dir=cache_dir, face_crop=False, sync_pairs=True)
    for i in (0, len(second) - 1):
        _check_sample(second[i])
        torch.testing.assert_close(second[i]["frames"], first[i]["frames"])
        torch.testing.assert_close(second[i]["mfcc"], first[i]["mfcc"])
    assert second.loader.decodes == 0
    assert dataset_fingerprint(second) == dataset_fingerprint(first)

    # Another preprocessing config is another entry: it must decode.
    other = ClipLoader(C, face_crop=False, cache_dir=cache_dir, max_side=320)
    with pytest.raises(AssertionError, match="decoded although"):
        other.load(grid_folder / NAMES[0])


def test_folder_csv_labels_and_splits(grid_folder, tmp_path):
    root = tmp_path / "vids"
    root.mkdir()
    for n in NAMES:
        (root / n).symlink_to(grid_folder / n)
    (root / "labels.csv").write_text("file,label,split,manipulation\n"
                                     f"{NAMES[0]},real,train,\n{NAMES[1]},1,train,visual_replace\n"
                                     f"{NAMES[2]},fake,val,\n")
    train = build_dataset(f"folder:{root}", "train", C, face_crop=False)
    assert {r.label for r in train.refs} == {0, 1}
    assert {r.manipulation for r in train.refs if r.label} == {MANIPULATIONS.index("visual_replace")}
    dev = build_dataset(f"folder:{root}", "dev", C, face_crop=False)
    assert {r.manipulation for r in dev.refs} == {MANIPULATIONS.index("both_replace")}
    assert all(r.offset_class == OFFSET_IGNORE_INDEX for r in dev.refs)
    (root / "labels.csv").write_text(f"file,label\n{NAMES[0]},maybe\n")
    with pytest.raises(DatasetError, match="maybe"):
        build_dataset(f"folder:{root}", "all", C)


@pytest.mark.parametrize("spec, match", [
    ("imagenet", "unknown dataset kind"),
    ("lavdf", "needs a path"),
    ("lavdf:/definitely/not/here", "does not exist"),
    ("folder:/definitely/not/here", "does not exist"),
    ("synthetic:/tmp", "takes no path"),
    ("", "non-empty"),
])
def test_registry_rejects_bad_specs(spec, match):
    with pytest.raises(DatasetError, match=match):
        build_dataset(spec, "train", C)


def test_registry_rejects_bad_paths_and_options(tmp_path, lavdf_root):
    with pytest.raises(DatasetError, match="not a LAV-DF folder"):
        build_dataset(f"lavdf:{tmp_path}", "train", C)
    with pytest.raises(DatasetError, match="labels CSV"):
        build_dataset(f"folder:{tmp_path}", "train", C)
    with pytest.raises(DatasetError, match="unknown option"):
        build_dataset(f"lavdf:{lavdf_root}", "train", C, colour="blue")
    with pytest.raises(DatasetError, match="unknown split"):
        build_dataset(f"lavdf:{lavdf_root}", "holdout", C)


def test_a_clip_that_fails_to_decode_in_training_says_how_to_go_on(grid_folder, tmp_path):
    """A file whose header probes fine but whose media is corrupt fails only when training reads it; the error
    used to name the file and stop there."""
    from pinlite_edge.errors import DatasetError

    folder = tmp_path / "f"
    shutil.copytree(grid_folder, folder)
    victim = sorted(folder.glob("*.mpg"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3: len(data) // 3 + 4096] = b"\xff" * 4096  # garbled media, intact header
    victim.write_bytes(bytes(data))
    ds = build_dataset(f"folder:{folder}", "all", C, cache_dir=tmp_path / "cache", face_crop=False, sync_pairs=True)
    bad = next(i for i, r in enumerate(ds.refs) if r.path == victim and r.audio_path is None)
    with pytest.raises(DatasetError, match=r"cannot decode .*every clip of a training set must decode: move this file"):
        ds[bad]


def _lavdf_with(tmp_path: Path, lavdf_root: Path, **changes) -> Path:
    """A copy of ``lavdf_root`` whose second record (a fake) has ``changes``."""
    root = tmp_path / "lavdf"
    shutil.copytree(lavdf_root, root, symlinks=True)
    records = json.loads((root / "metadata.min.json").read_text())
    records[1].update(changes)
    (root / "metadata.min.json").write_text(json.dumps(records))
    return root


@pytest.mark.parametrize("changes, match", [
    ({"fake_periods": []}, "n_fakes is 1 but fake_periods is empty"),
    ({"fake_periods": [[1.5, 0.5]]}, r"fake period \[1.5, 0.5\] is not a span within the clip's 0..2.98 s"),
    ({"fake_periods": [[25, 40]]}, r"fake period \[25, 40\] is not a span"),  # frames, not seconds
    ({"n_fakes": 0}, "n_fakes is 0 but it lists 1 fake period"),
    ({"duration": float("nan")}, "duration nan is not a positive number of seconds"),
])
def test_lavdf_records_whose_labels_cannot_be_derived_are_refused(tmp_path, lavdf_root, changes, match):
    """These fakes had every window labelled real, without a word (or a NaN duration ended in a numpy error)."""
    root = _lavdf_with(tmp_path, lavdf_root, **changes)
    with pytest.raises(DatasetError, match=rf"record 1 \(train/000002.mpg\): {match}"):
        build_dataset(f"lavdf:{root}", "train", C)


@pytest.mark.parametrize("file", ["../outside.mp4", "/etc/passwd"])
def test_lavdf_metadata_naming_a_video_outside_its_folder_is_refused(tmp_path, lavdf_root, file):
    """LAV-DF metadata comes from elsewhere too: like a labels CSV, it names videos inside its folder (a '..' or
    absolute path was read and trained on)."""
    root = _lavdf_with(tmp_path, lavdf_root, file=file)
    with pytest.raises(DatasetError, match=f"record 1: video '{file}' is not a path inside"):
        build_dataset(f"lavdf:{root}", "all", C, face_crop=False)


def test_lavdf_one_file_in_two_records_is_refused(tmp_path, lavdf_root):
    """The same video as a train real and a test fake trained and tested on it under opposite labels."""
    root = _lavdf_with(tmp_path, lavdf_root, file="./train/000001.mpg", split="test")
    with pytest.raises(DatasetError, match="records 0 and 1 both list ./train/000001.mpg"):
        build_dataset(f"lavdf:{root}", "train", C)


def test_a_recorded_duration_longer_than_the_video_is_refused_when_read(tmp_path, lavdf_root):
    """A 6 s duration on a 3 s clip made windows that all repeated the clip's last window, labelled by fake periods at
    times the video does not have; a failed decode now says to remove the record, not to move the file."""
    root = _lavdf_with(tmp_path, lavdf_root, duration=6.0, fake_periods=[[4.0, 5.0]])
    ds = build_dataset(f"lavdf:{root}", "train", C, cache_dir=tmp_path / "cache")
    late = next(i for i, r in enumerate(ds.refs) if r.start > 3.0)
    with pytest.raises(DatasetError, match=r"decodes to 2.9\d s: its recorded duration is wrong.*remove its record "
                                           r"from .*metadata.min.json"):
        ds[late]
    ds[0]  # windows inside the clip still load


def test_a_video_replaced_under_its_name_changes_the_fingerprint(tmp_path, lavdf_root):
    """Teacher-output caches and resumes are keyed by the fingerprint, which hashed only metadata and names: swapping
    two videos' contents reused the old teacher targets."""
    root = _lavdf_with(tmp_path, lavdf_root)
    before = dataset_fingerprint(build_dataset(f"lavdf:{root}", "train", C))
    assert dataset_fingerprint(build_dataset(f"lavdf:{root}", "train", C)) == before
    a, b = root / "train" / "000001.mpg", root / "train" / "000002.mpg"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.unlink(), b.unlink()
    a.write_bytes(data_b), b.write_bytes(data_a)
    assert dataset_fingerprint(build_dataset(f"lavdf:{root}", "train", C)) != before


def _labels_folder(tmp_path: Path, grid_folder: Path, text: str | bytes) -> Path:
    root = tmp_path / "vids"
    root.mkdir(exist_ok=True)
    for n in NAMES:
        if not (root / n).exists():
            (root / n).symlink_to(grid_folder / n)
    (root / "labels.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


@pytest.mark.parametrize("text", [
    "\ufefffile,label\n{0},0\n{1},1\n",  # Excel's "CSV UTF-8" starts with a BOM
    "File, Label\n{0},0\n{1},1\n",
])
def test_labels_csv_headers_spreadsheets_write_are_read(tmp_path, grid_folder, text):
    """These headers hold file and label, and were reported as missing them."""
    root = _labels_folder(tmp_path, grid_folder, text.format(*NAMES))
    assert {r.label for r in build_dataset(f"folder:{root}", "all", C, face_crop=False).refs} == {0, 1}


@pytest.mark.parametrize("text, match", [
    ("file;label\n{0};0\n", r"found columns \['file;label'\] and 1 row"),
    ("file,label\n{0},0\n{0},1\n", r"1 video\(s\) listed more than once, e.g. {0}: row 1 \(.*label 0\), row 2 "
                                   r"\(.*label 1\)"),
    ("file,label,split\n{0},0,train\n./{0},0,test\n", "listed more than once"),
    ("file,label,split\n{0},0,holdout\n", r"labels.csv: row 1: unknown split 'holdout'"),
    ("file,label,manipulation\n{0},1,lipsync\n", r"labels.csv: row 1: unknown manipulation 'lipsync'"),
    ("file,label,manipulation\n{0},0,audio_replace\n", "row 1: label '0' contradicts manipulation 'audio_replace'"),
    ("file,label,manipulation\n{0},1,real\n", "row 1: label '1' contradicts manipulation 'real'"),
    ("file,label,offset\n{0},0,3\n", "row 1: a real clip is in sync, so its offset is 0 or empty, got 3"),
    ("file,label\n{0},0\n".encode("utf-16"), "is not UTF-8 text"),
    ("file,label\ncaf\xe9.mpg,0\n".encode("latin-1"), "is not UTF-8 text"),
    # rows reaching outside the folder were trained on, and a PROVENANCE.json beside them read (security audit)
    ("file,label\n../elsewhere/{0},0\n", r"row 1: video '../elsewhere/{0}' is not a path inside"),
    ("file,label\n{0},0\n/etc/{1},0\n", r"row 2: video '/etc/{1}' is not a path inside"),
])
def test_labels_csv_mistakes_are_errors_naming_the_csv_and_row(tmp_path, grid_folder, text, match):
    """Each of these trained silently on contradictory labels, leaked a file between splits, lost the CSV's name and
    row, or ended in a UnicodeDecodeError traceback."""
    text = text if isinstance(text, bytes) else text.format(*NAMES)
    root = _labels_folder(tmp_path, grid_folder, text)
    with pytest.raises(DatasetError, match=match.format(*NAMES)):
        build_dataset(f"folder:{root}", "all", C, face_crop=False)


def test_the_fingerprint_says_what_the_data_is_not_where_it_lies(grid_folder, tmp_path):
    """A shipped split file has another absolute path in a pip-installed package than in the checkout: the same
    data got another fingerprint, so a resume was refused as "another dataset" and teacher caches were thrown away."""
    split = {"clips": [{"file": n, "split": "train" if i else "dev", "speaker_group": n} for i, n in enumerate(NAMES)]}
    here, there = tmp_path / "a" / "data", tmp_path / "b" / "elsewhere"
    for root in (here, there):
        shutil.copytree(grid_folder, root)  # copy2: sizes and modification times kept, as a move keeps them
        (root.parent / "split.json").write_text(json.dumps(split))
    prints = [dataset_fingerprint(build_dataset(f"folder:{root}", "train", C, face_crop=False, sync_pairs=True,
                                                split_file=str(root.parent / "split.json"))) for root in (here, there)]
    assert prints[0] == prints[1]
    (there / NAMES[1]).write_bytes((there / NAMES[2]).read_bytes())  # but not when a video changes
    changed = build_dataset(f"folder:{there}", "train", C, face_crop=False, sync_pairs=True,
                            split_file=str(there.parent / "split.json"))
    assert dataset_fingerprint(changed) != prints[0]


def test_a_matroska_clip_whose_audio_outlasts_its_video_still_trains(tmp_path):
    """Matroska and WebM carry no per-stream durations, so a folder dataset's windows come from the container's
    (here the audio's 4 s) while the clip decodes to the 1.6 s both tracks cover: those windows are clamped into the
    clip, as before (only LAV-DF's recorded durations, which label windows by time, make it an error)."""
    from fractions import Fraction

    import av

    root = tmp_path / "videos"
    root.mkdir()
    path, rate = root / "clip.mkv", 16000
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="matroska") as c:
        vs = c.add_stream("mpeg4", rate=25)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        audio_stream = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i in range(40):  # 1.6 s of video
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            c.mux(vs.encode(frame))
        c.mux(vs.encode())
        samples = (rng.standard_normal(4 * rate) * 3000).astype(np.int16)  # 4 s of audio
        for s in range(0, samples.size, 1600):
            af = av.AudioFrame.from_ndarray(samples[s:s + 1600].reshape(1, -1), format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
            c.mux(audio_stream.encode(af))
        c.mux(audio_stream.encode())
    (root / "labels.csv").write_text("file,label,split\nclip.mkv,0,train\n")
    ds = build_dataset(f"folder:{root}", "train", C, cache_dir=tmp_path / "cache", face_crop=False)
    assert max(r.start for r in ds.refs) > 1.6  # windows from the container's duration
    for i in range(len(ds)):
        _check_sample(ds[i])


def test_a_folder_of_symlinks_copied_elsewhere_keeps_its_fingerprint(grid_folder, tmp_path):
    """Video names were stamped relative to the root after resolving symlinks: a folder of links copied (cp -a) to
    another depth got another fingerprint."""
    root = tmp_path / "links"
    root.mkdir()
    for n in NAMES:
        (root / n).symlink_to(grid_folder / n)
    copy = tmp_path / "a" / "b" / "links"
    shutil.copytree(root, copy, symlinks=True)
    prints = {dataset_fingerprint(build_dataset(f"folder:{r}", "all", C, face_crop=False, sync_pairs=True))
              for r in (root, copy)}
    assert len(prints) == 1
