"""`quantize`: every requested build of one source model, each checked and recorded.

For each build (format + quantization) the runner
1. skips it when a complete build of the same name already exists, its manifest verifies and it
   was made from the same source (and calibration set): re-running resumes;
2. otherwise creates a hidden temporary sibling (`atomic_dir`), runs the exporter into it, loads
   the result through its own backend for the parity check (quantize/parity.py), hashes every
   file, writes manifest.json, and only then renames it into place.

An interrupted run (Ctrl-C, kill, full disk, an exception) leaves at most a hidden `.NAME.*.partial`
directory, which `models list` never shows and the next run removes. One run at a time holds
`OUT/.quantize.lock`, so that clean-up never touches another live run's directory.

The runner names no format: what varies per format (its backend, options, calibration policy,
runtime packages, example quantizations) comes from the exporter's `FormatDescriptor`
(quantize/descriptor.py), found through the EXPORTERS registry.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.errors import (
    ConfigError,
    DependencyError,
    GlobmedError,
    ManifestError,
    NotAvailableError,
    ParityError,
    UnknownNameError,
)
from globmed_edge.quantize import base
from globmed_edge.quantize.base import Calibration, ExportRequest, QuantSpec
from globmed_edge.quantize.descriptor import FormatDescriptor
from globmed_edge.quantize.source import (
    SourceInfo,
    check_source,
)

DEFAULT_FORMATS = ("gguf:q8_0,q4_k_m", "onnx:int8,int4")
LOCK = ".quantize.lock"


@dataclass(frozen=True)
class Target:
    format: str
    quantization: str
    spec: QuantSpec | None = None  # None when the exporter cannot be imported here
    unavailable: str | None = None  # why this format cannot be built here

    @property
    def label(self) -> str:
        return f"{self.format}:{self.quantization}"


@dataclass(frozen=True)
class QuantizeOptions:
    out: Path
    formats: tuple[str, ...] = DEFAULT_FORMATS
    calibration: tuple[Path, ...] = ()  # empty: the packaged samples
    calibration_size: int = 256
    imatrix: bool = True
    allow_drift: bool = False
    force: bool = False
    threads: int | None = None
    progress: bool = False
    options: tuple[str, ...] = ()  # "FMT.KEY=VALUE" (--option): any option a format declares


def _run_wide(opts: QuantizeOptions) -> dict[str, Any]:
    """Run-wide flags, each setting the option of the same name in every format that declares
    one: --no-imatrix (`imatrix`) and --threads (`threads`; not given: the format's default)."""
    return {k: v for k, v in {"imatrix": opts.imatrix, "threads": opts.threads}.items() if v is not None}


@dataclass
class Outcome:
    """One row of the final table (and of `--json`)."""

    build: str
    format: str
    quantization: str
    status: str  # built | skipped | failed | unavailable
    path: str | None = None
    size_bytes: int | None = None
    bits_per_weight: float | None = None
    parity: dict[str, Any] | None = None
    passed: bool | None = None
    allow_drift: bool = False
    message: str = ""
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exporter_class(fmt: str) -> Any:
    """The exporter class of a format (raises UnknownNameError, ImportError)."""
    return base.EXPORTERS.load(fmt)


def descriptor(fmt: str) -> FormatDescriptor:
    """What a format declares about itself (raises UnknownNameError, ImportError)."""
    desc: FormatDescriptor = exporter_class(fmt).descriptor
    return desc


def parse_targets(specs: Sequence[str]) -> list[Target]:
    """`FMT:Q1,Q2` strings -> targets, validated against the registry (did-you-mean errors)."""
    targets: list[Target] = []
    for spec in specs:
        fmt, sep, quants = spec.partition(":")
        fmt = fmt.strip().lower()
        base.EXPORTERS.target(fmt)  # unknown format -> UnknownNameError with a suggestion
        names = [q.strip().lower() for q in quants.split(",") if q.strip()]
        try:
            desc: FormatDescriptor | None = descriptor(fmt)
        except ImportError as exc:
            desc, why = None, f"the {fmt} exporter is not installed here ({exc})"
        if not sep or not names:
            raise ConfigError(f"--format {spec!r}: give the quantizations too, e.g. {fmt}:"
                              f"{desc.example if desc and desc.example else 'Q1,Q2'}")
        quantizations: Mapping[str, QuantSpec] | None = desc.quantizations if desc else None
        for q in names:
            if quantizations is not None and q not in quantizations:
                raise UnknownNameError(f"{fmt} quantization", q, list(quantizations))
            t = Target(fmt, q, quantizations[q] if quantizations else None,
                       None if quantizations is not None else why)
            if all(t.label != o.label for o in targets):
                targets.append(t)
    return targets


def parse_options(flags: Sequence[str], targets: Sequence[Target]) -> dict[str, dict[str, Any]]:
    """`FMT.KEY=VALUE` strings (--option) -> {format: {key: typed value}}.

    Each is checked against its format's descriptor (unknown format or key with a did-you-mean,
    a value of the wrong type or out of range) and against the requested builds: an option for a
    format or quantization that is not being built would silently do nothing, so it is an error.
    """
    out: dict[str, dict[str, Any]] = {}
    for flag in flags:
        key, eq, value = flag.partition("=")
        fmt, dot, name = key.strip().partition(".")
        fmt, name = fmt.strip().lower(), name.strip()
        if not (eq and dot and fmt and name):
            raise ConfigError(f"--option {flag}: write it as FMT.KEY=VALUE (`quantize --help` lists "
                              "every format's options)")
        try:
            base.EXPORTERS.target(fmt)
            desc = descriptor(fmt)
            opt = desc.option(name)
            parsed = opt.parse(value.strip(), title=desc.title)
        except ConfigError as exc:
            raise ConfigError(f"--option {flag}: {exc}") from None
        except ImportError as exc:
            raise ConfigError(f"--option {flag}: the {fmt} exporter is not installed here ({exc})") from None
        wanted = [t.quantization for t in targets if t.format == fmt]
        if not wanted:
            raise ConfigError(f"--option {flag}: no {fmt} build is requested (add --format {fmt}:"
                              f"{desc.example or 'Q1,Q2'})")
        if not any(desc.applies(opt, q) for q in wanted):
            raise ConfigError(f"--option {flag}: {desc.title} {name} applies to "
                              f"{'/'.join(opt.quantizations)}, and no such {fmt} build is requested")
        out.setdefault(fmt, {})[name] = parsed
    return out


def check_available(target: Target, options: Mapping[str, Any] | None = None) -> str | None:
    """Why this machine cannot build `target` with these exporter options (None when it can)."""
    if target.unavailable:
        return target.unavailable
    try:
        exporter_class(target.format)().check_available(options or {})
    except (NotAvailableError, DependencyError) as exc:
        return str(exc)
    return None


def build_name(model: str, target: Target) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "model"
    return f"{base}-{target.format}-{target.quantization}"


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT/.quantize.lock; a second run on the same folder is refused, not raced."""
    try:  # a read-only or missing --out is one line, before any export starts
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / LOCK, "a+")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write builds here ({exc.strerror or exc})") from None
    try:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            pass
        except OSError:
            raise ConfigError(f"{out}: another `globmed-edge quantize` is writing builds here") from None
        yield
    finally:
        fh.close()


def clean_stale(out: Path) -> list[str]:
    """Remove temporaries of killed runs (call with the lock held). Returns what was removed."""
    removed = []
    for p in sorted(out.iterdir()):
        if not (p.is_dir() and p.name.startswith(".")):
            continue
        if p.name.endswith(".old"):
            final = out / p.name[1:-len(".old")]
            if not final.exists():  # killed between the two renames: the old build is intact
                os.replace(p, final)
                continue
        if p.name.endswith((".partial", ".old")):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def existing_build(path: Path, source_sha: str, calibration_sha: str | None,
                   build_options: Mapping[str, Any] | None = None) -> tuple[bool, str]:
    """(reusable, why) for a folder where a build of this name would go.

    `build_options` are the options that change the build (FormatDescriptor.build_options); a
    manifest that records different ones is rebuilt, one written before they were recorded is not.
    """
    from globmed_edge.manifest import verify_build

    try:
        manifest, problems = verify_build(path)
    except ManifestError as exc:
        return False, str(exc)
    if problems:
        return False, f"files do not match its manifest ({problems[0]})"
    if manifest.source.get("sha256") != source_sha:
        return False, "it was built from a different source model"
    if (manifest.calibration or {}).get("sha256") != calibration_sha:
        return False, "it was built with a different calibration set (or imatrix setting)"
    recorded = manifest.extra.get("build_options")
    if build_options is not None and isinstance(recorded, dict) and recorded != dict(build_options):
        changed = [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in build_options.items() if recorded.get(k) != v]
        return False, f"it was built with different options ({', '.join(changed) or 'another set'})"
    return True, "up to date (manifest verifies, same source)"


def _outcome_from_manifest(name: str, target: Target, path: Path, status: str, message: str) -> Outcome:
    from globmed_edge.manifest import load_manifest

    m = load_manifest(path)
    return Outcome(name, target.format, target.quantization, status, str(path), m.size_bytes,
                   m.bits_per_weight, m.parity, (m.parity or {}).get("passed"), m.allow_drift,
                   message, m.wall_seconds)


@dataclass
class QuantizeRun:
    """State shared by the builds of one run: loaded once, on first need.

    `format_options` are the parsed --option values (`parse_options`), per format.
    """

    source: Path
    model_name: str
    info: SourceInfo
    opts: QuantizeOptions
    warn: Callable[[str], None]
    source_sha: str = ""
    format_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    _calibration: Calibration | None = None
    _reference: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def calibration(self) -> Calibration:
        if self._calibration is None:
            from globmed_edge.quantize.calibration import build_calibration

            t0 = time.perf_counter()
            self._calibration = build_calibration(self.opts.calibration or None, size=self.opts.calibration_size)
            self.timings["calibration"] = round(time.perf_counter() - t0, 2)
        return self._calibration

    def reference(self) -> Any:
        if self._reference is None:
            from globmed_edge.quantize.parity import compute_reference

            self._reference = compute_reference(self.source, threads=self.opts.threads,
                                                progress=self.opts.progress)
        return self._reference

    def uses_calibration(self, target: Target) -> bool:
        return descriptor(target.format).uses_calibration(target.quantization, self.export_options(target))

    def export_options(self, target: Target) -> dict[str, Any]:
        """The options this build's exporter is given: the run-wide flags for the formats that
        declare an option of that name, then --option values; each only where it applies."""
        desc = descriptor(target.format)
        given = {**_run_wide(self.opts), **self.format_options.get(target.format, {})}
        declared = {o.name: o for o in desc.options}
        return {k: v for k, v in given.items() if k in declared and desc.applies(declared[k], target.quantization)}

    def build_options(self, target: Target) -> dict[str, Any]:
        """The resolved options that change this build (the manifest records them)."""
        return descriptor(target.format).build_options(target.quantization, self.export_options(target))


def quantize(model: str | Path, opts: QuantizeOptions, *, warn: Callable[[str], None] = print) -> list[Outcome]:
    """Make every requested build of `model` (an HF folder or an embedded model name)."""
    from globmed_edge.models import MODELS, resolve_model

    targets = parse_targets(opts.formats)
    format_options = parse_options(opts.options, targets)
    source = resolve_model(model).resolve()
    info = check_source(source)
    model_name = str(model) if str(model) in MODELS else source.name
    run = QuantizeRun(source, model_name, info, opts, warn, format_options=format_options)
    outcomes: list[Outcome] = []
    with locked(opts.out):
        for name in clean_stale(opts.out):
            warn(f"removed {opts.out / name} (left by an interrupted run)")
        run.source_sha = source_hash(source, progress=opts.progress)
        for i, target in enumerate(targets, 1):
            name = build_name(model_name, target)
            if not opts.progress:  # no progress bar (stderr is not a terminal): one line per build
                warn(f"[{i}/{len(targets)}] {name}")
            why = target.unavailable or check_available(target, run.export_options(target))
            if why:
                warn(f"warning: skipping {target.label}: {why}")
                outcomes.append(Outcome(name, target.format, target.quantization, "unavailable", message=why))
                continue
            outcomes.append(_one(run, target, name))
    return outcomes


def _one(run: QuantizeRun, target: Target, name: str) -> Outcome:
    final = run.opts.out / name
    try:
        cal = run.calibration() if run.uses_calibration(target) else None
        if final.exists() and not run.opts.force:
            ok, why = existing_build(final, run.source_sha, cal.sha256 if cal else None,
                                     run.build_options(target))
            if ok:
                run.warn(f"{name}: skipped, {why} (use --force to rebuild)")
                return _outcome_from_manifest(name, target, final, "skipped", why)
            run.warn(f"{name}: replacing the existing folder: {why}")
        manifest, message = make_build(run, target, name, final, cal)
    except ParityError as exc:
        run.warn(f"error: {exc}")
        return Outcome(name, target.format, target.quantization, "failed", passed=False,
                       parity=exc.parity, message=str(exc))
    except GlobmedError as exc:
        run.warn(f"error: {name}: {exc}")
        return Outcome(name, target.format, target.quantization, "failed", message=str(exc))
    except Exception as exc:  # an exporter or runtime bug: fail this build, keep building the others
        if os.environ.get("GLOBMED_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        msg = f"unexpected {type(exc).__name__}: {first} (set GLOBMED_DEBUG=1 for the traceback)"
        run.warn(f"error: {name}: {msg}")
        return Outcome(name, target.format, target.quantization, "failed", message=msg)
    return Outcome(name, target.format, target.quantization, "built", str(final), manifest.size_bytes,
                   manifest.bits_per_weight, manifest.parity, (manifest.parity or {}).get("passed"),
                   manifest.allow_drift, message, manifest.wall_seconds)


# ---------------------------------------------------------------------------- the source model

def source_hash(path: Path, *, progress: bool = False) -> str:
    """sha256 over (relative path, sha256) of every file of a model folder, hidden ones excluded."""
    import hashlib

    from tqdm.auto import tqdm

    from globmed_edge.atomic import sha256_file

    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    lines = []
    for p in tqdm(files, desc=f"hash {path.name}", unit="file", disable=not progress, leave=False):
        lines.append(f"{p.relative_to(path).as_posix()}\t{sha256_file(p)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ---------------------------------------------------------------------------- one build


def make_build(run: QuantizeRun, target: Target, name: str, final: Path, cal: Calibration | None) -> tuple[Any, str]:
    """Export, check, hash and record one build in a temporary sibling, then rename it."""
    import resource

    from tqdm.auto import tqdm

    from globmed_edge import __version__
    from globmed_edge.atomic import atomic_dir
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest
    from globmed_edge.quantize.parity import check_parity, enforce

    assert target.spec is not None
    desc = descriptor(target.format)
    exporter = exporter_class(target.format)()
    options = run.export_options(target)
    t0 = time.perf_counter()
    steps: dict[str, float] = {}
    bar = tqdm(total=4, desc=name, unit="step", disable=not run.opts.progress)

    def stage(text: str) -> None:
        """The bar's stage; without a bar (stderr redirected, CI, nohup) one line on stderr each."""
        bar.set_postfix_str(text)
        if not run.opts.progress:
            run.warn(f"{name}: {text}")

    try:
        with atomic_dir(final, replace=True) as tmp:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; a build is shared like any folder
            stage("export")
            result = exporter.export(ExportRequest(
                source=run.source, out_dir=tmp, quantization=target.quantization, calibration=cal,
                options=options, progress=lambda s: bar.set_postfix_str(s[:70]),
                model_name=run.model_name))
            steps["export"] = round(time.perf_counter() - t0, 2)
            bar.update()
            t_ref = time.perf_counter()
            stage("parity: source model")
            reference = run.reference()  # once per run; not counted in this build's time
            t_ref = time.perf_counter() - t_ref
            t1 = time.perf_counter()
            stage("parity")
            parity = check_parity(tmp, target.format, reference, target.spec.thresholds,
                                  threads=run.opts.threads, progress=run.opts.progress, label=name,
                                  backend_name=desc.backend)
            steps["parity"] = round(time.perf_counter() - t1, 2)
            bar.update()
            enforce(parity, allow_drift=run.opts.allow_drift, label=name)  # ParityError carries the result
            stage("hash")
            t2 = time.perf_counter()
            files = hash_build_files(tmp)
            steps["hash"] = round(time.perf_counter() - t2, 2)
            bar.update()
            self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            manifest = Manifest(
                name=name, format=target.format, quantization=target.quantization,
                bits_per_weight=result.bits_per_weight if result.bits_per_weight is not None
                else target.spec.bits_per_weight,
                files=files,
                source={"id": run.model_name, "path": str(run.source), "sha256": run.source_sha,
                        "architecture": run.info.architecture, "model_type": run.info.model_type,
                        "weights": list(run.info.weights), "record": _record(run.source)},
                tokenizer=run.info.tokenizer, stop_tokens=list(result.stop_tokens),
                calibration=_calibration_record(cal, target, result.extra),
                tools={"globmed-edge": __version__, **result.tools, **_parity_tools(desc.runtime_packages)},
                parity=parity.to_dict(), allow_drift=run.opts.allow_drift,
                wall_seconds=round(time.perf_counter() - t0 - t_ref, 2),
                peak_rss_bytes=max(self_rss, child_rss),
                extra={"exporter": result.extra, "seconds": steps,
                       "parity_reference_seconds": reference.seconds,
                       "peak_rss_self_bytes": self_rss, "peak_rss_children_bytes": child_rss,
                       "options": options, "build_options": run.build_options(target)},
            )
            write_manifest(tmp, manifest)
            bar.update()
    finally:
        bar.close()
    if not run.opts.progress:
        run.warn(f"{name}: done in {time.perf_counter() - t0:.1f} s (parity {'passed' if parity.passed else 'FAILED'})")
    message = "parity FAILED, kept with --allow-drift" if not parity.passed else "parity passed"
    if not parity.passed:
        run.warn(f"warning: {name}: {'; '.join(parity.failures)} (kept: --allow-drift)")
    return manifest, message


def _calibration_record(cal: Calibration | None, target: Target, extra: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration set given to the exporter, and whether it used it.

    A format may get the set for every quantization and apply it only to some (GGUF: the
    importance matrix, for the k-quants and q4_0): its exporter says so by reporting the
    descriptor's `calibration.applied_key` in extra.
    """
    from globmed_edge.quantize.calibration import manifest_record

    if cal is None:
        return None
    assert target.spec is not None
    policy = descriptor(target.format).calibration
    applied = target.spec.needs_calibration or bool(policy.applied_key and extra.get(policy.applied_key))
    return {**manifest_record(cal), "used_for": policy.used_for, "applied": applied}


def _record(source: Path) -> dict[str, Any] | None:
    """Where an embedded or tiny model came from (its globmed_model.json), if it has one."""
    from globmed_edge.models import read_record

    rec = read_record(source)
    return {k: rec[k] for k in ("name", "title", "license", "source", "seed") if k in rec} if rec else None


def _parity_tools(runtime_packages: Sequence[str]) -> dict[str, str]:
    """Versions of the runtimes the parity check used (build side and source side)."""
    import importlib.metadata as md

    out = {}
    for dist in [*runtime_packages, "transformers", "torch", "numpy"]:
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out
