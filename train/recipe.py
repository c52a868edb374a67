"""The SFT recipe (full fine-tune and LoRA), top to bottom. Driven by one `TrainConfig`.

    items ──data.load_splits──▶ balanced train examples + dev MCQ items
    examples ──template.tokenize_chat──▶ input_ids + labels (loss on assistant turns only)
    TRL SFTTrainer (packing: best-fit-decreasing, padding-free, position ids reset per example)
    ──▶ checkpoints in output_dir (resume: latest) ──▶ output_dir/final (model or adapter)
    ──card.write_merged──▶ output_dir/merged: plain HF folder + training card

Single process by default; under `accelerate launch` (FSDP / DeepSpeed configs in
train/accelerate/) the same code runs on every rank and only the main process writes the
final outputs. bf16 autocast on a CUDA GPU that supports it, fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.errors import ConfigError, GlobmedError, ModelError
from globmed_edge.train.config import TrainConfig

log = logging.getLogger("globmed_edge.train")
STATE_FILE = "globmed_train_state.json"


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    final_dir: Path
    merged_dir: Path | None
    steps: int
    losses: list[float]
    dev_before: dict[str, float]
    dev_after: dict[str, float]
    resumed_from: str | None
    log_history: list[dict[str, Any]] = field(repr=False)


def oom_message(cfg: TrainConfig) -> str:
    tips = [f"a smaller batch_size (now {cfg.batch_size}; raise grad_accum to keep the effective batch)"]
    if cfg.method == "full":
        tips.append("method=lora")
    if not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing=true")
    tips.append(f"a shorter max_seq_len (now {cfg.max_seq_len})")
    return f"out of GPU memory while training {cfg.model}; try " + ", or ".join(tips)


@contextlib.contextmanager
def explain_oom(cfg: TrainConfig) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into one line with what to change."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise GlobmedError(oom_message(cfg)) from None


def use_bf16(cfg: TrainConfig) -> bool:
    import torch

    if cfg.precision == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cfg.precision == "bf16"


def _check_model(model_dir: Path, cfg: TrainConfig, tokenizer: Any) -> None:
    from transformers import AutoConfig

    from globmed_edge.train.template import check_template

    check_template(tokenizer, str(model_dir))
    text_cfg = AutoConfig.from_pretrained(model_dir).get_text_config()
    limit = getattr(text_cfg, "max_position_embeddings", None)
    if limit is not None and cfg.max_seq_len > limit:
        raise ConfigError(f"max_seq_len={cfg.max_seq_len} is beyond the model's max_position_embeddings="
                          f"{limit} ({model_dir / 'config.json'}); use max_seq_len<={limit}")


def _resume_point(cfg: TrainConfig, fingerprint: str) -> str | None:
    """The checkpoint to resume from, after checking the run is the same one."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        ckpt = get_last_checkpoint(str(out)) if out.is_dir() else None
    elif Path(cfg.resume).is_dir():
        if not (Path(cfg.resume) / "trainer_state.json").is_file():
            raise ConfigError(f"resume={cfg.resume!r}: not a training checkpoint (no trainer_state.json)")
        ckpt = cfg.resume
    else:
        raise ConfigError(f"resume={cfg.resume!r}: not 'auto', 'never' or a checkpoint folder")
    state = out / STATE_FILE
    if ckpt and state.is_file():
        saved = json.loads(state.read_text(encoding="utf-8")).get("data_fingerprint")
        if saved != fingerprint:
            raise ConfigError(f"{ckpt}: the training data or its sampling changed since this checkpoint "
                              "was written; use a new output_dir, or resume=never to start over")
    return ckpt


def tokenize_examples(tokenizer: Any, examples: Sequence[Any]) -> list[dict[str, list[int]]]:
    from globmed_edge.train.template import tokenize_chat

    rows = []
    for ex in examples:
        ids, labels = tokenize_chat(tokenizer, ex.as_messages())
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def fit_to_length(rows: list[dict[str, list[int]]], max_len: int
                  ) -> tuple[list[dict[str, list[int]]], int, int]:
    """Truncate to `max_len` (keep the start) and drop rows with no label left: a packed row
    made only of prompt tokens would train on nothing (loss 0) yet count as a step."""
    out, truncated = [], 0
    for r in rows:
        if len(r["input_ids"]) > max_len:
            truncated += 1
            r = {"input_ids": r["input_ids"][:max_len], "labels": r["labels"][:max_len]}
        if any(t != -100 for t in r["labels"][1:]):
            out.append(r)
    return out, truncated, len(rows) - len(out)


