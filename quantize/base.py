"""The exporter protocol: one exporter per format, found through one lazy registry.

An exporter writes one build (format + quantization) of a source HF folder into a directory it
is given; the runner (quantize/runner.py) owns the temporary directory and the rename, the
parity check, and the manifest, so every format gets the same guarantees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from globmed_edge.registry import LazyRegistry

if TYPE_CHECKING:
    from globmed_edge.quantize.descriptor import FormatDescriptor


@dataclass(frozen=True)
class ParityThresholds:
    """Limits a build must stay within against its source (see quantize/parity.py)."""

    min_top1_agreement: float
    max_mean_kl: float
    require_identical_tokens: bool = True


@dataclass(frozen=True)
class QuantSpec:
    name: str  # e.g. "q4_k_m", "int4", "4bit"
    bits_per_weight: float | None  # nominal; the exporter reports the measured one
    help: str  # when to choose it
    thresholds: ParityThresholds
    needs_calibration: bool = False


@dataclass(frozen=True)
class Calibration:
    """The multilingual medical calibration texts and their identity (hash goes in manifests)."""

    texts: tuple[str, ...]
    sha256: str
    languages: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class ExportRequest:
    source: Path
    out_dir: Path  # an empty temporary directory; the runner renames it on success
    quantization: str
    calibration: Calibration | None = None
    options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None  # step descriptions for the progress bar
    model_name: str = ""  # names the build's files where the format has one file (GGUF); default: source folder


@dataclass(frozen=True)
class ExportResult:
    bits_per_weight: float | None
    tools: dict[str, str]
    stop_tokens: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Exporter(Protocol):
    """One build format: its module holds the exporter and its `FormatDescriptor`.

    Adding a format is that one file and one line in EXPORTERS; the runner reads everything that
    varies per format (backend, options, calibration, runtime packages) from `descriptor`.
    """

    descriptor: ClassVar[FormatDescriptor]

    def check_available(self, options: Mapping[str, Any] | None = None) -> None:
        """Raise DependencyError / NotAvailableError if this machine cannot export the format."""

    def export(self, request: ExportRequest) -> ExportResult: ...


EXPORTERS = LazyRegistry(
    "format",
    {
        "gguf": "globmed_edge.quantize.gguf:GGUFExporter",
        "onnx": "globmed_edge.quantize.onnx:ONNXExporter",
        "gptq": "globmed_edge.quantize.gptq:GPTQExporter",
    },
)
