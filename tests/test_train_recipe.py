"""The SFT recipe on CPU: a few real optimizer steps of a tiny model (full and LoRA), merge,
resume after an interruption, and the bad inputs that must fail with one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from globmed_edge.cli.main import cli
from globmed_edge.errors import ConfigError, DataError, GlobmedError
from globmed_edge.train.config import TrainConfig, load_config

LANGS = ("en", "sw", "zu")


@pytest.fixture(scope="module")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset in the project schema: MCQ items in 3 languages (train + dev) and chats."""
    d = tmp_path_factory.mktemp("train-data")
    rows: list[dict[str, Any]] = []
    for lang in LANGS:
        n = {"en": 12, "sw": 6, "zu": 4}[lang]
        for split, count in (("train", n), ("dev", 2), ("test", 2)):
            for i in range(count):
                rows.append({"id": f"syn-{split}-{lang}-{i}", "dataset": "syn", "lang": lang, "split": split,
                             "question": f"[{lang}] Which organ pumps blood? (case {i})",
                             "options": {"A": "Liver", "B": "Heart", "C": "Kidney", "D": "Lung"},
                             "answer": "B", "rationale": "The heart pumps blood." if i % 2 else None})
    rows.append({"id": "chat-sw-0", "dataset": "chat", "lang": "sw", "split": "train",
                 "messages": [{"role": "user", "content": "Homa ni nini?"},
                              {"role": "assistant", "content": "Homa ni joto la mwili kupanda."}]})
    path = d / "syn.jsonl"
    path.write_text("\n".join(json.dumps({k: v for k, v in r.items() if v is not None}) for r in rows) + "\n",
                    encoding="utf-8")
    return path


def smoke_config(model: Path, data: Path, out: Path, **kw: Any) -> TrainConfig:
    base = {"model": str(model), "data": [str(data)], "output_dir": str(out), "max_seq_len": 128,
            "batch_size": 2, "save_steps": 100, "eval_steps": -1}
    return load_config("tiny-smoke", overrides={**base, **kw}, environ={})


def mean_loss(model_dir: Path, rows: list[dict[str, list[int]]]) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        losses = [float(model(input_ids=torch.tensor([r["input_ids"]]),
                              labels=torch.tensor([r["labels"]])).loss) for r in rows]
    return sum(losses) / len(losses)


