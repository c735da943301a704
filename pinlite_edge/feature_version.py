"""Which feature pipeline a model was trained for, and the check that it is the one this SDK computes.

A model only means something on the frames it was trained on. The face crop changed once (commit bce2302,
2026-12-03): from the whole face to the tracked lower face and mouth. A checkpoint trained before that still loads,
with the same config and contract, and would be scored on crops it never saw: wrong scores, no error. So every
checkpoint record and manifest carries ``feature_version``, and loading a model compares it with
:data:`FEATURE_VERSION`.

- Recorded and equal: fine. Recorded and different: refused, naming both pipelines (retrain, or upgrade
  pinlite-edge for a newer one).
- Not recorded (written before 2026-12-05): a checkpoint record or manifest that records the model's training data
  is version 2, since training data is recorded from commit 4a02dc8, two commits before the mouth crop (a model
  trained with exactly those two commits is the one case this misjudges). One that does not is scored as version 2
  with a warning that a model trained before 2026-12-03 saw whole-face crops. (A manifest's date says nothing: an
  export made today may hold an old checkpoint.)
"""
from __future__ import annotations

import logging
from typing import Any

from pinlite_edge.utils.checks import is_whole

log = logging.getLogger(__name__)

#: what the model's frames are; bump when decoding or cropping changes what a model sees (feature caches are keyed
#: by it too, :mod:`pinlite_edge.data.cache`)
FEATURE_VERSION = 2
#: every version, as a user would recognise it
FEATURE_VERSIONS = {
    1: "the whole-face crop (1.5x the detected face box; until commit bce2302, 2026-12-03)",
    2: "the tracked lower-face and mouth crop (0.6x the face box, nose to chin)",
}


def describe(version: int) -> str:
    return f"feature version {version}, {FEATURE_VERSIONS.get(version, 'unknown to this pinlite-edge')}"


def feature_version_problem(recorded: Any, source: str) -> str | None:
    """Why a model recorded as trained for ``recorded`` cannot be scored with this SDK's features, or None.

    None for the current version, and for None (not recorded: see :func:`check_unrecorded`)."""
    if recorded is None:
        return None
    if not is_whole(recorded):
        return f"{source}: feature_version must be an integer, got {recorded!r}"
    if recorded == FEATURE_VERSION:
        return None
    newer = recorded > FEATURE_VERSION
    return (f"{source} was trained for {describe(recorded)}, but this pinlite-edge computes "
            f"{describe(FEATURE_VERSION)}: its scores would be wrong. "
            + ("Upgrade pinlite-edge to score it." if newer else
               "Retrain it with this version (python -m pinlite_edge.quickstart, or python -m pinlite_edge.training), "
               "then export it again."))


def check_unrecorded(training_data: Any, source: str) -> None:
    """For a model that does not record its feature version: nothing when it records its training data (version
    2, see the module doc), else :func:`warn_unrecorded`."""
    if not isinstance(training_data, dict):
        warn_unrecorded(source)


def warn_unrecorded(source: str) -> None:
    """At each load of a checkpoint that does not record its feature version (loads are rare: one per runner)."""
    log.warning("%s does not record the feature pipeline it was trained for (written before pinlite-edge recorded "
                "it, 2026-12-05); it is scored with %s. A model trained before 2026-12-03 saw %s: its scores would be "
                "wrong; retrain it", source, describe(FEATURE_VERSION), FEATURE_VERSIONS[1])
