"""The training config: precedence defaults < preset < file < environment < flags; unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from globmed_edge.errors import ConfigError, UnknownNameError
from globmed_edge.train.config import TrainConfig, load_config, parse_overrides, preset_names


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_anything() -> None:
    cfg = load_config(None, environ={})
    assert cfg == TrainConfig()
    assert cfg.method == "lora" and cfg.packing is True


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "learning_rate: 1.0e-4\nbatch_size: 4\nmethod: full\nlanguages: [en, sw]\n")
    env = {"GLOBMED_TRAIN_BATCH_SIZE": "16", "GLOBMED_TRAIN_MAX_STEPS": "7", "OTHER": "x"}
    cfg = load_config(path, environ=env, overrides=parse_overrides(["max_steps=9", "merge=true"]))
    assert cfg.learning_rate == 1e-4  # file beats default
    assert cfg.method == "full"
    assert cfg.languages == ("en", "sw")
    assert cfg.batch_size == 16  # env beats file
    assert cfg.max_steps == 9  # flag beats env
    assert cfg.merge is True
    assert cfg.epochs == TrainConfig().epochs  # untouched default


def test_preset_is_layered_under_the_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "preset: qwen3-4b\nlora_r: 8\n")
    cfg = load_config(path, environ={})
    assert cfg.lora_r == 8  # the file wins over the preset
    assert cfg.model == "Qwen3-4B" and cfg.gradient_checkpointing is True  # from the preset
    assert load_config("tiny-smoke", environ={}).max_steps == 4  # a preset name as CONFIG


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name: str) -> None:
    assert isinstance(load_config(name, environ={}), TrainConfig)


def test_expected_presets_exist() -> None:
    assert {"qwen3-1.7b", "qwen3-4b", "qwen3-8b", "smollm2-135m", "gemma-3-270m",
            "tiny-smoke"} <= set(preset_names())


def test_unknown_key_in_file_names_key_and_suggests(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "learnin_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'learnin_rate'; did you mean 'learning_rate'\?"):
        load_config(path, environ={})


def test_unknown_key_in_env_and_flags() -> None:
    with pytest.raises(ConfigError, match=r"GLOBMED_TRAIN_BATCHSIZE: unknown key 'batchsize'; did you mean 'batch_size'"):
        load_config(None, environ={"GLOBMED_TRAIN_BATCHSIZE": "3"})
    with pytest.raises(ConfigError, match=r"command line: unknown key 'lora_rank'; did you mean 'lora_r'"):
        load_config(None, environ={}, overrides={"lora_rank": "3"})


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"batch_size='two' must be an integer"):
        load_config(None, environ={}, overrides={"batch_size": "two"})
    with pytest.raises(ConfigError, match=r"method='ful' is not one of full, lora; did you mean 'full'"):
        load_config(None, environ={}, overrides={"method": "ful"})
    with pytest.raises(ConfigError, match=r"merge='maybe' is not a boolean"):
        load_config(None, environ={}, overrides={"merge": "maybe"})
    with pytest.raises(ConfigError, match=r"sampling_temperature=0.0: must be > 0"):
        load_config(None, environ={}, overrides={"sampling_temperature": "0"})
    with pytest.raises(ConfigError, match=r"train_splits=\('train', 'test'\): must be train and/or dev"):
        load_config(None, environ={}, overrides={"train_splits": "train,test"})
    assert load_config(None, environ={}, overrides={"train_splits": "train,dev"}).train_splits == ("train", "dev")
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_overrides(["max_steps"])


def test_unknown_preset_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'qwen3-4b'"):
        load_config(None, environ={}, overrides={"preset": "qwen3-4"})
    with pytest.raises(ConfigError, match="no such config file, and not a preset"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = _yaml(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad, environ={})
