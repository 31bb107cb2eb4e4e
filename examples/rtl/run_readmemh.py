"""Run the plain-Verilog ($readmemh) testbench of examples/rtl on a fixprop bundle with Icarus.

    python examples/rtl/run_readmemh.py BUNDLE_DIR [--round RND|RND_CONV]

Prints the testbench's verdict ("PASS n values checked" or "FAIL k of n values differ") and exits
0 on PASS, 1 on FAIL. The layer sizes, steps, batch and the acc word width come from the bundle's
manifest.json; the RTL's formats are s16.8 (datapath_rnd.toml, datapath_rnd_conv.toml).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ["tb_readmemh.v", "dense_layer.v", "grad_unit.v", "round_sat.v"]


def run(bundle: Path, rounding: str) -> tuple[bool, str]:
    """Compile and simulate; returns (passed, the simulator's output)."""
    if shutil.which("iverilog") is None:
        raise SystemExit("iverilog is not installed (Debian/Ubuntu: apt-get install iverilog)")
    manifest = json.loads((bundle / "manifest.json").read_text())
    tensors = {t["name"]: t for t in manifest["tensors"]}
    steps, batch = manifest["network"]["steps"], manifest["network"]["batch"]
    n_out, n_in = tensors["step0/layer0/weight"]["shape"]
    params = {"BUNDLE": f'"{bundle}"', "STEPS": steps, "BATCH": batch, "N_IN": n_in, "N_OUT": n_out,
              "W_ACC_FILE": tensors["step0/layer0/acc"]["word"], "ROUND": {"RND": 0, "RND_CONV": 1}[rounding]}
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "tb.vvp"
        command = ["iverilog", "-g2005", "-o", str(binary)] + [f"-Ptb_readmemh.{k}={v}" for k, v in params.items()]
        subprocess.run(command + [str(HERE / s) for s in SOURCES], check=True, capture_output=True, text=True)
        out = subprocess.run(["vvp", "-n", str(binary)], check=True, capture_output=True, text=True).stdout
    return "PASS" in out and "FAIL" not in out, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--round", default="RND_CONV", choices=["RND", "RND_CONV"])
    args = parser.parse_args()
    passed, out = run(args.bundle.resolve(), args.round)
    print(out.strip())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
