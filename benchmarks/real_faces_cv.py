"""Speaker-disjoint cross-validation of the quickstart recipe on the real clips outside the test split (issue #12).

    python benchmarks/real_faces_cv.py [--folds 5] [--work runs/real-faces-cv] [--root ../shared/data/real-av]

Why: the report of ``benchmarks/real_faces.py`` scores 6 held-out test clips, so one clip pair moves an AUC by 0.028
and differences below ~0.1 are noise; and every method choice made after looking at those 6 clips spends them.
This script estimates the same numbers on more speakers *without touching the test split*: the talking-face clips of
the shipped split's train + dev (14 speakers, one clip each) are dealt round-robin into ``--folds`` folds. For fold
``k`` a split file puts fold ``k`` in test, fold ``k+1`` in dev (checkpoint selection and the operating point, as in
the quickstart) and the other talking clips plus every GRID clip in train; the shipped test clips are left out of
every fold file. ``python -m pinlite_edge.quickstart --split-file`` trains the teacher, distilled and pruned students
of that fold with the quickstart's recipe (no export), and ``benchmarks/real_faces.py``'s scoring scores the fold's
held-out clips (teacher and distilled student: the scan, mean and max aggregates, offsets; the training-free
baseline). Every held-out clip is scored by models that never saw its speaker.

Pooled over the folds, each row compares every held-out original with every held-out manipulated clip (the folds'
models differ, so pooled AUCs also pay for scores that are not calibrated across models; the per-fold AUCs are in the
JSON). The FPR counts originals called fake at their own fold's operating point. Clips where no face was found are
left out of the pooled rows and listed.

Each fold costs one quickstart build without exports (about 5 minutes on a 2-core CPU) plus its scoring. A fold whose
workspace and scores exist is reused, so an interrupted run resumes; ``--force`` redoes everything.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import build_record, parse_cli, repo_relative, report_parser, write_result  # noqa: E402
from benchmarks.real_faces import (AGGREGATES, BASELINE_NAME, CONDITIONS, DEFAULT_ROOT,  # noqa: E402
                                   DEFAULT_SPLIT_FILE, MANIPULATED, ConditionScore, EvalConfig, ModelSpec, _jsonable,
                                   add_scan_offsets_argument, auc_vs_original, evaluate, real_av_root, summarise)
from pinlite_edge.errors import InputError  # noqa: E402
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS  # noqa: E402
from pinlite_edge.utils.atomic import atomic_write_json  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces_cv")

STEM = "real_faces_cv"
#: the fold models scored (quickstart stage folders); only the pruned (shipped) student gets an operating point
MODELS = ("teacher", "distilled", "pruned")


def make_folds(split_doc: dict[str, Any], folds: int) -> list[list[dict[str, Any]]]:
    """The talking-face clips of the train and dev splits (one speaker group each), sorted by speaker group and
    dealt round-robin into ``folds`` folds. Refuses a speaker group with clips in two folds' reach (more than one
    clip per group) so no speaker is ever on both sides."""
    pool = [c for c in split_doc["clips"] if c["split"] in ("train", "dev") and c["file"].startswith("talking/")]
    groups = [c["speaker_group"] for c in pool]
    if len(set(groups)) != len(groups):
        raise ValueError("a speaker group has several talking clips: deal groups, not clips, into folds")
    if not 2 <= folds <= len(pool) // 2:
        raise ValueError(f"--folds must be between 2 and {len(pool) // 2} for {len(pool)} clips, got {folds}")
    pool.sort(key=lambda c: c["speaker_group"])
    return [pool[k::folds] for k in range(folds)]


#: seeds the choice of the talking-face training speakers a fold keeps with ``--train-talking``
TRAIN_TALKING_SEED = 0


def fold_split(split_doc: dict[str, Any], folds: list[list[dict[str, Any]]], k: int,
               train_talking: int | None = None) -> dict[str, Any]:
    """Fold ``k``'s split file: fold ``k`` test, fold ``k+1`` dev, the rest of the pool and every GRID clip train;
    the shipped test clips are not listed (so no fold ever reads them). ``train_talking``: keep only that many of the
    fold's talking-face training speakers (a fixed seeded choice; the others are not listed), for a learning curve
    over real speakers; GRID, dev and test are unchanged."""
    test = {c["file"] for c in folds[k]}
    dev = {c["file"] for c in folds[(k + 1) % len(folds)]}
    clips = []
    for c in split_doc["clips"]:
        if c["split"] == "test":
            continue
        split = "test" if c["file"] in test else "dev" if c["file"] in dev else "train"
        clips.append({**c, "split": split})
    description = (f"fold {k} of {len(folds)} of {STEM} (benchmarks/real_faces_cv.py): the shipped train+dev talking "
                   "clips dealt into folds; shipped test clips left out")
    if train_talking is not None:
        talking = sorted(c["file"] for c in clips if c["split"] == "train" and c["file"].startswith("talking/"))
        if not 0 <= train_talking <= len(talking):
            raise ValueError(f"--train-talking must be between 0 and {len(talking)} (fold {k}'s talking-face "
                             f"training speakers), got {train_talking}")
        order = np.random.default_rng([TRAIN_TALKING_SEED, k]).permutation(len(talking))
        dropped = {talking[i] for i in order[train_talking:]}
        clips = [c for c in clips if c["file"] not in dropped]
        description += f"; {train_talking} of its {len(talking)} talking-face training speakers kept"
    return {"name": f"real-av-cv-fold{k}", "description": description, "clips": clips}


def fold_models(models_dir: Path) -> list[ModelSpec]:
    """The models a fold's quickstart builds (:data:`MODELS`), each its stage's ``best.safetensors``."""
    return [ModelSpec(m, models_dir / m / "best.safetensors") for m in MODELS]


def run_fold(k: int, split_file: Path, workspace: Path, root: Path, force: bool,
             quickstart_args: Sequence[str] = (), *, models_from: Path | None = None,
             scan_offsets: tuple[int, ...] = DEFAULT_SCAN_OFFSETS) -> dict[str, Any]:
    """Build fold ``k``'s models (quickstart, no export) and score its held-out clips; cached in the workspace.
    ``models_from``: the fold's workspace of another run whose models are scored instead (nothing is built)."""
    scores_path = workspace / "fold_scores.json"
    if scores_path.is_file() and not force:
        log.info("fold %d: reusing %s", k, scores_path)
        return json.loads(scores_path.read_text())
    t0 = time.perf_counter()
    if models_from is None:
        cmd = [sys.executable, "-m", "pinlite_edge.quickstart", "--workspace", str(workspace), "--real-data",
               str(root), "--split-file", str(split_file), "--no-export", "--no-progress", *quickstart_args,
               *(["--force"] if force else [])]
        log.info("fold %d: %s", k, " ".join(cmd))
        subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    models_dir = models_from or workspace
    models = fold_models(models_dir)
    missing = [m.name for m in models if not m.path.is_file()]
    if missing:
        raise InputError(f"fold {k}: no {', '.join(missing)} model under {models_dir} (build that run first)")
    build_s = time.perf_counter() - t0
    cfg = EvalConfig(root=root, split_file=split_file, split="test", models=models,
                     baseline_threshold=0.0,  # AUCs and offsets only: no train pass to choose its threshold
                     scan_offsets=scan_offsets)
    report = evaluate(cfg)
    report = {"fold": k, "models_from": None if models_from is None else repo_relative(models_from),
              "build_seconds": round(build_s, 1), "score_seconds": round(time.perf_counter() - t0 -
                                                                                     build_s, 1), **report}
    atomic_write_json(scores_path, _jsonable(report))
    return report


