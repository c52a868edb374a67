"""`models show BUILD`: a build's manifest as a short summary (the raw manifest is `--json`).

Manifest values are data (a manifest may come from anywhere): every one is read defensively and
printed through clean_line, so a missing or odd value shows as "-", never as a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from globmed_edge.clikit import human_size
from globmed_edge.manifest import Manifest


def _num(value: Any, spec: str) -> str:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return format(value, spec) if ok else "-"


def _int(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _flag(value: Any, yes: str, no: str, unknown: str = "-") -> str:
    return yes if value is True else no if value is False else unknown




def _sha(value: Any) -> str:
    return f"sha256 {value[:12]}" if isinstance(value, str) and value else ""


def _source(source: dict[str, Any]) -> str:
    what = source.get("id") or source.get("path") or "-"
    extras = [str(x) for x in (_sha(source.get("sha256")), source.get("architecture")) if x]
    text = f"{what} ({', '.join(extras)})" if extras else str(what)
    path = source.get("path")
    return f"{text} from {path}" if path and path != what else text


def _calibration(cal: dict[str, Any] | None) -> str:
    if not cal:
        return "none"
    langs = cal.get("languages")
    langs = ", ".join(str(x) for x in langs) if isinstance(langs, list) else None
    parts = [f"{cal['texts']} texts" if isinstance(cal.get("texts"), int) else None,
             f"languages {langs}" if langs else None, _sha(cal.get("sha256")) or None]
    text = f"{cal.get('used_for', 'calibration')}: {', '.join(p for p in parts if p) or 'recorded'}"
    if cal.get("applied") is False:
        text += " (not applied: this quantization takes none)"
    return text


def _parity(manifest: Manifest) -> str:
    from globmed_edge.grade import parity_grade

    p = manifest.parity
    if not p:
        return "not checked (no parity section in the manifest)"
    passed = p.get("passed")
    verdict = _flag(passed, "pass", "FAIL")
    if passed is False and manifest.allow_drift:
        verdict += " (kept with --allow-drift)"
    tokens = _flag(p.get("tokens_identical"), "tokens identical", "TOKENS DIFFER from the source", "")
    numbers = [f"top-1 {_num(p.get('top1_agreement'), '.3f')}", f"mean KL {_num(p.get('mean_kl'), '.3g')}",
               f"greedy {_int(p.get('greedy_match_tokens'))}/{_int(p.get('greedy_tokens'))}"]
    text = f"{verdict}, {parity_grade(p)}: {', '.join(numbers)}" + (f", {tokens}" if tokens else "")
    failures = p.get("failures")
    if isinstance(failures, list) and failures:
        text += f" ({'; '.join(str(f) for f in failures)})"
    return text


def _languages(parity: dict[str, Any] | None) -> str | None:
    from globmed_edge.clikit import table
    from globmed_edge.grade import parity_grade

    langs = (parity or {}).get("languages")
    if not isinstance(langs, dict) or not langs:
        return None
    rows = []
    for lang, v in langs.items():
        v = v if isinstance(v, dict) else {}
        same = _flag(v.get("tokens_identical"), "same", "DIFFER")
        rows.append([lang, _int(v.get("positions")), _num(v.get("top1_agreement"), ".3f"),
                     _num(v.get("mean_kl"), ".3g"), same, parity_grade(v)])
    return table(["lang", "positions", "top-1", "mean KL", "tokens", "grade"], rows, right=(1, 2, 3))


def build_summary(path: Path, manifest: Manifest) -> str:
    """The summary `models show` prints for a build: what it is, where it came from, how far it
    drifted from its source (overall and per language), when and with what it was made."""
    from globmed_edge.textsafe import clean_line

    m = manifest
    n = len(m.files)
    bits = _num(m.bits_per_weight, ".2f")
    made = m.created_at + (f", in {m.wall_seconds:.0f} s" if isinstance(m.wall_seconds, (int, float)) else "")
    if isinstance(m.peak_rss_bytes, int):
        made += f", peak memory {human_size(m.peak_rss_bytes)}"
    rows = [("path", str(path)), ("format", m.format),
            ("quantization", m.quantization + (f", {bits} bits/weight" if bits != "-" else "")),
            ("size", f"{human_size(m.size_bytes)} in {n} file{'s' if n != 1 else ''}"),
            ("source", _source(m.source)), ("calibration", _calibration(m.calibration)),
            ("parity", _parity(m)), ("created", made),
            ("tools", ", ".join(f"{k} {v}" for k, v in m.tools.items()) or "-")]
    lines = [clean_line(f"{path.name}: {m.format} {m.quantization} build"
                        + (f" (manifest name {m.name})" if m.name != path.name else ""))]
    lines += [clean_line(f"  {label:13} {value}") for label, value in rows]
    per_lang = _languages(m.parity)
    if per_lang:
        lines += ["", "  parity per language (top-1 agreement and mean KL(source || build) on the probes):"]
        lines += [f"  {line}" for line in per_lang.splitlines()]
    return "\n".join(lines)
