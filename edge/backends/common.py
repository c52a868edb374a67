"""Small helpers every backend shares, so that each rule is written (and tested) once.

* `loaded(x)`: the one "used before load()" guard;
* `check_options(...)`: unknown constructor options are a `ConfigError` with a did-you-mean, in
  every backend (a misspelt `n_thread` must not silently fall back to the default);
* `verify_build(...)`: the manifest rule (`globmed_edge.trust.check_model`), then the manifest's
  format against the backend's;
* `eos_ids(...)`: end-of-generation ids from config fields holding an id, a list or nothing;
* `log_softmax(x)`: float32 log-probabilities over the last axis (numpy backends);
* `ScoreCollector`: places each request's result in its slot and refuses to return a batch with
  an empty slot (a result silently dropped would shift every later item's score onto the wrong
  item).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from globmed_edge.backends.base import ScoreResult
from globmed_edge.errors import BackendError, ModelError, UnknownNameError

if TYPE_CHECKING:
    import numpy as np

    from globmed_edge.trust import Verification

T = TypeVar("T")


def loaded(value: T | None) -> T:
    """`value` (a backend's model, session or child process); BackendError while it is None."""
    if value is None:
        raise BackendError("backend used before load()")
    return value


def check_options(backend: str, unknown: Mapping[str, object], known: Iterable[str]) -> None:
    """Refuse constructor options a backend does not know:
    `unknown llamacpp backend option 'n_thread'; did you mean 'threads'? (known: ...)`."""
    if unknown:
        raise UnknownNameError(f"{backend} backend option", sorted(unknown)[0], list(known))


def verify_build(path: Path, fmt: str | None, *, verify: bool = True, where: Path | None = None) -> Verification:
    """The manifest rule for `path`; then a manifest of another format than `fmt` is refused
    (`where` names the folder in that message; default `path`). `fmt=None` skips the format."""
    from globmed_edge.trust import check_model

    verification = check_model(path, verify=verify)
    manifest = verification.manifest
    if fmt is not None and manifest is not None and manifest.format != fmt:
        raise ModelError(f"{where or path}: manifest format is {manifest.format!r}, not {fmt!r}")
    return verification


def eos_ids(*values: object) -> set[int]:
    """End-of-generation token ids from fields that hold one id, a list of ids, or None
    (`generation_config.eos_token_id`, `tokenizer.eos_token_id`, genai_config's `eos_token_id`)."""
    out: set[int] = set()
    for value in values:
        items = value if isinstance(value, list | tuple) else [value]
        out.update(v for v in items if isinstance(v, int) and not isinstance(v, bool))
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in float32 (the numpy backends' logits)."""
    import numpy as np

    x = x.astype(np.float32)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class ScoreCollector:
    """The results of one `score()` batch, each put in its request's slot.

    `results()` raises when a slot is still empty: a backend that lost a result must fail, not
    return a shorter list whose results then belong to the wrong requests.
    """

    def __init__(self, n: int) -> None:
        self._slots: list[ScoreResult | None] = [None] * n

    def put(self, indices: Sequence[int], results: Iterable[ScoreResult]) -> None:
        """Results of the requests `indices`, in that order (one group's)."""
        for i, result in zip(indices, results, strict=True):
            self._slots[i] = result

    def results(self) -> list[ScoreResult]:
        missing = [i for i, r in enumerate(self._slots) if r is None]
        if missing:
            raise BackendError(f"internal: score() has no result for request {missing[0]} "
                               f"({len(missing)} of {len(self._slots)} missing)")
        return [r for r in self._slots if r is not None]
