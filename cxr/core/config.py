"""One typed configuration object for every setting of the pipeline.

Defaults are the paper's settings. Layers, lowest to highest priority:
built-in defaults < profile file (``cxr/profiles/<name>.yaml``) < user config file
< environment (``CXR_<SECTION>__<FIELD>``) < explicit overrides (CLI options).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from cxr.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
ENV_PREFIX = "CXR_"
RAW_ENV = {"SERVE__API_TOKEN"}  # secrets: taken as typed, never parsed as YAML
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
ModelName = Literal["resnet50_lstm", "resnet50", "lstm"]
MODEL_NAMES: tuple[ModelName, ...] = get_args(ModelName)
ResNetStage = Literal["conv1", "conv2", "conv3", "conv4", "conv5"]
RANDOM_INIT = ("none", "random", "")  # values of model.backbone_weights meaning random init
RENAMED = {  # old dotted name -> new one; a config that uses an old name gets told
    "gate.threshold": "gate.min_score",
    "gate.decision_threshold": "decision.cutoff",
    "gate.calibrate_threshold": "decision.cutoff_from_validation",
    # one Holm-corrected family of per-column tests replaced the per-column threshold,
    # the "half of the columns" rule and the predictions' own threshold
    "monitor.column_p_value": "monitor.family_p_value",
    "monitor.drift_share": "monitor.family_p_value",
    "monitor.prediction_p_value": "monitor.family_p_value",
}
REMOVED = {  # options measured to give no gain on this task (research/NOTES.md)
    "preprocess.equalize", "model.backbone_trainable_from", "train.optimizer",
    "train.momentum", "train.weight_decay", "train.label_smoothing", "train.ema_momentum",
    "train.precise_bn_images", "train.early_stopping_patience",
    "train.augmentation.horizontal_flip",
}  # fmt: skip
REPLACED = {  # settings that Prefect's own mechanism replaced
    "monitor.trigger_retraining": "the retraining deployment's trigger on the "
    "cxr.drift.detected event (`cxr deploy --retrain-on-drift`)",
    "monitor.retraining_deployment": "the retraining deployment's own trigger "
    "(deploy/prefect.yaml)",
}


class _Section(BaseModel):
    # errors name the setting, never its value: the value may be a secret (serve.api_token)
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class DataConfig(_Section):
    """What the dataset must look like and how it is sampled."""

    classes: list[str] = Field(default=["Normal", "COVID"], description="index = label")
    samples_per_class: int | None = Field(default=500, description="None takes all")
    expected_width: int = 299
    expected_height: int = 299
    allowed_modes: list[str] = ["L"]
    balance_tolerance: float = Field(default=0.05, description="max |COVID share - 0.5|")
    min_images_per_class: int = 20
    min_readable_fraction: float = 0.98
    min_std_intensity: float = Field(default=8.0, description="flat images are not X-rays")
    dicom_min_side: int = Field(
        default=256, description="DICOM films: min rows and columns (not expected_width/height)"
    )


class PreprocessConfig(_Section):
    """The paper's preprocessing: /255, resize, grayscale to 3 channels, 80/10/10."""

    image_size: int = 224
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    batch_size: int = 32
    near_duplicate_distance: int = Field(
        default=10, ge=0, le=256, description="dHash bits: closer images stay in one split"
    )


class ModelConfig(_Section):
    """Architectures of the hybrid and the two baselines."""

    backbone_weights: str = Field(
        default="none", description="'imagenet', a path to a weights file, or 'none'"
    )
    input_normalization: Literal["none", "imagenet"] = Field(
        default="none",
        description="imagenet: the ResNet50 models scale [0, 1] images to ImageNet's "
        "caffe-style input (x 255 minus the channel means) inside the model, for a "
        "backbone that starts from ImageNet weights; none: the paper's bare /255",
    )
    sequence_mode: Literal["spatial", "pooled2x2"] = "spatial"
    lstm_units: list[int] = [32, 16, 8]
    dropout: float = 0.2
    baseline_lstm_units: int = 64
    bn_momentum: float | None = Field(
        default=None, description="override ResNet50 batch-norm momentum (Keras: 0.99)"
    )


