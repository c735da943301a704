"""Datasets sharing one sample format (docs/architecture.md): synthetic, LAV-DF, folder (+ sync pairs)."""
from pinlite_edge.data.registry import build_dataset, dataset_fingerprint, describe_dataset, parse_spec
from pinlite_edge.data.sample import WindowDataset, WindowRef, canonical_split, make_sample, manipulation_index

__all__ = ["WindowDataset", "WindowRef", "build_dataset", "canonical_split", "dataset_fingerprint",
           "describe_dataset", "make_sample", "manipulation_index", "parse_spec"]
