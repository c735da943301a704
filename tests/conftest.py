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


def pyav_writes_rotation() -> bool:
    """Whether this PyAV can write a display matrix (``VideoStream.set_display_rotation``, PyAV 17.1), which the
    tests' rotated clips are made with; pinlite-edge reads it from PyAV 15 on (pyproject asks for 18)."""
    import av.video.stream

    return hasattr(av.video.stream.VideoStream, "set_display_rotation")


NO_ROTATION_WRITER = "this PyAV cannot write a display matrix (VideoStream.set_display_rotation came in PyAV 17.1)"


@pytest.fixture(scope="session")
def grid_clips() -> list[Path]:
    clips = sorted(GRID_DIR.glob("*.mpg"))
    if not clips:
        pytest.skip(f"real GRID clips not found in {GRID_DIR}")
    return clips


@pytest.fixture(scope="module")
def student():
    """A random-init tiny student (seed 0), one per test module. Modules with another ``student`` define their own."""
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    return create_student("tiny", pretrained=False).eval()


@pytest.fixture(scope="module")
def cal(student):
    """8 synthetic train clips of the student's contract, for export calibration."""
    from pinlite_edge.export.calibration import load_calibration

    return load_calibration("synthetic", student.config.contract, 8, "train")


@pytest.fixture
def unusable_output_folders(tmp_path: Path) -> list[tuple[Path, int, str]]:
    """Output folders a CLI cannot make, with the exit status and words of its one-line error: a file (usage, 2), a
    folder under a file and, on Linux, one under /proc, which takes no new folders, not even root's (failures, 1)."""
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    bad = [(a_file, 2, "is a file, not a folder"), (a_file / "sub", 1, "cannot create the folder")]
    if Path("/proc/self").is_dir():
        bad.append((Path("/proc/pinlite-x"), 1, "cannot create the folder"))
    return bad
