"""`globmed-edge bundle create|verify|install|keygen`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from globmed_edge.clikit import human_size, split_csv


def _log(line: str) -> None:
    click.echo(line, err=True)  # stage lines on stderr, also when it is not a terminal




def _tiers(values: tuple[str, ...]) -> list[float]:
    from globmed_edge.errors import ConfigError

    out = []
    for v in split_csv(values):
        try:
            out.append(float(v))
        except ValueError:
            raise ConfigError(f"--ram {v!r}: not a number of GiB (e.g. --ram 4,8)") from None
        if out[-1] <= 0:
            raise ConfigError(f"--ram {v!r}: must be positive")
    return out




@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bundle() -> None:
    """Carry verified builds and a portable runtime to offline clinic laptops.

    \b
    1. create  (model builder, online):  globmed-edge bundle create usb/clinic --build NAME
    2. carry   the folder (or --archive's one .tar) on a USB stick
    3. install (clinic laptop, offline): sh usb/clinic/install.sh  [--key ngo.pub]
    """


@bundle.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--build", "builds", multiple=True, metavar="BUILD",
              help="A build to include: its name in the data home or its folder (repeatable).")
@click.option("--from-results", "results", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Bench results: include the build `bench recommend` picks per --ram tier (repeatable).")
@click.option("--ram", "ram", multiple=True, metavar="GIB,...", help="RAM tiers of the clinics' laptops, e.g. 4,8.")
@click.option("--langs", multiple=True, metavar="CODES", help="Languages the clinics need, e.g. sw,en (with --from-results).")
@click.option("--python", "python", default=None, metavar="X.Y", help="The laptops' Python (default: this one's).")
@click.option("--platform", "platform_tag", default=None, metavar="TAG", help="The laptops' platform (default: this machine's, e.g. linux_x86_64).")
@click.option("--glibc", default=None, metavar="2.NN", help="The oldest glibc among the laptops (default: this machine's).")
@click.option("--sign", "sign_key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="KEY", help="Sign SHA256SUMS with this Ed25519 private key (bundle keygen).")
@click.option("--archive", is_flag=True, help="Write one OUT.tar instead of a folder.")
@click.option("--find-links", "find_links", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also take wheels from this folder (repeatable).")
@click.option("--no-index", is_flag=True, help="Take wheels only from --find-links and pip's configured find-links (no index).")
def create(out: Path, builds: tuple[str, ...], results: tuple[Path, ...], ram: tuple[str, ...], langs: tuple[str, ...],
           python: str | None, platform_tag: str | None, glibc: str | None, sign_key: Path | None, archive: bool,
           find_links: tuple[Path, ...], no_index: bool) -> None:
    """Write a bundle to OUT: builds, a wheelhouse for the laptops, SHA256SUMS, install.sh, README.txt.

    The wheelhouse holds globmed-edge and only what the chat and the builds' runtimes need (no torch,
    no transformers for GGUF builds), for the target Python and platform, with the portable
    llama-cpp-python (runs on any x86-64 CPU). Downloading it needs pip's index (or --find-links).
    """
    from globmed_edge.bundle import wheelhouse
    from globmed_edge.bundle.create import by_name, from_results
    from globmed_edge.bundle.create import create as do_create
    from globmed_edge.errors import ConfigError

    if builds and results:
        raise ConfigError("give builds either by name (--build) or from bench results (--from-results), not both")
    if (ram or langs) and not results:
        raise ConfigError("--ram and --langs choose builds from bench records: add --from-results FILE")
    selection = from_results(results, _tiers(ram), split_csv(langs)) if results else by_name(builds)
    target = wheelhouse.make_target(python, platform_tag, glibc)
    try:
        m = do_create(out, selection, target=target, sign_key=sign_key, archive=archive, find_links=find_links,
                      no_index=no_index, log=_log)
    except KeyboardInterrupt:
        from globmed_edge.errors import Interrupted

        raise Interrupted(f"interrupted; nothing was left at {out} (the partial bundle was removed)") from None
    final = out.with_name(out.name if out.name.endswith(".tar") else out.name + ".tar") if archive else out
    sizes = m["sizes"]
    click.echo(f"bundle {final}: {len(m['builds'])} build(s), {len(m['wheels'])} wheels, "
               f"{human_size(sizes['total_bytes'])} in all (builds {human_size(sizes['builds_bytes'])}, "
               f"wheels {human_size(sizes['wheels_bytes'])}, other {human_size(sizes['other_bytes'])}), {m['seconds']:.0f} s")
    for b in m["builds"]:
        click.echo(f"  {b['name']}: {b['format']} {b['quantization']}, {human_size(b['size_bytes'])}")
    for t in m["selection"]["tiers"]:
        click.echo(f"  {t['ram_gb']:g} GiB, {', '.join(t['langs'])}: {t['choice']}")
    click.echo(f"  for Python {m['target']['python']} {m['target']['platform']}, glibc >= {m['target']['glibc_min']}"
               + ("; signed" if m["signed"] else "; not signed"))


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path), metavar="BUNDLE")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Public key (.pub): refuse the bundle unless its signature matches.")
def verify(path: Path, key: Path | None) -> None:
    """Check a bundle (folder or .tar): paths, signature (with --key), sizes, every sha256. Changes nothing."""
    from globmed_edge.bundle.verify import verify_bundle

    def progress(rel: str, size: int) -> None:
        if size >= 16 * 2**20:
            _log(f"  checking {rel} ({human_size(size)})")

    v = verify_bundle(path, key=key, progress=progress)
    sig = (f"signature matches key {v.key_fingerprint}" if v.key_fingerprint
           else "signed, signature NOT checked (give --key)" if v.signed else "not signed")
    names = ", ".join(b["name"] for b in v.manifest["builds"])
    click.echo(f"{path}: ok, {v.files} files, {human_size(v.bytes)}, {sig}; builds: {names}")


@bundle.command()
@click.argument("path", type=click.Path(path_type=Path), metavar="BUNDLE")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Public key (.pub): refuse the bundle unless its signature matches.")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the program goes; an existing environment there is reused (default: $GLOBMED_EDGE_VENV, else ~/globmed-edge).")
@click.option("--no-packages", is_flag=True,
              help="Only install the builds into this environment's data folder (install.sh's last step).")
@click.option("--no-canary", is_flag=True, help="Skip the one-word answer per build.")
def install(path: Path, key: Path | None, venv: Path | None, no_packages: bool, no_canary: bool) -> None:
    """Install a bundle with no network: verify it, install its wheels into a virtual environment
    (pip --no-index), copy and re-verify its builds, run `doctor`, print the chat command."""
    from globmed_edge.bundle.install import default_venv, install_builds, install_packages

    try:
        if no_packages:
            install_builds(path, key=key, venv=venv, canary=not no_canary, log=_log)
        else:
            install_packages(path, venv=(venv or default_venv()).absolute(), key=key, log=_log)
    except KeyboardInterrupt:
        from globmed_edge.errors import Interrupted

        raise Interrupted("interrupted; no build was half-installed: run the same command again to finish") from None


@bundle.command()
@click.argument("key", type=click.Path(dir_okay=False, path_type=Path))
def keygen(key: Path) -> None:
    """Make an Ed25519 key pair: KEY (private, keep it safe) and KEY.pub (give it to the clinics)."""
    from globmed_edge.bundle.signing import keygen as do_keygen

    public, fp = do_keygen(key)
    click.echo(f"private key {key} (mode 0600: sign bundles with --sign {key}; never put it in a bundle)")
    click.echo(f"public key  {public} (give it to the clinics by another way than the bundle)")
    click.echo(f"fingerprint {fp} (read it to them so they can check the .pub they got)")
    sys.stdout.flush()
