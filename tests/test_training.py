"""Training package: losses, resumable state, data order, teacher/distill/prune on a few synthetic clips."""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pinlite_edge.checkpoint import load_checkpoint, read_record, save_checkpoint
from pinlite_edge.contract import OFFSET_IGNORE_INDEX
from pinlite_edge.errors import CheckpointError, PinliteError, UsageError
from pinlite_edge.models import ModelOutput, count_parameters, create_student
from pinlite_edge.training.config import DistillConfig, PruneConfig, TeacherConfig
from pinlite_edge.training.data import EpochSampler
from pinlite_edge.training.distill import distill
from pinlite_edge.training.losses import (DistillWeights, distillation_loss, kd_kl, offset_loss, soft_targets,
                                          teacher_loss)
from pinlite_edge.training.prune import ablation_importance, least_important_head, planned_steps, prune
from pinlite_edge.training.state import load_training_state, rng_state, save_training_state, set_rng_state
from pinlite_edge.training.teacher import train_teacher

TINY_DATA = {"num_train": 8, "num_val": 4, "num_test": 4}


def tiny_kwargs(out: Path, **extra) -> dict:
    return dict(data="synthetic", preset="tiny", epochs=1, batch_size=4, device="cpu", output=str(out),
                data_options=dict(TINY_DATA), progress=False, checkpoint_every=1, in_memory="yes", **extra)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    return train_teacher(TeacherConfig(**tiny_kwargs(out), lr=1e-3)).best_path


