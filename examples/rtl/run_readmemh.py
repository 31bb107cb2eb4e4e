"""Run the plain-Verilog ($readmemh) testbench of examples/rtl on a fixprop bundle with Icarus.

    python examples/rtl/run_readmemh.py BUNDLE_DIR [--round RND|RND_CONV]   (default: the bundle's)

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
#: The RTL's ROUND parameter for each rounding mode it implements.
ROUND_PARAMETER = {"RND": 0, "RND_CONV": 1}


def rtl_rounding(bundle: Path) -> str:
    """The rounding mode the example RTL needs for this bundle; refuses datapaths it does not build
    (every role s16.8 with SAT, a full-precision accumulator, RND or RND_CONV everywhere)."""
    from fixprop import Datapath, QFormat

    datapath = Datapath.from_toml((bundle / "datapath.toml").read_text(), source=str(bundle / "datapath.toml"))
    modes = {cast.rounding.name for role, cast in datapath.roles.items() if role != "acc"}
    wrong = [role for role, cast in datapath.roles.items() if role not in ("acc", "momentum") and
             (cast.fmt != QFormat(16, 8) or cast.overflow.name != "SAT")]
    acc = datapath["acc"]
    if datapath.layers:
        wrong = wrong + [f"layer overrides {sorted(datapath.layers)}"]
    if wrong or acc.word is not None or acc.frac is not None or len(modes) != 1 or not modes <= {"RND", "RND_CONV"}:
        raise SystemExit(f"{bundle}: the example RTL is built for every role s16.8, SAT, a full-precision acc and "
                         f"one rounding mode (RND or RND_CONV); this datapath differs (roles {wrong or 'acc/rounding'})")
    return modes.pop()


def run(bundle: Path, rounding: str | None = None) -> tuple[bool, str]:
    """Compile and simulate; returns (passed, the simulator's output). ``rounding`` defaults to
    the bundle's datapath (``rtl_rounding``)."""
    if shutil.which("iverilog") is None:
        raise SystemExit("iverilog is not installed (Debian/Ubuntu: apt-get install iverilog)")
    rounding = rounding or rtl_rounding(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    tensors = {t["name"]: t for t in manifest["tensors"]}
    steps, batch = manifest["network"]["steps"], manifest["network"]["batch"]
    n_out, n_in = tensors["step0/layer0/weight"]["shape"]
    params = {"BUNDLE": f'"{bundle}"', "STEPS": steps, "BATCH": batch, "N_IN": n_in, "N_OUT": n_out,
              "W_ACC_FILE": tensors["step0/layer0/acc"]["word"], "ROUND": ROUND_PARAMETER[rounding]}
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "tb.vvp"
        command = ["iverilog", "-g2005", "-o", str(binary)] + [f"-Ptb_readmemh.{k}={v}" for k, v in params.items()]
        compiled = subprocess.run(command + [str(HERE / s) for s in SOURCES], capture_output=True, text=True)
        if compiled.returncode:
            raise SystemExit(f"iverilog failed:\n{compiled.stdout}{compiled.stderr}")
        out = subprocess.run(["vvp", "-n", str(binary)], check=True, capture_output=True, text=True).stdout
    return "PASS" in out and "FAIL" not in out, out


def parse_args(doc: str) -> argparse.Namespace:
    """The runners' command line: BUNDLE_DIR [--round RND|RND_CONV]."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--round", choices=list(ROUND_PARAMETER),
                        help="the RTL's rounding (default: the bundle's datapath)")
    return parser.parse_args()


def main() -> int:
    args = parse_args(__doc__)
    passed, out = run(args.bundle.resolve(), args.round)
    print(out.strip())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
