"""Model configuration: one dataclass describes teacher and student, presets are small factory functions."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pinlite_edge.contract import InputContract, check_preset, contract_for_preset
from pinlite_edge.errors import UsageError
from pinlite_edge.utils.checks import is_finite_number, is_whole

#: the frame backbones and how many leading blocks each has for ``frozen_blocks`` to freeze (the stem counts as one)
BACKBONE_BLOCKS = {"resnet18": 5, "resnet_narrow": 5, "mobilenet_v3_small": 13}
BACKBONES = tuple(BACKBONE_BLOCKS)
#: the highest value of each size (the presets stay 8x or more below them): a mistyped size is refused before the
#: model is built, instead of allocating gigabytes first
MAX_SIZES = {"embed_dim": 2048, "head_dim": 256, "ffn_dim": 8192, "gru_hidden": 2048}
MAX_CONV_CHANNELS = 2048
MAX_LAYERS = 16
MAX_HEADS = 64
MAX_BACKBONE_WIDTH = 4.0
#: the narrowest backbone: below it ResNet-narrow's first stage (64 x width channels) would be clamped to its 8-channel
#: floor, so a smaller width (1e-9) silently built the same network as 0.125 (the tiny teacher's width)
MIN_BACKBONE_WIDTH = 0.125


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a PinPoint / PIN-Lite model (stored in every checkpoint and manifest)."""

    kind: str  # "teacher" | "student"
    preset: str  # "paper" | "tiny"
    backbone: str  # one of BACKBONES
    embed_dim: int
    heads_per_layer: tuple[int, ...]  # after pruning the layers may differ
    head_dim: int
    ffn_dim: int
    gru_hidden: int
    conv_channels: tuple[int, int] = (64, 128)
    backbone_width: float = 1.0  # MobileNetV3 width_mult, or ResNet width scale for resnet_narrow
    frozen_blocks: int = 0  # leading backbone blocks frozen (stem counts as one)
    dropout: float = 0.1
    relative_position_bias: bool = True  # learned audio-step-to-frame distance bias in every attention layer
    #: the frame CNN sees each frame AND its difference to the previous frame (6 input channels): lip motion is then
    #: a first-layer feature. Without it the tiny models memorise the few real training speakers instead of learning
    #: lip-audio synchrony (benchmarks/results/real_faces/). False for configs saved before the option existed.
    motion_input: bool = False
    #: with ``motion_input``, whether the frame itself is fed beside its difference; False feeds the difference only
    #: (3 channels): an appearance-free input, so the identity of the few real training speakers cannot be memorised
    #: (an option to test that idea; off in every preset)
    appearance_input: bool = True
    #: > 0: the model also sees the Pearson correlations of mouth motion with audio energy at lags -L..L video
    #: frames inside each window (``models.sync_features``: the classical synchrony cue, computed in the graph, no
    #: weights), fed through a small MLP into the pooled features both heads read. 5 in every preset: on 13 speakers
    #: held out by cross-validation it raised the students' mean scan AUC by 0.10-0.14 and cut the in-sync false
    #: positives at the operating point from 4 to 0 (benchmarks/results/real_faces_cv_sync/; paired clip by clip the
    #: AUC gain's 95% interval is -0.17 to +0.34, benchmarks/results/real_faces_cv_compare/, and the 6-clip test split
    #: contradicts it). 0 (off) for configs saved before the option existed.
    sync_lags: int = 0
    #: in training only, the share of samples whose sync cue is zeroed (the rest of the model must then decide alone,
    #: so it cannot lean on the cue where the cue says nothing); 0 (off) in every preset, and for older configs
    sync_dropout: float = 0.0
    #: with ``sync_lags``, the cue's peak contrast (the best correlation at a lag beyond +-2 frames minus the one at
    #: lag 0: the training-free baseline's own score, ``models.sync_features.SyncPeakContrast``) also reaches the
    #: pooled features, through one linear layer. Off in every preset: cross-validated, the students gained 0.02 mean
    #: AUC, under the 0.03 a pre-registered rule asked (benchmarks/results/real_faces_cv_sync_contrast/). False for
    #: configs saved before the option existed.
    sync_contrast: bool = False
    #: with ``sync_lags``, the cue's audio signal is a learned weighting of the MFCC coefficients (13 weights,
    #: starting at the first coefficient alone) instead of the first coefficient. Off in every preset: cross-validated,
    #: the students' mean AUC moved by +0.01 / -0.00 (benchmarks/results/real_faces_cv_sync_learned_audio/). False for
    #: older configs.
    sync_learned_audio: bool = False
    contract: InputContract = field(default_factory=InputContract)

    def __post_init__(self) -> None:
        """A :class:`UsageError` (a ``ValueError``) naming the first field no model can be built with."""
        if self.kind not in ("teacher", "student"):
            raise UsageError(f"kind must be 'teacher' or 'student', not {self.kind!r}")
        check_preset(self.preset)
        if self.backbone not in BACKBONES:
            raise UsageError(f"unknown backbone {self.backbone!r}; choose one of {BACKBONES}")
        for name, high in MAX_SIZES.items():
            if not is_whole(getattr(self, name), 1, high):
                raise UsageError(f"{name} must be a whole number in 1..{high}, got {getattr(self, name)!r}")
        heads = self.heads_per_layer
        if not isinstance(heads, tuple) or not 1 <= len(heads) <= MAX_LAYERS \
                or not all(is_whole(h, 1, MAX_HEADS) for h in heads):
            raise UsageError(f"heads_per_layer must be 1..{MAX_LAYERS} layers of 1..{MAX_HEADS} heads (every layer "
                             f"needs at least one head), got {heads!r}")
        channels = self.conv_channels
        if not isinstance(channels, tuple) or len(channels) != 2 \
                or not all(is_whole(c, 1, MAX_CONV_CHANNELS) for c in channels):
            raise UsageError(f"conv_channels must be two whole numbers in 1..{MAX_CONV_CHANNELS}, got {channels!r}")
        width = self.backbone_width
        if not is_finite_number(width) or not MIN_BACKBONE_WIDTH <= width <= MAX_BACKBONE_WIDTH:
            raise UsageError(f"backbone_width must be a number in {MIN_BACKBONE_WIDTH:g}..{MAX_BACKBONE_WIDTH:g}, "
                             f"got {width!r}")
        blocks = BACKBONE_BLOCKS[self.backbone]
        if not is_whole(self.frozen_blocks, 0, blocks):
            raise UsageError(f"frozen_blocks must be a whole number in 0..{blocks} (the {self.backbone} backbone "
                             f"has {blocks} blocks), got {self.frozen_blocks!r}")
        for name in ("dropout", "sync_dropout"):
            if not is_finite_number(getattr(self, name)) or not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name} must be a number in [0, 1), got {getattr(self, name)!r}")
        for name in ("relative_position_bias", "motion_input", "appearance_input", "sync_contrast",
                     "sync_learned_audio"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not self.appearance_input and not self.motion_input:
            raise UsageError("appearance_input=False leaves the frame encoder no input: it needs motion_input=True")
        if not is_whole(self.sync_lags, 0, math.inf):
            raise UsageError(f"sync_lags must be a non-negative integer (0: off), got {self.sync_lags!r}")
        if self.sync_contrast and self.sync_lags < 3:
            raise UsageError(f"sync_contrast needs the sync cue at lags beyond +-2 frames: sync_lags >= 3, got "
                             f"{self.sync_lags}")

    @property
    def num_layers(self) -> int:
        return len(self.heads_per_layer)

    @property
    def audio_tokens(self) -> int:
        steps = self.contract.mfcc_steps
        for _ in range(2):  # two stride-2 convolutions, kernel 3, padding 1
            steps = (steps + 1) // 2
        return steps

    def with_heads(self, heads_per_layer: tuple[int, ...]) -> "ModelConfig":
        return replace(self, heads_per_layer=tuple(int(h) for h in heads_per_layer))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads_per_layer"] = list(self.heads_per_layer)
        d["conv_channels"] = list(self.conv_channels)
        d["contract"] = self.contract.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["heads_per_layer"] = tuple(d["heads_per_layer"])
        d["conv_channels"] = tuple(d.get("conv_channels", (64, 128)))
        d["contract"] = InputContract.from_dict(d.get("contract", {}))
        d.setdefault("relative_position_bias", False)  # configs saved before the option existed had no bias
        d.setdefault("motion_input", False)  # nor a motion input
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def teacher_config(preset: str = "paper") -> ModelConfig:
    """PinPoint: ResNet-18 frames, BiGRU-256 audio, 3 gated cross-attention blocks of 8 heads at dim 256."""
    contract = contract_for_preset(preset)
    if preset == "paper":
        return ModelConfig(kind="teacher", preset=preset, backbone="resnet18", embed_dim=256, heads_per_layer=(8, 8, 8),
                           head_dim=32, ffn_dim=1280, gru_hidden=256, frozen_blocks=2, motion_input=True,
                           sync_lags=5, contract=contract)
    # tiny: ResNet family (BasicBlock) at 1/8 width and one block per stage, 64x64 frames; trained from scratch,
    # nothing frozen. The per-frame CNN is what costs CPU time (16 frames a clip), so it is kept narrow; the per-clip
    # parts (BiGRU, fusion FFN) are wider, which keeps the teacher larger than the tiny student (~356 k vs ~315 k
    # params) at about half the training cost of a 1/4-width CNN. No dropout: the synthetic task is learnt in a few
    # epochs and regularisation only slows that down (benchmarks/results/learnability/).
    return ModelConfig(kind="teacher", preset=preset, backbone="resnet_narrow", backbone_width=0.125, embed_dim=64,
                       heads_per_layer=(8, 8, 8), head_dim=8, ffn_dim=256, gru_hidden=96, conv_channels=(32, 64),
                       frozen_blocks=0, dropout=0.0, motion_input=True, sync_lags=5, contract=contract)


def student_config(preset: str = "paper") -> ModelConfig:
    """PIN-Lite: MobileNetV3-Small frames, BiGRU-128 audio, 2 blocks of 4 heads at dim 128."""
    contract = contract_for_preset(preset)
    if preset == "paper":
        return ModelConfig(kind="student", preset=preset, backbone="mobilenet_v3_small", embed_dim=128,
                           heads_per_layer=(4, 4), head_dim=32, ffn_dim=512, gru_hidden=128, frozen_blocks=4,
                           motion_input=True, sync_lags=5, contract=contract)
    # tiny: MobileNetV3-Small at width 0.5, 64x64 frames, 2 blocks of 4 heads (so pruning 4 -> 2 heads works).
    return ModelConfig(kind="student", preset=preset, backbone="mobilenet_v3_small", backbone_width=0.5, embed_dim=32,
                       heads_per_layer=(4, 4), head_dim=8, ffn_dim=64, gru_hidden=32, conv_channels=(32, 64),
                       frozen_blocks=0, dropout=0.0, motion_input=True, sync_lags=5, contract=contract)
