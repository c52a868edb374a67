"""`globmed-edge --help` (and each subcommand's --help) must not import heavy runtimes. Which
package may import what is checked statically by the import-linter contracts (tests/test_layers.py)."""

import json
import subprocess
import sys

import pytest

HEAVY = ["torch", "transformers", "onnxruntime", "onnxruntime_genai", "llama_cpp", "textual",
         "matplotlib", "peft", "trl", "gptqmodel", "accelerate"]

PROBE = """
import json, sys
from click.testing import CliRunner
from globmed_edge.cli.main import cli
r = CliRunner().invoke(cli, {args!r})
print(json.dumps({{"exit": r.exit_code, "out": r.output[:200],
                   "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["data", "--help"], ["models", "--help"], ["quantize", "--help"],
    ["bench", "--help"], ["train", "--help"], ["chat", "--help"], ["data", "stats", "--help"],
    ["bundle", "--help"], ["bundle", "create", "--help"], ["doctor", "--help"],
])
def test_help_imports_nothing_heavy(args):
    code = PROBE.format(args=args, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0, result["out"]
    assert result["heavy"] == [], f"{' '.join(args)} imported {result['heavy']}"
