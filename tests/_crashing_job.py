"""Scan jobs for tests/test_scan.py, imported by spawned decoding processes (so they must live in an importable
module, not in the test file)."""
import os
import time

import numpy as np

from pinlite_edge.scan import featurise_job


def crash_on_marked_files(path, opts):
    """``featurise_job``, except that files named ``CRASH*`` kill their process after their first batch."""
    for msg in featurise_job(path, opts):
        yield msg
        if os.path.basename(path).startswith("CRASH"):
            time.sleep(0.2)  # let the sender thread ship the batch: the crash comes mid-stream
            os._exit(3)  # what a segfaulting decoder or the OOM killer looks like to the scan


def many_batches(path, opts):
    """40 batches of 256 KiB (more than an OS pipe buffer holds) as fast as possible; ``path`` + ".progress" counts
    those handed over so far."""
    progress = path + ".progress"
    for k in range(40):
        yield "batch", path, (np.full((1, 1 << 16), k, np.float32), np.zeros((1, 2), np.float32), [float(k)], None,
                              None, [None])
        with open(progress, "w") as fh:
            fh.write(str(k + 1))
    yield "end", path, {"face_found": None, "face_coverage": None, "seconds": 0.0}


def hold_one_window(path):
    """Run in a child interpreter by a test: start one decoding worker on ``many_batches``, take one window, print
    the worker's pid, then wait to be killed."""
    import multiprocessing as mp

    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.scan import JobOptions, _streams

    opts = JobOptions(contract=TINY_CONTRACT.to_dict(), face_crop=False, stride=None, timeout_s=None, batch=1,
                      max_duration_s=3600.0, max_pixels=4096 * 4096)
    streams = _streams([path], opts, 1, job=many_batches)  # kept: closing it stops the worker
    next(next(streams).windows())
    print(" ".join(str(p.pid) for p in mp.active_children()), flush=True)
    time.sleep(120)
