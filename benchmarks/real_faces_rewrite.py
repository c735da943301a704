"""Lip-sync-style fakes on real faces: does a detector catch a fake whose mouth follows the new audio?

    python benchmarks/real_faces_rewrite.py --cv-work runs/real-faces-cv-sync \\
        --model distilled=pinlite-workspace/distilled/best.safetensors --model pruned=pinlite-workspace/pruned/best.safetensors

For every clip with a face and a partner clip of another speaker (``real_faces.py``'s swap partner), three
conditions on the same windows, all with the SAME driving audio (the partner's track cut or repeated to the clip's
length):

==========  ================================================================================================
original    the clip as it is (its own audio)
swap        the clip's frames with the driving audio
rewrite     the driving audio with frames rewritten to follow it (``pinlite_edge/data/lip_rewrite.py``: the
            speaker's own lower-face images re-ordered by audio, Video Rewrite style, pasted into the frames)
==========  ================================================================================================

Sources of models, each scoring only clips of speakers it never saw:

- ``--cv-work WORK``: the fold models (teacher, distilled, pruned) of a ``benchmarks/real_faces_cv.py`` run, each
  fold's on its held-out clips (``WORK/foldK.json``'s test split);
- ``--model NAME=PATH`` (repeatable): models scored on ``--split`` (default ``test``) of ``--split-file``, e.g. the
  quickstart's students, which never saw the test speakers.

Every model scores as ``Detector`` scores a file (the offset scan's P(fake), its default verdict; the mean and max of
the window P(fake)); the training-free baseline (``benchmarks/sync_baseline.py``) scores the same windows. The report
gives, per source and pooled over the CV folds, the ROC AUC of originals against each fake, 95% intervals from
resampling clips, and the paired difference rewrite - swap. The generator's own check per clip: how well the
rewritten frames' audio matches the driving audio against the original frames' (``RewriteResult``).

Writes ``benchmarks/results/real_faces_rewrite/<machine>.{json,md}`` (``--out-dir`` changes the results root,
``--stem`` the folder).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import build_record, parse_cli, repo_relative, report_parser, write_result  # noqa: E402
from benchmarks.real_faces import (BASELINE_NAME, DEFAULT_SPLIT_FILE, ClipStore, ConditionScore,  # noqa: E402
                                   ModelSpec, SplitClip, _jsonable, add_scan_offsets_argument, auc_vs_original,
                                   condition_starts, data_fingerprint, delayed_baseline, delayed_windows,
                                   load_split, parse_model_spec, real_av_root, score_windows, swap_partners,
                                   verdict_score)
from benchmarks.real_faces_cv import MODELS as CV_MODELS  # noqa: E402
from benchmarks.real_faces_cv import fold_models  # noqa: E402
from benchmarks.sync_baseline import BaselineConfig, mouth_motion  # noqa: E402
from pinlite_edge.contract import InputContract, contract_for_preset  # noqa: E402
from pinlite_edge.data.lip_rewrite import RewriteConfig, RewriteResult, rewrite_clip  # noqa: E402
from pinlite_edge.errors import InputError, PinliteError  # noqa: E402
from pinlite_edge.features.windows import PreparedClip  # noqa: E402
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces_rewrite")

STEM = "real_faces_rewrite"
CONDITIONS = ("original", "swap", "rewrite")
FAKES = ("swap", "rewrite")
BOOTSTRAP = 2000


# --- conditions ------------------------------------------------------------------------------------------------
@dataclass
class ClipConditions:
    """One clip's three conditions at one contract (see the module docstring) and the rewrite's diagnostics."""

    clips: dict[str, PreparedClip]
    rewrite: RewriteResult


def build_conditions(clip: PreparedClip, partner: PreparedClip, contract: InputContract,
                     config: RewriteConfig) -> ClipConditions:
    """``original``, ``rewrite`` (the partner's audio cut or repeated to the clip's length, frames rewritten to
    follow it) and ``swap`` (the clip's own frames with the rewrite's very audio track)."""
    rewritten = rewrite_clip(clip, partner.audio, contract, config)
    swap = dataclasses.replace(clip, audio=rewritten.clip.audio)
    return ClipConditions({"original": clip, "swap": swap, "rewrite": rewritten.clip}, rewritten)


class ConditionCache:
    """Each (clip, partner, contract)'s conditions built once for the run (the rewrite costs up to seconds)."""

    def __init__(self, store: ClipStore, config: RewriteConfig):
        self.store, self.config = store, config
        self._cache: dict[tuple[str, str, InputContract], ClipConditions] = {}

    def get(self, path: Path, partner: Path, contract: InputContract) -> ClipConditions:
        key = (str(path), str(partner), contract)
        if key not in self._cache:
            self._cache[key] = build_conditions(self.store.get(path, contract), self.store.get(partner, contract),
                                                contract, self.config)
        return self._cache[key]


