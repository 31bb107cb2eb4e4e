"""The RTL co-simulation flows of examples/rtl on Icarus Verilog: they pass on fixprop's bundles,
for RND and RND_CONV with SAT, and fail when one integer of a bundle is changed."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixprop import MLP, Datapath
from fixprop.hardware import export
from fixprop.nn import LayerParams

RTL = Path(__file__).resolve().parents[1] / "examples" / "rtl"
pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed (CI installs it)")

STEPS, BATCH, N_IN, N_OUT = 3, 4, 3, 4


def load_runner():
    spec = importlib.util.spec_from_file_location("run_readmemh", RTL / "run_readmemh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_bundle(tmp_path: Path, rounding: str) -> Path:
    """A single-layer bundle whose products often land exactly on rounding ties (inputs in steps
    of 2**-5, weights in steps of 2**-4: products in steps of 2**-9, half an LSB of s16.8), and
    whose outputs saturate sometimes (large weights)."""
    dp = Datapath.load(RTL / f"datapath_{rounding.lower()}.toml")
    net = MLP([N_IN, N_OUT], activation="relu", loss="sse")
    rng = np.random.default_rng(0)
    weight = rng.integers(-16 * 60, 16 * 60, (N_OUT, N_IN)) / 16
    bias = rng.integers(-256, 256, N_OUT) / 256
    x = rng.integers(-64, 64, (STEPS * BATCH, N_IN)) / 32
    y = rng.uniform(-1, 1, (STEPS * BATCH, N_OUT))
    return export(net, dp, x, y, STEPS, tmp_path / rounding, params=[LayerParams(weight, bias)])


def changed_bundle(path: Path, name: str, index: tuple[int, ...], out: Path) -> Path:
    """A copy of the bundle with one integer of tensor ``name`` changed by +1, rewritten
    consistently (hashes and all), so only the RTL can notice."""
    from fixprop.hardware import bundle as bundle_module
    from fixprop.hardware import load

    loaded = load(path)
    tensors = dict(loaded.tensors)
    raw = tensors[name].raw.copy()
    raw[index] += 1
    tensors[name] = type(tensors[name])(raw, tensors[name].fmt, overflow="WRAP")
    return bundle_module.write(list(tensors.items()), out, loaded.datapath, loaded.manifest["network"])


@pytest.mark.parametrize("rounding", ["RND", "RND_CONV"])
def test_readmemh_flow_passes_and_fails_on_one_changed_integer(tmp_path, rounding):
    run = load_runner().run
    bundle = make_bundle(tmp_path, rounding)
    passed, out = run(bundle, rounding)
    checked = STEPS * BATCH * N_OUT * 3 + STEPS * N_OUT * N_IN  # acc, pre, act per sample; weight_grad
    assert passed and f"PASS {checked} values checked" in out, out
    # change one pre-activation integer in the bundle (consistently): the RTL must now disagree
    passed, out = run(changed_bundle(bundle, "step1/layer0/pre", (1, 1), tmp_path / "changed"), rounding)
    assert not passed and f"FAIL 1 of {checked} values differ" in out, out


def test_the_rounding_mode_matters_on_these_vectors(tmp_path):
    """The two bundles differ (ties occur), and RTL built for the other mode fails on them."""
    run = load_runner().run
    rnd, conv = make_bundle(tmp_path, "RND"), make_bundle(tmp_path, "RND_CONV")
    differ = sum((rnd / f).read_text() != (conv / f).read_text() for f in ("step0_layer0_pre.mem",
                                                                        "step1_layer0_pre.mem"))
    assert differ > 0
    assert not run(conv, "RND")[0]


def load_cocotb_runner():
    pytest.importorskip("cocotb", minversion="2.0")
    spec = importlib.util.spec_from_file_location("run_cocotb", RTL / "run_cocotb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rounding", ["RND", "RND_CONV"])
def test_cocotb_flow_passes_and_fails_on_one_changed_integer(tmp_path, rounding):
    from fixprop.hardware import BundleError

    run = load_cocotb_runner().run
    path = make_bundle(tmp_path, rounding)
    assert run(path, rounding)
    # one integer changed, the bundle rewritten consistently (hashes and all): the RTL disagrees,
    # in the forward pass and in the weight gradient
    for name, index in (("step2/layer0/pre", (1, 2)), ("step1/layer0/weight_grad", (3, 0))):
        changed = changed_bundle(path, name, index, tmp_path / f"changed_{name.replace('/', '_')}")
        assert not run(changed, rounding), name
    # a bundle changed without its hashes is refused before any simulation
    mem = path / "step0_layer0_act.mem"
    mem.write_text(mem.read_text().replace("\n0", "\n1", 1))
    with pytest.raises(BundleError, match="step0/layer0/act: step0_layer0_act.mem does not match its sha256"):
        run(path, rounding)


@pytest.mark.parametrize("w_in,shift,w_out,rounding", [
    (8, 0, 8, "RND"), (8, 1, 4, "RND_CONV"), (8, 3, 6, "RND"), (8, 4, 6, "RND_CONV"), (8, 7, 3, "RND_CONV"),
    (8, 4, 12, "RND"), (8, 2, 40, "RND_CONV"), (10, 5, 33, "RND"),
])
def test_round_sat_on_every_input(tmp_path, w_in, shift, w_out, rounding):
    """round_sat.v against the Python-int oracle on every W_IN-bit input (narrow, wide, SHIFT 0)."""
    import subprocess
    from fractions import Fraction

    from oracle import overflow_int, round_fraction

    mode = {"RND": 0, "RND_CONV": 1}[rounding]
    (tmp_path / "tb.v").write_text(f"""
module tb; reg signed [{w_in - 1}:0] x; wire signed [{w_out - 1}:0] y; integer i;
round_sat #(.W_IN({w_in}), .SHIFT({shift}), .W_OUT({w_out}), .ROUND({mode})) dut(.x(x), .y(y));
initial begin for (i = -{2 ** (w_in - 1)}; i < {2 ** (w_in - 1)}; i = i + 1) begin
  x = i; #1; $display("%0d %0d", i, y); end $finish; end
endmodule""")
    subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "a"), str(tmp_path / "tb.v"), str(RTL / "round_sat.v")],
                   check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "a")], check=True, capture_output=True, text=True).stdout
    pairs = [tuple(map(int, line.split())) for line in out.splitlines() if len(line.split()) == 2]
    assert len(pairs) == 2**w_in
    for x, y in pairs:
        assert y == overflow_int(round_fraction(Fraction(x, 2**shift), rounding), w_out, True, "SAT"), x
