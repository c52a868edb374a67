"""Per-language dev accuracy during training, with the project's own MCQ scorer.

The model in training memory is wrapped in the reference backend (no reload, no copy) and
scored exactly as `globmed-edge bench` scores a build: same prompt, same letter rule. Under
multi-GPU sharding (FSDP / ZeRO-3) every rank runs the same forward passes so collectives stay
in step; only the main process logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from globmed_edge.data.schema import MCQItem

log = logging.getLogger("globmed_edge.train")


def dev_accuracy(model: Any, tokenizer: Any, items: Sequence[MCQItem]) -> dict[str, float]:
    """{"dev_acc/<lang>": accuracy, ..., "dev_acc/mean": macro average over languages}."""
    from globmed_edge.backends.transformers_backend import TransformersBackend
    from globmed_edge.mcq.scorer import accuracy_by_lang, score_mcq

    was_training = model.training
    model.eval()
    try:
        backend = TransformersBackend.from_loaded(model, tokenizer)
        scores = score_mcq(backend, list(items))
    finally:
        if was_training:
            model.train()
    by_lang = accuracy_by_lang(scores)
    out = {f"dev_acc/{lang}": round(acc, 4) for lang, (acc, _n) in by_lang.items()}
    if by_lang:
        out["dev_acc/mean"] = round(sum(a for a, _ in by_lang.values()) / len(by_lang), 4)
    return out


class DevEvalCallback(TrainerCallback):
    """Scores the dev items at step 0, every `every` steps (0 = only at the end) and at the end."""

    def __init__(self, items: Sequence[MCQItem], tokenizer: Any, every: int) -> None:
        self.items, self.tokenizer, self.every = list(items), tokenizer, every
        self.history: list[tuple[int, dict[str, float]]] = []
        self.trainer: Any = None  # set after the trainer exists, to log through it

    def _run(self, step: int, model: Any) -> None:
        if not self.items:
            return
        start = time.perf_counter()
        metrics = dev_accuracy(model, self.tokenizer, self.items)
        self.history.append((step, metrics))
        mean = metrics.get("dev_acc/mean", float("nan"))
        log.info("step %d: dev accuracy %.3f over %d items in %.1fs: %s", step, mean, len(self.items),
                 time.perf_counter() - start,
                 " ".join(f"{k.split('/')[1]}={v:.2f}" for k, v in metrics.items()))
        if self.trainer is not None:
            self.trainer.log(dict(metrics))

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if state.global_step == 0:
            self._run(0, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.every > 0 and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._run(state.global_step, model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if not self.history or self.history[-1][0] != state.global_step:
            self._run(state.global_step, model)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1][1] if self.history else {}

    @property
    def initial(self) -> dict[str, float]:
        return self.history[0][1] if self.history and self.history[0][0] == 0 else {}
