"""The multiple-choice prompt: one template, rendered strictly.

Every backend is scored on exactly these strings, so the template lives in one place. A field
that the template names but the caller does not supply raises (lm-evaluation-harness once scored
dozens of tasks at chance because a literal `{premise}` reached the model), and so does a field
that renders empty.

Bench scoring, training examples (`train/data.py`), the dev-set eval and `models demo` all render
items with it. Zero-shot output:

    Question: <question>
    A. <option A>
    B. <option B>
    Answer:

k-shot prepends k solved examples of the same language, each ending in `Answer: <gold letter>`,
separated by a blank line.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from globmed_edge.data.schema import MCQItem
from globmed_edge.errors import ConfigError


@dataclass(frozen=True)
class PromptTemplate:
    """A `str.format` template whose every field must be given and non-empty."""

    name: str
    text: str

    @property
    def fields(self) -> tuple[str, ...]:
        names = [f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None]
        if any(not n or not n.isidentifier() for n in names):
            raise ConfigError(f"prompt template {self.name!r}: only named fields are allowed ({self.text!r})")
        return tuple(dict.fromkeys(names))

    def render(self, values: Mapping[str, str]) -> str:
        for f in self.fields:
            if f not in values:
                raise ConfigError(f"prompt template {self.name!r}: missing field {f!r}")
            if not str(values[f]).strip():
                raise ConfigError(f"prompt template {self.name!r}: field {f!r} is empty")
        return self.text.format_map({f: values[f] for f in self.fields})


QUESTION = PromptTemplate("mcq-question", "Question: {question}\n{options}\nAnswer:")
OPTION = PromptTemplate("mcq-option", "{letter}. {text}")
SHOT_SEPARATOR = "\n\n"


def render_options(options: Mapping[str, str]) -> str:
    return "\n".join(OPTION.render({"letter": k, "text": v}) for k, v in options.items())


def render_question(item: MCQItem) -> str:
    """The question block ending in `Answer:` (no trailing space: continuations start with one)."""
    return QUESTION.render({"question": item.question, "options": render_options(item.options)})


def render_solved(item: MCQItem) -> str:
    """A shot: the question block followed by its gold letter."""
    return f"{render_question(item)} {item.answer}"


def mcq_prompt(item: MCQItem, shots: Sequence[MCQItem] = ()) -> str:
    """The scoring context for `item`, with `shots` prepended as solved examples."""
    for shot in shots:
        if shot.id == item.id:
            raise ConfigError(f"item {item.id!r} is among its own shots (test item leaked into the prompt)")
        if shot.split == "test":
            raise ConfigError(f"shot {shot.id!r} is from the test split; shots must come from train/dev")
    blocks = [render_solved(s) for s in shots] + [render_question(item)]
    return SHOT_SEPARATOR.join(blocks)


def letter_continuations(item: MCQItem) -> list[str]:
    """`" A"`, `" B"`, ...: what follows `Answer:` for the letter rule."""
    return [f" {k}" for k in item.options]


def text_continuations(item: MCQItem) -> list[str]:
    """`" <option text>"`: what follows `Answer:` for the option-text rule."""
    return [f" {v.strip()}" for v in item.options.values()]
