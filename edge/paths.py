"""Where globmed-edge keeps its files, and the offline switches for the HF libraries."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables that keep transformers / huggingface_hub from touching the network.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def force_offline() -> None:
    """Set the HF offline variables (idempotent). Called before any HF library is imported."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


def data_home() -> Path:
    """The user's data directory (prepared models, builds, chat history).

    `GLOBMED_EDGE_HOME` overrides the platform default (e.g. ~/.local/share/globmed-edge).
    """
    override = os.environ.get("GLOBMED_EDGE_HOME")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path("globmed-edge", appauthor=False)


def models_dir() -> Path:
    return data_home() / "models"


def builds_dir() -> Path:
    return data_home() / "builds"


def free_bytes(path: Path) -> int:
    """Free disk space where `path` is or would be created (its nearest existing folder)."""
    import shutil

    probe = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(probe).free


def results_index() -> Path:
    """The list of results files `bench run` wrote, wherever they are (one absolute path a line),
    so the chat picker finds measured speed and memory without being told where to look."""
    return data_home() / "bench" / "results-files.txt"


def remember_results_file(path: str | Path) -> None:
    from globmed_edge.atomic import atomic_write_text

    index = results_index()
    known = [str(p) for p in known_results_files(existing=False)]
    entry = str(Path(path).resolve())
    if entry not in known:
        atomic_write_text(index, "".join(f"{k}\n" for k in [*known, entry]))


def known_results_files(*, existing: bool = True) -> list[Path]:
    try:
        lines = results_index().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    paths = [Path(line) for line in dict.fromkeys(lines) if line.startswith("/")]
    return [p for p in paths if p.is_file()] if existing else paths


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the checkout, when present (CI and developer machines)."""
    override = os.environ.get("GLOBMED_SHARED_DATA")
    if override:
        p = Path(override)
        return p if p.is_dir() else None
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None
