"""`bundle install`: put a verified bundle on this laptop, failing closed.

Two halves, so that the laptop needs nothing but python3, sha256sum (and openssl for a signature):

* the packages: `install.sh` in the bundle (checks, venv, `pip install --no-index` from wheels/);
  `bundle install BUNDLE` verifies the bundle here first, then runs that same script;
* the builds: `bundle install BUNDLE --no-packages`, which install.sh runs last with the new
  environment: verify again (this code came from the bundle, so it checks it itself), check free
  disk, copy each build into the data home under a hidden temporary name, re-verify it there
  against its manifest, rename; then `globmed-edge doctor` on the installed builds (a one-token
  canary each, in child processes) and the command that opens the chat.

A rerun after an interruption redoes only what is missing: an identical build already in place is
kept, a half-copied one was never renamed, so `models list` never shows it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_dir, atomic_write_text, sha256_file
from globmed_edge.bundle.inventory import BUILDS
from globmed_edge.bundle.verify import opened, verify_folder
from globmed_edge.errors import BundleError, ManifestError

MARGIN = 64 * 2**20  # free space kept beyond the builds' own size


def default_venv() -> Path:
    return Path(os.environ.get("GLOBMED_EDGE_VENV") or Path.home() / "globmed-edge").expanduser()


def install_packages(bundle: Path, *, venv: Path, key: Path | None, log: Callable[[str], None]) -> None:
    """Verify here, then run the bundle's own install.sh (which ends by installing the builds)."""
    from globmed_edge.paths import data_home

    with opened(bundle, scratch=data_home() / ".staging") as folder:
        log(f"verifying {bundle} before running anything from it")
        verify_folder(folder, key=key)
        cmd = ["sh", str(folder / "install.sh"), "--venv", str(venv)] + (["--key", str(key)] if key else [])
        code = subprocess.call(cmd)
        if code != 0:
            raise BundleError(f"{folder / 'install.sh'} stopped (exit {code}); see its message above")


def _installed_same(dest: Path, entry: dict[str, Any]) -> bool:
    from globmed_edge.manifest import require_valid_build

    if not (dest / "manifest.json").is_file() or sha256_file(dest / "manifest.json") != entry.get("manifest_sha256"):
        return False
    try:
        require_valid_build(dest)
    except ManifestError:
        return False
    return True


def install_builds(bundle: Path, *, key: Path | None, venv: Path | None, canary: bool = True,
                   log: Callable[[str], None]) -> list[Path]:
    from globmed_edge.manifest import require_valid_build
    from globmed_edge.paths import builds_dir, data_home, free_bytes

    with opened(bundle, scratch=data_home() / ".staging") as folder:
        verified = verify_folder(folder, key=key)
        log(f"[5/6] bundle {verified.manifest.get('name')}: {verified.files} files verified"
            + (f", signed by key {verified.key_fingerprint}" if verified.key_fingerprint else ""))
        entries = verified.manifest["builds"]
        todo = [e for e in entries if not _installed_same(builds_dir() / e["name"], e)]
        need = sum(int(e.get("size_bytes", 0)) for e in todo) + MARGIN
        free = free_bytes(builds_dir())
        if free < need:
            raise BundleError(f"{builds_dir()}: {free / 2**20:.0f} MiB free, the builds need {need / 2**20:.0f} MiB")
        installed = []
        for e in entries:
            dest = builds_dir() / e["name"]
            if e not in todo:
                log(f"      {e['name']}: already installed, unchanged")
            else:
                with atomic_dir(dest) as tmp:
                    shutil.copytree(folder / BUILDS / e["name"], tmp, dirs_exist_ok=True)
                    require_valid_build(tmp)  # checked where it will run, before it gets its name
                log(f"      {e['name']}: installed in {dest}")
            installed.append(dest)
        record = {**verified.manifest, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "installed_from": str(bundle)}
        atomic_write_text(data_home() / "bundles" / f"{verified.manifest.get('name')}.json",
                          json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    log("[6/6] globmed-edge doctor on the installed builds" + (" (a one-word answer each)" if canary else ""))
    code = subprocess.call([sys.executable, "-m", "globmed_edge", "doctor", *map(str, installed),
                            *([] if canary else ["--no-canary"])])
    if code != 0:
        raise BundleError(f"the builds are installed, but `globmed-edge doctor` found a problem (exit {code}); "
                          "see above")
    exe = (venv / "bin" / "globmed-edge") if venv else Path("globmed-edge")
    home = os.environ.get("GLOBMED_EDGE_HOME")
    prefix = f"GLOBMED_EDGE_HOME={home} " if home else ""
    log("done. Open the chat with:")
    print(f"{prefix}{exe} chat {installed[0].name}")
    return installed
