"""One typed configuration, built from ``params.yaml``; unknown or missing keys are errors.

Every stage reads its slice through :func:`load_config`, so a typo in ``params.yaml`` or in
``dvc exp run -S`` fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from tavse.common.rates import FPS, SAMPLE_RATE


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


def bounded(
    lo: float | None = None,
    hi: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    nonempty: bool = False,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field whose value (each item, for a list) must be in range; checked in :func:`_build`.

    ``lo``/``hi`` are inclusive bounds, ``above``/``below`` exclusive ones; ``nonempty`` for lists.
    With a ``default`` the key may be left out of params.yaml.
    """
    return dataclasses.field(default=default, metadata={"range": (lo, hi, above, below), "nonempty": nonempty})


def _check_range(where: str, value: Any, meta: Any) -> None:
    if meta.get("nonempty") and isinstance(value, (list, dict)) and not value:
        raise ConfigError(f"{where}: must not be empty")
    if "range" not in meta:
        return
    lo, hi, above, below = meta["range"]
    for i, v in enumerate(value if isinstance(value, list) else [value]):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        if (
            (lo is not None and v < lo)
            or (hi is not None and v > hi)
            or (above is not None and v <= above)
            or (below is not None and v >= below)
        ):
            allowed = " and ".join(
                t
                for t in (
                    lo is not None and f">= {lo:g}",
                    above is not None and f"> {above:g}",
                    hi is not None and f"<= {hi:g}",
                    below is not None and f"< {below:g}",
                )
                if t
            )
            raise ConfigError(f"{at}: {v!r} is out of range (must be {allowed})")


_C = typing.TypeVar("_C")


@typing.dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, bounded))
def _section(cls: type[_C]) -> type[_C]:
    """``@dataclass(frozen=True)``, declaring :func:`bounded` a field specifier to type checkers.

    So ``x: int = bounded(1)`` reads as a field without a default, as it is at run time, rather than
    one whose default is what ``bounded`` returns.
    """
    return dataclass(frozen=True)(cls)


@_section
class SynthPreset:
    """Size of the synthetic SpeakingFaces corpus."""

    train_speakers: int = bounded(1)
    val_speakers: int = bounded(1)
    test_speakers: int = bounded(1)
    commands_per_speaker: int = bounded(1)
    positions: list[int] = bounded(1, 9, nonempty=True)  # SpeakingFaces camera positions


@_section
class SynthConfig:
    """The embedded synthetic SpeakingFaces-format corpus."""

    preset: str
    presets: dict[str, SynthPreset]
    out_dir: str
    workers: int = bounded(1)
    mouth_lag_frames: list[int] = bounded(0, 7)
    mouth_jitter: float = bounded(0.0, 1.0)

    @property
    def size(self) -> SynthPreset:
        return self.presets[self.preset]


@_section
class SynthNoiseConfig:
    """The embedded synthetic DEMAND-format noise corpus."""

    out_dir: str
    environments: list[str] = bounded(nonempty=True)
    duration_s: float = bounded(above=0.0)
    channels: int = bounded(1, 16)


@_section
class DataConfig:
    """Where the corpora are and how speakers are split."""

    speakingfaces_dir: str
    subjects_csv: str
    demand_dir: str
    speaker_split: str
    speaker_splits: dict[str, dict[str, list[int]]]

    def split_of(self, speaker_id: int) -> str | None:
        """Name of the split holding ``speaker_id`` under the chosen speaker split, or None."""
        for name, (lo, hi) in self.speaker_splits[self.speaker_split].items():
            if lo <= speaker_id <= hi:
                return name
        return None