def pooled_clips(reports: Sequence[dict[str, Any]]
                 ) -> tuple[dict[str, list[dict[str, ConditionScore]]], dict[str, list[bool]], list[str]]:
    """Every fold's held-out clips with a face, per method (in the same clip order for every method); per calibrated
    method whether each original passed its fold's operating point; the files left out for no face."""
    per_method: dict[str, list[dict[str, ConditionScore]]] = {}
    fpr_hits: dict[str, list[bool]] = {}
    no_face: list[str] = []
    for rep in reports:
        calibrated = {row["method"]: row["threshold"] for row in rep["table"]
                      if str(row.get("threshold_source", "")).startswith("operating point")}
        for clip in rep["clips"]:
            if clip.get("face_found") is False:
                no_face.append(clip["file"])
                continue
            for method, conds in clip.get("scores", {}).items():
                per_method.setdefault(method, []).append({c: ConditionScore.from_dict(v) for c, v in conds.items()})
                if method in calibrated and "original" in conds:
                    fpr_hits.setdefault(method, []).append(conds["original"]["scan"] >= calibrated[method])
    return per_method, fpr_hits, sorted(set(no_face))


def pooled_rows(per_method: dict[str, list[dict[str, ConditionScore]]],
                fpr_hits: dict[str, list[bool]]) -> list[dict[str, Any]]:
    """One row per method over the pooled held-out clips (:func:`pooled_clips`)."""
    rows = []
    for method, per_clip in per_method.items():
        row = {"method": method, **summarise(per_clip, 0.5)}
        for agg in AGGREGATES:  # thresholds differ per fold: TPR/FPR at one pooled threshold mean nothing here
            suffix = "" if agg == "scan" else f"_{agg}"
            row.pop(f"threshold{suffix}", None)
            row.pop(f"fpr{suffix}", None)
            for cond in MANIPULATED:
                row.pop(f"tpr_{cond}{suffix}", None)
        hits = fpr_hits.get(method)
        row["fpr_at_fold_operating_point"] = float(np.mean(hits)) if hits else None
        rows.append(row)
    return rows


