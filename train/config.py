"""The one typed training config: defaults < preset < YAML file < environment < `key=value` flags.

Every key is a field of the frozen `TrainConfig` dataclass; an unknown key anywhere (file,
environment, flag, preset) is a `ConfigError` naming the key, its source and the closest known
key. Environment variables are `GLOBMED_TRAIN_<KEY>` (upper case); string values from the
environment and from flags are parsed by the field's type (`true`/`false`, numbers, comma lists).

`preset: NAME` (in the file, the environment or a flag) layers `train/presets/NAME.yaml`
between the defaults and the file, so a user file only holds what differs from the preset.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from globmed_edge.errors import ConfigError, UnknownNameError

ENV_PREFIX = "GLOBMED_TRAIN_"
Method = Literal["full", "lora"]
Precision = Literal["auto", "bf16", "fp32"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. See docs/train.md for each key."""

    # what to train, on what, into where
    model: str = "smollm2-135m-instruct"  # HF folder, or an embedded model name (prepared)
    output_dir: str = "runs/train"
    data: tuple[str, ...] = ()  # files/folders in the project schema; () = packaged samples
    languages: tuple[str, ...] = ()  # () = every language in the data
    train_splits: tuple[str, ...] = ("train",)  # add "dev" to train on it too (the dev eval is then held out)
    method: Method = "lora"
    merge: bool = False  # write <output_dir>/merged: a plain HF folder + training card
    # examples
    max_seq_len: int = 1024
    packing: bool = True
    sampling_temperature: float = 3.0  # p_lang ∝ n_lang^(1/T); 1 = proportional, large = uniform
    train_samples: int = 0  # examples per epoch after balancing; 0 = number of train items
    include_rationale: bool = True
    system_prompt: str = ""
    dev_fraction: float = 0.1  # held out per language when the data has no `dev` split for it
    dev_max_per_lang: int = 50
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 8  # per device
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    gradient_checkpointing: bool = False
    precision: Precision = "auto"  # auto: bf16 on a CUDA GPU that supports it, fp32 on CPU
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    # bookkeeping
    seed: int = 42
    logging_steps: int = 10
    eval_steps: int = 0  # dev MCQ accuracy every N steps; 0 = only at the end; -1 = never
    save_steps: int = 200
    save_total_limit: int = 2
    resume: str = "auto"  # auto (latest checkpoint in output_dir) | never | a checkpoint path
    report_to: str = "none"  # none | tensorboard | wandb ... (transformers integrations)

    def replace(self, **changes: Any) -> TrainConfig:
        return load_config(overrides={**self.to_dict(), **changes}, use_env=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
_HINTS = typing.get_type_hints(TrainConfig)
# report_to: only reporters that write local files; wandb, mlflow, comet... send the run over the
# network, which an offline medical toolkit never does.
_CHOICES = {"method": ("full", "lora"), "precision": ("auto", "bf16", "fp32"), "report_to": ("none", "tensorboard"),
            "attn_implementation": ("sdpa", "eager", "flash_attention_2", "flash_attention_3")}


def preset_names() -> list[str]:
    root = files("globmed_edge.train").joinpath("presets")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise UnknownNameError("training preset", name, preset_names())
    text = files("globmed_edge.train").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    return _yaml_mapping(text, f"preset {name}")


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of key: value, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def _check_key(key: str, source: str) -> None:
    if key not in KEYS and key != "preset":
        close = difflib.get_close_matches(key, [*KEYS, "preset"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: unknown key {key!r}{hint}")


def _parse_bool(value: str, key: str, source: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source}: {key}={value!r} is not a boolean (true/false)")


def coerce(key: str, value: Any, source: str) -> Any:
    """Turn a YAML value or a string from env/flags into the field's type, or say why not."""
    hint = _HINTS[key]
    origin = typing.get_origin(hint)
    bad = f"{source}: {key}={value!r}"
    if origin is tuple:
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            return tuple(str(v) for v in value)
        raise ConfigError(f"{bad} must be a list of strings")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value, key, source)
        raise ConfigError(f"{bad} must be true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{bad} must be an integer")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{bad} must be an integer") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{bad} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{bad} must be a number") from None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{bad} must be a string")
    value = str(value)
    if key in _CHOICES and value not in _CHOICES[key]:
        close = difflib.get_close_matches(value, _CHOICES[key], n=1)
        hint_s = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{bad} is not one of {', '.join(_CHOICES[key])}{hint_s}")
    return value


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} must look like key=value")
        out[key.strip()] = value
    return out


def _env_values(environ: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX):].lower()
            _check_key(key, f"environment variable {name}")
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    use_env: bool = True,
) -> TrainConfig:
    """Merge the layers (later wins) and validate. `path` may be a YAML file or a preset name."""
    layers: list[tuple[str, dict[str, Any]]] = []
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_file():
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{p}: cannot read ({exc})") from None
            file_values = _yaml_mapping(text, str(p))
            layers.append((str(p), file_values))
        elif str(path) in preset_names():
            layers.append((f"preset {path}", read_preset(str(path))))
        else:
            raise ConfigError(f"{path}: no such config file, and not a preset "
                              f"(presets: {', '.join(preset_names())})")
    env = _env_values(os.environ if environ is None else environ) if use_env else {}
    layers.append(("environment", env))
    layers.append(("command line", dict(overrides or {})))
    preset = None
    for _source, values in layers:
        preset = values.get("preset", preset)
    if preset:
        layers.insert(0, (f"preset {preset}", read_preset(str(preset))))
    merged: dict[str, Any] = {}
    for source, values in layers:
        for key, value in values.items():
            _check_key(key, source)
            if key != "preset":
                merged[key] = coerce(key, value, source)
    return validate(TrainConfig(**merged))


def validate(cfg: TrainConfig) -> TrainConfig:
    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={getattr(cfg, key)!r}: must be {rule}")

    import math

    for f in fields(cfg):  # inf/nan pass every "> 0" test below
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}={value!r}: must be a finite number")
    need(cfg.max_seq_len >= 16, "max_seq_len", ">= 16")
    need(bool(cfg.train_splits) and set(cfg.train_splits) <= {"train", "dev"}, "train_splits",
         "train and/or dev (test items are only ever benchmarked)")
    need(cfg.sampling_temperature > 0, "sampling_temperature", "> 0")
    need(cfg.train_samples >= 0, "train_samples", ">= 0")
    need(0 <= cfg.dev_fraction < 1, "dev_fraction", "in [0, 1)")
    need(cfg.dev_max_per_lang >= 0, "dev_max_per_lang", ">= 0")
    need(cfg.learning_rate > 0, "learning_rate", "> 0")
    need(0 <= cfg.warmup_ratio < 1, "warmup_ratio", "in [0, 1)")
    need(cfg.batch_size >= 1, "batch_size", ">= 1")
    need(cfg.grad_accum >= 1, "grad_accum", ">= 1")
    need(cfg.epochs > 0 or cfg.max_steps > 0, "epochs", "> 0 (or set max_steps)")
    need(cfg.lora_r >= 1, "lora_r", ">= 1")
    need(cfg.lora_alpha >= 1, "lora_alpha", ">= 1")
    need(cfg.save_total_limit >= 1, "save_total_limit", ">= 1 (checkpoints kept)")
    need(0 <= cfg.lora_dropout < 1, "lora_dropout", "in [0, 1)")
    need(cfg.logging_steps >= 1, "logging_steps", ">= 1")
    need(cfg.save_steps >= 1, "save_steps", ">= 1")
    need(cfg.eval_steps >= -1, "eval_steps", ">= -1")
    return cfg