# --- one source of models ----------------------------------------------------------------------------------------
@dataclass
class Source:
    """Models scored on one split's clips: a CV fold (its held-out clips) or the given models on ``--split``."""

    name: str
    split_file: Path
    split: str
    models: list[ModelSpec]
    clips: list[dict[str, Any]] = field(default_factory=list)


def cv_sources(work: Path) -> list[Source]:
    """One source per fold of a ``real_faces_cv.py`` run's ``--work`` folder."""
    folds = sorted(work.glob("fold[0-9]*.json"), key=lambda p: int(p.stem[4:]))
    if not folds:
        raise InputError(f"no foldK.json under {work}: run benchmarks/real_faces_cv.py --work {work} first")
    sources = []
    for split_file in folds:
        models = fold_models(work / split_file.stem)
        missing = [str(m.path) for m in models if not m.path.is_file()]
        if missing:
            raise InputError(f"{split_file.stem}: missing fold models {missing}; finish the CV run first")
        sources.append(Source(f"cv-{split_file.stem}", split_file, "test", models))
    return sources


def score_source(source: Source, root: Path, cache: ConditionCache, baseline_contract: InputContract,
                 scan_offsets: tuple[int, ...], batch_size: int, threads: int | None) -> None:
    """Score every clip of ``source`` with a face and a partner under every condition, with its models and the
    baseline; fills ``source.clips``."""
    from pinlite_edge.runtimes import load_runner

    clips = load_split(source.split_file, root, source.split)
    partners = swap_partners(clips)
    entries: list[dict[str, Any]] = []
    for i, clip in enumerate(clips):
        entry: dict[str, Any] = {"file": clip.file, "speaker_group": clip.speaker_group, "sha256": clip.sha256,
                                 "scores": {}, "rewrite": {}}
        if partners[i] is None:
            entry["skipped"] = "no clip of another speaker in the split"
        entries.append(entry)
    bcfg = BaselineConfig()

    def usable(i: int, contract: InputContract) -> tuple[ClipConditions, list[float]] | None:
        entry = entries[i]
        if "skipped" in entry:
            return None
        prepared = cache.store.get(clips[i].path, contract)
        if prepared.face_found is False:
            entry["skipped"] = "no face found"
            return None
        starts = condition_starts(prepared, contract, None)
        if starts is None:
            entry["skipped"] = f"{prepared.duration:.2f} s is shorter than one window plus its margins"
            return None
        conds = cache.get(clips[i].path, clips[partners[i]].path, contract)  # type: ignore[index]
        entry["swap_partner"] = clips[partners[i]].file  # type: ignore[index]
        entry["rewrite"][str(contract.frame_size)] = {
            "match_cost": round(conds.rewrite.match_cost, 4), "swap_match_cost": round(conds.rewrite.swap_match_cost, 4),
            "jump_rate": round(conds.rewrite.jump_rate, 4)}
        return conds, starts

    for spec in source.models:
        runner = load_runner(spec.path, **({"threads": threads} if threads else {}))
        log.info("%s: scoring %s on %d clips", source.name, spec.name, len(clips))
        with runner:
            for i in range(len(clips)):
                got = usable(i, runner.contract)
                if got is None:
                    continue
                conds, starts = got
                entries[i]["scores"][spec.name] = {
                    c: score_windows(runner, delayed_windows(conds.clips[c], runner.contract, starts, 0.0,
                                                             scan_offsets=scan_offsets), batch_size,
                                     scan_offsets).to_dict()
                    for c in CONDITIONS}
    for i in range(len(clips)):
        got = usable(i, baseline_contract)
        if got is None:
            continue
        conds, starts = got
        entries[i]["scores"][BASELINE_NAME] = {
            c: delayed_baseline(conds.clips[c], baseline_contract, starts, 0.0, None, bcfg,
                                mouth_motion(conds.clips[c].frames, bcfg)).to_dict()
            for c in CONDITIONS}
    source.clips = entries


