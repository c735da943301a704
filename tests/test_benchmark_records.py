"""Every benchmark result lives in benchmarks/results/<bench>/<machine>.{json,md} and carries the record (#13)."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

from benchmarks._record import RECORD_KEYS, build_record, rerun_command, result_paths, write_result  # noqa: E402

RESULT_JSONS = sorted(RESULTS.glob("*/*.json"))


#: reports an issue asks for at a fixed path in benchmarks/results/ (#12: real_faces.md); every other result sits in
#: benchmarks/results/<bench>/
ISSUE_REPORTS = ("real_faces.md",)


def test_results_follow_the_naming_scheme():
    assert RESULT_JSONS
    loose = [p.relative_to(REPO).as_posix() for p in RESULTS.iterdir() if p.is_file() and p.name not in ISSUE_REPORTS]
    assert not loose, f"results outside benchmarks/results/<bench>/: {loose}"
    for name in ISSUE_REPORTS:  # a report an issue asks for by path: a summary that links the records it quotes
        text = (RESULTS / name).read_text()
        linked = {m for m in re.findall(r"`([a-z0-9_]+)/", text) if (RESULTS / m).is_dir()}
        assert linked, f"benchmarks/results/{name} links no result folder"
    results_md = [md for md in RESULTS.glob("*/*.md") if md.with_suffix(".json").is_file()]
    assert results_md
    for md in results_md:  # every Markdown result (beside its JSON record) starts with its re-run command
        assert md.read_text().startswith("Re-run from the repository root: `python "), md
    for md in set(RESULTS.glob("*/*.md")) - set(results_md):  # notes beside results (e.g. notes.md, the input of
        assert md.name.endswith(".md") and md.read_text().strip(), md  # real_faces --notes): not empty


#: options whose value is a scratch or output folder: a temporary path there does not stop a re-run
SCRATCH_OPTIONS = ("--work", "--workdir", "--work-dir", "--artifact-dir", "--out", "--out-dir", "--results", "--results-dir")


def temporary_inputs(command: str) -> list[str]:
    """Arguments of ``command`` in /tmp that are not the value of a scratch/output option."""
    words = shlex.split(command.replace("&&", " && "))
    found = []
    for i, word in enumerate(words):
        if "/tmp/" not in word:
            continue
        option, _, value = word.partition("=")
        if (value and option in SCRATCH_OPTIONS) or (i > 0 and words[i - 1] in SCRATCH_OPTIONS):
            continue
        found.append(word)
    return found


def test_temporary_inputs_are_found():
    assert temporary_inputs("python b.py --checkpoint /tmp/qs/best.safetensors --out /tmp/o") == [
        "/tmp/qs/best.safetensors"]
    assert temporary_inputs("python b.py --work /tmp/w --results=/tmp/r x.mp4") == []


@pytest.mark.parametrize("path", RESULT_JSONS, ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_every_result_json_has_the_record(path):
    doc = json.loads(path.read_text())
    record = doc["record"]
    missing = [k for k in RECORD_KEYS if k not in record]
    assert not missing, f"{path}: record lacks {missing}"
    assert record["bench"] == path.parent.name and record["machine_slug"] == path.stem
    assert record["command"].startswith("python ")
    assert not temporary_inputs(record["command"]), "inputs in a temporary folder cannot be re-run from the repo"
    assert str(REPO) not in record["command"]  # repository-relative
    assert "fingerprint" in record["data"] and {"commit", "dirty"} <= set(record["git"])
    if record.get("predates_record_format"):
        assert record["not_recorded"]  # says what the old result lacks
    else:
        assert record["git"]["commit"] and record["versions"] and record["machine"] and record["data"]["fingerprint"]


def test_write_result_writes_the_record_atomically(tmp_path, monkeypatch):
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"data")
    argv = ["--root", str(tmp_path), f"model={clip}", "--threads", "2"]
    record = build_record("demo", "benchmarks/demo.py", argv, data={"fingerprint": "abc123", "clips": 1})
    assert set(RECORD_KEYS) <= set(record)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == commit and isinstance(record["git"]["dirty"], bool)
    assert record["versions"]["torch"] and record["machine"]["cpu_model"]
    json_path, md_path = write_result(record, {"rows": [1, 2]}, "# Demo\n\nbody\n", results_dir=tmp_path / "res")
    assert (json_path, md_path) == result_paths("demo", record["machine_slug"], tmp_path / "res")
    assert json_path.parent.name == "demo" and json_path.stem == record["machine_slug"]
    doc = json.loads(json_path.read_text())
    assert doc["rows"] == [1, 2] and doc["record"]["data"]["fingerprint"] == "abc123"
    assert md_path.read_text().startswith(f"Re-run from the repository root: `{record['command']}`")
    assert "# Demo" in md_path.read_text()
    assert sorted(p.name for p in json_path.parent.iterdir()) == sorted([json_path.name, md_path.name])
    with pytest.raises(ValueError, match="fingerprint"):
        build_record("demo", "benchmarks/demo.py", [], data={})
    with pytest.raises(ValueError, match="lacks"):
        write_result({"bench": "demo"}, {}, "", results_dir=tmp_path)


def test_fingerprints_change_with_the_data(tmp_path):
    import numpy as np

    from benchmarks._record import fingerprint_arrays, fingerprint_files

    a = np.zeros((2, 3), np.float32)
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert fingerprint_arrays(a) != fingerprint_arrays(a.astype(np.float64))  # same values, other bytes
    assert fingerprint_arrays(a) != fingerprint_arrays(a.reshape(3, 2))
    b = a.copy()
    b[1, 2] = 1.0
    assert fingerprint_arrays(a) != fingerprint_arrays(b)
    f = tmp_path / "clip.mp4"
    f.write_bytes(b"one")
    first = fingerprint_files([f])
    f.write_bytes(b"two")
    assert fingerprint_files([f]) != first


def test_rerun_command_makes_paths_repository_relative(tmp_path):
    inside = REPO / "benchmarks" / "_record.py"
    cmd = rerun_command("benchmarks/x.py", [str(inside), f"m={inside}", f"--out={inside}", "--n", "3", "a b"])
    assert cmd == ("python benchmarks/x.py benchmarks/_record.py m=benchmarks/_record.py "
                   "--out=benchmarks/_record.py --n 3 'a b'")


def test_rerun_command_takes_long_free_text_arguments():
    """A --note longer than a file name may be (255 bytes) is text, not a path: no OSError."""
    note = "x" * 400
    assert rerun_command("benchmarks/x.py", ["--note", note]).endswith(note)


@pytest.mark.parametrize("script", sorted(p.stem for p in (REPO / "benchmarks").glob("*.py")
                                          if not p.stem.startswith("_")))
def test_every_benchmark_script_imports(script):
    """A result is only as good as its re-run command: learnability.py imported a private helper that had been
    removed, so its recorded command failed with an ImportError."""
    import importlib
    import os

    watched = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LD_LIBRARY_PATH")
    before = {k: os.environ.get(k) for k in watched}
    importlib.import_module(f"benchmarks.{script}")
    # featurise_real set the thread variables when imported: every later subprocess of the test session ran
    # single-threaded, but not when a test file ran alone
    assert {k: os.environ.get(k) for k in watched} == before