# --- losses -------------------------------------------------------------------------------------------------------
def test_kd_term_is_not_identically_zero_and_has_gradient():
    student = torch.tensor([[2.0, -1.0], [0.5, 0.3]], requires_grad=True)
    teacher = torch.tensor([[-1.0, 1.5], [0.0, 2.0]])
    kd = kd_kl(student, soft_targets(teacher, 2.0), 2.0)
    assert kd.item() > 1e-3
    kd.backward()
    assert student.grad.abs().sum() > 0
    # equal distributions: KL is zero
    assert kd_kl(teacher, soft_targets(teacher, 2.0), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # one logit (the public reference's mistake) is refused rather than silently giving 0
    with pytest.raises(ValueError):
        kd_kl(torch.zeros(2, 1), torch.ones(2, 1), 2.0)


def test_ensemble_soft_targets_average_probabilities_not_logits():
    t = torch.tensor([[[4.0, 0.0]], [[0.0, 0.0]]])  # (K=2, B=1, 2)
    probs = soft_targets(t, 1.0)
    expected = (torch.softmax(t[0], -1) + torch.softmax(t[1], -1)) / 2
    assert torch.allclose(probs, expected)
    assert not torch.allclose(probs, torch.softmax(t.mean(0), -1))


def test_offset_loss_ignores_undefined_offsets():
    logits = torch.randn(3, 11, requires_grad=True)
    target = torch.tensor([3, OFFSET_IGNORE_INDEX, OFFSET_IGNORE_INDEX])
    ref = torch.nn.functional.cross_entropy(logits[:1], target[:1])
    assert offset_loss(logits, target).item() == pytest.approx(ref.item())
    none = offset_loss(logits, torch.full((3,), OFFSET_IGNORE_INDEX))
    assert none.item() == 0.0
    none.backward()  # still differentiable


def test_distillation_loss_components_and_weights():
    g = torch.Generator().manual_seed(0)
    out = ModelOutput(torch.randn(4, 2, generator=g), torch.randn(4, 11, generator=g),
                      torch.softmax(torch.randn(4, 16, 16, generator=g), -1))
    label = torch.tensor([0, 1, 1, 0])
    off = torch.tensor([5, 2, OFFSET_IGNORE_INDEX, 5])
    t_logits = torch.randn(2, 4, 2, generator=g)
    t_attn = torch.softmax(torch.randn(4, 16, 16, generator=g), -1)
    w = DistillWeights(alpha=0.3, beta=5.0, temperature=2.0, offset_weight=0.5)
    total, parts = distillation_loss(out, label, off, t_logits, t_attn, w)
    assert parts["kd"] > 0 and parts["attn"] > 0
    assert parts["align"] > 0
    expected = (0.3 * parts["ce"] + 0.7 * parts["kd"] + 5.0 * parts["attn"] + 0.5 * parts["offset"]
                + 1.0 * parts["align"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_alignment_loss_targets_the_sync_frame():
    from pinlite_edge.training.losses import alignment_loss

    eye = torch.eye(16).unsqueeze(0)  # audio step t attends to frame t
    shifted = torch.roll(torch.eye(16), shifts=-2, dims=1).unsqueeze(0)  # row t -> frame t-2 (cyclic)
    real = torch.tensor([5])  # offset 0
    late2 = torch.tensor([7])  # audio 2 frames late: step t is in sync with frame t-2
    assert alignment_loss(eye, real).item() == pytest.approx(0.0, abs=1e-6)
    assert alignment_loss(eye, late2).item() > 10  # all mass on the wrong frame
    assert alignment_loss(shifted, late2).item() == pytest.approx(0.0, abs=1e-6)
    assert alignment_loss(eye, torch.tensor([OFFSET_IGNORE_INDEX])).item() == 0.0


# --- state / data order ---------------------------------------------------------------------------------------------
def test_training_state_roundtrip_without_pickle(tmp_path):
    model = create_student("tiny", pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 16, 3, 64, 64), torch.randn(2, 64, 13)).logits.sum().backward()
    opt.step()
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    path = save_training_state(tmp_path / "s.safetensors", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                            "rng": rng_state()}, {"epoch": 3, "history": [{"a": 1}]})
    expected = (torch.rand(3), np.random.rand(2), random.random())
    parts, meta = load_training_state(path)
    assert meta == {"epoch": 3, "history": [{"a": 1}]}
    opt2 = torch.optim.AdamW(create_student("tiny", pretrained=False).parameters(), lr=1e-3)
    opt2.load_state_dict(parts["optimizer"])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"][0]["betas"] == tuple(s2["param_groups"][0]["betas"])
    for k in s1["state"]:
        assert torch.equal(s1["state"][k]["exp_avg"], s2["state"][k]["exp_avg"])
    set_rng_state(parts["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1])
    assert random.random() == expected[2]
    assert b"pickle" not in path.read_bytes()[:200]


def test_epoch_sampler_is_deterministic_resumable_and_shards():
    a = EpochSampler(20, seed=1, epoch=0).order()
    assert a == EpochSampler(20, seed=1, epoch=0).order()
    assert a != EpochSampler(20, seed=1, epoch=1).order()
    assert list(EpochSampler(20, seed=1, epoch=0, start=8)) == a[8:]
    r0 = EpochSampler(21, 1, 0, rank=0, world_size=2).order()
    r1 = EpochSampler(21, 1, 0, rank=1, world_size=2).order()
    assert len(r0) == len(r1) == 10 and not set(r0) & set(r1)


# --- pruning helpers ----------------------------------------------------------------------------------------------
def test_planned_steps_and_least_important_head():
    assert planned_steps((4, 4), 2, None) == 2
    assert planned_steps((4, 4), 2, 5) == 3
    with pytest.raises(UsageError, match="layers keeps at least one"):
        planned_steps((4, 4), 2, 1)
    for steps, target in ((0, None), (1, 8), (1, 9)):  # nothing to prune: a usage error too, naming the range
        with pytest.raises(UsageError, match=r"but nothing to prune .*--target-heads 2\.\.7"):
            planned_steps((4, 4), steps, target)
    model = create_student("tiny", pretrained=False)
    with torch.no_grad():
        model.blocks[1].attn.q_proj.weight[2 * 8:3 * 8] = 0.0  # head 2 of layer 1 (head_dim 8) becomes the weakest
    assert least_important_head(model)[:2] == (1, 2)
    scores = [torch.tensor([3.0, 1.0, 2.0, 5.0]), torch.tensor([0.5])]  # a one-head layer is never chosen
    assert least_important_head(model, scores) == (0, 1, 1.0)


def test_ablation_importance_finds_the_head_that_does_not_matter():
    torch.manual_seed(0)
    model = create_student("tiny", pretrained=False).eval()
    d = model.blocks[0].attn.head_dim
    with torch.no_grad():  # head 3 of layer 0 contributes nothing: its output-projection columns are zero
        model.blocks[0].attn.out_proj.weight[:, 3 * d:4 * d] = 0.0
    c = model.contract
    g = torch.Generator().manual_seed(1)
    batches = [{"frames": torch.randn(4, *c.frames_shape(), generator=g),
                "mfcc": torch.randn(4, *c.mfcc_shape(), generator=g), "label": torch.tensor([0, 1, 1, 0]),
                "offset_class": torch.tensor([5, 2, -100, 5])}]
    cfg = PruneConfig()
    scores = ablation_importance(model, batches, cfg, means=None)
    assert [len(s) for s in scores] == [4, 4]
    assert abs(float(scores[0][3])) < 1e-6  # removing it changes nothing
    assert sum(float(s.abs().sum()) for s in scores) > 1e-3  # the other heads do matter

    def loss(m):
        b = batches[0]
        return float(teacher_loss(m(b["frames"], b["mfcc"]), b["label"], b["offset_class"], cfg.offset_weight,
                                  cfg.align_weight)[0])

    trial = copy.deepcopy(model)
    trial.prune_heads({1: [2]})
    assert float(scores[1][2]) == pytest.approx(loss(trial) - loss(model), abs=1e-6)
    assert [b.attn.num_heads for b in model.blocks] == [4, 4]  # scoring does not touch the model


# --- end to end -----------------------------------------------------------------------------------------------------
def test_teacher_checkpoint_record(teacher_ckpt):
    rec = read_record(teacher_ckpt)
    assert rec["complete"] is True and rec["stage"] == "teacher"
    assert len(rec["history"]) == 1 and "val_accuracy" in rec["history"][0]
    assert set(rec["dataset_fingerprint"]) == {"train", "val"}
    assert rec["package_version"] and rec["config"]["seed"] == 0
    # where it ran, as run (the config's "auto" resolved); CUDA runs add the GPU and each epoch's allocator peak
    assert rec["runtime"] == {"device": "cpu", "amp": False, "gpu": None, "torch_threads": torch.get_num_threads()}
    assert "cuda_peak_mb" not in rec["history"][0]
    model, _ = load_checkpoint(teacher_ckpt)
    assert model.config.kind == "teacher"
    assert (teacher_ckpt.parent / "last.state.safetensors").is_file()


def test_same_seed_gives_identical_metrics(tmp_path):
    runs = [train_teacher(TeacherConfig(**tiny_kwargs(tmp_path / f"r{i}"), lr=1e-3)) for i in range(2)]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
    assert json.dumps(runs[0].best_metrics) == json.dumps(runs[1].best_metrics)  # NaN-safe (AUC of one class)
    w0, w1 = (load_checkpoint(r.best_path)[0].state_dict() for r in runs)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_refuses_to_overwrite_a_run_without_resume(teacher_ckpt):
    with pytest.raises(PinliteError, match="--resume"):
        train_teacher(TeacherConfig(**tiny_kwargs(teacher_ckpt.parent)))


def test_prune_refuses_a_target_out_of_range_before_preparing_data(tmp_path, monkeypatch):
    """--target-heads at or above the model's heads was a plain error (exit 1) after the data were prepared."""
    import pinlite_edge.training.prune as prune_mod

    student = save_checkpoint(tmp_path / "s.safetensors", create_student("tiny", pretrained=False),
                              {"kind": "student"})
    monkeypatch.setattr(prune_mod, "prepare", lambda cfg: pytest.fail("data prepared before refusing"))
    for option in ({"target_heads": 99}, {"importance": "loudest"}):
        with pytest.raises(UsageError):
            prune(PruneConfig(**tiny_kwargs(tmp_path / "pruned"), student=str(student), **option))


def test_checkpoint_arguments_name_the_mistake(teacher_ckpt, tmp_path, caplog):
    """A run folder given as --teacher said "do not exist"; too many prune steps said "cannot prune to -92 heads";
    a student given as a teacher passed without a word."""
    import logging

    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint.*best\.safetensors"):
        distill(DistillConfig(**tiny_kwargs(tmp_path / "d"), teachers=[str(teacher_ckpt.parent)]))
    with pytest.raises(PinliteError, match=r"--prune-steps 100 would leave .*--prune-steps can be 1\.\.6"):
        planned_steps([4, 4], 100, None)
    student = save_checkpoint(tmp_path / "s.safetensors", create_student("tiny", pretrained=False),
                              {"kind": "student"})
    caplog.set_level(logging.WARNING)
    from pinlite_edge.training.distill import warn_unless_kind

    warn_unless_kind([str(student)], "teacher", "--teacher")
    warn_unless_kind([str(teacher_ckpt)], "teacher", "--teacher")
    warned = [r.getMessage() for r in caplog.records if "holds a" in r.getMessage()]
    assert len(warned) == 1 and "holds a student, not a teacher" in warned[0]


def test_ctrl_c_says_whether_there_is_anything_to_resume(tmp_path, capsys):
    """Ctrl-C during data preparation said "continue with --resume" with nothing saved."""
    from pinlite_edge.training.cli import run_cli
    from pinlite_edge.training.engine import STATE_FILE

    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_cli(interrupted, tmp_path) == 130
    assert "nothing was saved" in capsys.readouterr().err
    (tmp_path / "older-run").mkdir()  # another run below --output is not this run's checkpoint
    (tmp_path / "older-run" / "best.safetensors").write_bytes(b"x")
    assert run_cli(interrupted, tmp_path) == 130
    assert "nothing was saved" in capsys.readouterr().err
    (tmp_path / "step1").mkdir()  # a prune run's step
    (tmp_path / "step1" / STATE_FILE).write_bytes(b"x")
    assert run_cli(interrupted, tmp_path) == 130
    assert "continue with --resume" in capsys.readouterr().err

    def terminated() -> None:  # kill, timeout, a scheduler's stop: it ended with exit 143 and no word
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    assert run_cli(terminated, tmp_path) == 143
    assert "terminated; continue with --resume" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["state", "best"])
def test_resume_refuses_damaged_saved_files_before_training(teacher_ckpt, tmp_path, damage):
    """A training state with flipped bytes was resumed from silently (it carried no hash); a damaged best.safetensors
    was found only after every remaining epoch, and its weights were lost."""
    from pinlite_edge.errors import CheckpointError
    from pinlite_edge.training.engine import STATE_FILE

    run = tmp_path / "run"
    shutil.copytree(teacher_ckpt.parent, run)
    victim = run / (STATE_FILE if damage == "state" else "best.safetensors")
    data = bytearray(victim.read_bytes())
    if damage == "state":
        data[-4096:] = b"\x7f" * 4096
    else:
        data = data[:len(data) // 2]
    victim.write_bytes(bytes(data))
    match = "cannot be resumed from" if damage == "state" else r"cannot resume: .*best.safetensors"
    with pytest.raises(CheckpointError, match=match):
        train_teacher(TeacherConfig(**tiny_kwargs(run), lr=1e-3, resume=True))


def test_resume_with_changed_settings_is_refused_naming_them(teacher_ckpt, tmp_path):
    """--resume with another --lr (or model option, teacher...) used to restore the old optimizer state and write a
    record naming the new settings."""
    from pinlite_edge.errors import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(teacher_ckpt.parent, run)
    with pytest.raises(CheckpointError, match=r"settings changed .*lr 0\.001 -> 0\.1"):
        train_teacher(TeacherConfig(**tiny_kwargs(run), lr=0.1, resume=True))
    with pytest.raises(CheckpointError, match="model_options"):
        train_teacher(TeacherConfig(**tiny_kwargs(run), lr=1e-3, resume=True, model_options={"dropout": 0.3}))
    # where it runs and how it reports may change; and how the weights were initialised (a run started when the
    # default was pretrained=False resumes under today's None: the weights come from the state)
    train_teacher(TeacherConfig(**{**tiny_kwargs(run), "progress": True, "num_workers": 0}, lr=1e-3, resume=True,
                                pretrained=False))


def test_distill_ensemble_with_cached_teacher_then_prune(tmp_path, teacher_ckpt):
    cache = tmp_path / "cache"
    cfg = DistillConfig(**tiny_kwargs(tmp_path / "student"), teachers=[str(teacher_ckpt), str(teacher_ckpt)],
                        cache_dir=str(cache))
    res = distill(cfg)
    rec = read_record(res.best_path)
    assert rec["complete"] and len(rec["teachers"]) == 2 and rec["distillation"]["alpha"] == 0.5
    # each teacher's own training data is in the student's record (it used to be its path and hash alone)
    assert rec["teachers"][0]["training_data"] == read_record(teacher_ckpt)["training_data"]
    assert "val_eps" in rec["history"][0] and -1.0 <= rec["history"][0]["val_eps"] <= 1.0
    assert len(list(cache.glob("teacher-*.safetensors"))) == 2  # train + val outputs of the (one) teacher

    source, _ = load_checkpoint(res.best_path)
    pres = prune(PruneConfig(**tiny_kwargs(tmp_path / "pruned"), student=str(res.best_path),
                             teachers=[str(teacher_ckpt)], cache_dir=str(cache), prune_steps=2,
                             importance="ablation"))
    pruned, prec = load_checkpoint(pres.best_path)
    assert sum(pruned.config.heads_per_layer) == sum(source.config.heads_per_layer) - 2
    assert count_parameters(pruned) < count_parameters(source)
    assert [s["step"] for s in prec["prune_steps"]] == [0, 1, 2]
    assert all("val_eps" in s and "val_accuracy" in s for s in prec["prune_steps"])
    assert all(s["removed"]["criterion"] == "ablation" and s["removed"]["replaced_by"] == "mean output"
               for s in prec["prune_steps"][1:])
    out = pruned(torch.randn(2, 16, 3, 64, 64), torch.randn(2, 64, 13))
    assert out.logits.shape == (2, 2) and out.attention.shape == (2, 16, 16)
    json.dumps(prec)  # the record is plain JSON
    # the pruned weights keep what the source student learned: its training data is part of the pruned model's
    assert prec["training_data"]["fine_tuned_from"] == rec["training_data"]
    # the shipped (pruned) student says how its backbone started, as the distilled one it came from does
    assert prec["backbone_pretrained"] is rec["backbone_pretrained"] is False
    for step in sorted(pres.best_path.parent.glob("step*/best.safetensors")):  # the steps' checkpoints too
        assert read_record(step)["training_data"]["fine_tuned_from"] == rec["training_data"], step

    # resumed with another student, the finished steps (made from the first one) used to be reused, and the record
    # named the second student as the source
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, create_student("tiny", pretrained=False), {})
    with pytest.raises(CheckpointError, match="cannot reuse the finished prune step .*student"):
        prune(PruneConfig(**tiny_kwargs(tmp_path / "pruned"), student=str(other), teachers=[str(teacher_ckpt)],
                          cache_dir=str(cache), prune_steps=2, importance="ablation", resume=True))


def test_cli_help_lists_the_shared_flags():
    from pinlite_edge.training import distill as distill_mod
    from pinlite_edge.training import prune as prune_mod
    from pinlite_edge.training import teacher as teacher_mod

    flags = ("--data", "--preset", "--epochs", "--batch-size", "--lr", "--seed", "--device", "--output", "--resume",
             "--num-workers", "torchrun")
    for mod, own in ((teacher_mod, ()), (distill_mod, ("--teacher", "--alpha", "--beta", "--temperature")),
                     (prune_mod, ("--student", "--prune-steps", "--target-heads", "--importance",
                                  "--compensation-clips"))):
        text = mod.build_parser().format_help()
        for flag in (*flags, *own):
            assert flag in text, (mod.__name__, flag)


def test_training_output_that_cannot_be_a_folder_is_one_line_before_any_data(tmp_path, monkeypatch, capsys,
                                                                             unusable_output_folders):
    """``teacher --output`` naming a file or /proc/x ended in a traceback, and only after the data was prepared."""
    from pinlite_edge.training import teacher

    monkeypatch.setattr(teacher, "prepare", lambda cfg: pytest.fail("data prepared before the --output check"))
    for out, code, message in unusable_output_folders:
        assert teacher.main(["--output", str(out), "--no-progress", "--device", "cpu"]) == code
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "--output" in err and "Traceback" not in err, err
    fresh = tmp_path / "new" / "run"  # checked, not left behind: a run that fails later leaves no empty folders
    monkeypatch.setattr(teacher, "prepare", lambda cfg: (_ for _ in ()).throw(PinliteError("no data")))
    assert teacher.main(["--output", str(fresh), "--no-progress", "--device", "cpu"]) == 1
    assert "no data" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_prune_output_a_file_or_another_run_is_a_usage_error_before_any_data(tmp_path, monkeypatch, capsys):
    """prune --output naming a file failed only after data preparation; another run there was exit 1, not 2."""
    from pinlite_edge.training import prune as prune_mod

    monkeypatch.setattr(prune_mod, "prepare", lambda cfg: pytest.fail("data prepared before the --output check"))
    student = save_checkpoint(tmp_path / "s.safetensors", create_student("tiny", pretrained=False), {})
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    (tmp_path / "old" / "step1").mkdir(parents=True)
    for out, message in ((a_file, "is a file, not a folder"), (tmp_path / "old", "already holds a pruning run")):
        assert prune_mod.main(["--student", str(student), "--output", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_resume_with_nothing_to_resume_warns_that_it_starts_from_scratch(tmp_path, caplog):
    """``teacher --resume --output DIR`` with nothing in DIR trained from scratch without a word."""
    import logging

    from pinlite_edge.training.engine import STATE_FILE, check_output

    with caplog.at_level(logging.WARNING):
        check_output(tmp_path / "run", resume=True)
        check_output(tmp_path / "step", resume=True, warn_fresh=False)  # a prune step not reached yet: quiet
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "holds no training run" in warned[0] and "from scratch" in warned[0]
    assert str(tmp_path / "run") in warned[0]
    caplog.clear()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STATE_FILE).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        check_output(tmp_path / "run", resume=True)
    assert not caplog.records


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    from pinlite_edge.training.distill import main

    rc = main(["--teacher", str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and "Traceback" not in err


def test_torchrun_gloo_two_processes_train_one_model(tmp_path):
    """The DDP code path on CPU: torchrun with 2 processes (gloo) trains, rank 0 writes one loadable checkpoint."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "pinlite_edge.training.teacher", "--device", "cpu",
           "--epochs", "1", "--batch-size", "2", "--no-progress", "--in-memory", "yes", "--output", str(out),
           *[a for k, v in TINY_DATA.items() for a in ("--data-option", f"{k}={v}")]]
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}  # torchrun's logs go to TMPDIR
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, rec = load_checkpoint(out / "best.safetensors")
    assert rec["complete"] and model.config.kind == "teacher"
    # each rank took half of the 8 training clips: 2 steps of batch 2 per epoch instead of 4
    assert rec["world_size"] == 2 and rec["steps_per_epoch"] == 2


@pytest.mark.parametrize("stage,extra", [("teacher", []), ("distill", ["--teacher", "missing.safetensors"])])
def test_a_bad_model_option_is_a_one_line_error_before_any_data_is_prepared(tmp_path, capsys, monkeypatch, stage,
                                                                            extra):
    """``sync_lags=20`` passes the config's own checks and fails only when the model is built (16-frame windows):
    still one line naming the option, and no dataset is touched."""
    import importlib

    from pinlite_edge.training import context

    module = importlib.import_module(f"pinlite_edge.training.{stage}")

    def no_data(*_a, **_k):
        raise AssertionError("data was prepared before the model options were checked")

    monkeypatch.setattr(context, "load_data", no_data)
    rc = module.main([*extra, "--model-option", "sync_lags=20", "--output", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "sync_lags must be between 1 and 12" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("stage,extra", [("teacher", []), ("distill", ["--teacher", "missing.safetensors"])])
def test_pretrained_on_a_backbone_without_imagenet_weights_names_the_flag(tmp_path, capsys, monkeypatch, stage, extra):
    """``--pretrained --preset tiny``: the student blamed "invalid model options {}" after preparing the data, the
    teacher ignored the flag. Now one line naming --pretrained, before any data."""
    import importlib

    from pinlite_edge.training import context

    module = importlib.import_module(f"pinlite_edge.training.{stage}")

    def no_data(*_a, **_k):
        raise AssertionError("data was prepared before --pretrained was checked")

    monkeypatch.setattr(context, "load_data", no_data)
    rc = module.main([*extra, "--preset", "tiny", "--pretrained", "--output", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--pretrained: no ImageNet weights exist for the tiny" in err and "Traceback" not in err, err
    assert "model options" not in err


def test_training_uses_imagenet_weights_found_on_disk_by_default(tmp_path, monkeypatch):
    """SPEC §2: pretrained backbones are used when torchvision's weights are on disk. The training stages defaulted
    to random weights (and then froze randomly initialised blocks) without a word; --no-pretrained still opts out."""
    from torchvision import models as tvm

    from pinlite_edge.training.config import DistillConfig, TeacherConfig
    from pinlite_edge.training.models import build_model

    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    stand_in = tvm.resnet18(weights=None).state_dict()  # stand-in ImageNet weights: only their presence matters
    torch.save(stand_in, checkpoints / Path(tvm.ResNet18_Weights.IMAGENET1K_V1.url).name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert TeacherConfig().pretrained is None and DistillConfig().pretrained is None
    teacher = build_model("teacher", "paper", None, TeacherConfig().pretrained)
    assert teacher.backbone_pretrained
    torch.testing.assert_close(teacher.frame_encoder.backbone[1][0].conv1.weight, stand_in["layer1.0.conv1.weight"])
    assert not build_model("teacher", "paper", None, False).backbone_pretrained


def test_a_negative_pair_weight_fails_before_any_data_is_prepared(tmp_path, capsys, monkeypatch):
    """--pair-weight was checked apart from the other options, after both splits had been prepared."""
    from pinlite_edge.training import context, teacher

    def no_data(*_a, **_k):
        raise AssertionError("data was prepared before --pair-weight was checked")

    monkeypatch.setattr(context, "load_data", no_data)
    rc = teacher.main(["--pair-weight", "-1", "--output", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--pair-weight must be a number >= 0 (0: off)" in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", ["teacher", "distill", "prune"])
def test_the_torchrun_example_in_each_help_parses(name):
    """The --help's multi-GPU example left out distill's --teacher and prune's --student: run as written, it stopped
    with 'the following arguments are required'."""
    import importlib
    import shlex

    module = importlib.import_module(f"pinlite_edge.training.{name}")
    parser = module.build_parser()
    (line,) = [ln for ln in parser.epilog.splitlines() if ln.strip().startswith("torchrun")]
    words = shlex.split(line)
    args = parser.parse_args(words[words.index(f"pinlite_edge.training.{name}") + 1:])
    assert args.output == "runs/x"


@pytest.mark.parametrize("options,words", [
    ({"preset": "huge"}, r"unknown --preset 'huge'; choose one of \['paper', 'tiny'\]"),  # was a plain ValueError
    ({"seed": 1.5}, r"--seed must be an integer in 0\.\.2\*\*32-1, got 1.5"),  # was TypeError in seed_everything
    ({"seed": "0"}, "--seed must be an integer"),
    ({"epochs": 2.0}, "--epochs must be an integer >= 1, got 2.0"),  # range(2.0): TypeError
    ({"in_memory": "maybe"}, "--in-memory must be one of auto, yes, no, got 'maybe'"),  # plain ValueError
    ({"in_memory": True}, "--in-memory must be one of auto, yes, no, got True"),  # AttributeError
    ({"data": None}, "--data must be a dataset spec"),  # TypeError in data/mix.py
    ({"data": ["synthetic", 5]}, "--data must be a dataset spec"),
    ({"resume": "no"}, "resume must be True or False, got 'no'"),  # counted as true
    ({"amp": "no"}, "amp must be True or False, got 'no'"),  # counted as true
    ({"pretrained": "yes"}, "pretrained must be True or False, got 'yes'"),
    ({"balance": "clases"}, "--balance must be one of auto, none, classes, got 'clases'"),  # after the data
    ({"train_split": "training"}, "train_split: unknown split 'training'"),  # DatasetError after seeding
    ({"device": 0}, r"unknown device 0; use auto, cpu or cuda \(or cuda:N\)"),  # trained on the default device
    ({"device": "cuda:x"}, "unknown device 'cuda:x'"),
    ({"cache_dir": 5}, "--cache-dir must be a folder path or None, got 5"),  # ignored, or a TypeError in a cache
    ({"model_options": {"sync_lags": 20}}, r"invalid model options \{'sync_lags': 20\}"),  # the CLI checked first
])
def test_train_config_check_names_a_value_no_run_can_use_before_any_data(tmp_path, monkeypatch, options, words):
    """The API path (train_teacher(TeacherConfig(...))) reached these only after seeding and preparing the data, or
    not at all (resume='no' and amp='no' counted as true)."""
    from pinlite_edge.training import context

    def no_data(*_a, **_k):
        raise AssertionError("data was prepared before the options were checked")

    monkeypatch.setattr(context, "load_data", no_data)
    monkeypatch.setattr(context, "seed_everything", no_data)
    with pytest.raises(UsageError, match=words):
        train_teacher(TeacherConfig(output=str(tmp_path / "o"), progress=False, **options))
    assert not (tmp_path / "o").exists()


def test_train_config_check_keeps_valid_values():
    for cfg in (TeacherConfig(in_memory="YES", data=["synthetic", "folder:x"], pretrained=None, seed=2**32 - 1,
                              device="CUDA:1", train_split="validation", cache_dir=Path("c")),
                DistillConfig(cache_teacher=False, preset="paper", pretrained=True, balance="none",
                              teachers=("a", Path("b"))),
                PruneConfig(amp=False, importance="ablation", student=Path("s"), device="cpu")):
        cfg.check()


@pytest.mark.parametrize("make,words", [
    (lambda o: DistillConfig(output=o, teachers="runs/teacher/best.safetensors"),
     "teachers must be a list of checkpoint paths, got 'runs/teacher/best.safetensors'"),  # read letter by letter
    (lambda o: PruneConfig(output=o, student="s.safetensors", importance="l2"), "--importance must be one of l1, "
     "ablation, got 'l2'"),  # after the student was read
])
def test_distill_and_prune_check_their_own_options_first(tmp_path, make, words):
    from pinlite_edge.training.prune import prune

    cfg = make(str(tmp_path / "o"))
    with pytest.raises(UsageError, match=words):
        (distill if isinstance(cfg, DistillConfig) else prune)(cfg)
    assert not (tmp_path / "o").exists()


def test_a_bad_model_option_is_a_usage_error_on_the_api_path_too():
    """frozen_blocks=99 froze the teacher's whole frame CNN and trained on; ffn_dim=0 trained without a feed-forward
    layer: UsageError naming the option, before any model is built."""
    from pinlite_edge.training.models import build_model

    with pytest.raises(UsageError, match=r"frozen_blocks must be a whole number in 0\.\.5"):
        build_model("teacher", "tiny", {"frozen_blocks": 99})
    with pytest.raises(UsageError, match="ffn_dim must be a whole number"):
        build_model("student", "tiny", {"ffn_dim": 0})
