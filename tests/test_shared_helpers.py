"""The one example_inputs, FLOP counter and softmax that export, training, bench and the Detector share."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pinlite_edge.errors import InputError
from pinlite_edge.metrics import softmax, softmax_fake_prob
from pinlite_edge.models import create_student
from pinlite_edge.models.flops import count_flops
from pinlite_edge.models.inputs import example_inputs
from pinlite_edge.utils.files import VIDEO_EXTENSIONS


def test_example_inputs_follow_the_contract_and_the_seed():
    model = create_student("tiny")
    frames, mfcc = example_inputs(model, batch=3, seed=5)
    c = model.config.contract
    assert frames.shape == c.frames_shape(3) and mfcc.shape == c.mfcc_shape(3)
    again, _ = example_inputs(model, batch=3, seed=5)
    other, _ = example_inputs(model, batch=3, seed=6)
    assert torch.equal(frames, again) and not torch.equal(frames, other)


def test_count_flops_scales_with_batch_and_keeps_the_mode():
    model = create_student("tiny").train()
    one = count_flops(model)
    assert one > 0 and model.training
    assert count_flops(model, batch=2) == 2 * one


def test_softmax_is_stable_and_normalised():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    p = softmax(x)
    assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1.0)
    assert np.allclose(p[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    assert np.allclose(softmax(x.T, axis=0), p.T)


def test_fake_prob_is_the_two_class_softmax():
    logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)], [800.0, -800.0]])
    assert np.allclose(softmax_fake_prob(logits), [0.5, 0.75, 0.0])


@pytest.mark.parametrize("logits", [np.array([0.2, 3.0, -1.0]), np.array([0.2, 3.0]), np.zeros((2, 3)),
                                    np.zeros((2, 1))])
def test_fake_prob_refuses_logits_that_are_not_two_per_sample(logits):
    """1-D logits of 3 windows gave one scalar (a softmax across the windows); (B, 3) was read as two classes."""
    with pytest.raises(InputError, match=r"logits must have shape \(B, 2\)"):
        softmax_fake_prob(logits)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fake_prob_refuses_logits_that_are_not_finite(bad):
    """A NaN logit (or inf, or -inf beside -inf) gave a NaN P(fake), which no threshold calls fake."""
    with pytest.raises(InputError, match=r"logits must be finite, got NaN or inf in 1 of 2 samples"):
        softmax_fake_prob(np.array([[0.0, 1.0], [bad, bad]]))
    with pytest.raises(InputError, match=r"logits must be finite, got NaN or inf in 1 of 2 samples"):
        softmax_fake_prob(np.array([[0.0, 1.0], [0.0, bad]], np.float32))


def test_progress_bar_redraws_rarely_when_stderr_is_a_log_file():
    """Into a log file every redraw is a new line: a 2-epoch training run wrote about 600 (58 KB). Not a terminal:
    at most one redraw per LOG_INTERVAL_S besides the first and the last; a terminal keeps tqdm's rate."""
    import io
    import time

    from pinlite_edge.utils.progress import LOG_INTERVAL_S, progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    counts = {}
    for name, stream in (("log", io.StringIO()), ("terminal", Terminal())):
        bar = progress_bar(total=100, file=stream, desc="x")
        for i in range(100):
            time.sleep(0.003)
            bar.update(1)
            # as the training loop does after every step: tqdm's refresh=True redrew each time (a line per step)
            bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
            bar.set_description(f"x {i}")
        bar.close()
        counts[name] = stream.getvalue().count("\r") + stream.getvalue().count("\n")
        assert (bar.mininterval == LOG_INTERVAL_S) == (name == "log")
    assert counts["log"] <= 3 < counts["terminal"], counts
    assert progress_bar(total=3, enabled=False, file=io.StringIO()).disable


