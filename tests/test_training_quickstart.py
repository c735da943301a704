"""``python -m pinlite_edge.quickstart --smoke`` runs every stage and writes a Table-2-shaped summary (CI check)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pinlite_edge.quickstart import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[1]


def _quickstart(ws: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pinlite_edge.quickstart", "--workspace", str(ws), "--smoke",
                           "--no-progress", *extra], env=env, capture_output=True, text=True, timeout=600)


def test_quickstart_smoke_runs_every_stage_and_reuses_them(tmp_path):
    ws = tmp_path / "ws"
    first = _quickstart(ws)
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("teacher", "distilled", "pruned"):
        assert (ws / stage / "best.safetensors").is_file() and (ws / stage / "best.json").is_file()
    rows = json.loads((ws / "summary.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "distilled", "pruned"]
    for r in rows:
        assert tuple(r) == SUMMARY_KEYS
        for k in ("accuracy", "precision", "recall", "f1"):
            assert 0.0 <= r[k] <= 1.0
        assert r["params"] > 0 and r["size_mb"] > 0 and r["gflops"] > 0 and r["latency_ms"] > 0
    by = {r["model"]: r for r in rows}
    assert abs(by["teacher"]["eps"] - 1.0) < 1e-9
    assert by["pruned"]["params"] < by["distilled"]["params"] < by["teacher"]["params"]
    assert "wall time" in first.stdout and "teacher" in first.stdout

    again = _quickstart(ws, "--no-export")
    assert again.returncode == 0, again.stdout + again.stderr
    log = again.stdout + again.stderr
    assert log.count("reusing") >= 3, log
