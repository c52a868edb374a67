"""`globmed-edge doctor`: what this machine is, which runtimes it has, whether each build runs."""

from __future__ import annotations

import json
import sys

import click


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("builds", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON on stdout.")
@click.option("--no-canary", is_flag=True, help="Verify builds but do not load them (faster).")
def doctor(builds: tuple[str, ...], as_json: bool, no_canary: bool) -> None:
    """Check this machine and the builds on it.

    Reports the CPU (instruction sets, AMX), cores, memory, free disk, the runtimes (llama.cpp:
    portable or compiled for this CPU, the CPU kernels it loaded; onnxruntime: providers) and,
    for every build in the data home (or the BUILDS given: folders or short names), whether its
    files match its manifest and whether a one-token answer comes back. Runtimes and canaries run
    in child processes, so a crash (SIGILL, SIGSEGV) is reported, not fatal. Exits 1 when
    something a user needs is broken.
    """
    from globmed_edge.buildref import resolve_build
    from globmed_edge.doctor import diagnose
    from globmed_edge.textsafe import clean_line

    paths = [resolve_build(b) for b in builds]  # every name checked before the slow part starts
    report = diagnose(builds=paths or None, run_canary=not no_canary)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        cpu = report.cpu
        click.echo(f"CPU      {cpu['model']} ({cpu['machine']}, x86-64 {cpu['x86_64_level'] or '-'}), "
                   f"{cpu['cores_physical']} cores / {cpu['cores_logical']} threads")
        click.echo(f"         {', '.join(cpu['features']) or 'no SIMD features found'}")
        click.echo(f"memory   {_gib(report.memory['available_bytes'])} free of {_gib(report.memory['total_bytes'])}")
        click.echo(f"disk     {_gib(report.disk['free_bytes'])} free under {report.disk['path']}")
        for name, rt in report.runtimes.items():
            if rt.get("status") != "ok":
                click.echo(f"{name:<8} {rt.get('status')}" + (f": {rt['error']}" if "error" in rt else ""))
            elif name == "llama.cpp":
                click.echo(f"llama.cpp {rt['version']}, {rt['kind']} build, CPU kernels: "
                           f"{rt.get('loaded_variant') or 'built in'}; {rt['system_info']}")
                if cpu["amx"]:  # llama.cpp's AMX repack crashes (issue 20824); what this machine does instead
                    click.echo("         AMX: " + ("kernels without AMX loaded; extra buffer types on"
                                                   if rt.get("extra_bufts") else
                                                   "these kernels include AMX, so models load without extra buffer types"))
            elif name == "onnxruntime":
                click.echo(f"onnxruntime {rt['version']}: {', '.join(rt['providers'])}")
            else:
                click.echo(f"{name:<8} {rt.get('version')}")
        for b in report.builds:
            took = f" in {b.seconds:.1f} s" if b.seconds is not None else ""
            click.echo(f"build    {b.name} ({b.format}): files {b.verified}, canary {b.canary}{took}"
                       + (f": {clean_line(b.detail)}" if b.canary != "pass" and b.detail else ""))
        if not report.builds:
            click.echo("build    none in the data home (globmed-edge quantize makes them)")
        for w in report.warnings:
            click.echo(f"warning: {clean_line(w)}", err=True)
        for p in report.problems:
            click.echo(f"problem: {clean_line(p)}", err=True)
    sys.exit(1 if report.problems else 0)