def run(cfg: TrainConfig, *, callbacks: Sequence[Any] = (), progress: bool = True) -> TrainResult:
    from globmed_edge.deps import require
    from globmed_edge.models import resolve_model
    from globmed_edge.paths import force_offline

    force_offline()
    torch = require("torch", "torch")
    transformers = require("transformers", "torch")
    trl = require("trl", "train")
    datasets = require("datasets", "train")
    from globmed_edge.train.card import build_card, write_merged
    from globmed_edge.train.data import data_fingerprint, splits_for
    from globmed_edge.train.dev_eval import DevEvalCallback
    from globmed_edge.train.template import end_of_turn_ids

    model_dir = resolve_model(cfg.model)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
    _check_model(model_dir, cfg, tokenizer)
    splits = splits_for(cfg)
    fingerprint = data_fingerprint(splits)
    log.info("train examples: %d (items per language %s; weights %s); dev items: %d",
             len(splits.train), splits.train_counts,
             {k: round(v, 3) for k, v in splits.weights.items()}, len(splits.dev))
    rows, truncated, dropped = fit_to_length(tokenize_examples(tokenizer, splits.train), cfg.max_seq_len)
    if truncated:
        log.warning("%d of %d examples are longer than max_seq_len=%d: truncated at the end, and %d of "
                    "them dropped because no answer token was left", truncated, len(splits.train),
                    cfg.max_seq_len, dropped)
    if not rows:
        raise ConfigError(f"max_seq_len={cfg.max_seq_len}: every training example loses its whole "
                          "answer to truncation; raise max_seq_len")
    train_ds = datasets.Dataset.from_list(rows)
    resume = _resume_point(cfg, fingerprint)

    bf16 = use_bf16(cfg)
    # LoRA keeps the frozen base in bf16; a full fine-tune keeps fp32 master weights under autocast.
    load_dtype = torch.bfloat16 if bf16 and cfg.method == "lora" else torch.float32
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=load_dtype, attn_implementation=cfg.attn_implementation)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"{model_dir}: cannot load the model ({str(exc).splitlines()[0]})") from None
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    args = trl.SFTConfig(
        output_dir=cfg.output_dir, max_length=cfg.max_seq_len, packing=cfg.packing,
        packing_strategy="bfd", per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        gradient_checkpointing=cfg.gradient_checkpointing, bf16=bf16, fp16=False,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        eval_strategy="no", report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        disable_tqdm=not progress, dataloader_num_workers=0, dataset_num_proc=None,
    )
    dev_cb = DevEvalCallback(splits.dev, tokenizer, cfg.eval_steps) if cfg.eval_steps >= 0 else None
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[*(c for c in [dev_cb] if c), *callbacks])
    if dev_cb is not None:
        dev_cb.trainer = trainer
    main = trainer.is_world_process_zero()
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        from globmed_edge.atomic import atomic_write_text

        atomic_write_text(out / STATE_FILE, json.dumps(
            {"data_fingerprint": fingerprint, "config": cfg.to_dict()}, indent=2) + "\n")
    if resume:
        log.info("resuming from %s", resume)
    with explain_oom(cfg):
        trainer.train(resume_from_checkpoint=resume)

    final = out / "final"
    trainer.save_model(str(final))  # gathers FSDP / ZeRO-3 shards; every rank must call it
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    result_metrics: dict[str, Any] = {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "dev_before": dev_cb.initial if dev_cb else {}, "dev_after": dev_cb.final if dev_cb else {},
    }
    merged = None
    if cfg.merge and main:
        card = build_card(base_model=model_dir, config=cfg.to_dict(), data_files=splits.files,
                          train_counts=splits.train_counts, weights=splits.weights,
                          dev_items=len(splits.dev), steps=trainer.state.global_step,
                          metrics=result_metrics, data_fingerprint=fingerprint)
        merged = write_merged(final, model_dir, out / "merged", method=cfg.method,
                              stop_ids=end_of_turn_ids(tokenizer), card=card)
        log.info("merged model written to %s", merged)
    return TrainResult(out, final, merged, trainer.state.global_step, losses,
                       result_metrics["dev_before"], result_metrics["dev_after"], resume,
                       list(trainer.state.log_history))