def tensors(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("method,lr", [("full", "2e-3"), ("lora", "1e-2")])
def test_smoke_train_learns_and_merges(tiny_model: Path, train_data: Path, tmp_path: Path,
                                       method: str, lr: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from globmed_edge.train.data import load_splits
    from globmed_edge.train.recipe import run, tokenize_examples

    cfg = smoke_config(tiny_model, train_data, tmp_path / "run", method=method, learning_rate=lr,
                       max_steps=6, merge=True, eval_steps=0, dev_max_per_lang=1)
    res = run(cfg, progress=False)
    assert res.steps == 6 and len(res.losses) == 6
    assert res.merged_dir is not None and (res.merged_dir / "model.safetensors").is_file()
    assert set(res.dev_after) == {"dev_acc/en", "dev_acc/sw", "dev_acc/zu", "dev_acc/mean"}

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = tokenize_examples(tok, load_splits([train_data], seed=cfg.seed).train[:8])
    before, after = mean_loss(tiny_model, rows), mean_loss(res.merged_dir, rows)
    assert after < before - 0.05, (before, after)  # it learned the training data

    old, new = tensors(tiny_model), tensors(res.merged_dir)
    assert old.keys() == new.keys()
    changed = [k for k in old if not (old[k] == new[k]).all()]
    assert any("mlp" in k or "proj" in k for k in changed)
    assert new[next(iter(new))].dtype == old[next(iter(old))].dtype  # base dtype kept (bf16)

    merged_tok = AutoTokenizer.from_pretrained(res.merged_dir)
    assert merged_tok.chat_template == tok.chat_template
    gen = json.loads((res.merged_dir / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos
    card = json.loads((res.merged_dir / "training_card.json").read_text())
    assert card["schema_version"] == 1 and card["steps"] == 6 and card["method"] == method
    assert card["languages"] == list(LANGS) and str(train_data) in card["data"]["files"]
    assert card["libraries"]["trl"] and card["metrics"]["train_loss_last"] == res.losses[-1]
    assert not list(tmp_path.glob("run/.*partial"))  # atomic: no temporary folder left

    model: Any = AutoModelForCausalLM.from_pretrained(res.merged_dir)
    prompt: Any = merged_tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.slow
def test_resume_after_interrupt_matches_uninterrupted_run(tiny_model: Path, train_data: Path,
                                                          tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from globmed_edge.train.recipe import run

    class Recorder(TrainerCallback):
        """Records the token ids of every training forward pass (the data order)."""

        def __init__(self) -> None:
            self.batches: list[list[int]] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            def hook(mod: Any, a: Any, kwargs: Any) -> None:
                if mod.training:
                    self.batches.append(kwargs["input_ids"].flatten().tolist())

            model.register_forward_pre_hook(hook, with_kwargs=True)

    class StopAt(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 3:
                raise KeyboardInterrupt

    kw = {"max_steps": 6, "save_steps": 2, "lora_dropout": 0.0}
    full = Recorder()
    ref = run(smoke_config(tiny_model, train_data, tmp_path / "a", **kw), callbacks=[full], progress=False)

    first, second = Recorder(), Recorder()
    cfg = smoke_config(tiny_model, train_data, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, callbacks=[first, StopAt()], progress=False)
    assert (tmp_path / "b" / "checkpoint-2").is_dir() and not (tmp_path / "b" / "checkpoint-4").exists()
    res = run(cfg, callbacks=[second], progress=False)  # resume=auto: latest checkpoint

    assert res.resumed_from is not None and res.resumed_from.endswith("checkpoint-2")
    assert res.steps == ref.steps == 6
    assert len(full.batches) == 6 and first.batches == full.batches[:3]
    assert second.batches == full.batches[2:]  # step 3 redone, nothing skipped or repeated after
    assert res.losses[-4:] == pytest.approx(ref.losses[-4:], abs=1e-4)


@pytest.mark.slow
def test_cli_smoke_run(tiny_model: Path, train_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["train", "tiny-smoke", f"model={tiny_model}", f"data={train_data}",
                                      f"output_dir={out}", "max_steps=2", "max_seq_len=128", "--merge", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["steps"] == 2 and report["merged"] == str(out / "merged")
    assert (out / "merged" / "config.json").is_file()


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, ["train", *args])


def test_cli_help_and_presets() -> None:
    r = run_cli("--help")
    assert r.exit_code == 0 and "key=value" in r.output
    r = run_cli("--list-presets")
    assert "qwen3-1.7b" in r.output.split()


def test_cli_dry_run(train_data: Path) -> None:
    r = run_cli("tiny-smoke", f"data={train_data}", "--dry-run", "sampling_temperature=1")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["train_items_per_language"] == {"en": 12, "sw": 7, "zu": 4}
    assert plan["dev_items"] == 6


def test_cli_config_typo_is_one_line_and_exit_2() -> None:
    r = run_cli("tiny-smoke", "lerning_rate=0.1")
    assert r.exit_code == 2
    assert r.output.strip() == ("error: command line: unknown key 'lerning_rate'; "
                                "did you mean 'learning_rate'?")


def test_cli_missing_language(tiny_model: Path, train_data: Path, tmp_path: Path) -> None:
    r = run_cli("tiny-smoke", f"model={tiny_model}", f"data={train_data}", "languages=en,am",
                f"output_dir={tmp_path}")
    assert r.exit_code == 1
    assert "error: no train items for language 'am'" in r.output and len(r.output.strip().splitlines()) == 1


def test_model_without_chat_template(tiny_model: Path, train_data: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    conf = json.loads((bare / "tokenizer_config.json").read_text())
    conf.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(conf))
    r = run_cli("tiny-smoke", f"model={bare}", f"data={train_data}", f"output_dir={tmp_path / 'o'}")
    assert r.exit_code == 1
    assert r.output.startswith(f"error: {bare}: the tokenizer has no chat template")


def test_sequence_longer_than_the_model(tiny_model: Path, train_data: Path, tmp_path: Path) -> None:
    from globmed_edge.train.recipe import run

    with pytest.raises(ConfigError, match=r"max_seq_len=4096 is beyond the model's max_position_embeddings=2048"):
        run(smoke_config(tiny_model, train_data, tmp_path, max_seq_len=4096))


def test_missing_data_file(tiny_model: Path, tmp_path: Path) -> None:
    from globmed_edge.train.recipe import run

    with pytest.raises(DataError, match="nope.jsonl: no such data file"):
        run(smoke_config(tiny_model, tmp_path / "nope.jsonl", tmp_path))


def test_gpu_out_of_memory_becomes_one_line_with_suggestions() -> None:
    import torch

    from globmed_edge.train.recipe import explain_oom

    cfg = load_config("qwen3-1.7b", environ={}, overrides={"gradient_checkpointing": "false"})
    with pytest.raises(GlobmedError) as info, explain_oom(cfg):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("out of GPU memory while training Qwen3-1.7B; try")
    for tip in ("smaller batch_size (now 8", "method=lora", "gradient_checkpointing=true", "max_seq_len"):
        assert tip in msg
    with pytest.raises(ValueError), explain_oom(cfg):  # anything else passes through untouched
        raise ValueError("other")
