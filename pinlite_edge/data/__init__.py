"""Datasets sharing one sample format (docs/architecture.md): synthetic, LAV-DF, folder (+ sync pairs), and mixes."""
from pinlite_edge.data.mix import DataSource, MixedDataset, build_sources, resolve_sources
from pinlite_edge.data.provenance import training_data_summary
from pinlite_edge.data.registry import build_dataset, dataset_fingerprint, describe_dataset, parse_spec
from pinlite_edge.data.sample import WindowDataset, WindowRef, canonical_split, make_sample, manipulation_index

__all__ = ["DataSource", "MixedDataset", "WindowDataset", "WindowRef", "build_dataset", "build_sources",
           "canonical_split", "dataset_fingerprint", "describe_dataset", "make_sample", "manipulation_index",
           "parse_spec", "resolve_sources", "training_data_summary"]
