"""Kill a training process (SIGKILL) mid-epoch after a checkpoint exists, --resume it, and check the result."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pinlite_edge.checkpoint import load_checkpoint, read_record
from pinlite_edge.training.config import TeacherConfig
from pinlite_edge.training.engine import STATE_FILE
from pinlite_edge.training.state import load_training_state
from pinlite_edge.training.teacher import train_teacher

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--data", "synthetic", "--preset", "tiny", "--epochs", "2", "--batch-size", "2", "--lr", "1e-3",
        "--device", "cpu", "--checkpoint-every", "1", "--no-progress", "--in-memory", "yes",
        "--data-option", "num_train=12", "--data-option", "num_val=4"]


def _run(out: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pinlite_edge.training.teacher", *ARGS, "--output", str(out),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        proc.wait(timeout=300)
    return proc


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(tmp_path):
    out = tmp_path / "run"
    proc = _run(out, wait=False)
    state = out / STATE_FILE
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if state.is_file():
            try:
                _, meta = load_training_state(state)
            except Exception:  # noqa: BLE001 - never half-written (atomic), but be tolerant while polling
                meta = {}
            if meta.get("step_in_epoch", 0) >= 2:  # mid-epoch: 6 steps per epoch
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = meta
                break
        time.sleep(0.05)
    if killed_at is None:
        proc.kill()
        pytest.fail(f"training finished or stalled before a mid-epoch checkpoint appeared:\n{proc.stdout.read()}")
    assert not (out / "best.safetensors").exists() or not read_record(out / "best.safetensors").get("complete")

    resumed = _run(out, "--resume")
    log = resumed.stdout.read()
    assert resumed.returncode == 0, log
    assert "resumed teacher" in log
    rec = read_record(out / "best.safetensors")
    assert rec["complete"] and [h["epoch"] for h in rec["history"]] == [1, 2]
    model, _ = load_checkpoint(out / "best.safetensors")
    assert torch.isfinite(model(torch.randn(1, 16, 3, 64, 64), torch.randn(1, 64, 13)).logits).all()

    # The resumed run restores model, optimizer, scheduler and RNG: it ends exactly where an uninterrupted run does.
    torch.set_num_threads(1)
    try:
        ref = train_teacher(TeacherConfig(data="synthetic", preset="tiny", epochs=2, batch_size=2, lr=1e-3,
                                          device="cpu", checkpoint_every=0, progress=False, in_memory="yes",
                                          data_options={"num_train": 12, "num_val": 4}, output=str(tmp_path / "ref")))
    finally:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    got = load_checkpoint(out / "last.safetensors")[0].state_dict()
    want = load_checkpoint(tmp_path / "ref" / "last.safetensors")[0].state_dict()
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=1e-5) for k in want)
    assert json.dumps(rec["history"][-1]["val_accuracy"]) == json.dumps(ref.history[-1]["val_accuracy"])
