"""`bundle create`: the builds a clinic needs, a wheelhouse to install them with no network, checksums,
an optional signature, an installer and a README, in one folder (or one .tar).

The folder is assembled under a hidden temporary name beside OUT and renamed only when complete, so
an interrupted create leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from globmed_edge import __version__
from globmed_edge.atomic import atomic_dir, sha256_file
from globmed_edge.buildref import resolve_build
from globmed_edge.bundle import wheelhouse
from globmed_edge.bundle.inventory import (
    BUILDS,
    MANIFEST,
    SIGNATURE,
    SUMS,
    WHEELS,
    check_path,
    walk,
    write_archive,
    write_sums,
)
from globmed_edge.bundle.verify import FORMAT, FORMAT_VERSION
from globmed_edge.errors import BundleError, GlobmedError

#: installed size / wheelhouse size, measured on the [clinic] set: 186 MiB installed from 44.5 MiB of
#: wheels (x4.2; docs/bundles.md), rounded up: install.sh checks this much free disk first
UNPACK_FACTOR = 5


@dataclass
class Selection:
    """Which builds, and why: named on the command line, or recommended from bench records."""

    builds: list[Path]
    by: str = "name"  # "name" or "results"
    tiers: list[dict[str, Any]] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    results: list[dict[str, str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def by_name(args: Sequence[str | Path]) -> Selection:
    return Selection([resolve_build(a) for a in args])


def from_results(files: Sequence[Path], tiers: Sequence[float], langs: Sequence[str]) -> Selection:
    """The builds `bench recommend` chooses for each RAM tier and the languages (one set for all tiers)."""
    from globmed_edge.bench.recommend import recommend
    from globmed_edge.bench.records import merge, to_dict

    if not tiers:
        raise BundleError("--from-results needs --ram (the clinics' RAM tiers in GiB, e.g. --ram 4,8)")
    records = merge(files)
    chosen: dict[str, Path] = {}
    rows = []
    for ram in tiers:
        rec = recommend(records, ram_gb=ram, langs=list(langs) or None)
        if rec.choice is None:
            raise BundleError(f"no build to bundle for {ram:g} GiB: {rec.summary}")
        if rec.choice == rec.reference and not rec.choice_path:
            raise BundleError(f"{ram:g} GiB: the recommendation is the reference {rec.choice}, which is not a build")
        rows.append({"ram_gb": ram, "langs": list(rec.langs), "choice": rec.choice, "summary": rec.summary})
        path = Path(rec.choice_path) if rec.choice_path else None
        chosen.setdefault(rec.choice, path if path is not None and path.exists() else resolve_build(rec.choice))
    picked = [r for r in records if getattr(r, "build", None) is not None and r.build.name in chosen]  # type: ignore[union-attr]
    return Selection(list(chosen.values()), "results", rows, list(langs),
                     [{"file": Path(f).name, "sha256": sha256_file(Path(f))} for f in files],
                     [to_dict(r) for r in picked])


def _check_builds(paths: list[Path]) -> list[tuple[str, Path, Any]]:
    from globmed_edge.manifest import require_valid_build

    out, names = [], set()
    for p in paths:
        folder = p if p.is_dir() else p.parent
        try:
            manifest = require_valid_build(folder)
        except GlobmedError as exc:
            raise BundleError(f"{folder}: not a verified build, so it cannot be bundled ({exc})") from None
        if manifest.format not in wheelhouse.FORMAT_EXTRA:
            raise BundleError(f"{folder}: a {manifest.format} build; clinic laptops run gguf and onnx builds "
                              "(GPTQ needs CUDA and torch)")
        name = folder.resolve().name
        check_path(f"{BUILDS}/{name}", str(folder))
        if name in names:
            raise BundleError(f"{folder}: two builds named {name!r}; a bundle needs distinct build names")
        names.add(name)
        out.append((name, folder, manifest))
    if not out:
        raise BundleError("no build given: name builds with --build, or choose them with --from-results")
    return out


def _build_entry(name: str, manifest: Any, folder: Path) -> dict[str, Any]:
    parity = manifest.parity or {}
    return {"name": name, "path": f"{BUILDS}/{name}", "format": manifest.format,
            "quantization": manifest.quantization, "size_bytes": manifest.size_bytes,
            "files": len(manifest.files) + 1, "source": manifest.source,
            "parity_passed": parity.get("passed"),
            "manifest_sha256": sha256_file(folder / "manifest.json")}


def _render(template: str, values: dict[str, str]) -> str:
    text = resources.files("globmed_edge.bundle").joinpath(template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:
        raise BundleError(f"{template}: a placeholder was left unfilled")  # a bug here, not the user's
    return text


def _gib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def create(out: Path, selection: Selection, *, target: wheelhouse.Target, sign_key: Path | None = None,
           archive: bool = False, find_links: Sequence[Path] = (), no_index: bool = False,
           log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write the bundle at `out` (a new folder, or `out`.tar with archive=True); returns bundle.json."""
    start = time.perf_counter()
    final = out.with_name(out.name if out.name.endswith(".tar") else out.name + ".tar") if archive else out
    if final.exists():
        raise BundleError(f"{final}: already exists; choose a new name (a bundle is never overwritten)")
    check_path(final.name, str(final))
    if sign_key is not None:
        from globmed_edge.bundle.signing import sign

        sign(sign_key, b"")  # a bad key stops the work now, not after the wheelhouse is downloaded
    builds = _check_builds(selection.builds)
    extras = sorted({wheelhouse.FORMAT_EXTRA[m.format] for _, _, m in builds})
    steps = 5 + (sign_key is not None) + archive
    folder_final = final.with_name(final.name.removesuffix(".tar")) if archive else final
    work = folder_final.with_name(f".{folder_final.name}.work") if archive else folder_final
    if archive and work.exists():
        shutil.rmtree(work)
    with atomic_dir(work, replace=False) as tmp:
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep the bundle from other users of the stick
        log(f"[1/{steps}] copying {len(builds)} build(s)")
        for i, (name, folder, _m) in enumerate(builds, 1):
            log(f"      build {i}/{len(builds)}: {name}")
            shutil.copytree(folder, tmp / BUILDS / name, symlinks=True)
        log(f"[2/{steps}] wheelhouse for Python {target.python} {target.platform} (extras: {', '.join(extras)})")
        wheels = tmp / WHEELS
        wheels.mkdir()
        local = [wheelhouse.build_self_wheel(tmp / ".local")]
        if "clinic" in extras:
            local.append(wheelhouse.portable_llama_wheel(log))
        files = wheelhouse.download(target, extras, local, wheels, find_links=list(find_links), no_index=no_index)
        shutil.rmtree(tmp / ".local")
        for w in files:
            if w.name.startswith(wheelhouse.LLAMA_DIST + "-"):
                wheelhouse.check_portable(w)
        needs = {w.name: wheelhouse.glibc_needed(w) for w in files}
        glibc = max(needs.values())
        if glibc > target.glibc:
            too_new = ", ".join(f"{n} ({v[0]}.{v[1]})" for n, v in needs.items() if v > target.glibc)
            raise BundleError(f"--glibc {target.glibc[0]}.{target.glibc[1]}: these wheels need a newer glibc: "
                              f"{too_new}; make the bundle on a machine with that glibc or older")
        log(f"[3/{steps}] installer, README and bundle.json")
        wheel_bytes = sum(w.stat().st_size for w in files)
        build_bytes = sum(size for rel, size in walk(tmp / BUILDS))
        values = {"PYTHON": target.python, "EXTRAS": ",".join(extras), "VERSION": __version__,
                  "GLIBC": f"{glibc[0]}.{glibc[1]}", "NEED_KIB": str((wheel_bytes * UNPACK_FACTOR + build_bytes) // 1024 + 65536),
                  "BUILDS": "\n".join(f"  - {n} ({m.format} {m.quantization}, {_gib(m.size_bytes)})" for n, _, m in builds),
                  "FIRST": builds[0][0], "WHEELS_SIZE": _gib(wheel_bytes), "BUILDS_SIZE": _gib(build_bytes),
                  "TIERS": "\n".join(f"  - {t['ram_gb']:g} GiB, {', '.join(t['langs'])}: {t['choice']}"
                                     for t in selection.tiers) or "  (builds chosen by name)"}
        (tmp / "install.sh").write_text(_render("install.sh", values), encoding="utf-8")
        (tmp / "install.sh").chmod(0o755)
        (tmp / "README.txt").write_text(_render("README.txt", values), encoding="utf-8")
        manifest: dict[str, Any] = {
            "format": FORMAT, "version": FORMAT_VERSION, "name": folder_final.name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "created_with": {"globmed_edge": __version__, "python": platform.python_version(),
                             "builder_platform": f"{sys.platform}-{platform.machine()}"},
            "target": {**target.as_dict(), "glibc_min": f"{glibc[0]}.{glibc[1]}", "extras": extras},
            "builds": [_build_entry(n, m, f) for n, f, m in builds],
            "selection": {"by": selection.by, "tiers": selection.tiers, "langs": selection.langs,
                          "results": selection.results, "records": selection.records},
            "wheels": [{"file": w.name, "size_bytes": w.stat().st_size} for w in files],
            "sizes": {"wheels_bytes": wheel_bytes, "builds_bytes": build_bytes},
            "signed": sign_key is not None,
        }
        manifest["files"] = {rel: size for rel, size in walk(tmp)}
        other = sum(manifest["files"].values()) - wheel_bytes - build_bytes
        manifest["sizes"].update(other_bytes=other)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        manifest["sizes"]["total_bytes"] = sum(manifest["files"].values()) + (tmp / MANIFEST).stat().st_size
        log(f"[4/{steps}] {SUMS} over {len(manifest['files']) + 1} files")
        write_sums(tmp)
        step = 5
        if sign_key is not None:
            from globmed_edge.bundle.signing import sign

            log(f"[{step}/{steps}] signing {SUMS} with {sign_key.name}")
            (tmp / SIGNATURE).write_bytes(sign(sign_key, (tmp / SUMS).read_bytes()))
            step += 1
        log(f"[{step}/{steps}] checking the bundle as a clinic would")
        from globmed_edge.bundle.verify import verify_folder

        verify_folder(tmp)
    if archive:
        log(f"[{steps}/{steps}] one archive: {final.name}")
        partial = final.with_name(f".{final.name}.partial")
        try:
            write_archive(work, partial, folder_final.name)
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
    manifest["seconds"] = round(time.perf_counter() - start, 1)
    return manifest