class AugmentationConfig(_Section):
    """Random geometric and contrast changes of training images (off in the paper).

    They run as Keras layers at the front of the model, active only while training, so
    the saved model predicts on unchanged images."""

    enabled: bool = False
    translation: float = Field(default=0.05, ge=0, lt=1, description="fraction of side")
    zoom: float = Field(default=0.1, ge=0, lt=1, description="fraction of side")
    rotation: float = Field(default=0.03, ge=0, lt=1, description="fraction of a full turn")
    contrast: float = Field(default=0.2, ge=0, lt=1)


class TrainConfig(_Section):
    """Optimisation settings shared by all three models."""

    models: list[ModelName] = ["resnet50_lstm", "resnet50", "lstm"]
    epochs: int = 15
    learning_rate: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="cosine: decay to 0 over the run after the warm-up"
    )
    warmup_epochs: int = Field(default=0, ge=0, description="linear warm-up from 0")
    augmentation: AugmentationConfig = AugmentationConfig()
    mixed_precision: bool | Literal["auto"] = Field(
        default=False,
        description="compute in bfloat16, keep weights in float32 (about 2x faster at 96 px "
        "and up on GPUs and CPUs with AVX512-BF16/AMX, several times slower on other CPUs); "
        "auto: only where it is native",
    )
    hybrid_backbone_from_baseline: bool = Field(
        default=False,
        description="train the ResNet50 baseline first and start the hybrid's ResNet50 from "
        "its trained weights (domain pretraining on the training split); applies when "
        "both are trained",
    )
    hybrid_trainable_from: ResNetStage = Field(
        default="conv1",
        description="with hybrid_backbone_from_baseline: first ResNet50 stage the hybrid "
        "fine-tunes (conv5: only the last stage and the LSTM head train)",
    )
    fine_tune_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="peak learning rate of the hybrid when it starts from the baseline's "
        "backbone (default: learning_rate); lower keeps the learned features",
    )
    fine_tune_epochs: int | None = Field(
        default=None,
        ge=1,
        description="epochs of the hybrid when it starts from the baseline's backbone "
        "(default: epochs)",
    )
    seed: int = 42
    checkpoint_monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    verbose: int = Field(default=2, description="Keras fit verbosity: 1 bar, 2 line/epoch")


class GateConfig(_Section):
    """Which model is shipped and the score it must reach on the test split."""

    model: ModelName = "resnet50_lstm"
    metric: Literal["accuracy", "f1", "roc_auc"] = "accuracy"
    min_score: float = Field(
        default=0.95, ge=0, le=1, description="the gate passes at test metric >= this"
    )


class DecisionConfig(_Section):
    """How a COVID probability becomes a label."""

    cutoff: float = Field(default=0.5, gt=0, lt=1, description="COVID when P(COVID) >= cutoff")
    cutoff_from_validation: bool = Field(
        default=False,
        description="choose each model's cut-off on the validation split (the middle of "
        "the cut-offs with the best validation accuracy) instead of ``cutoff``; the test "
        "split is never used for it",
    )
    calibrate: bool = Field(
        default=True,
        description="temperature-scale each model's P(COVID) (T fitted on the validation "
        "split by NLL, shipped with the model); the cut-off and the test metrics are then "
        "on the calibrated probability. false: T = 1",
    )


class OODConfig(_Section):
    """The out-of-distribution check fitted for each model and shipped with it."""

    keep_share: float = Field(
        default=0.975,
        gt=0,
        le=1,
        description="share of validation images the detector's threshold keeps in "
        "distribution (the rest of the population it refuses is the price of the check)",
    )


class PackagingConfig(_Section):
    """BentoML packaging of a model that passed the gate."""

    model_name: str = "cxr-classifier"
    build_bento: bool = True
    comparison_dir: Path | None = Field(
        default=None,
        description="images no run trains on (e.g. the unseen/ folder of `cxr holdout`): a "
        "packaged model and the production model are both scored on them; unset: a model "
        "that passed the gate is promoted without a comparison",
    )
    promotion_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="a challenger is promoted unless its accuracy on the comparison set is "
        "more than this below the production model's",
    )


