"""Run the cocotb 2.x testbench of examples/rtl on a fixprop bundle with Icarus Verilog.

    python examples/rtl/run_cocotb.py BUNDLE_DIR [--round RND|RND_CONV]

Exits 0 when every integer matches, 1 otherwise; a missing, tampered or inconsistent bundle, or
a datapath the example RTL does not build, is one error line and exit status 2 (as
run_readmemh.py). Needs cocotb >= 2.0 and iverilog.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from fixprop import ConfigError
from fixprop.hardware import BundleError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run_readmemh: the shared bundle checks


def run(path: Path, rounding: str | None = None) -> bool:
    """Build layer_top.v for the bundle's sizes and run the cocotb test; True when it passes.
    ``rounding`` defaults to the bundle's datapath. The bundle is loaded and checked first
    (BundleError), and datapaths the RTL does not build are refused (ConfigError)."""
    from run_readmemh import ROUND_PARAMETER, load_bundle, rtl_rounding

    bundle = load_bundle(Path(path))
    rounding = rounding or rtl_rounding(bundle.datapath)
    from cocotb_tools.runner import get_results, get_runner

    n_out, n_in = bundle["step0/layer0/weight"].shape
    parameters = {"N_IN": n_in, "N_OUT": n_out, "ROUND": ROUND_PARAMETER[rounding]}
    runner = get_runner("icarus")
    with tempfile.TemporaryDirectory() as build:
        runner.build(sources=[HERE / f for f in ("layer_top.v", "dense_layer.v", "grad_unit.v", "round_sat.v")],
                     hdl_toplevel="layer_top",
                     parameters=parameters, build_dir=build, always=True, timescale=("1ns", "1ps"))
        try:
            results = runner.test(test_module="test_dense_layer_cocotb", hdl_toplevel="layer_top", test_dir=HERE,
                                  build_dir=build, extra_env={"FIXPROP_BUNDLE": str(bundle.path.resolve())},
                                  results_xml=str(Path(build) / "results.xml"))
        except SystemExit:  # under pytest, cocotb's runner exits when a test fails
            return False
        total, failed = get_results(results)
    return total > 0 and failed == 0


def main() -> int:
    from run_readmemh import parse_args, refuse

    args = parse_args(__doc__)
    try:
        return 0 if run(args.bundle, args.round) else 1
    except (BundleError, ConfigError) as error:
        return refuse("run_cocotb.py", error)


if __name__ == "__main__":
    sys.exit(main())
