"""Shared test fixtures. Tests are CPU-only, small (tiny preset) and deterministic."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
GRID_DIR = SHARED / "data" / "real-av" / "grid"


@pytest.fixture(scope="session")
def grid_clips() -> list[Path]:
    clips = sorted(GRID_DIR.glob("*.mpg"))
    if not clips:
        pytest.skip(f"real GRID clips not found in {GRID_DIR}")
    return clips