#: clip resamples of the paired bootstrap
BOOTSTRAP = 2000


def paired_bootstrap(per_method: dict[str, list[dict[str, ConditionScore]]], reference: str, aggregate: str = "scan",
                     reps: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """95% intervals of each method's pooled AUC per manipulation, and of its difference to ``reference`` (the
    baseline), resampling held-out clips with replacement: every method is scored on the same resampled clips, so
    the difference keeps the pairing (the same speakers are easy or hard for every method)."""
    rng = np.random.default_rng(seed)
    n = len(per_method[reference])
    if any(len(v) != n for v in per_method.values()):
        raise ValueError("every method must have scored the same clips for a paired bootstrap")

    def auc(rows: list[dict[str, ConditionScore]], idx: np.ndarray, cond: str, agg: str) -> float:
        orig = [getattr(rows[i]["original"], agg) for i in idx]
        fake = [getattr(rows[i][cond], agg) for i in idx if cond in rows[i]]
        return float(auc_vs_original(orig, fake) or np.nan)

    out: dict[str, Any] = {"reps": reps, "seed": seed, "aggregate": aggregate, "reference": reference, "clips": n,
                           "methods": {}}
    draws = [rng.integers(0, n, n) for _ in range(reps)]
    for method, rows in per_method.items():
        agg = "mean" if method == reference else aggregate  # the baseline's one score sits in every aggregate
        entry: dict[str, Any] = {}
        for cond in MANIPULATED:
            own = np.array([auc(rows, idx, cond, agg) for idx in draws])
            ref = np.array([auc(per_method[reference], idx, cond, "mean") for idx in draws])
            diff = own - ref
            entry[cond] = {"auc_ci95": [float(np.nanpercentile(own, 2.5)), float(np.nanpercentile(own, 97.5))],
                           f"minus_{reference}_ci95": [float(np.nanpercentile(diff, 2.5)),
                                                      float(np.nanpercentile(diff, 97.5))],
                           f"share_above_{reference}": float(np.nanmean(diff > 0))}
        out["methods"][method] = entry
    return out


_COLUMNS = [("auc_delay200", "delay200"), ("auc_advance200", "advance200"), ("auc_delay80", "delay80"),
            ("auc_swap", "swap")]


def _f(x: Any) -> str:
    return "—" if x is None else f"{x:.2f}"


def render_markdown(result: dict[str, Any]) -> str:
    lines = ["# Real faces: speaker-disjoint cross-validation outside the test split", "",
             f"{result['folds']} folds over {result['pool_clips']} talking-face clips of the shipped train + dev "
             f"splits (one speaker each); GRID clips always in train; the {result['test_clips_left_out']} shipped "
             "test clips in no fold. Every clip below was scored by models that never saw its speaker. Models: the "
             "quickstart recipe per fold (`python -m pinlite_edge.quickstart --split-file FOLD --no-export"
             + "".join(f" --model-option {o}" for o in result.get("model_options") or [])
             + (f" --pair-weight {result['pair_weight']}" if result.get("pair_weight") else "") + "`)"
             + (f", built by the run in `{result['models_from']}` and only re-scored here" if result.get("models_from")
                else "")
             + (f"; offset scan at {', '.join(f'{k:+d}' for k in result['scan_offsets'])} frames"
                if result.get("scan_offsets") and tuple(result["scan_offsets"]) != DEFAULT_SCAN_OFFSETS else "")
             + ".", "",
             f"Pooled over {result['pooled_clips']} held-out clips with a face (left out, no face found: "
             f"{', '.join(result['no_face']) or 'none'}). One original/manipulated pair moves an AUC by "
             f"{1 / max(1, result['pooled_clips']) ** 2:.4f}.", "",
             "## Clip-level AUC, real vs manipulated (pooled)", "",
             "| method | aggregate | " + " | ".join(c for _, c in _COLUMNS) + " |",
             "|---|---|" + "---|" * len(_COLUMNS)]
    for row in result["pooled"]:
        for agg in AGGREGATES:
            suffix = "" if agg == "scan" else f"_{agg}"
            label = agg if row["method"] != BASELINE_NAME else ("sync score" if agg == "mean" else None)
            if label is None:
                continue
            lines.append(f"| {row['method']} | {label} | "
                         + " | ".join(_f(row.get(k + suffix)) for k, _ in _COLUMNS) + " |")
    boot = result.get("bootstrap")
    if boot:
        ref = boot["reference"]
        lines += ["", f"## Uncertainty: paired clip bootstrap ({boot['reps']} resamples of the {boot['clips']} "
                  f"held-out clips; models' {boot['aggregate']} score vs the {ref})", "",
                  "95% interval of the pooled AUC, and of the model's AUC minus the baseline's on the same resampled "
                  "clips (share of resamples where the model is ahead in brackets).", "",
                  "| method | " + " | ".join(c for _, c in _COLUMNS) + " |", "|---|" + "---|" * len(_COLUMNS)]
        for method, entry in boot["methods"].items():
            cells = []
            for _, cond in _COLUMNS:
                e = entry[cond]
                lo, hi = e["auc_ci95"]
                cell = f"{lo:.2f}–{hi:.2f}"
                if method != ref:
                    dlo, dhi = e[f"minus_{ref}_ci95"]
                    cell += f"; vs baseline {dlo:+.2f} to {dhi:+.2f} ({e[f'share_above_{ref}']:.0%})"
                cells.append(cell)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "## Offsets and false positives (pooled)", "",
              "| method | offset within ±1 frame, ±200 ms clips | offset head alone | in-sync FPR at the fold's "
              "operating point (scan) |", "|---|---|---|---|"]
    for row in result["pooled"]:
        lines.append(f"| {row['method']} | {_f(row.get('offset_acc_200'))} | {_f(row.get('offset_acc_200_head'))} | "
                     f"{_f(row.get('fpr_at_fold_operating_point'))} |")
    lines += ["", "## Per fold", "", "| fold | held-out clips | build s | " + " | ".join(
        f"distilled scan {c}" for _, c in _COLUMNS) + " |", "|---|---|---|" + "---|" * len(_COLUMNS)]
    for fold in result["per_fold"]:
        row = next((r for r in fold["table"] if r["method"] == "distilled"), {})
        lines.append(f"| {fold['fold']} | {', '.join(fold['held_out'])} | {fold['build_seconds']} | "
                     + " | ".join(_f(row.get(k)) for k, _ in _COLUMNS) + " |")
    if result.get("notes"):
        lines += ["", "## Notes", "", result["notes"].strip()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = report_parser(__doc__)
    p.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--root", type=Path, default=None, help=f"the real-av folder (default {DEFAULT_ROOT})")
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE,
                   help="the shipped split whose train + dev talking clips are folded (default: %(default)s)")
    p.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "real-faces-cv",
                   help="fold split files and workspaces (default: %(default)s; kept out of git)")
    p.add_argument("--force", action="store_true", help="rebuild and rescore every fold")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every fold's quickstart (a recipe variant, e.g. appearance_input=false; give it "
                        "its own --work and --stem)")
    p.add_argument("--pair-weight", type=float, default=None, metavar="W",
                   help="passed to every fold's quickstart (the pair-ranking loss, a recipe variant; give it its own "
                        "--work and --stem)")
    p.add_argument("--sync-pairs", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every fold's quickstart (the fakes made from each real window, e.g. "
                        "rewrites_per_window=1; a recipe variant; give it its own --work and --stem)")
    p.add_argument("--seed", type=int, default=None,
                   help="passed to every fold's quickstart (default: the quickstart's, 0); another seed of the same "
                        "recipe measures how much of a difference training noise alone makes")
    p.add_argument("--train-talking", type=int, default=None, metavar="N",
                   help="keep only N of each fold's talking-face training speakers (a fixed seeded choice; GRID, dev "
                        "and held-out clips unchanged): a learning curve over real speakers; give it its own --work "
                        "and --stem")
    p.add_argument("--models-from", type=Path, default=None, metavar="WORK",
                   help="score the fold models of another run's --work folder instead of building (a scoring "
                        "variant, e.g. with --scan-offsets; give it its own --work and --stem)")
    add_scan_offsets_argument(p, "for the fold models")
    p.add_argument("--stem", default=STEM, help="results folder name (default: %(default)s)")
    return p


