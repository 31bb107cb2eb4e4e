"""The command line and the README example, checked against values computed by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixprop.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_quantize_json_matches_the_documented_table(capsys):
    assert main(["quantize", "1.25", "1.75", "-1.25", "-1.75", "--format", "s8.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    values = {row["rounding"]: row["value"] for row in out["results"]}
    # the table in docs/arithmetic.md, worked out by hand from the mode definitions
    assert values == {
        "TRN": [1.0, 1.5, -1.5, -2.0],
        "TRN_ZERO": [1.0, 1.5, -1.0, -1.5],
        "TRN_INF": [1.5, 2.0, -1.0, -1.5],
        "RND": [1.5, 2.0, -1.0, -1.5],
        "RND_ZERO": [1.0, 1.5, -1.0, -1.5],
        "RND_MIN_INF": [1.0, 1.5, -1.5, -2.0],
        "RND_INF": [1.5, 2.0, -1.5, -2.0],
        "RND_CONV": [1.0, 2.0, -1.0, -2.0],
    }
    table = (ROOT / "docs" / "arithmetic.md").read_text()
    for mode, row in values.items():
        assert f"| `{mode}` | " + " | ".join(f"{v:.1f}" for v in row) + " |" in table


def test_bad_cli_input_is_a_clear_error(capsys):
    assert main(["quantize", "1", "--format", "q15"]) == 2
    assert "expected 's<word>.<frac>'" in capsys.readouterr().err
    assert main(["quantize", "1", "--rounding", "banker"]) == 2
    assert "allowed: TRN" in capsys.readouterr().err


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "fixprop.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and re.match(r"fixprop \d+\.\d+", out.stdout)


def test_readme_example_prints_what_it_says(capsys):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## The arithmetic in ten lines.*?```python\n(.*?)```", readme, re.S)
    if code is None:
        pytest.fail("README lost its arithmetic example")
    exec(compile(code.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    promised = code.group(1).strip().splitlines()[-1].split("# ")[1].split()
    assert printed == promised


def test_readme_network_example_runs():
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## A network in float and in your datapath\s+```python\n(.*?)```", readme, re.S)
    assert code is not None, "README lost its network example"
    scope: dict = {}
    exec(compile(code.group(1), "README.md", "exec"), scope)
    grads = scope["grads"]
    assert [g.weight_grad.shape for g in grads] == [(16, 3), (5, 16)]
    assert grads[0].weight_grad.fmt == scope["dp"]["weight_grad"].fmt
