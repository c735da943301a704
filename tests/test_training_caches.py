"""Training's process-wide caches are bounded: a cache that goes over its byte budget evicts."""
from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from pinlite_edge.checkpoint import save_hashed

from pinlite_edge.contract import contract_for_preset
from pinlite_edge.training import data as data_mod
from pinlite_edge.training import teacher_cache
from pinlite_edge.training.memory_cache import ByteBudgetLRU

TINY_DATA = {"num_train": 8, "num_val": 4, "num_test": 4}


def test_lru_evicts_least_recently_used_beyond_the_budget():
    cache: ByteBudgetLRU[str, bytes] = ByteBudgetLRU("test", 10, len)
    assert cache.put("a", b"1234") and cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # "a" is now the most recent
    assert cache.put("c", b"1234")  # 12 bytes > 10: the least recently used ("b") goes
    assert "b" not in cache and "a" in cache and "c" in cache and cache.nbytes == 8
    assert not cache.put("huge", b"x" * 11)  # larger than the whole budget: not kept, nothing evicted
    assert len(cache) == 2 and "huge" not in cache
    cache.max_bytes = 4  # a smaller budget evicts at once
    assert list(k for k in ("a", "c") if k in cache) == ["c"] and cache.nbytes == 4
    cache.put("c", b"12")  # replacing a key re-counts its size
    assert cache.nbytes == 2
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


@pytest.fixture
def small_split_cache(monkeypatch):
    cache = ByteBudgetLRU("splits under test", 0, data_mod._held_bytes)
    monkeypatch.setattr(data_mod, "SPLIT_CACHE", cache)
    return cache


def test_load_split_reuses_and_evicts_materialised_splits(small_split_cache):
    contract = contract_for_preset("tiny")
    kwargs = dict(options=dict(TINY_DATA), in_memory="yes")
    val = data_mod.load_split("synthetic", "val", contract, **kwargs)
    one_split = data_mod._held_bytes(val)
    assert one_split == 4 * data_mod._sample_bytes(contract) + 4 * 3 * 8  # frames + mfcc + three int64 labels
    assert len(small_split_cache) == 0  # a budget of 0 keeps nothing

    small_split_cache.max_bytes = one_split  # room for one split of this size
    val = data_mod.load_split("synthetic", "val", contract, **kwargs)
    assert data_mod.load_split("synthetic", "val", contract, **kwargs) is val  # reused
    test = data_mod.load_split("synthetic", "test", contract, **kwargs)
    assert len(small_split_cache) == 1 and small_split_cache.nbytes == one_split  # "val" evicted for "test"
    assert data_mod.load_split("synthetic", "test", contract, **kwargs) is test
    assert data_mod.load_split("synthetic", "val", contract, **kwargs) is not val  # built again


def test_teacher_outputs_cache_evicts_beyond_its_budget(tmp_path, monkeypatch):
    n = 6
    out = {"logits": torch.zeros(n, 2), "attention": torch.zeros(n, 16, 16)}
    size = teacher_cache._outputs_bytes(out)
    assert size == 4 * (n * 2 + n * 16 * 16)
    cache = ByteBudgetLRU("teacher outputs under test", size, teacher_cache._outputs_bytes)  # room for one entry
    monkeypatch.setattr(teacher_cache, "TEACHER_OUTPUT_CACHE", cache)
    monkeypatch.setattr(teacher_cache, "teacher_hash", lambda path: "teacher-weights-sha")
    splits = [data_mod.Split(name, list(range(n)), f"fingerprint-{name}", {}) for name in ("train", "val")]
    for split in splits:  # outputs on disk, as a previous run left them
        key = hashlib.sha256(f"teacher-weights-sha:{split.fingerprint}".encode()).hexdigest()[:32]
        save_hashed(tmp_path / f"teacher-{key}.safetensors", out, {})

    def outputs(split):
        return teacher_cache._outputs("teacher.safetensors", split, torch.device("cpu"), 4, tmp_path, None)

    train = outputs(splits[0])
    assert outputs(splits[0]) is train and len(cache) == 1  # served from memory
    outputs(splits[1])
    assert len(cache) == 1 and cache.nbytes == size  # the train split's outputs were evicted
    assert outputs(splits[0]) is not train  # read from disk again


@pytest.mark.parametrize("damage", ["flipped", "inf", "unhashed"])
def test_a_damaged_teacher_output_cache_is_recomputed(tmp_path, monkeypatch, damage):
    """Only the row count was checked: 16 logits overwritten with inf (or any flipped bytes) were distilled from."""
    n = 4
    good = {"logits": torch.ones(n, 2), "attention": torch.full((n, 16, 16), 1 / 16)}
    monkeypatch.setattr(teacher_cache, "TEACHER_OUTPUT_CACHE", ByteBudgetLRU("under test", 1 << 20,
                                                                            teacher_cache._outputs_bytes))
    monkeypatch.setattr(teacher_cache, "teacher_hash", lambda path: "teacher-weights-sha")
    monkeypatch.setattr(teacher_cache, "load_teachers", lambda paths, device: [None])
    computed = (good["logits"].numpy() * 2, None, good["attention"].numpy(), None, None)
    monkeypatch.setattr(teacher_cache, "predict", lambda *a, **k: computed)
    split = data_mod.Split("train", list(range(n)), "fingerprint-train", {})
    key = hashlib.sha256(f"teacher-weights-sha:{split.fingerprint}".encode()).hexdigest()[:32]
    file = tmp_path / f"teacher-{key}.safetensors"
    bad = {"logits": good["logits"].clone(), "attention": good["attention"]}
    if damage == "inf":
        bad["logits"][0] = float("inf")
        save_hashed(file, bad, {})  # hashed as written: the values themselves are refused
    elif damage == "unhashed":
        save_file(bad, str(file))  # no sha256 to verify it against
    else:
        save_hashed(file, good, {})
        data = bytearray(file.read_bytes())
        data[-8:] = b"\x7f" * 8
        file.write_bytes(bytes(data))
    out = teacher_cache._outputs("teacher.safetensors", split, torch.device("cpu"), 4, tmp_path, None)
    torch.testing.assert_close(out["logits"], good["logits"] * 2)  # recomputed, not read
