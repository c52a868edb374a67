"""The merged output folder and its training card.

`write_merged` turns the final checkpoint (a full model, or a LoRA adapter on the base model)
into a plain Hugging Face folder: safetensors in the base model's dtype, the base tokenizer and
chat template, a generation config that stops on the template's end-of-turn token, the base
model's NOTICE/LICENSE files, and `training_card.json` + `README.md`. It reloads from disk on
the main process rather than using the in-memory model, so it works the same after single-GPU,
FSDP or DeepSpeed training. Written into a temporary folder and renamed on success.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_dir

CARD_FILE = "training_card.json"
CARD_SCHEMA = 1
_LIBS = ("globmed-edge", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _LIBS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_card(*, base_model: Path, config: dict[str, Any], data_files: dict[str, str],
               train_counts: dict[str, int], weights: dict[str, float], dev_items: int, steps: int,
               metrics: dict[str, Any], data_fingerprint: str) -> dict[str, Any]:
    return {
        "schema_version": CARD_SCHEMA,
        "base_model": str(base_model),
        "base_model_record": _read_json(base_model / "globmed_model.json"),
        "method": config.get("method"),
        "data": {"files": data_files, "train_items_per_language": train_counts,
                 "sampling_weights": {k: round(v, 4) for k, v in weights.items()},
                 "dev_items": dev_items, "example_order_sha256_16": data_fingerprint},
        "languages": sorted(train_counts),
        "hyperparameters": config,
        "steps": steps,
        "metrics": metrics,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def card_markdown(card: dict[str, Any]) -> str:
    m = card["metrics"]
    lines = [
        f"# Fine-tune of {Path(card['base_model']).name} ({card['method']})", "",
        "Made with `globmed-edge train`. Medical information from a model is not medical advice.", "",
        f"- base model: `{card['base_model']}`",
        f"- languages: {', '.join(card['languages'])}",
        f"- optimizer steps: {card['steps']}",
        f"- final train loss: {m.get('train_loss_last')}",
        f"- dev accuracy (macro over languages): before {m.get('dev_before', {}).get('dev_acc/mean')}, "
        f"after {m.get('dev_after', {}).get('dev_acc/mean')}",
        "", "## Data", "",
        *[f"- `{f}` sha256 `{h}`" for f, h in card["data"]["files"].items()],
        "", "The full record (hyper-parameters, per-language metrics, library versions) is in "
        f"`{CARD_FILE}`.", "",
    ]
    return "\n".join(lines)


def write_merged(final_dir: Path, base_model: Path, out: Path, *, method: str,
                 stop_ids: list[int], card: dict[str, Any]) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base_cfg = _read_json(base_model / "config.json") or {}
    dtype = getattr(torch, str(base_cfg.get("dtype") or base_cfg.get("torch_dtype") or "float32"))
    if method == "lora":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, final_dir).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(final_dir, dtype=torch.float32)
    model.config.use_cache = True
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    gen = model.generation_config or GenerationConfig()
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else (
        [gen.eos_token_id] if gen.eos_token_id is not None else [])
    gen.eos_token_id = list(dict.fromkeys([*eos, *stop_ids]))
    if len(gen.eos_token_id) == 1:
        gen.eos_token_id = gen.eos_token_id[0]
    model.generation_config = gen
    with atomic_dir(out) as tmp:
        model.to(dtype).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in ("NOTICE", "LICENSE", "LICENSE.txt"):
            if (base_model / name).is_file():
                shutil.copy2(base_model / name, tmp / name)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card_markdown(card), encoding="utf-8")
    return out