class ServeConfig(_Section):
    """The BentoML service: input limits, batching, the prediction log, access."""

    model_tag: str = Field(
        default="cxr-classifier:production",
        description="name:production (the promoted model), name:latest or name:version",
    )
    max_upload_bytes: int = 20_000_000
    min_image_side: int = 64
    max_image_pixels: int = 50_000_000
    batching: bool = True
    max_batch_size: int = 32
    max_latency_ms: int = Field(
        default=20_000, description="adaptive batching sheds (503) requests that wait longer"
    )
    prediction_log_url: str = "sqlite:///monitoring/predictions.db"
    front_workers: int = Field(
        default=1,
        ge=1,
        description="HTTP front processes (XRayClassifier): decoding, logging; each runs "
        "the model itself unless model_workers > 1 or model_gpus",
    )
    model_workers: int = Field(
        default=1,
        ge=1,
        description="model runner processes (ModelRunner), one model each; 1 and no GPU: "
        "no separate runner, the model runs in each front process (no second HTTP hop)",
    )
    model_threads: int | None = Field(
        default=None,
        ge=1,
        description="TensorFlow intra-op threads per process holding the model; unset: "
        "the cores / batches_in_flight in a front process, every core in a model runner",
    )
    batches_in_flight: int = Field(
        default=2,
        ge=1,
        description="batches the model in a front process runs at once (TensorFlow "
        "inter-op threads): one runs while the next is gathered and starts without waiting",
    )
    model_gpus: int = Field(
        default=0, ge=0, description="GPUs given to the model runner (CUDA_VISIBLE_DEVICES)"
    )
    api_token: SecretStr | None = Field(
        default=None,
        exclude=True,  # a secret: never in config.json, model metadata or any other dump
        description="clients send 'Authorization: Bearer <token>' to /predict, /explain, "
        "/info; unset: the service is open and binds to 127.0.0.1 unless given a host",
    )

    @field_validator("api_token")
    @classmethod
    def _bearer_token(cls, token: SecretStr | None) -> SecretStr | None:
        """A token clients can send in a header and nobody guesses."""
        if token is not None:
            value = token.get_secret_value()
            if len(value) < 16 or not BEARER_TOKEN.fullmatch(value):
                raise ValueError(
                    "serve.api_token must be at least 16 characters of A-Z a-z 0-9 - . _ ~ + / "
                    "(then optional '='); make one with: python -c "
                    "'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return token


class MonitorConfig(_Section):
    """Drift monitoring of the prediction log against the packaged model's reference."""

    window_minutes: int = 60
    min_predictions: int = 30
    numeric_columns: list[str] = [
        "covid_probability", "mean_intensity", "std_intensity", "entropy", "sharpness",
        "dark_fraction", "ood_score",
    ]  # fmt: skip
    categorical_columns: list[str] = ["label"]
    family_p_value: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="family-wise level of the per-column tests, Holm-corrected: drift when "
        "any column survives; bounds the false-alarm rate of in-distribution windows",
    )
    ood_level_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="share of family_p_value given to the OOD score's test (weighted Holm); "
        "the other columns share the rest equally",
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="one-off alert receiver of a terminal run (else alert_block)"
    )
    alert_block: str | None = Field(
        default=None, description="saved Prefect notification block the alerts go through"
    )
    alert_cooldown_hours: float = Field(
        default=6.0, ge=0, description="at most one reminder per this while drift lasts"
    )
    alert_retries: int = Field(default=3, ge=0, description="delivery retries after a failure")
    alert_retry_delay_s: float = Field(default=30.0, ge=0, description="wait between retries")
    reports_dir: Path = Path("monitoring/reports")
    workspace_dir: Path = Field(
        default=Path("monitoring/workspace"),
        description="Evidently workspace: each drift report, one project per model name "
        "(`cxr monitor-ui` opens it)",
    )
    workspace_retention_days: float | None = Field(
        default=7.0,
        gt=0,
        description="runs older than this leave the workspace (about 0.35 MB each, 96 a day "
        "at the 15-minute schedule; the UI reads them all when first opened); None keeps all",
    )


class RunnerConfig(_Section):
    """Where the training flow's tasks run: one after another in the flow's process
    (local), or on a Dask cluster (dask: ingestion in shards, independent models at once)."""

    task_runner: Literal["local", "dask"] = "local"
    dask_address: str | None = Field(
        default=None,
        description="scheduler of a running Dask cluster (tcp://host:8786); unset: a local "
        "cluster of dask_workers processes for the run",
    )
    dask_workers: int = Field(default=2, ge=1, description="worker processes of a local cluster")
    shard_images: int = Field(
        default=500, ge=1, description="images per ingestion shard (one task each) on Dask"
    )
    model_threads: int | None = Field(
        default=None,
        ge=1,
        description="TensorFlow threads of each Dask worker process (inter-op: 1); unset: "
        "the machine's cores / dask_workers",
    )


