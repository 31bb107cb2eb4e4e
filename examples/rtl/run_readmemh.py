"""Run the plain-Verilog ($readmemh) testbench of examples/rtl on a fixprop bundle with Icarus.

    python examples/rtl/run_readmemh.py BUNDLE_DIR [--round RND|RND_CONV]   (default: the bundle's)

Prints the testbench's verdict ("PASS n values checked" or "FAIL k of n values differ") and exits
0 on PASS, 1 on FAIL. The bundle is loaded with ``fixprop.hardware.load`` first (every file
against the manifest's hashes, headers and formats): a missing, tampered or inconsistent bundle,
or a datapath the example RTL does not build, is one line ``run_readmemh.py: error: ...`` on
stderr and exit status 2, before any simulation. The layer sizes, steps, batch and the acc word
width come from the loaded bundle; the RTL's formats are s16.8 (datapath_rnd.toml,
datapath_rnd_conv.toml).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fixprop import ConfigError, Datapath, QFormat
from fixprop.hardware import Bundle, BundleError, load

HERE = Path(__file__).resolve().parent
SOURCES = ["tb_readmemh.v", "dense_layer.v", "grad_unit.v", "round_sat.v"]
#: The RTL's ROUND parameter for each rounding mode it implements.
ROUND_PARAMETER = {"RND": 0, "RND_CONV": 1}
#: Layer 0's tensors the testbenches read, per step.
CHECKED_STAGES = ("input", "weight", "bias", "acc", "pre", "act", "local", "weight_grad")


def load_bundle(path: Path) -> Bundle:
    """The bundle at ``path``, verified by ``fixprop.hardware.load``, with the network section
    (steps, batch) and layer 0's tensors of every step that the testbenches read; BundleError
    otherwise."""
    bundle = load(path)
    network = bundle.manifest.get("network") or {}
    for key in ("steps", "batch"):
        if isinstance(network.get(key), bool) or not isinstance(network.get(key), int) or network[key] < 1:
            raise BundleError(f"{path}: manifest.json's network section needs {key} (an integer >= 1; "
                              f"got {network.get(key)!r}): export the bundle with fixprop export")
    for t in range(network["steps"]):
        for stage in CHECKED_STAGES:
            bundle[f"step{t}/layer0/{stage}"]  # a BundleError naming the tensor when absent
    return bundle


def rtl_rounding(datapath: Datapath) -> str:
    """The rounding mode the example RTL needs for this datapath; refuses (ConfigError) datapaths
    it does not build (every role s16.8 with SAT, a full-precision accumulator, RND or RND_CONV
    everywhere)."""
    modes = {cast.rounding.name for role, cast in datapath.roles.items() if role != "acc"}
    wrong = [role for role, cast in datapath.roles.items() if role not in ("acc", "momentum") and
             (cast.fmt != QFormat(16, 8) or cast.overflow.name != "SAT")]
    acc = datapath["acc"]
    if datapath.layers:
        wrong = wrong + [f"layer overrides {sorted(datapath.layers)}"]
    if datapath.uses_fidelity or datapath.dynamic is not None:
        wrong = wrong + ["product casts, register accumulators, working copies or dynamic fractions"]
    if wrong or acc.word is not None or acc.frac is not None or len(modes) != 1 or not modes <= {"RND", "RND_CONV"}:
        raise ConfigError("the example RTL is built for every role s16.8, SAT, a full-precision acc and one "
                          f"rounding mode (RND or RND_CONV); this datapath differs (roles {wrong or 'acc/rounding'})")
    return modes.pop()


def run(path: Path, rounding: str | None = None) -> tuple[bool, str]:
    """Load and check the bundle, then compile and simulate; returns (passed, the simulator's
    output). ``rounding`` defaults to the bundle's datapath (``rtl_rounding``). A bad bundle is a
    BundleError and a datapath the RTL does not build a ConfigError, both before iverilog runs."""
    bundle = load_bundle(Path(path))
    rounding = rounding or rtl_rounding(bundle.datapath)
    if shutil.which("iverilog") is None:
        raise ConfigError("iverilog is not installed (Debian/Ubuntu: apt-get install iverilog)")
    network = bundle.manifest["network"]
    n_out, n_in = bundle["step0/layer0/weight"].shape
    params = {"BUNDLE": f'"{bundle.path.resolve()}"', "STEPS": network["steps"], "BATCH": network["batch"],
              "N_IN": n_in, "N_OUT": n_out, "W_ACC_FILE": bundle["step0/layer0/acc"].fmt.word,
              "ROUND": ROUND_PARAMETER[rounding]}
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "tb.vvp"
        command = ["iverilog", "-g2005", "-o", str(binary)] + [f"-Ptb_readmemh.{k}={v}" for k, v in params.items()]
        compiled = subprocess.run(command + [str(HERE / s) for s in SOURCES], capture_output=True, text=True,
                                  check=False)
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


def refuse(program: str, error: Exception) -> int:
    """One line ``<program>: error: ...`` on stderr; exit status 2."""
    print(f"{program}: error: {error}", file=sys.stderr)
    return 2


def main() -> int:
    args = parse_args(__doc__)
    try:
        passed, out = run(args.bundle, args.round)
    except (BundleError, ConfigError) as error:
        return refuse("run_readmemh.py", error)
    print(out.strip())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
