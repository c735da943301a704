"""The crop-placement benchmark (benchmarks/crop_jitter.py): a moved crop square moves by the fraction of its side
asked, stays inside the frame, and the file path cuts moved crops only inside the block."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import crop_jitter as cj  # noqa: E402
from pinlite_edge.features.facecrop import FaceBox, FaceCropConfig  # noqa: E402


def test_moved_boxes_move_by_a_fraction_of_their_side_and_stay_in_the_frame():
    box = FaceBox(x=100, y=80, size=100, found=True)
    assert cj.moved_box(box, 288, 360, 0.03, 0.0, 0.0) == FaceBox(x=103, y=80, size=100, found=True)
    assert cj.moved_box(box, 288, 360, 0.0, -0.03, 0.0) == FaceBox(x=100, y=77, size=100, found=True)
    bigger = cj.moved_box(box, 288, 360, 0.0, 0.0, 0.05)
    assert bigger.size == 105 and bigger.x + bigger.size / 2 == box.x + box.size / 2 + 0.5  # same centre, rounded
    edge = cj.moved_box(FaceBox(x=260, y=188, size=100, found=True), 288, 360, 0.03, 0.03, 0.0)
    assert edge.x + edge.size <= 360 and edge.y + edge.size <= 288


def test_crops_move_only_inside_the_block():
    from pinlite_edge.features import cropstream

    face = np.array([180.0, 120.0, 100.0])  # centre x, y and side of a tracked face
    cfg = FaceCropConfig()
    before = cropstream.mouth_box(face, 288, 360, cfg)
    with cj.crops_moved(0.03, 0.0, 0.0):
        inside = cropstream.mouth_box(face, 288, 360, cfg)
    assert inside.x == before.x + round(0.03 * before.size) and inside.y == before.y
    assert cropstream.mouth_box(face, 288, 360, cfg) == before
