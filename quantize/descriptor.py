"""What a build format declares about itself, so the runner and the CLI never name a format.

Each exporter module defines one `FormatDescriptor` (its `DESCRIPTOR`, the exporter's
`descriptor` class attribute): the backend that loads and parity-checks its builds, its
quantizations, its typed options (name, type, default, help, allowed values or range, the
quantizations they apply to, whether they change the build), when it takes the calibration set,
the runtime packages whose versions go into the manifest, and an example for messages. The runner
(quantize/runner.py) and `globmed-edge quantize --option FMT.KEY=VALUE` read only this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from globmed_edge.errors import ConfigError, UnknownNameError
from globmed_edge.quantize.base import QuantSpec

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Option:
    """One typed exporter option; `parse` turns a flag's string (or a Python value) into it."""

    name: str
    type: type  # bool, int, float or str
    default: Any  # None: the exporter (or its tool) chooses, as `help` says
    help: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False  # the bounds themselves are out of range
    quantizations: tuple[str, ...] = ()  # the quantizations it applies to; empty: all
    affects_build: bool = True  # recorded in the manifest and compared on resume (not a timeout)

    def parse(self, value: Any, *, title: str) -> Any:
        """The option's value as its type, validated; ConfigError naming the option and value."""
        where = f"{title} {self.name} {_shown(value)}"
        if value is None and self.default is None:
            return None
        if self.type is bool:
            text = str(value).strip().lower()
            if isinstance(value, bool) or text in _TRUE + _FALSE:
                return value if isinstance(value, bool) else text in _TRUE
            raise ConfigError(f"{where} must be true or false")
        got: Any = self._number(value, where) if self.type in (int, float) else str(value)
        where = f"{title} {self.name} {_shown(got)}"  # "48", not the flag's string '48'
        if self.choices and got not in self.choices:
            raise ConfigError(f"{where} is not one of {', '.join(str(c) for c in self.choices)}")
        low, high = self.minimum, self.maximum
        if (low is not None and (got < low or (self.exclusive and got == low))) or \
                (high is not None and (got > high or (self.exclusive and got == high))):
            raise ConfigError(f"{where} must be {self.range_text()}")
        return got

    def _number(self, value: Any, where: str) -> Any:
        kind = "an integer" if self.type is int else "a number"
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be {kind}")
        try:
            if self.type is float:
                got = float(value)
            else:
                got = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {kind}") from None
        if self.type is int and isinstance(value, float) and value != got:
            raise ConfigError(f"{where} must be {kind}")
        return got

    def range_text(self) -> str:
        low, high = (f"{x:g}" if x is not None else None for x in (self.minimum, self.maximum))
        if low is not None and high is not None:
            return f"between {low} and {high}{' (exclusive)' if self.exclusive else ''}"
        if low is not None:
            return f"{'>' if self.exclusive else '>='} {low}"
        return f"{'<' if self.exclusive else '<='} {high}"

    def describe(self) -> str:
        """One line for `--help`: type, default, allowed values, help."""
        kind = {bool: "true|false", int: "integer", float: "number", str: "text"}[self.type]
        allowed = f"; one of {', '.join(str(c) for c in self.choices)}" if self.choices else ""
        if self.minimum is not None or self.maximum is not None:
            allowed += f"; {self.range_text()}"
        only = f"; {'/'.join(self.quantizations)} only" if self.quantizations else ""
        shown = str(self.default).lower() if self.type is bool else _shown(self.default).strip("'")
        default = "" if self.default is None else f", default {shown}"
        return f"{self.help} ({kind}{default}{allowed}{only})"


@dataclass(frozen=True)
class CalibrationPolicy:
    """When the runner hands a build the calibration set, and what the manifest says about it.

    A quantization whose `QuantSpec.needs_calibration` is set always gets it; `option` names a
    bool option that asks for it for every quantization (GGUF's `imatrix`); the exporter reports
    that it applied the set by putting `applied_key` in `ExportResult.extra`.
    """

    used_for: str = ""  # the manifest's calibration.used_for
    option: str | None = None
    applied_key: str | None = None


@dataclass(frozen=True, eq=False)
class FormatDescriptor:
    format: str  # the registry name and the manifest's `format`
    title: str  # in messages: "GGUF"
    backend: str  # the backend (edge/backends) that loads the builds for the parity check
    quantizations: Mapping[str, QuantSpec]
    options: tuple[Option, ...] = ()
    calibration: CalibrationPolicy = CalibrationPolicy()
    runtime_packages: tuple[str, ...] = ()  # the parity side's runtime, versions in `tools`
    example: str = ""  # quantizations for messages, e.g. "q8_0,q4_k_m"

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise UnknownNameError(f"{self.title} option", name, [o.name for o in self.options])

    def spec(self, quantization: str) -> QuantSpec:
        if quantization not in self.quantizations:
            raise ConfigError(f"unknown {self.title} quantization {quantization!r} "
                              f"(known: {', '.join(self.quantizations)})")
        return self.quantizations[quantization]

    def applies(self, opt: Option, quantization: str) -> bool:
        return not opt.quantizations or quantization in opt.quantizations

    def resolve(self, quantization: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option that applies to `quantization`: the given ones parsed, the rest defaults.

        An unknown option, a bad value or an option for other quantizations is a ConfigError.
        """
        self.spec(quantization)
        for name in sorted(options):
            self.option(name)  # unknown -> UnknownNameError with a did-you-mean
        wrong = [n for n in options if not self.applies(self.option(n), quantization)]
        if wrong:
            only = self.option(wrong[0]).quantizations
            group = [o.name for o in self.options if o.quantizations == only]
            raise ConfigError(f"{self.title} options {'/'.join(group)} apply to {'/'.join(only)}, "
                              f"not {quantization} (given: {', '.join(sorted(wrong))})")
        return {o.name: o.parse(options[o.name], title=self.title) if o.name in options else o.default
                for o in self.options if self.applies(o, quantization)}

    def build_options(self, quantization: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved options that change the build (for the manifest and for resume)."""
        resolved = self.resolve(quantization, options)
        return {o.name: resolved[o.name] for o in self.options
                if o.affects_build and o.name in resolved}

    def uses_calibration(self, quantization: str, options: Mapping[str, Any]) -> bool:
        if self.spec(quantization).needs_calibration:
            return True
        key = self.calibration.option
        return bool(key and self.resolve(quantization, options).get(key))
