"""The in-graph synchrony cue (``sync_lags``): the baseline's signals and correlation, its sign, silence, wiring, export."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks.sync_baseline import BaselineConfig, lagged_correlation, mouth_motion, score_correlation
from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.models import ModelConfig, create_model, student_config, teacher_config
from pinlite_edge.models.sync_features import LaggedSyncFeatures, SyncPeakContrast


def _normalise(crops: np.ndarray) -> torch.Tensor:
    """uint8 RGB crops ``(T, S, S, 3)`` -> one normalised model window ``(1, T, 3, S, S)``, as the pipeline feeds it."""
    c = TINY_CONTRACT
    x = crops.astype(np.float32) / 255.0
    x = (x - np.asarray(c.mean, np.float32)) / np.asarray(c.std, np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())[None]


def _talking_window(delay: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A mouth opening and closing at random; the MFCC energy row is loud while the mouth moves, ``delay`` frames
    later (audio delayed by ``delay``). Returns one window's normalised frames and MFCC."""
    rng = np.random.default_rng(seed)
    t, s = TINY_CONTRACT.num_frames, TINY_CONTRACT.frame_size
    crops = np.full((t + 12, s, s, 3), 90, np.uint8)
    for i, h in enumerate(rng.integers(2, 14, size=t + 12)):  # mouth opening in pixels, lower centre of the crop
        crops[i, 44 - h // 2:44 + (h + 1) // 2, 24:40] = 20
    motion = mouth_motion(crops, BaselineConfig())
    energy = motion[6 - delay:6 - delay + t]  # energy[j] = motion[j + 6 - delay]: picture j sounds at j + delay
    mfcc = rng.normal(size=(1, TINY_CONTRACT.mfcc_steps, TINY_CONTRACT.num_mfcc)).astype(np.float32)
    mfcc[0, :, 0] = np.repeat(energy, TINY_CONTRACT.mfcc_steps // t)
    return _normalise(crops[6:6 + t]), torch.from_numpy(mfcc)


def test_motion_is_the_baselines_and_the_correlation_is_its_lagged_pearson():
    frames, mfcc = _talking_window(3)  # not 0: an autocorrelation is symmetric and would hide a flipped lag sign
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8)
    feats = LaggedSyncFeatures(TINY_CONTRACT, 5)
    motion = feats.mouth_motion(_normalise(crops))[0].double().numpy()
    # the baseline works on uint8 grey levels, the model on normalised frames: the same motion / 255
    np.testing.assert_allclose(motion * 255.0, mouth_motion(crops, BaselineConfig()), rtol=1e-4)
    m, e = feats.mouth_motion(frames), feats.audio_energy(mfcc)
    np.testing.assert_allclose(e[0].numpy(), mfcc[0, ::4, 0].numpy(), rtol=1e-6)  # 4 equal MFCC steps per frame
    lags, ref = lagged_correlation(m[0].double().numpy(), e[0].double().numpy(), 5, min_overlap=4)
    np.testing.assert_allclose(feats(frames, mfcc)[0].double().numpy(), ref, atol=1e-4)
    assert lags.tolist() == list(range(-5, 6))


@pytest.mark.parametrize("delay", [-3, 0, 2, 4])
def test_correlation_peaks_at_the_audio_delay(delay):
    frames, mfcc = _talking_window(delay, seed=delay + 10)
    corr = LaggedSyncFeatures(TINY_CONTRACT, 5)(frames, mfcc)[0]
    assert int(torch.argmax(corr)) - 5 == delay
    assert float(corr.max()) > 0.9


def test_a_still_mouth_or_silence_gives_zeros_not_nan():
    frames, mfcc = _talking_window(0)
    feats = LaggedSyncFeatures(TINY_CONTRACT, 5)
    still = frames[:, :1].expand_as(frames).contiguous()
    silent = mfcc.clone()
    silent[:, :, 0] = -3.0
    for f, a in ((still, mfcc), (frames, silent)):
        out = feats(f, a)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, torch.zeros_like(out))


def test_lags_must_fit_the_window():
    for bad in (0, 13):
        with pytest.raises(ValueError, match="sync_lags must be between 1 and 12"):
            LaggedSyncFeatures(TINY_CONTRACT, bad)
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="sync_lags must be a non-negative integer"):
            replace(student_config("tiny"), sync_lags=bad)


