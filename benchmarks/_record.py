"""The record every benchmark result carries, and the one place results are written.

A result of benchmark ``BENCH`` measured on machine ``SLUG`` (``pinlite_edge.bench.machine.machine_slug``) lives in
``benchmarks/results/BENCH/SLUG.json`` and ``.md``. The JSON is ``{"record": RECORD, ...the benchmark's own keys}``;
the Markdown starts with the command that re-runs it (from the repository root) and the record's essentials.

``RECORD`` holds :data:`RECORD_KEYS`: the benchmark's name, the re-run command (repository-relative paths), the raw
argv, the git commit and whether tracked files had uncommitted changes, package versions, the machine
(``describe_machine``) and its slug, the data the result was measured on with a fingerprint, and the time.

    from benchmarks._record import build_record, write_result
    record = build_record("real_faces", "benchmarks/real_faces.py", argv, data={"fingerprint": ..., ...})
    json_path, md_path = write_result(record, report, markdown_body)
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pinlite_edge.utils.atomic import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
#: keys of every result's ``record``
RECORD_KEYS = ("bench", "command", "argv", "git", "versions", "machine", "machine_slug", "data", "recorded_at")
#: packages whose versions every record lists (those installed)
PACKAGES = ("pinlite-edge", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "executorch",
            "tensorrt", "cuda-bindings", "av", "opencv-python-headless", "opencv-python", "scipy", "safetensors")


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root; beside it (``../shared/...``) relative too; elsewhere absolute."""
    p = Path(path).resolve()
    for base, prefix in ((REPO_ROOT, Path()), (REPO_ROOT.parent, Path(".."))):
        try:
            return (prefix / p.relative_to(base)).as_posix()
        except ValueError:
            continue
    return str(p)


def rerun_command(script: str, argv: Sequence[str]) -> str:
    """``python SCRIPT ARGV`` with every argument that names an existing path made repository-relative (also the
    value of ``NAME=PATH`` and ``--flag=PATH`` arguments)."""
    def exists(text: str) -> bool:  # a free-text argument (e.g. a long --note) is no path, not an error
        try:
            return Path(text).exists()
        except (OSError, ValueError):
            return False

    parts = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and value and exists(value):
            parts.append(f"{name}={repo_relative(value)}")
        elif not arg.startswith("-") and arg and exists(arg):
            parts.append(repo_relative(arg))
        else:
            parts.append(arg)
    return " ".join(["python", script, *(shlex.quote(p) for p in parts)])


def git_state(code_paths: Sequence[str] = ()) -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (``changed``: which); ``None`` without git.
    With ``code_paths`` (the code the benchmark runs), ``code_changed`` lists the changed files among them."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
                                  check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    changed = None if status is None else [line[3:] for line in status.splitlines() if line.strip()]
    state = {"commit": commit.strip() if commit else None, "dirty": None if changed is None else bool(changed),
             "changed": changed}
    if code_paths:
        state["code_paths"] = list(code_paths)
        state["code_changed"] = None if changed is None else [
            c for c in changed if any(c == p or c.startswith(p.rstrip("/") + "/") for p in code_paths)]
    return state


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones left out) and Python's."""
    versions = {"python": sys.version.split()[0]}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """sha256 over the sorted repository-relative names and contents' sha256 of ``paths`` (a folder of clips)."""
    from pinlite_edge.utils.hashing import sha256_file

    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(f"{repo_relative(p)}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def fingerprint_json(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (for generated data: the generator's settings and seed)."""
    from pinlite_edge.utils.hashing import json_sha256

    return json_sha256(value)


def fingerprint_arrays(*arrays: Any) -> str:
    """sha256 over the dtype, shape and bytes of numpy arrays (inputs generated or loaded in memory)."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def build_record(bench: str, script: str, argv: Sequence[str], *, data: dict[str, Any],
                 code_paths: Sequence[str] = ()) -> dict[str, Any]:
    """The record of a run of ``script`` (repository-relative) with ``argv``; ``data`` must hold ``fingerprint``
    (what identifies the inputs: file hashes, or the generator's settings) and may say more (split, sizes...).
    ``code_paths``: see :func:`git_state`."""
    from pinlite_edge.bench.machine import describe_machine, machine_slug

    if "fingerprint" not in data:
        raise ValueError(f"{bench}: the record's data needs a 'fingerprint' (what identifies the inputs)")
    machine = describe_machine()
    return {"bench": bench, "command": rerun_command(script, argv), "argv": list(argv), "git": git_state(code_paths),
            "versions": package_versions(), "machine": machine, "machine_slug": machine_slug(machine),
            "data": data, "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def result_paths(bench: str, slug: str, results_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``RESULTS/BENCH/SLUG.json`` and ``.md``."""
    folder = Path(results_dir or RESULTS_DIR) / bench
    return folder / f"{slug}.json", folder / f"{slug}.md"


def markdown_header(record: dict[str, Any]) -> str:
    """The lines every result's Markdown starts with: the re-run command and the record's essentials."""
    git = record.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12]
    dirty = {True: ", with uncommitted changes to tracked files", False: "", None: ""}[git.get("dirty")]
    machine = record.get("machine") or {}
    fingerprint = (record.get("data") or {}).get("fingerprint")
    return "\n".join([
        f"Re-run from the repository root: `{record['command']}`", "",
        f"Recorded {record.get('recorded_at')} at commit {commit}{dirty} on {record.get('machine_slug')} "
        f"({machine.get('cpu_model')}, {machine.get('usable_cores', machine.get('logical_cores'))} cores); "
        f"data fingerprint {str(fingerprint)[:16] if fingerprint else 'n/a'}. Full record: the `record` key of "
        f"the JSON beside this file.", "", ""])


def write_result(record: dict[str, Any], result: dict[str, Any], markdown: str,
                 results_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``{"record": record, **result}`` and the Markdown (header + ``markdown``) atomically to
    :func:`result_paths`; returns both paths."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"record of {record.get('bench')!r} lacks {missing}: build it with build_record()")
    if "record" in result:
        raise ValueError("the result's own keys must not include 'record'")
    json_path, md_path = result_paths(record["bench"], record["machine_slug"], results_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(json_path, {"record": record, **result})
    atomic_write_text(md_path, markdown_header(record) + markdown.lstrip("\n"))
    return json_path, md_path


def report_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark script's parser: description and epilog from its module ``doc``, and the ``--notes`` / ``--out-dir``
    every recorded result takes (the script adds its own arguments)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=Path, default=None, help="Markdown findings to include in the report")
    p.add_argument("--out-dir", type=Path, default=None, help="results root (default: benchmarks/results)")
    return p


def parse_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[list[str], argparse.Namespace]:
    """``argv`` as recorded (``sys.argv[1:]`` by default) and its parsed arguments; INFO logging with timestamps."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args_list, args