# --- metrics -------------------------------------------------------------------------------------------------------
def method_rows(clips: Sequence[dict[str, Any]], method: str) -> list[dict[str, float]]:
    """``{condition: score}`` of every clip ``method`` scored."""
    return [{c: float(verdict_score(method, ConditionScore.from_dict(e["scores"][method][c]))) for c in CONDITIONS}
            for e in clips if method in e.get("scores", {})]


def aucs(rows: Sequence[dict[str, float]]) -> dict[str, float | None]:
    orig = [r["original"] for r in rows]
    return {f: auc_vs_original(orig, [r[f] for r in rows]) for f in FAKES}


def bootstrap(rows: Sequence[dict[str, float]], reps: int = BOOTSTRAP, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of each AUC and of rewrite - swap, resampling clips (pairs kept together)."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    draws: dict[str, list[float]] = {"swap": [], "rewrite": [], "rewrite_minus_swap": []}
    for _ in range(reps):
        sample = [rows[i] for i in rng.integers(0, n, n)]
        a = aucs(sample)
        if a["swap"] is None or a["rewrite"] is None:
            continue
        draws["swap"].append(a["swap"])
        draws["rewrite"].append(a["rewrite"])
        draws["rewrite_minus_swap"].append(a["rewrite"] - a["swap"])
    return {k: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)] if v else []
            for k, v in draws.items()}


