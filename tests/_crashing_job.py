"""A scan job that kills its own worker process on files named ``CRASH*`` (imported by spawned workers in
tests/test_scan.py, so it must live in an importable module, not in the test file)."""
import os

from pinlite_edge.scan import featurise_job


def crash_on_marked_files(path, *args):
    if os.path.basename(path).startswith("CRASH"):
        os._exit(3)  # what a segfaulting decoder or the OOM killer looks like to the pool
    return featurise_job(path, *args)