@_section
class IngestConfig:
    """``ingest``: archives → mouth-ROI LMDBs, 16 kHz audio, manifests."""

    # The keys that shape what a model is trained on: train@ declares and stores them (best.pt),
    # so that `enhance` crops a user's video exactly as ingest cropped the training data.
    MODEL_INPUT_KEYS: ClassVar[tuple[str, ...]] = (
        "roi_size",
        "box_scale",
        "smooth_frames",
        "landmark_stride",
        "min_detection_ratio",
        "frame_tolerance",
        "sample_rate",
        "fps",
    )

    out_dir: str
    report: str
    roi_size: int = bounded(8, 512)
    box_scale: float = bounded(above=0.0)
    smooth_frames: int = bounded(1)
    landmark_stride: int = bounded(1)
    min_detection_ratio: float = bounded(0.0, 1.0)
    frame_tolerance: int = bounded(0)
    on_error: Literal["skip", "fail"]
    max_skip_ratio: float = bounded(0.0, 1.0)  # skipped / (skipped + ingested) utterances above this: ingest fails
    max_palette_residual: float = bounded(
        above=0.0
    )  # thermal median distance to the Iron palette above this: thermal_not_iron
    workers: int = bounded(1)
    # Not choices: params.yaml states them, and they must equal tavse.common.rates, which every
    # stage uses (the models, mixtures and PESQ/STOI take 16 kHz; video keeps SpeakingFaces' rate).
    sample_rate: int = bounded(SAMPLE_RATE, SAMPLE_RATE)
    fps: int = bounded(FPS, FPS)


@_section
class NoiseConfig:
    """``noise``: DEMAND → 16 kHz noise split by environment."""

    out_dir: str
    report: str
    channels: list[int] = bounded(1, 16, nonempty=True)  # DEMAND has 16 microphones
    splits: dict[str, list[str]]


@_section
class ModelSize:
    """Widths of one model size (``model.sizes.<name>``)."""

    unet_channels: list[int] = bounded(1, nonempty=True)  # encoder widths, one per U-Net level
    visual_trunk: Literal["resnet18", "compact"]  # torchvision ResNet-18, or a narrow ResNet for CPUs
    visual_width: int = bounded(1)  # base width of the compact trunk (resnet18: 64)
    gru_hidden: int = bounded(1)  # visual BiGRU, per direction
    gru_layers: int = bounded(1)
    audio_gru_hidden: int = bounded(1)  # the audio bottleneck's one-layer BiGRU, per direction (every variant)
    fusion_dim: int = bounded(1)
    fusion_heads: int = bounded(1)


@_section
class ModelConfig:
    """The one TAVSE model; which visual streams it sees and how they are fused come from the variant."""

    size: str
    sizes: dict[str, ModelSize]
    n_fft: int = bounded(16)
    win_length: int = bounded(1)
    hop_length: int = bounded(1)

    @property
    def dims(self) -> ModelSize:
        return self.sizes[self.size]


FusionType = Literal["cross_attention", "concat", "film"]
STREAMS = ("rgb", "thermal")  # the visual streams, in the order a model takes them


@_section
class VariantConfig:
    """One variant of the study (``variants.<name>``): what its model sees and how.

    Per variant, so that an experiment that changes one variant re-trains only that one.
    """

    streams: list[Literal["rgb", "thermal"]]  # visual streams, in STREAMS order; [] for audio only
    fusion: FusionType | None = None  # how the streams enter the audio bottleneck (visual variants)
    modality_dropout: float = bounded(0.0, below=1.0, default=0.0)  # training-time probability of zeroing
    # each stream, never all at once (two or more streams)


@_section
class BabbleConfig:
    """Training-time babble from other training speakers in a room (``tavse.data.babble``)."""

    prob: float = bounded(0.0, 1.0)  # share of training samples whose noise is babble
    talkers: list[int] = bounded(1, 32)  # [min, max] simultaneous talkers
    gain_db: list[float] = bounded(-40.0, 20.0)  # [min, max] per-talker gain
    rt60_s: list[float] = bounded(0.05, 3.0)  # [min, max] room reverberation time