class TimeoutsConfig(_Section):
    """How long a task of the training flow may run: past it Prefect stops the task
    (state TimedOut) and the flow run ends Failed."""

    train_minutes: float = Field(default=720.0, gt=0, description="fitting one model")
    stage_minutes: float = Field(
        default=120.0,
        gt=0,
        description="each of the training flow's ingestion, evaluation, packaging and "
        "promotion tasks",
    )


class Settings(_Section):
    """Every setting of a run."""

    profile: str = "paper"
    runs_dir: Path = Path("runs")
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    decision: DecisionConfig = DecisionConfig()
    ood: OODConfig = OODConfig()
    packaging: PackagingConfig = PackagingConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    runner: RunnerConfig = RunnerConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Refuse settings that would fail hours into a run."""
        held_out = self.preprocess.val_fraction + self.preprocess.test_fraction
        problems = [
            (self.gate.model not in self.train.models, "gate.model must be one of train.models"),
            (not 0 < held_out < 1, "preprocess val_fraction + test_fraction must be in (0, 1)"),
            (self.preprocess.image_size < 32, "preprocess.image_size must be >= 32 (ResNet50)"),
            (self.train.warmup_epochs >= self.train.epochs, "train.warmup_epochs < train.epochs"),
            (self.train.hybrid_backbone_from_baseline
             and "resnet50_lstm" in self.train.models and "resnet50" not in self.train.models,
             "train.hybrid_backbone_from_baseline needs resnet50 in models to train the hybrid"),
            (self.data.samples_per_class is not None and self.data.samples_per_class < 1,
             "data.samples_per_class must be >= 1 or null"),
        ]  # fmt: skip
        failed = [message for bad, message in problems if bad]
        if failed:
            raise ValueError("; ".join(failed))
        return self


def available_profiles() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nest(dotted: dict[str, Any], sep: str) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}} for separator '.'."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.lower().split(sep)
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def environment_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from ``CXR_SECTION__FIELD=value`` variables (values parsed as YAML)."""
    environ = dict(os.environ) if environ is None else environ
    found = {
        key[len(ENV_PREFIX) :]: value
        if key[len(ENV_PREFIX) :].upper() in RAW_ENV
        else yaml.safe_load(value)
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and "__" in key
    }
    return _nest(found, "__")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["model.dropout=0.3", ...]`` (the CLI's ``--set``) -> dotted overrides, values
    parsed as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set needs key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _dotted(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping: {'a': {'b': 1}} -> ['a', 'a.b']."""
    keys = []
    for key, value in values.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _dotted(value, f"{prefix}{key}.")
    return keys


def check_names(values: dict[str, Any]) -> None:
    """Refuse settings that were renamed or removed, saying what to use instead."""
    problems = []
    for key in _dotted(values):
        if key in RENAMED:
            problems.append(f"{key} is now {RENAMED[key]}")
        elif key in REMOVED:
            problems.append(f"{key} was removed (it gave no gain; see research/NOTES.md)")
        elif key in REPLACED:
            problems.append(f"{key} was replaced by {REPLACED[key]}")
    if problems:
        raise ConfigError("; ".join(problems))


def load_settings(
    profile: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from profile, file, environment and dotted overrides."""
    values: dict[str, Any] = {}
    profile = profile or os.environ.get(f"{ENV_PREFIX}PROFILE") or "paper"
    profile_file = PROFILES_DIR / f"{profile}.yaml"
    if not profile_file.is_file():
        raise ConfigError(f"unknown profile {profile!r}; choose from {available_profiles()}")
    values = _deep_merge(values, _read_yaml(profile_file))
    if config_file is not None:
        values = _deep_merge(values, _read_yaml(Path(config_file)))
    values = _deep_merge(values, environment_overrides(environ))
    values = _deep_merge(values, _nest(overrides or {}, "."))
    values["profile"] = profile
    check_names(values)
    try:
        return Settings.model_validate(values)
    except ValueError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
