"""How big is a clinic bundle, and how long does it take to install offline?

Makes one bundle of the given builds (`globmed-edge bundle create`, timed), then installs it --rounds
times into a fresh virtual environment and data home with `sh install.sh` (inside `unshare -n`, a
network namespace with no network, when this machine allows it), timing each install from start to
the doctor's canary, and one `chat --prompt` answer from the installed environment. Reported beside
the builder's own environment (this interpreter's prefix) so the wheelhouse's share is measured in
the same run: bundle size split (builds / wheels / other), installed environment size, medians and
min-max of the install times.

    python lab/perf/bundle_install.py BUILD... [--rounds 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def netns() -> list[str]:
    ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0 if shutil.which("unshare") else False
    return ["unshare", "-n"] if ok else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "globmed_edge"]
    wrap = netns()
    with tempfile.TemporaryDirectory(prefix="bundle-bench-") as tmp:
        root = Path(tmp)
        bundle = root / "usb" / "clinic"
        t0 = time.perf_counter()
        subprocess.run([*cmd, "bundle", "create", str(bundle), *[a for b in args.builds for a in ("--build", b)]],
                       check=True, stdout=subprocess.DEVNULL)
        create_s = time.perf_counter() - t0
        manifest = json.loads((bundle / "bundle.json").read_text())
        installs, envs = [], []
        for i in range(args.rounds):
            venv, home = root / f"venv{i}", root / f"home{i}"
            env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "GLOBMED_EDGE_HOME": str(home), "LANG": "C.UTF-8"}
            t0 = time.perf_counter()
            subprocess.run([*wrap, "sh", str(bundle / "install.sh"), "--venv", str(venv)], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            installs.append(time.perf_counter() - t0)
            envs.append(du(venv))
            print(f"install {i + 1}/{args.rounds}: {installs[-1]:.1f} s", file=sys.stderr)
        name = manifest["builds"][0]["name"]
        t0 = time.perf_counter()
        chat = subprocess.run([*wrap, str(root / "venv0" / "bin" / "globmed-edge"), "chat", name, "--prompt",
                               "What are the danger signs of dehydration in a child?"], env=env,
                              capture_output=True, text=True, check=True)
        chat_s = time.perf_counter() - t0
    builder = du(Path(sys.prefix))
    sizes = manifest["sizes"]
    result = {
        "builds": [b["name"] for b in manifest["builds"]], "network_namespace": bool(wrap),
        "cpus": os.cpu_count(), "create_s": round(create_s, 1),
        "bundle_bytes": {k: v for k, v in sizes.items()}, "wheels": len(manifest["wheels"]),
        "install_s": {"median": round(statistics.median(installs), 1), "min": round(min(installs), 1),
                      "max": round(max(installs), 1), "runs": [round(x, 1) for x in installs]},
        "installed_env_bytes": statistics.median(envs), "builder_env_bytes": builder,
        "wheelhouse_share_of_builder_env": round(sizes["wheels_bytes"] / builder, 4),
        "installed_share_of_builder_env": round(statistics.median(envs) / builder, 4),
        "chat_prompt_s": round(chat_s, 1), "chat_words": len(chat.stdout.split()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