@_section
class MixConfig:
    """How training mixtures are made: at which SNRs, and how often with babble instead of the split's noise."""

    snrs_db: list[float] = bounded(-50.0, 50.0, nonempty=True)
    babble: BabbleConfig


@_section
class ValidationConfig:
    """The frozen validation mixture list (``val_mixtures`` stage), shared by every variant."""

    out: str
    segments_per_utterance: int = bounded(1)
    snrs_db: list[float] = bounded(-50.0, 50.0, nonempty=True)


@_section
class TrainConfig:
    """The one training recipe of every variant (identical steps, batch and warm-up)."""

    seed: int = bounded(0)  # weights, sample order, augmentation draws; the corpus and lists keep the top-level seed
    segment_frames: int = bounded(7)  # 70 = 2.5 s; a multiple of 7 so segments land on whole 16 kHz samples
    batch_size: int = bounded(1)
    grad_accum: int = bounded(1)  # effective batch = batch_size x grad_accum, split over the GPUs (any count)
    max_steps: int = bounded(1)  # optimiser steps
    warmup_steps: int = bounded(0)
    lr: float = bounded(above=0.0)
    min_lr_ratio: float = bounded(0.0, 1.0)  # cosine decays to lr x this
    weight_decay: float = bounded(0.0)
    grad_clip: float = bounded(above=0.0)
    precision: Literal[
        "auto", "fp32", "bf16"
    ]  # autocast: auto = bf16 on GPUs (fp16 + scaler without bf16) and on CPUs with bf16 units
    eval_every: int = bounded(1)  # optimiser steps between validations
    patience: int = bounded(1)  # validations without improvement before early stop
    checkpoint_every: int = bounded(1)  # optimiser steps between resumable-state saves
    num_workers: int = bounded(0)
    out_dir: str  # models/<variant>/ : best.pt, summary.json
    dvclive_dir: str  # dvclive/<variant>/


@_section
class EvaluationConfig:
    """Frozen whole-utterance test mixtures, metrics, statistics and listening samples."""

    test_mixtures: str  # the frozen test list, shared by every variant and experiment
    mixtures_per_utterance: int = bounded(1)
    snrs_db: list[float] = bounded(-50.0, 50.0, nonempty=True)
    out_dir: str  # results/<variant>/, results/reference/, results/compare.*
    workers: int = bounded(1)  # metric processes
    bootstrap: int = bounded(100)  # resamples for the 95% CIs
    samples: int = bounded(0)  # test mixtures to listen to (FLAC, spectrograms, mouth crops) per system


