"""Training throughput and model FLOPs utilisation (MFU) of `globmed-edge train` vs plain TRL.

A Qwen3-1.7B-architecture model with randomly initialised weights (no weights can be downloaded
on these machines; speed does not depend on the values) is trained for a few steps at sequence
length 2048 with packing, full fine-tune and LoRA, through the project's recipe
(`globmed_edge.train.recipe.run`). Beside it, in the same process and on the same data, a plain
TRL `SFTTrainer` with default settings (conversational dataset, no packing, same batch size and
precision) is timed as the baseline. Reported per run: median step time after warm-up, trained
tokens/s per GPU (real tokens, padding excluded), and MFU against the GPU's dense bf16 peak:

    MFU = tokens/s x (6 N + 12 L d T) / peak      (full fine-tune; PaLM appendix B accounting)
    MFU = tokens/s x (4 N + 12 L d T) / peak      (LoRA: no weight gradients for the frozen base)

with N the non-embedding parameter count, L layers, d hidden size, T sequence length.

    python lab/gpu/train_throughput.py --tokenizer TOKDIR --out lab/gpu/results/train_throughput.json
    python lab/gpu/train_throughput.py --tiny --steps 3 --warmup 1   # CPU check of the script itself

TOKDIR is any folder with a chat-template tokenizer (the prepared default model's works; its
49,152-token vocabulary is a subset of the model's). Data: the packaged multilingual sample,
upsampled language-balanced to fill the steps (or --data PATH in the project schema).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# dense bf16 tensor-core peaks (no sparsity), FLOP/s
PEAKS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                  rope_theta=1_000_000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=49152, max_position_embeddings=4096,
            tie_word_embeddings=True)


def build_model(out: Path, dims: dict[str, Any], tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Qwen3Config(**dims, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def flops_per_token(model_dir: Path, seq_len: int, method: str) -> tuple[float, int]:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, L, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    hd = getattr(c, "head_dim", d // c.num_attention_heads)
    attn = d * hd * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)  # q, o, k, v
    n = L * (attn + 3 * d * ff)  # non-embedding matmul parameters
    n_total = n + c.vocab_size * d  # the (tied) output projection is a matmul per token too
    mult = 6 if method == "full" else 4
    return mult * n_total + 12 * L * d * seq_len, n


class StepTimer:
    """A TrainerCallback recording wall time and real tokens of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []
        self._t0 = 0.0
        self._pending = 0

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):  # type: ignore[misc]
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                _sync()
                timer._t0 = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                _sync()
                timer.times.append(time.perf_counter() - timer._t0)
                timer.tokens.append(timer._pending)
                timer._pending = 0

        return _CB()

    def count(self, batch: dict[str, Any]) -> None:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self._pending += int(mask.sum()) if mask is not None else int(ids.numel())


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def counting_tokens(timer: StepTimer) -> Iterator[None]:
    """Count the tokens of every micro-batch an SFTTrainer (the project's or the baseline) trains on."""
    import trl

    orig = trl.SFTTrainer.training_step

    def counting(self: Any, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
        timer.count(inputs)
        return orig(self, model, inputs, *a, **kw)

    trl.SFTTrainer.training_step = counting  # type: ignore[method-assign]
    try:
        yield
    finally:
        trl.SFTTrainer.training_step = orig  # type: ignore[method-assign]


def summarise(name: str, timer: StepTimer, warmup: int, fpt: float, peak: float | None) -> dict[str, Any]:
    times, toks = timer.times[warmup:], timer.tokens[warmup:]
    if not times:
        raise SystemExit(f"{name}: no timed steps after {warmup} warm-up steps; raise --steps")
    per_step = [t / s for t, s in zip(toks, times, strict=True)]
    tps = statistics.median(per_step)
    out = {"run": name, "steps_timed": len(times), "median_step_s": round(statistics.median(times), 4),
           "median_tokens_per_step": statistics.median(toks), "tokens_per_s": round(tps, 1),
           "model_tflops_per_s": round(tps * fpt / 1e12, 3)}
    out["mfu"] = round(tps * fpt / peak, 4) if peak else None
    return out


def run_project(model_dir: Path, data: tuple[str, ...], method: str, args: argparse.Namespace,
                work: Path) -> StepTimer:
    from globmed_edge.train.config import load_config
    from globmed_edge.train.recipe import run

    timer = StepTimer()
    cfg = load_config(overrides=dict(
        model=str(model_dir), data=data, output_dir=str(work / f"project-{method}"), method=method,
        max_seq_len=args.seq_len, packing=True, batch_size=args.batch_size, grad_accum=1,
        max_steps=args.steps, train_samples=args.samples, eval_steps=-1, save_steps=10**9,
        logging_steps=10**9, gradient_checkpointing=args.gradient_checkpointing, resume="never",
        warmup_ratio=0.0), use_env=False)
    with counting_tokens(timer):
        run(cfg, callbacks=[timer.callback()], progress=False)
    return timer


def run_baseline(model_dir: Path, data: tuple[str, ...], args: argparse.Namespace, work: Path) -> StepTimer:
    """Plain TRL SFTTrainer, default settings, on the same examples as conversations."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from globmed_edge.train.config import load_config
    from globmed_edge.train.data import load_splits

    cfg = load_config(overrides=dict(data=data, train_samples=args.samples, max_seq_len=args.seq_len),
                      use_env=False)
    splits = load_splits(cfg.data, languages=cfg.languages, train_samples=cfg.train_samples,
                         temperature=cfg.sampling_temperature, seed=cfg.seed,
                         include_rationale=cfg.include_rationale, system_prompt=cfg.system_prompt,
                         dev_fraction=cfg.dev_fraction, dev_max_per_lang=cfg.dev_max_per_lang)
    rows = [{"messages": ex.as_messages()} for ex in splits.train]
    bf16 = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    sft_args = trl.SFTConfig(output_dir=str(work / "baseline"), max_length=args.seq_len,
                             per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                             bf16=bf16, report_to=[], save_strategy="no", logging_steps=10**9,
                             disable_tqdm=True)
    trainer = trl.SFTTrainer(model=model, args=sft_args, train_dataset=Dataset.from_list(rows),
                             processing_class=AutoTokenizer.from_pretrained(model_dir))
    timer = StepTimer()
    trainer.add_callback(timer.callback())
    with counting_tokens(timer):
        trainer.train()
    return timer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: the prepared default model)")
    ap.add_argument("--data", action="append", default=[], help="training data (default: packaged sample)")
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen3 for a CPU check of this script")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps excluded from the medians")
    ap.add_argument("--samples", type=int, default=20000, help="examples per epoch after balancing")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's dense bf16 peak")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    import torch

    from globmed_edge.bench.hardware import profile
    from globmed_edge.models import prepare

    tok_dir = args.tokenizer or prepare("smollm2-135m-instruct", progress=False)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAKS.items() if gpu and k in gpu), None)
    results: dict[str, Any] = {"gpu": gpu, "peak_flops": peak, "seq_len": args.seq_len,
                               "batch_size": args.batch_size, "hardware": profile(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="globmed-train-tput-") as tmp:
        work = Path(tmp)
        model_dir = build_model(work / "model", TINY if args.tiny else QWEN3_1_7B, Path(tok_dir))
        data = tuple(args.data)
        for method in [m for m in args.methods.split(",") if m]:
            fpt, n = flops_per_token(model_dir, args.seq_len, method)
            results["non_embedding_params"] = n
            res = summarise(f"globmed-edge {method} (packing)", run_project(model_dir, data, method, args, work),
                            args.warmup, fpt, peak)
            results["runs"].append(res)
            print(json.dumps(res), flush=True)
        if not args.no_baseline:
            fpt, _ = flops_per_token(model_dir, args.seq_len, "full")
            base = summarise("plain TRL SFTTrainer full (defaults)", run_baseline(model_dir, data, args, work),
                             args.warmup, fpt, peak)
            results["runs"].append(base)
            print(json.dumps(base), flush=True)
            full = next((r for r in results["runs"] if r["run"].startswith("globmed-edge full")), None)
            if full and base["tokens_per_s"] > 0:
                results["speedup_vs_trl_defaults"] = round(full["tokens_per_s"] / base["tokens_per_s"], 3)
                print(f"globmed-edge full / plain TRL: {results['speedup_vs_trl_defaults']}x tokens/s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
