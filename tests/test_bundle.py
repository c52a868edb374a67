"""Deployment bundles (issue #13): create, verify (every way a bundle can be wrong), install offline.

One real bundle of the default model's GGUF q4_k_m build is made per session (its wheelhouse comes
from pip's index, as a model builder's would); the tamper tests work on hard-linked clones of it
with one file replaced, so each costs milliseconds. The install test runs install.sh inside a network
namespace with no network (`unshare -n`), then the chat from the environment it made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gguf, pytest.mark.slow]
BUILD = "smollm2-135m-instruct-gguf-q4_k_m"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "globmed_edge", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def q4km(default_model: Path, cache_dir: Path) -> Path:
    """The default model's GGUF q4_k_m build, made by `quantize` (once per test cache)."""
    out = cache_dir / "bundle-builds"
    done = run_cli("quantize", "smollm2-135m-instruct", "--format", "gguf:q4_k_m", "--no-imatrix", "--threads", "2",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / BUILD


@pytest.fixture(scope="module")
def made(q4km: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("usb") / "clinic"
    done = run_cli("bundle", "create", str(out), "--build", str(q4km))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[2/5] wheelhouse" in done.stderr and f"{BUILD}: gguf q4_k_m" in done.stdout
    return out


def clone(bundle: Path, dest: Path) -> Path:
    """A copy of `bundle` whose files are hard links (replace a file before changing it)."""
    shutil.copytree(bundle, dest, copy_function=os.link)
    return dest


def flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.unlink()  # break the hard link: the original bundle stays intact
    path.write_bytes(bytes(data))


def verify(bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("bundle", "verify", str(bundle), *extra)


# ------------------------------------------------------------------------------ what create writes

def test_bundle_holds_the_build_unchanged_and_only_the_clinic_runtime(made: Path, q4km: Path) -> None:
    m = json.loads((made / "bundle.json").read_text())
    assert [b["name"] for b in m["builds"]] == [BUILD]
    for f in q4km.iterdir():
        assert (made / "builds" / BUILD / f.name).read_bytes() == f.read_bytes()
    wheels = {w["file"].split("-")[0].lower() for w in m["wheels"]}
    assert {"globmed_edge", "llama_cpp_python", "textual", "numpy", "cryptography", "pip"} <= wheels
    assert not wheels & {"torch", "transformers", "onnxruntime", "gguf", "accelerate"}
    assert m["target"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    sizes = m["sizes"]
    assert sizes["wheels_bytes"] == sum(w["size_bytes"] for w in m["wheels"])
    assert sizes["builds_bytes"] == sum(p.stat().st_size for p in (made / "builds").rglob("*") if p.is_file())
    sums = (made / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in sums}
    on_disk = {p.relative_to(made).as_posix() for p in made.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == on_disk and "bundle.json" in listed and "install.sh" in listed
    ok = verify(made)
    assert ok.returncode == 0 and "not signed" in ok.stdout, ok.stderr


def test_portable_runtime_only(tmp_path: Path) -> None:
    import zipfile

    from globmed_edge.bundle.wheelhouse import check_portable
    from globmed_edge.errors import BundleError

    native = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(native, "w") as z:
        z.writestr("llama_cpp/lib/libggml-cpu.so", b"\x7fELF")
        z.writestr("llama_cpp/lib/libllama.so", b"\x7fELF")
    with pytest.raises(BundleError, match="compiled for one CPU"):
        check_portable(native)


def test_targets_it_cannot_serve_are_refused() -> None:
    from globmed_edge.bundle.wheelhouse import make_target
    from globmed_edge.errors import BundleError

    for python, plat, msg in [("3.9", None, "3.10 or newer"), (None, "win_amd64", "Linux laptops only"),
                              (None, "linux_aarch64", "compiled on the platform"), ("three", None, "3.X")]:
        with pytest.raises(BundleError, match=msg):
            make_target(python, plat, None)
    t = make_target("3.12", None, "2.31")
    assert t.abi == "cp312" and "manylinux_2_31_x86_64" in t.pip_platforms()
    assert "manylinux_2_32_x86_64" not in t.pip_platforms() and t.pip_platforms()[-1] == "linux_x86_64"


def test_create_refuses_what_is_not_a_verified_clinic_build(tmp_path: Path, q4km: Path) -> None:
    bad = tmp_path / "b"
    shutil.copytree(q4km, bad)
    flip(next(bad.glob("*.gguf")))
    r = run_cli("bundle", "create", str(tmp_path / "out"), "--build", str(bad))
    assert r.returncode != 0 and "not a verified build" in r.stderr and not (tmp_path / "out").exists()
    r = run_cli("bundle", "create", str(tmp_path / "out"), "--build", "no-such-build-name")
    assert r.returncode != 0 and "no-such-build-name" in r.stderr
    r = run_cli("bundle", "create", str(tmp_path / "out"), "--ram", "4")
    assert r.returncode != 0 and "--from-results" in r.stderr


# ------------------------------------------------------------------------------ verify refuses

@pytest.mark.parametrize("victim", [f"builds/{BUILD}/model.gguf", f"builds/{BUILD}/manifest.json", "bundle.json",
                                    "install.sh", "wheels/GLOBMED", "SHA256SUMS"])
def test_one_flipped_byte_anywhere_is_refused_naming_the_file(made: Path, tmp_path: Path, victim: str) -> None:
    b = clone(made, tmp_path / "b")
    if victim == "wheels/GLOBMED":
        victim = f"wheels/{next(p.name for p in (b / 'wheels').glob('globmed_edge-*.whl'))}"
    if not (b / victim).exists():  # the build file's name (model.gguf or <model>-<quant>.gguf)
        victim = next(p.relative_to(b).as_posix() for p in (b / "builds" / BUILD).glob("*.gguf"))
    flip(b / victim, offset=70 if victim == "SHA256SUMS" else None)
    r = verify(b)
    assert r.returncode == 1, r.stdout
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and (victim in line or "SHA256SUMS" in line), line
    sh = subprocess.run(["sh", str(b / "install.sh"), "--venv", str(tmp_path / "venv")], capture_output=True, text=True)
    assert sh.returncode == 1 and not (tmp_path / "venv").exists()
    assert victim in sh.stderr or "SHA256SUMS" in sh.stderr, sh.stderr


def test_paths_that_escape_links_and_added_files_are_refused(made: Path, tmp_path: Path) -> None:
    b = clone(made, tmp_path / "b")
    sums = b / "SHA256SUMS"
    text = sums.read_text()
    sums.unlink()
    sums.write_text(text + f"{'0' * 64}  ../outside\n")
    r = verify(b)
    assert r.returncode == 1 and "would leave the bundle" in r.stderr and "SHA256SUMS:" in r.stderr
    sums.unlink()
    sums.write_text(text)
    (b / "builds" / "evil").symlink_to("/etc/passwd")
    r = verify(b)
    assert r.returncode == 1 and "symbolic link" in r.stderr and "evil" in r.stderr
    (b / "builds" / "evil").unlink()
    (b / "wheels" / "click-99.0-py3-none-any.whl").write_bytes(b"PK")
    r = verify(b)
    assert r.returncode == 1 and "not listed in SHA256SUMS" in r.stderr and "click-99.0" in r.stderr
    sh = subprocess.run(["sh", str(b / "install.sh"), "--venv", str(tmp_path / "venv")], capture_output=True, text=True)
    assert sh.returncode == 1 and "click-99.0" in sh.stderr and not (tmp_path / "venv").exists()


def test_an_archive_verifies_and_one_that_escapes_is_refused(made: Path, tmp_path: Path) -> None:
    from globmed_edge.bundle.inventory import write_archive

    tar = tmp_path / "clinic.tar"
    write_archive(made, tar, "clinic")
    r = verify(tar)
    assert r.returncode == 0, r.stderr
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        t.add(made / "bundle.json", arcname="clinic/bundle.json")
        t.add(made / "README.txt", arcname="clinic/../../escaped.txt")
    r = verify(evil)
    assert r.returncode == 1 and "would leave the bundle" in r.stderr
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_signature_right_key_wrong_key_and_no_signature(made: Path, tmp_path: Path) -> None:
    from globmed_edge.bundle.signing import sign

    for who in ("ngo", "other"):
        r = run_cli("bundle", "keygen", str(tmp_path / who))
        assert r.returncode == 0 and "fingerprint" in r.stdout, r.stderr
    assert (tmp_path / "ngo").stat().st_mode & 0o077 == 0
    assert run_cli("bundle", "keygen", str(tmp_path / "ngo")).returncode == 1  # never overwrites a key
    unsigned = verify(made, "--key", str(tmp_path / "ngo.pub"))
    assert unsigned.returncode == 1 and "not signed" in unsigned.stderr
    b = clone(made, tmp_path / "b")
    (b / "SHA256SUMS.sig").write_bytes(sign(tmp_path / "ngo", (b / "SHA256SUMS").read_bytes()))
    ok = verify(b, "--key", str(tmp_path / "ngo.pub"))
    assert ok.returncode == 0 and "signature matches key" in ok.stdout, ok.stderr
    assert "NOT checked" in verify(b).stdout
    wrong = verify(b, "--key", str(tmp_path / "other.pub"))
    assert wrong.returncode == 1 and "signature does not match other.pub" in wrong.stderr
    sh = subprocess.run(["sh", str(b / "install.sh"), "--key", str(tmp_path / "other.pub"), "--venv",
                         str(tmp_path / "venv")], capture_output=True, text=True)
    assert sh.returncode == 1 and "signature does not match" in sh.stderr and not (tmp_path / "venv").exists()
    # a consistent rewrite (file and SHA256SUMS both changed) passes the checksums but not the signature
    flip(b / "README.txt")
    from globmed_edge.bundle.inventory import write_sums

    (b / "SHA256SUMS").unlink()
    write_sums(b)
    assert verify(b).returncode == 0
    assert verify(b, "--key", str(tmp_path / "ngo.pub")).returncode == 1


# ------------------------------------------------------------------------------ choosing by records

def test_from_results_picks_what_the_recommendation_picks(q4km: Path, tmp_path: Path) -> None:
    from test_bench_recommend import two_language_records, write

    from globmed_edge.bench.recommend import recommend
    from globmed_edge.bench.records import DriftRecord, Record
    from globmed_edge.bundle.create import from_results

    builds = {}
    for name in ("big", "small"):
        builds[name] = tmp_path / name
        shutil.copytree(q4km, builds[name])
    recs: list[Record] = []
    for rec in two_language_records():
        assert not isinstance(rec, DriftRecord)  # accuracy and throughput records only: each has a BuildInfo
        recs.append(replace(rec, build=replace(rec.build, path=str(builds[rec.build.name])))
                    if rec.build.name in builds else rec)
    results = write(recs, tmp_path / "results.jsonl")
    for langs in (["en", "sw"], ["en"]):
        want = recommend(recs, ram_gb=4, langs=langs).choice
        assert want is not None
        sel = from_results([results], [4], langs)
        assert sel.builds == [builds[want]] and sel.tiers[0]["choice"] == want
        assert sel.records and {r["build"]["name"] for r in sel.records} == {want}
    assert recommend(recs, ram_gb=4, langs=["en", "sw"]).choice != recommend(recs, ram_gb=4, langs=["en"]).choice
    r = run_cli("bundle", "create", str(tmp_path / "tiny-ram"), "--from-results", str(results), "--ram", "0.5")
    assert r.returncode == 1 and "no build to bundle for 0.5 GiB" in r.stderr


# ------------------------------------------------------------------------------ install, offline

def _netns_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _netns_ok(), reason="needs `unshare -n` (root, or user namespaces allowed) to install with no network")
def test_install_in_a_namespace_with_no_network_then_chat_answers(made: Path, tmp_path: Path) -> None:
    home, venv = tmp_path / "clinic-home", tmp_path / "clinic-venv"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GLOBMED_EDGE_HOME": str(home), "LANG": "C.UTF-8"}
    probe = subprocess.run(["unshare", "-n", "python3", "-c",
                            "import socket; socket.create_connection(('pypi.org', 443), timeout=3)"],
                           capture_output=True, text=True, env=env)
    assert probe.returncode != 0  # the namespace really has no network (no DNS, no route)
    inst = subprocess.run(["unshare", "-n", "sh", str(made / "install.sh"), "--venv", str(venv)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert inst.returncode == 0, inst.stderr[-3000:]
    assert "canary pass" in inst.stdout and f"{venv}/bin/globmed-edge chat {BUILD}" in inst.stdout
    installed = home / "builds" / BUILD
    assert (installed / "manifest.json").is_file()
    assert not any(p.name.startswith(".") for p in (home / "builds").iterdir())  # no partial left
    has = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
                          "print([m for m in ('torch', 'transformers', 'llama_cpp', 'textual') if u.find_spec(m)])"],
                         capture_output=True, text=True, env=env)
    assert has.stdout.strip() == "['llama_cpp', 'textual']"
    chat = subprocess.run(["unshare", "-n", str(venv / "bin" / "globmed-edge"), "chat", BUILD, "--prompt",
                           "What are the danger signs of dehydration in a child?"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert chat.returncode == 0, chat.stderr[-2000:]
    reply = chat.stdout.strip()
    assert len(reply.split()) > 5, chat.stdout
    # a rerun (after an interruption, or to repair) keeps the unchanged build and succeeds again
    again = subprocess.run(["unshare", "-n", "sh", str(made / "install.sh"), "--venv", str(venv)],
                           capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0 and "already installed, unchanged" in again.stderr, again.stderr[-2000:]


@pytest.mark.skipif(not _netns_ok(), reason="needs `unshare -n` (root, or user namespaces allowed) to install with no network")
def test_bundle_install_of_a_signed_archive_with_no_network(made: Path, tmp_path: Path) -> None:
    """The other way in: `globmed-edge bundle install BUNDLE.tar --key` (verifies the archive's
    members and the signature before running its install.sh)."""
    from globmed_edge.bundle.inventory import write_archive
    from globmed_edge.bundle.signing import sign

    assert run_cli("bundle", "keygen", str(tmp_path / "ngo")).returncode == 0
    b = clone(made, tmp_path / "signed")
    (b / "SHA256SUMS.sig").write_bytes(sign(tmp_path / "ngo", (b / "SHA256SUMS").read_bytes()))
    tar = tmp_path / "signed.tar"
    write_archive(b, tar, "signed")
    home, venv = tmp_path / "home", tmp_path / "venv"
    env = {**os.environ, "GLOBMED_EDGE_HOME": str(home)}
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "globmed_edge", "bundle", "install", str(tar),
                           "--key", str(tmp_path / "ngo.pub"), "--venv", str(venv)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "signature matches" in done.stderr and (home / "builds" / BUILD / "manifest.json").is_file()
    assert not (home / ".staging").exists()  # the unpacked archive is gone
    assert f"{venv}/bin/globmed-edge chat {BUILD}" in done.stdout
