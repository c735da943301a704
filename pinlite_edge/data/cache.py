"""On-disk feature cache: one npz per (file sha256, preprocessing config) holding the prepared clip.

A prepared clip (face-cropped, resized uint8 frames + 16 kHz mono audio) is what decoding costs; windows, MFCC and
normalisation are cheap and computed from it on every access, so sync pairs and different strides share one entry.
Entries are written atomically; an unreadable entry is logged and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S
from pinlite_edge.features.facecrop import FaceCropConfig
from pinlite_edge.features.pipeline import CROP_SOURCE_MAX_SIDE, prepare_file
from pinlite_edge.feature_version import FEATURE_VERSION  # cache entries of another version are not reused
from pinlite_edge.features.windows import PreparedClip
from pinlite_edge.utils.atomic import atomic_path
from pinlite_edge.utils.hashing import json_sha256, sha256_file

log = logging.getLogger(__name__)



def preprocessing_config(contract: InputContract, face_crop: bool, face_config: FaceCropConfig | None,
                         max_side: int | None) -> dict[str, Any]:
    return {"feature_version": FEATURE_VERSION, "contract": contract.to_dict(), "face_crop": bool(face_crop),
            "face_config": asdict(face_config or FaceCropConfig()) if face_crop else None, "max_side": max_side}


def config_hash(config: dict[str, Any]) -> str:
    return json_sha256(config)


class FeatureCache:
    """npz files under ``cache_dir`` named ``<file sha256[:32]>-<config hash[:16]>.npz``."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def entry(self, file_sha256: str, cfg_hash: str) -> Path:
        return self.cache_dir / f"{file_sha256[:32]}-{cfg_hash[:16]}.npz"

    def get(self, file_sha256: str, cfg_hash: str) -> PreparedClip | None:
        path = self.entry(file_sha256, cfg_hash)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                face = int(z["face_found"])
                coverage = float(z["face_coverage"])
                faces = int(z["faces_in_view"]) if "faces_in_view" in z.files else -1  # entries before the count
                return PreparedClip(frames=z["frames"], fps=float(z["fps"]), audio=z["audio"],
                                    sample_rate=int(z["sample_rate"]), face_found=None if face < 0 else bool(face),
                                    face_coverage=None if coverage < 0 else coverage,
                                    faces_in_view=None if faces < 0 else faces)
        except Exception as exc:  # a damaged entry must never break training: rebuild it
            log.warning("feature cache entry %s is unreadable (%s); rebuilding it", path, exc)
            return None

    def put(self, file_sha256: str, cfg_hash: str, clip: PreparedClip) -> Path:
        path = self.entry(file_sha256, cfg_hash)
        face = -1 if clip.face_found is None else int(clip.face_found)
        coverage = -1.0 if clip.face_coverage is None else float(clip.face_coverage)
        faces = -1 if clip.faces_in_view is None else int(clip.faces_in_view)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, frames=clip.frames, audio=clip.audio, fps=np.float64(clip.fps),
                                sample_rate=np.int64(clip.sample_rate), face_found=np.int64(face),
                                face_coverage=np.float64(coverage), faces_in_view=np.int64(faces))
        return path


class ClipLoader:
    """Loads prepared clips: small in-memory LRU -> on-disk :class:`FeatureCache` (if any) -> decode."""

    def __init__(self, contract: InputContract, *, face_crop: bool, cache_dir: str | Path | None = None,
                 face_config: FaceCropConfig | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 max_side: int | None = CROP_SOURCE_MAX_SIDE, memory_clips: int = 4):
        self.contract = contract
        self.face_crop = face_crop
        self.face_config = face_config
        self.timeout_s = timeout_s
        self.max_side = max_side
        self.config = preprocessing_config(contract, face_crop, face_config, max_side)
        self.config_hash = config_hash(self.config)
        self.cache = FeatureCache(cache_dir) if cache_dir is not None else None
        self.memory_clips = memory_clips
        self._memory: OrderedDict[Path, PreparedClip] = OrderedDict()
        self._rewrites: OrderedDict[tuple[Path, Path], PreparedClip] = OrderedDict()
        self._sha: dict[tuple[str, int, int], str] = {}
        self.decodes = 0  # number of real decodes (tests and logs)
        self.rewrites = 0  # number of lip-sync rewrites computed (tests and logs)

    def file_sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._sha:
            self._sha[key] = sha256_file(path)
        return self._sha[key]

    def load(self, path: str | Path) -> PreparedClip:
        path = Path(path)
        if path in self._memory:
            self._memory.move_to_end(path)
            return self._memory[path]
        clip = None
        sha = None
        if self.cache is not None and path.exists():
            sha = self.file_sha256(path)
            clip = self.cache.get(sha, self.config_hash)
        if clip is None:
            clip = prepare_file(path, self.contract, face_crop=self.face_crop, face_config=self.face_config,
                                timeout_s=self.timeout_s, max_side=self.max_side)
            self.decodes += 1
            if self.cache is not None:
                self.cache.put(sha or self.file_sha256(path), self.config_hash, clip)
        self._remember(self._memory, path, clip)
        return clip

    def _remember(self, store: OrderedDict, key: Any, clip: PreparedClip) -> None:
        """Keep ``clip`` in the in-memory LRU ``store``, at most ``memory_clips`` entries."""
        if self.memory_clips > 0:
            store[key] = clip
            while len(store) > self.memory_clips:
                store.popitem(last=False)

    def rewritten(self, path: str | Path, driver: str | Path) -> PreparedClip:
        """``path``'s clip rewritten to follow ``driver``'s audio (:func:`pinlite_edge.data.lip_rewrite.rewrite_clip`,
        default config), kept like a decoded clip: in-memory LRU -> on-disk cache (keyed by both files' sha256, the
        rewrite's config and ``REWRITE_VERSION``) -> computed (up to seconds for a long clip)."""
        from pinlite_edge.data.lip_rewrite import REWRITE_VERSION, RewriteConfig, rewrite_clip

        key = (Path(path), Path(driver))
        if key in self._rewrites:
            self._rewrites.move_to_end(key)
            return self._rewrites[key]
        config = RewriteConfig()
        entry = None
        clip = None
        if self.cache is not None:
            entry = hashlib.sha256(json.dumps(["rewrite", REWRITE_VERSION, self.file_sha256(key[0]),
                                               self.file_sha256(key[1]), asdict(config)],
                                              sort_keys=True).encode()).hexdigest()
            clip = self.cache.get(entry, self.config_hash)
        if clip is None:
            clip = rewrite_clip(self.load(key[0]), self.load(key[1]).audio, self.contract, config).clip
            self.rewrites += 1
            if entry is not None and self.cache is not None:
                self.cache.put(entry, self.config_hash, clip)
        self._remember(self._rewrites, key, clip)
        return clip