def summarise(clips: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for method in methods:
        rows = method_rows(clips, method)
        if not rows:
            continue
        a = aucs(rows)
        diff = None if a["swap"] is None or a["rewrite"] is None else a["rewrite"] - a["swap"]
        out.append({"method": method, "clips": len(rows), "auc_swap": a["swap"], "auc_rewrite": a["rewrite"],
                    "rewrite_minus_swap": diff, "ci95": bootstrap(rows) if len(rows) >= 2 else {}})
    return out


def generator_check(clips: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per contract size: on how many clips the rewrite follows the driving audio better than the original frames."""
    out: dict[str, Any] = {}
    sizes = sorted({s for e in clips for s in e.get("rewrite", {})}, key=int)
    for size in sizes:
        diag = [(e["file"], e["rewrite"][size]) for e in clips if size in e.get("rewrite", {})]
        worse = [f for f, d in diag if not d["match_cost"] < d["swap_match_cost"]]
        out[size] = {"clips": len(diag), "rewrite_matches_better": len(diag) - len(worse), "not_better": worse,
                     "match_cost_median": float(np.median([d["match_cost"] for _, d in diag])),
                     "swap_match_cost_median": float(np.median([d["swap_match_cost"] for _, d in diag])),
                     "jump_rate_median": float(np.median([d["jump_rate"] for _, d in diag]))}
    return out


# --- report --------------------------------------------------------------------------------------------------------
def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:+.3f}" if isinstance(x, float) and x < 0 else f"{x:.3f}" \
        if isinstance(x, float) else str(x)


def _ci(row: dict[str, Any], key: str) -> str:
    ci = row.get("ci95", {}).get(key)
    return f"{ci[0]:.2f} to {ci[1]:.2f}" if ci else "n/a"


def render_markdown(result: dict[str, Any]) -> str:
    lines = ["# Lip-sync-style fakes on real faces", "",
             "AUC of genuine clips against each fake, scored as `Detector` scores a file (scan verdict; the "
             "baseline's own score). `swap` and `rewrite` use the same driving audio; `rewrite` redraws the lower "
             "face to follow it (`pinlite_edge/data/lip_rewrite.py`). Intervals: 95%, resampling clips.", ""]
    for group, rows in result["groups"].items():
        lines += [f"## {group}", "", "| method | clips | AUC swap | AUC rewrite | rewrite - swap | 95% rewrite | "
                  "95% rewrite - swap |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['method']} | {r['clips']} | {_f(r['auc_swap'])} | {_f(r['auc_rewrite'])} | "
                         f"{_f(r['rewrite_minus_swap'])} | {_ci(r, 'rewrite')} | {_ci(r, 'rewrite_minus_swap')} |")
        lines.append("")
    lines += ["## The generator's check", "",
              "Per crop size: clips whose rewritten frames' own audio matches the driving audio better than the "
              "original frames' (costs in units of each clip's median audio-match cost).", "",
              "| crop px | clips | rewrite matches better | median cost rewrite | median cost original frames | "
              "median jump rate |", "|---|---|---|---|---|---|"]
    for size, g in result["generator_check"].items():
        lines.append(f"| {size} | {g['clips']} | {g['rewrite_matches_better']} | {g['match_cost_median']:.3f} | "
                     f"{g['swap_match_cost_median']:.3f} | {g['jump_rate_median']:.3f} |")
    skipped = [(s, e["file"], e["skipped"]) for s, clips in result["sources"].items() for e in clips
               if "skipped" in e]
    if skipped:
        lines += ["", "Left out: " + "; ".join(f"{f.split('/')[-1]} ({s}: {why})" for s, f, why in skipped)]
    if result.get("notes"):
        lines += ["", "## Notes", "", result["notes"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = report_parser(__doc__)
    p.add_argument("--cv-work", type=Path, default=None, metavar="WORK",
                   help="a benchmarks/real_faces_cv.py --work folder: score its fold models on their held-out clips")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a model scored on --split (repeatable; .safetensors or an exported artefact)")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"],
                   help="the split --model models score (default test: speakers no shipped model saw)")
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    p.add_argument("--root", type=Path, default=None, help="the real-av folder (default ../shared/data/real-av)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="runner threads (default 1; 0 = the backend's default)")
    add_scan_offsets_argument(p, "for the models")
    p.add_argument("--stem", default=STEM, help="results folder name (default: %(default)s; another for a recipe "
                                                "variant's fold models)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv, args = parse_cli(build_parser(), argv)
    root = real_av_root(args.root)
    if isinstance(root, int):
        return root
    t0 = time.perf_counter()
    try:
        sources = cv_sources(args.cv_work) if args.cv_work is not None else []
        given = [parse_model_spec(m) for m in args.model]
        if given:
            sources.append(Source(f"split-{args.split}", args.split_file, args.split, given))
        if not sources:
            raise InputError("nothing to score: give --cv-work WORK and/or --model NAME=PATH")
        cache = ConditionCache(ClipStore(), RewriteConfig())
        baseline_contract = contract_for_preset("paper")
        for source in sources:
            score_source(source, root, cache, baseline_contract, args.scan_offsets, args.batch_size,
                         args.threads or None)
    except PinliteError as exc:
        log.error("%s", exc)
        return 2
    cv = [e for s in sources if s.name.startswith("cv-") for e in s.clips]
    groups: dict[str, list[dict[str, Any]]] = {}
    if cv:
        groups["CV folds pooled (each clip scored by its fold's models)"] = summarise(
            cv, [*CV_MODELS, BASELINE_NAME])
    for s in sources:
        if not s.name.startswith("cv-"):
            groups[f"{s.split} split: {', '.join(m.name for m in s.models)}"] = summarise(
                s.clips, [*(m.name for m in s.models), BASELINE_NAME])
    every = [e for s in sources for e in s.clips]
    result = {"conditions": list(CONDITIONS), "rewrite_config": dataclasses.asdict(RewriteConfig()),
              "scan_offsets": list(args.scan_offsets), "groups": groups, "generator_check": generator_check(every),
              "sources": {s.name: s.clips for s in sources},
              "models": {s.name: {m.name: repo_relative(m.path) for m in s.models} for s in sources},
              "wall_seconds": round(time.perf_counter() - t0, 1),
              "notes": args.notes.read_text() if args.notes else None}
    scored = {e["file"]: SplitClip(e["file"], root / e["file"], e["sha256"], e["speaker_group"]) for e in every}
    record = build_record(args.stem, "benchmarks/real_faces_rewrite.py", argv,
                          data={"root": repo_relative(root), "fingerprint": data_fingerprint(list(scored.values())),
                                "fingerprint_of": "sorted (file, sha256) of every clip of the sources",
                                "num_clips": len(scored),
                                "sources": {s.name: repo_relative(s.split_file) for s in sources}})
    json_path, md_path = write_result(record, _jsonable(result), render_markdown(result), results_dir=args.out_dir)
    for group, rows in groups.items():
        for r in rows:
            log.info("%s | %s: swap %s rewrite %s", group, r["method"], _f(r["auc_swap"]), _f(r["auc_rewrite"]))
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