def test_a_log_line_written_while_a_bar_runs_starts_a_line_of_its_own_in_a_log_file():
    """tqdm redraws in place (a carriage return, no newline): in a log file the next log line was glued to the bar
    ("...| 0/150 [00:00<?, ?clip/s]WARNING no face found..."). Each redraw is now a line of its own there."""
    import io
    import logging

    from pinlite_edge.utils.progress import progress_bar

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("pinlite_edge.test_progress")
    log.addHandler(handler)
    try:
        bar = progress_bar(total=3, file=stream, desc="scoring", unit="clip")
        log.warning("no face found in x.mp4")
        bar.update(3)
        bar.close()
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().split("\n")
    assert "\r" not in stream.getvalue() and "no face found in x.mp4" in lines, lines
    assert [line.split(":")[0] for line in lines if line] == ["scoring", "no face found in x.mp4", "scoring"], lines


def test_auto_real_data_is_looked_for_from_the_working_directory_then_the_checkout(tmp_path, monkeypatch, caplog):
    """One list of places for the quickstart's training data and the bench's end-to-end videos (there were two
    copies); when none holds the clips, the warning names every place looked (it named a relative path at INFO)."""
    import logging

    from pinlite_edge import workspace_layout
    from pinlite_edge.quickstart import resolve_real_data

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared" / "data" / "real-av").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert workspace_layout.find_real_data() == (tmp_path / "shared" / "data" / "real-av").resolve()
    assert resolve_real_data("auto") == (tmp_path / "shared" / "data" / "real-av").resolve()
    monkeypatch.setattr(workspace_layout, "real_data_places", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr("pinlite_edge.quickstart.real_data_places", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr("pinlite_edge.quickstart.find_real_data", lambda: None)
    with caplog.at_level(logging.WARNING):
        assert resolve_real_data("auto") is None
    assert f"no real clips found in {tmp_path / 'nowhere'}" in caplog.text


def test_every_folder_walk_finds_the_same_videos(tmp_path):
    """Four lists of video suffixes and four walks disagreed: scan took .ts and .flv, the folder dataset neither, the
    bench's end-to-end pass took macOS "._" copies and files in hidden folders but no .m4v."""
    from pinlite_edge.bench.endtoend import find_videos as e2e_videos
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.data.folder import find_videos as dataset_videos
    from pinlite_edge.scan import find_videos as scan_videos

    for name in ("a.mp4", "b.m4v", "c.ts", "d.flv", "._e.mp4", ".hidden/f.mp4", "sub/g.MPG", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    want = ["a.mp4", "b.m4v", "c.ts", "d.flv", "sub/g.MPG"]
    assert dataset_videos(tmp_path) == want
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in scan_videos(tmp_path, VIDEO_EXTENSIONS)] == want
    got = e2e_videos(str(tmp_path), 10, tmp_path / "cache", TINY_CONTRACT).paths
    assert [p.relative_to(tmp_path).as_posix() for p in got] == want


def test_the_bench_does_not_reuse_synthetic_clips_another_encoder_wrote(tmp_path, monkeypatch):
    """The end-to-end pass caches its synthetic mp4 clips by name: clips written before H.264 was written
    reproducibly (or with any other options) were reused, and their timings decoded another stream."""
    from pinlite_edge.bench.endtoend import find_videos as e2e_videos
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.data import synthetic

    first = e2e_videos("synthetic", 1, tmp_path, TINY_CONTRACT).paths
    assert e2e_videos("synthetic", 1, tmp_path, TINY_CONTRACT).paths == first  # the same writer: reused
    monkeypatch.setattr(synthetic, "MP4_VIDEO_OPTIONS", {**synthetic.MP4_VIDEO_OPTIONS, "crf": "30"})
    second = e2e_videos("synthetic", 1, tmp_path, TINY_CONTRACT).paths
    assert second != first and second[0].is_file() and first[0].is_file()


def test_the_number_predicates_answer_false_instead_of_raising():
    """is_whole / is_finite_number answer every value: np.timedelta64 (numpy counts it as an integer) raised a
    TypeError in the range comparison, an int beyond the float range an OverflowError in isfinite; the answer is a
    plain bool."""
    import numpy as np

    from pinlite_edge.utils.checks import is_finite_number, is_whole

    assert not is_whole(np.timedelta64(5, "s"), numpy=True) and not is_whole(np.timedelta64(5, "s"), 0, 9, numpy=True)
    assert not is_finite_number(10**400) and is_finite_number(10**300)
    assert type(is_whole(np.int64(3), 1, 5, numpy=True)) is bool and is_whole(np.int64(3), 1, 5, numpy=True)
    assert not is_whole(True) and not is_finite_number(np.bool_(True), numpy=True) and not is_whole(3, 4)


def test_a_cli_console_shows_a_repeated_warning_a_few_times_and_results_still_get_every_one():
    """A scan with --workers 0/1 or a training run over 10 000 faceless clips logged two warnings per clip on the
    console; it shows REPEATS_SHOWN from each place in the code, the last saying where the rest are, while the
    warnings each input's result collects (captured_warnings) keep all of them. Errors always pass."""
    import io
    import logging

    from pinlite_edge.utils.cli import REPEATS_SHOWN, RepeatedWarnings
    from pinlite_edge.utils.logcapture import captured_warnings

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    console.addFilter(RepeatedWarnings("see the records"))
    root, log = logging.getLogger(), logging.getLogger("pinlite_edge.features.facecrop")
    root.addHandler(console)
    try:
        collected = []
        for i in range(20):
            with captured_warnings() as warnings:
                log.warning("no face found in clip%d.mp4", i)
            collected += warnings
        log.error("an error is always shown")
    finally:
        root.removeHandler(console)
    lines = stream.getvalue().splitlines()
    assert lines[:REPEATS_SHOWN - 1] == [f"no face found in clip{i}.mp4" for i in range(REPEATS_SHOWN - 1)]
    assert lines[REPEATS_SHOWN - 1] == (f"no face found in clip{REPEATS_SHOWN - 1}.mp4 (further warnings like this "
                                        "are not shown: see the records)")
    assert lines[REPEATS_SHOWN:] == ["an error is always shown"]
    assert collected == [f"no face found in clip{i}.mp4" for i in range(20)]



def test_warnings_logged_again_by_scan_count_per_message_not_per_line():
    """scan logs a decoding process's warnings again from one line of its own: counted by that line, 5 "silent
    audio" warnings hid every later "no face"; each message (its file's path left out) now counts for itself."""
    import io
    import logging

    from pinlite_edge.utils.cli import REPEATS_SHOWN, RepeatedWarnings

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    console.addFilter(RepeatedWarnings("see the records"))
    log = logging.getLogger("pinlite_edge.scan")
    log.addHandler(console)
    try:
        for i in range(REPEATS_SHOWN + 2):
            for what in ("the audio track is digitally silent", "no face found"):
                message = f"clip{i}.mp4: {what}"
                log.warning("%s", message, extra={"repeat_key": message.replace(f"clip{i}.mp4", "")})
    finally:
        log.removeHandler(console)
    lines = stream.getvalue().splitlines()
    assert sum("no face found" in line for line in lines) == REPEATS_SHOWN == sum("silent" in line for line in lines)


def test_every_command_logs_through_one_set_up_with_the_time():
    """detect, scan, bench and export logged "LEVEL message" without the time (an hour-long scan could not say when
    a warning came), calibrate without the level, training and quickstart "time LEVEL logger: message": one format
    now, set up in one place (utils.cli.configure_logging), which is the package's only logging.basicConfig."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from pinlite_edge.utils.cli import LOG_FORMAT

    code = ("import logging; from pinlite_edge.utils.cli import configure_logging; configure_logging(logging.INFO); "
            "logging.getLogger('pinlite_edge.features').warning('no face found in x.mp4')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING pinlite_edge\.features: no face found in x\.mp4\n", err), err
    assert "%(asctime)s" in LOG_FORMAT
    root = Path(__file__).resolve().parents[1]
    callers = sorted(str(p.relative_to(root)) for folder in ("pinlite_edge", "export", "runtimes", "training")
                     for p in (root / folder).rglob("*.py") if "logging.basicConfig(" in p.read_text(encoding="utf-8"))
    assert callers == ["pinlite_edge/utils/cli.py"], callers