def recipe_args(args: argparse.Namespace) -> list[str]:
    """The quickstart arguments every fold gets: the recipe variant (model options, sync pairs, pair weight) and the
    seed."""
    out = [f"--model-option={o}" for o in args.model_option] + [f"--sync-pairs={o}" for o in args.sync_pairs]
    if args.pair_weight is not None:
        out.append(f"--pair-weight={args.pair_weight}")
    if args.seed is not None:
        out.append(f"--seed={args.seed}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv, args = parse_cli(build_parser(), argv)
    root = real_av_root(args.root)
    if isinstance(root, int):
        return root
    split_doc = json.loads(args.split_file.read_text())
    try:
        folds = make_folds(split_doc, args.folds)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    quickstart_args = recipe_args(args)
    if args.models_from is not None and quickstart_args:
        log.error("--models-from scores models that are already built: recipe options (%s) would not apply",
                  " ".join(quickstart_args))
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    reports = []
    t0 = time.perf_counter()
    for k in range(len(folds)):
        split_file = args.work / f"fold{k}.json"
        try:
            fold_doc = fold_split(split_doc, folds, k, args.train_talking)
        except ValueError as exc:
            log.error("%s", exc)
            return 2
        if args.models_from is not None:
            theirs = args.models_from / f"fold{k}.json"
            if not theirs.is_file() or json.loads(theirs.read_text()) != json.loads(json.dumps(fold_doc)):
                log.error("fold %d: %s is not this run's fold (other folds would put a model's own speakers in its "
                          "held-out clips); use the same --split-file and --folds as that run", k, theirs)
                return 2
        atomic_write_json(split_file, fold_doc)
        try:
            reports.append(run_fold(k, split_file, args.work / f"fold{k}", root, args.force, quickstart_args,
                                    models_from=None if args.models_from is None else args.models_from / f"fold{k}",
                                    scan_offsets=args.scan_offsets))
        except InputError as exc:
            log.error("%s", exc)
            return 2
    per_method, fpr_hits, no_face = pooled_clips(reports)
    pooled = pooled_rows(per_method, fpr_hits)
    bootstrap = paired_bootstrap(per_method, BASELINE_NAME) if BASELINE_NAME in per_method else None
    pool = [c for f in folds for c in f]
    result = {
        "folds": len(folds), "pool_clips": len(pool),
        "test_clips_left_out": sum(c["split"] == "test" for c in split_doc["clips"]),
        "pooled_clips": pooled[0]["num_clips"] if pooled else 0, "no_face": no_face,
        "conditions": {k: v for k, v in CONDITIONS.items()},
        "pooled": pooled,
        "bootstrap": bootstrap,
        "per_fold": [{"fold": r["fold"], "held_out": [c["file"].split("/")[-1] for c in r["clips"]],
                      "build_seconds": r["build_seconds"], "score_seconds": r["score_seconds"],
                      "table": r["table"], "models": r["models"]} for r in reports],
        "model_options": args.model_option,
        "pair_weight": args.pair_weight,
        "seed": args.seed,
        "train_talking": args.train_talking,
        "models_from": None if args.models_from is None else repo_relative(args.models_from),
        "scan_offsets": list(args.scan_offsets),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "notes": args.notes.read_text() if args.notes else None,
    }
    files = sorted((c["file"], c["sha256"]) for c in pool)
    record = build_record(args.stem, "benchmarks/real_faces_cv.py", argv,
                          data={"root": repo_relative(root), "split_file": repo_relative(args.split_file),
                                "fingerprint": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
                                "fingerprint_of": "sorted (file, sha256) of the folded clips",
                                "folds": [[c["file"] for c in f] for f in folds]})
    json_path, md_path = write_result(record, _jsonable(result), render_markdown(result), results_dir=args.out_dir)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