@_section
class Config:
    """The whole of params.yaml."""

    seed: int = bounded(0)
    synth: SynthConfig
    synth_noise: SynthNoiseConfig
    data: DataConfig
    ingest: IngestConfig
    noise: NoiseConfig
    variants: dict[str, VariantConfig]
    model: ModelConfig
    mix: MixConfig
    validation: ValidationConfig
    train: TrainConfig
    evaluation: EvaluationConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(tp: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to type ``tp`` recursively, rejecting unknown and missing keys."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {names}")
        missing = [
            f.name
            for f in dataclasses.fields(tp)
            if f.name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {missing}")
        built = {}
        for f in dataclasses.fields(tp):
            if f.name not in value:
                continue  # has a default
            built[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}")
            _check_range(f"{where}.{f.name}", built[f.name], f.metadata)
        return typing.cast(type, tp)(**built)  # a dataclass type: is_dataclass admits instances too
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        (inner,) = [t for t in typing.get_args(tp) if t is not type(None)]
        return None if value is None else _build(inner, value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_build(kt, k, where): _build(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # a bug in this module, not in params


def _check(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    if cfg.synth.preset not in cfg.synth.presets:
        raise ConfigError(f"synth.preset: {cfg.synth.preset!r} not in {sorted(cfg.synth.presets)}")
    if cfg.data.speaker_split not in cfg.data.speaker_splits:
        raise ConfigError(f"data.speaker_split: {cfg.data.speaker_split!r} not in {sorted(cfg.data.speaker_splits)}")
    for name, ranges in cfg.data.speaker_splits.items():
        if sorted(ranges) != ["test", "train", "val"]:
            raise ConfigError(f"data.speaker_splits.{name}: needs exactly train, val and test")
        for split, rng in ranges.items():
            if len(rng) != 2 or rng[0] > rng[1]:
                raise ConfigError(f"data.speaker_splits.{name}.{split}: expected [first, last]")
    envs = [e for split in cfg.noise.splits.values() for e in split]
    dup = sorted({e for e in envs if envs.count(e) > 1})
    if dup:
        raise ConfigError(f"noise.splits: environment(s) {dup} listed in more than one split")
    if cfg.model.size not in cfg.model.sizes:
        raise ConfigError(f"model.size: {cfg.model.size!r} not in {sorted(cfg.model.sizes)}")
    for name, size in cfg.model.sizes.items():
        if size.fusion_dim % size.fusion_heads:
            raise ConfigError(
                f"model.sizes.{name}.fusion_dim: {size.fusion_dim} is not a multiple of "
                f"fusion_heads ({size.fusion_heads})"
            )
    m = cfg.model
    if not m.hop_length <= m.win_length <= m.n_fft:
        raise ConfigError(
            f"model: need hop_length <= win_length <= n_fft, got {m.hop_length}, {m.win_length}, {m.n_fft}"
        )
    lag = cfg.synth.mouth_lag_frames
    if len(lag) != 2 or lag[0] > lag[1]:
        raise ConfigError(f"synth.mouth_lag_frames: expected [min, max] with min <= max, got {lag}")
    envs = cfg.synth_noise.environments
    if len(set(envs)) != len(envs):
        raise ConfigError(f"synth_noise.environments: listed twice: {sorted({e for e in envs if envs.count(e) > 1})}")
    if sorted(cfg.noise.splits) != ["test", "train", "val"]:
        raise ConfigError(f"noise.splits: needs exactly train, val and test, got {sorted(cfg.noise.splits)}")
    for split, names in cfg.noise.splits.items():
        if not names:
            raise ConfigError(f"noise.splits.{split}: must list at least one environment")
    if not cfg.variants:
        raise ConfigError("variants: must declare at least one variant")
    for name, v in cfg.variants.items():
        if v.streams != [m for m in STREAMS if m in v.streams] or len(set(v.streams)) != len(v.streams):
            raise ConfigError(
                f"variants.{name}.streams: each of {list(STREAMS)} at most once, in that order; got {v.streams}"
            )
        if v.streams and v.fusion is None:
            raise ConfigError(
                f"variants.{name}.fusion: required for a variant with visual streams "
                f"({' | '.join(typing.get_args(FusionType))})"
            )
        if not v.streams and v.fusion is not None:
            raise ConfigError(f"variants.{name}.fusion: {v.fusion!r} given, but an audio-only variant has no fusion")
        if v.modality_dropout and len(v.streams) < 2:
            raise ConfigError(
                f"variants.{name}.modality_dropout: {v.modality_dropout:g} needs two or more streams "
                "(it zeroes streams, never all of them)"
            )
    for key in ("talkers", "gain_db", "rt60_s"):
        pair = getattr(cfg.mix.babble, key)
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ConfigError(f"mix.babble.{key}: expected [min, max] with min <= max, got {pair}")
    tc = cfg.train
    if tc.segment_frames % 7:
        raise ConfigError(
            f"train.segment_frames: {tc.segment_frames} is not a multiple of 7 (7 frames = 4000 samples at 16 kHz)"
        )
    if tc.warmup_steps >= tc.max_steps:
        raise ConfigError(f"train.warmup_steps: {tc.warmup_steps} must be below train.max_steps ({tc.max_steps})")
    if tc.eval_every > tc.max_steps:
        raise ConfigError(
            f"train.eval_every: {tc.eval_every} exceeds train.max_steps ({tc.max_steps}): "
            "the run would never validate, so no best model could be chosen"
        )


def config_from_dict(params: dict[str, Any]) -> Config:
    """Build and check a :class:`Config` from a parsed params.yaml mapping."""
    cfg = _build(Config, params, "params")
    _check(cfg)
    return cfg


def section_from_dict(cls: type, value: dict[str, Any], name: str) -> Any:
    """One section alone (e.g. ``ModelConfig`` as stored in a checkpoint), checked like params.yaml."""
    cfg = _build(cls, value, name)
    if isinstance(cfg, ModelConfig) and cfg.size not in cfg.sizes:
        raise ConfigError(f"model.size: {cfg.size!r} not in {sorted(cfg.sizes)}")
    return cfg


class StageParams:
    """A read-only view of a config that lets a stage read only the params it declares.

    ``dvc.yaml`` decides when a stage re-runs from the params it lists; a stage that read
    an unlisted key would silently keep stale outputs when that key changes. Reading one
    through this view raises :class:`ConfigError` naming the stage and the key instead.
    Methods and properties of the wrapped sections run against the view, so what they read
    is checked too.
    """

    __slots__ = ("_value", "_path", "_stage", "_declared")

    def __init__(self, value: Any, path: str, stage: str, declared: frozenset[str]) -> None:
        for name, v in (("_value", value), ("_path", path), ("_stage", stage), ("_declared", declared)):
            object.__setattr__(self, name, v)

    def _child(self, name: str, value: Any) -> Any:
        path = f"{self._path}.{name}" if self._path else name
        if any(path == d or path.startswith(d + ".") for d in self._declared):
            return value
        if any(d.startswith(path + ".") for d in self._declared):
            return StageParams(value, path, self._stage, self._declared)
        raise ConfigError(
            f"stage {self._stage} reads params.yaml key {path!r}, which dvc.yaml does not declare "
            "for it: add it to the stage's params (or the stage reads something it should not)"
        )

    def __getattr__(self, name: str) -> Any:
        value = self._value
        if dataclasses.is_dataclass(value) and name in {f.name for f in dataclasses.fields(value)}:
            return self._child(name, getattr(value, name))
        attr = getattr(type(value), name)  # AttributeError as usual for a typo
        return attr.__get__(self, type(value)) if hasattr(attr, "__get__") else attr

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __getitem__(self, key: Any) -> Any:
        return self._child(str(key), self._value[key])

    def __contains__(self, key: Any) -> bool:
        return key in self._value

    def __iter__(self):
        return iter(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def keys(self):
        return self._value.keys()

    def items(self):
        return [(k, self[k]) for k in self._value]

    def values(self):
        return [self[k] for k in self._value]

    def __repr__(self) -> str:
        return f"StageParams({self._stage}: {self._path or 'params'})"


def stage_params(cfg: Config, stage: str) -> Config:
    """``cfg`` as seen by ``stage`` ("name" or "name@key"): only its declared params are readable."""
    from tavse.common.dvc_stage import declared_params

    return StageParams(cfg, "", stage, frozenset(declared_params(stage)))  # type: ignore[return-value]


def load_config(path: str | Path = "params.yaml", stage: str | None = None) -> Config:
    """Read ``params.yaml`` and return the checked configuration.

    With ``stage`` (how ``stages/*.py`` call it) the result only lets that stage read the
    params its ``dvc.yaml`` entry declares (:func:`stage_params`).
    """
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        cfg = config_from_dict(params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg if stage is None else stage_params(cfg, stage)


def params_hash(obj: Any) -> str:
    """Stable short hash of a params slice (a dataclass or plain data)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(typing.cast(Any, obj))  # params slices are instances; is_dataclass admits classes too
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