def test_model_with_sync_lags_reads_the_cue_and_old_configs_load_without_it():
    cfg = replace(student_config("tiny"), sync_lags=5)
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    in_sync, mfcc = _talking_window(0)
    _, delayed = _talking_window(4)
    out, shifted = model(in_sync, mfcc), model(in_sync, delayed)
    plain = create_model(replace(cfg, sync_lags=0)).eval()
    assert plain.sync_features is None and plain.sync_proj is None
    assert {f(p).sync_lags for f in (student_config, teacher_config) for p in ("tiny", "paper")} == {5}
    # the cue reaches the heads: zeroing its MLP's last layer changes the logits
    with torch.no_grad():
        before = model(in_sync, mfcc).logits.clone()
        model.sync_proj[-1].weight.zero_()
        model.sync_proj[-1].bias.zero_()
        after = model(in_sync, mfcc).logits
    assert not torch.allclose(before, after)
    assert out.logits.shape == shifted.logits.shape == (1, 2)
    old = cfg.to_dict()
    del old["sync_lags"]  # a config saved before the option existed
    assert ModelConfig.from_dict(old).sync_lags == 0
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


VARIANTS = [{}, {"sync_contrast": True}, {"sync_learned_audio": True}]


@pytest.mark.parametrize("options", VARIANTS, ids=["cue", "contrast", "learned-audio"])
def test_onnx_export_of_a_model_with_the_cue_matches_torch(tmp_path, options):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.export import export_model
    from pinlite_edge.runtimes.ort.loader import create_session

    torch.manual_seed(0)
    model = create_model(replace(student_config("tiny"), sync_lags=5, **options)).eval()
    if model.sync_features.audio_weights is not None:  # away from the start, so the export must carry the weights
        with torch.no_grad():
            model.sync_features.audio_weights.add_(torch.linspace(-0.5, 0.5, TINY_CONTRACT.num_mfcc))
    ckpt = tmp_path / "best.safetensors"
    save_checkpoint(ckpt, model, {"note": "test"})
    art = export_model(ckpt, "onnx", tmp_path / "onnx")
    frames, mfcc = _talking_window(2)
    frames = torch.cat([frames, frames.flip(1)])
    mfcc = torch.cat([mfcc, mfcc])
    with torch.no_grad():
        want = model(frames, mfcc).logits.numpy()
    got = create_session(art.artifact).run(["logits"], {"frames": frames.numpy(), "mfcc": mfcc.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("options", VARIANTS, ids=["cue", "contrast", "learned-audio"])
def test_the_cue_stays_float_in_the_executorch_int8_program(options):
    """PT2E INT8 (XNNPACKQuantizer) with the export's plan: no Q/DQ touches the cue (``_record_precision`` raises on
    any; the full .pte export is a slow test). The quantizer annotates every ``cat`` whatever module it sits in,
    which once rounded the cue's motion signal to int8."""
    pytest.importorskip("executorch")
    from pinlite_edge.export import executorch as ex
    from pinlite_edge.export.plan import build_plan
    from pinlite_edge.export.prepare import TupleOutputs, prepare_for_export
    from pinlite_edge.models.inputs import example_inputs
    from pinlite_edge.runtimes.executorch.loader import register_quantized_kernels

    torch.manual_seed(0)
    model = create_model(replace(student_config("tiny"), **options)).eval()
    plan = build_plan(model, "int8", extra=ex.attention_input_entries(model))

    class Calibration:
        def batches(self, batch):
            for seed in range(2):
                yield (t.numpy() for t in _talking_window(seed % 3, seed=seed))

    wrapped = TupleOutputs(prepare_for_export(model, gru="matmul")).eval()
    example = tuple(t.contiguous() for t in example_inputs(model, 1))
    register_quantized_kernels()
    quantized = ex._quantize_pt2e(wrapped, example, plan, Calibration())
    ex._record_precision(plan, torch.export.export(quantized, example, strict=False))
    report = plan.graph_precision["exported_program"]
    assert "sync_cue:sync_features" in report["verifies"] and report["violations"] == []
    assert ("sync_cue:sync_contrast" in report["verifies"]) == bool(options.get("sync_contrast"))


def test_sync_dropout_zeroes_the_cue_of_whole_samples_in_training_only():
    cfg = replace(student_config("tiny"), sync_dropout=0.5)
    torch.manual_seed(0)
    model = create_model(cfg)
    cues, pooled = [], []
    model.sync_proj.register_forward_hook(lambda _m, _a, out: cues.append(out.detach()))
    model.cls_head.register_forward_pre_hook(lambda _m, args: pooled.append(args[0].detach()))
    frames, mfcc = _talking_window(1)
    frames, mfcc = frames.repeat(64, 1, 1, 1, 1), mfcc.repeat(64, 1, 1)
    model.train()  # 64 identical samples: their features differ only by whether the cue was kept
    model(frames, mfcc)
    rows, cue = pooled[0], cues[0][0]
    same_as_first = torch.isclose(rows, rows[:1], atol=1e-6).all(dim=1)
    other = rows[~same_as_first]
    assert 10 < other.shape[0] < 54  # about half of the samples lost the cue
    diff = rows[0] - other[0]
    assert torch.allclose(diff.abs(), cue.abs(), atol=1e-5)  # they differ by exactly the cue, whole samples
    model.eval()
    pooled.clear()
    model(frames, mfcc)
    assert torch.isclose(pooled[0], pooled[0][:1], atol=1e-6).all()  # inference: every sample keeps it
    with pytest.raises(ValueError, match="sync_dropout must be a number in"):
        replace(cfg, sync_dropout=1.0)
    old = cfg.to_dict()
    del old["sync_dropout"]
    assert ModelConfig.from_dict(old).sync_dropout == 0.0


def test_peak_contrast_is_the_baselines_sync_score():
    torch.manual_seed(0)
    corr = torch.rand(6, 11) * 2 - 1
    corr[0] = 0.0  # no evidence either way: 0
    got = SyncPeakContrast(5)(corr)[:, 0].numpy()
    lags = np.arange(-5, 6)
    want = [score_correlation(lags, c.double().numpy(), BaselineConfig(exclude_lag=2)).sync_score for c in corr]
    np.testing.assert_allclose(got, want, atol=1e-6)
    # in sync it is low; audio delayed past the excluded lags makes it high
    feats = LaggedSyncFeatures(TINY_CONTRACT, 5)
    in_sync, delayed = (SyncPeakContrast(5)(feats(*_talking_window(d))).item() for d in (0, 4))
    assert in_sync < 0 < delayed
    with pytest.raises(ValueError, match="sync_lags must be at least 3"):
        SyncPeakContrast(2)


def test_model_with_sync_contrast_reads_it_and_old_configs_load_without_it():
    cfg = replace(student_config("tiny"), sync_contrast=True)
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    frames, mfcc = _talking_window(4)
    with torch.no_grad():
        before = model(frames, mfcc).logits.clone()
        model.sync_contrast_proj.weight.zero_()
        model.sync_contrast_proj.bias.zero_()
        after = model(frames, mfcc).logits
    assert not torch.allclose(before, after)  # the contrast reaches the heads
    assert create_model(replace(cfg, sync_contrast=False)).sync_contrast is None
    with pytest.raises(ValueError, match="sync_lags >= 3"):
        replace(cfg, sync_lags=2)
    with pytest.raises(ValueError, match="sync_contrast must be true or false"):
        replace(cfg, sync_contrast=1)
    old = cfg.to_dict()
    del old["sync_contrast"]
    assert ModelConfig.from_dict(old).sync_contrast is False
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_learned_audio_starts_at_the_first_coefficient_and_learns():
    fixed = LaggedSyncFeatures(TINY_CONTRACT, 5)
    learned = LaggedSyncFeatures(TINY_CONTRACT, 5, learned_audio=True)
    frames, mfcc = _talking_window(3)
    torch.testing.assert_close(learned(frames, mfcc), fixed(frames, mfcc))  # same cue before training
    learned(frames, mfcc)[0, 5 + 3].backward()
    assert learned.audio_weights.grad is not None and learned.audio_weights.grad[1:].abs().sum() > 0
    cfg = replace(student_config("tiny"), sync_learned_audio=True)
    model = create_model(cfg)
    assert any(name == "sync_features.audio_weights" for name, _ in model.named_parameters())
    assert create_model(student_config("tiny")).sync_features.audio_weights is None
    old = cfg.to_dict()
    del old["sync_learned_audio"]
    assert ModelConfig.from_dict(old).sync_learned_audio is False
    with pytest.raises(ValueError, match="sync_learned_audio must be true or false"):
        replace(cfg, sync_learned_audio="yes")
