"""The HLS kernel (fixprop hls): its C simulation, compiled with g++ against the ap_fixed and
ac_fixed headers of hls4ml's wheel, equals an export bundle bit for bit over 3 steps at batch 4,
for every datapath below, in both flavours; and the same binary reports the right step, layer,
stage and index when one integer of the bundle is changed.

The bundles are fixprop's step-by-step path, which tests/test_fidelity.py and test_mlp_fixed.py
check against the independent Python-int network; here the oracle of the kernel is the bundle,
and the kernel is written by a different route (C++ types and their own arithmetic).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fixprop import MLP, Datapath
from fixprop.datapath import FixedConstant, RoleCast
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.hardware import LfsrSource, export, load
from fixprop.hardware import hls
from fixprop.hardware.bundle import write
from fixprop.nn.activations import lut_toml

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH = 3, 4


def _toolchain_or_skip() -> None:
    """g++ and the hls4ml headers; CI installs both (a skip there would hide the whole check)."""
    missing = []
    if shutil.which("g++") is None:
        missing.append("g++")
    for types in hls.FLAVOURS:
        try:
            hls.find_headers(types)
        except hls.HlsError:
            missing.append(f"{types} headers (pip install hls4ml)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {', '.join(missing)}")
        pytest.skip(f"no {', '.join(missing)}")


# -- the datapaths -------------------------------------------------------------------------------
def cast(fmt: str, rounding="RND", overflow="SAT", **kw) -> RoleCast:
    f = QFormat.parse(fmt)
    return RoleCast(f.word, f.frac, f.signed, Rounding.parse(rounding), Overflow.parse(overflow), **kw)


NARROW = {"input": "s8.5", "target": "s8.5", "weight": "s8.5", "bias": "s8.5", "acc": "s10.6", "pre": "s8.5",
          "act": "s8.4", "out_err": "s8.4", "prop_err": "s8.5", "bias_grad": "s8.5", "weight_grad": "s8.5",
          "update": "s8.7", "momentum": "s8.6"}
DETERMINISTIC = [r for r in Rounding if r is not Rounding.STOCH]
MODE_PAIRS = [(r, o) for r in DETERMINISTIC for o in Overflow]  # 8 x 4
#: The mode matrix: a linear 8-layer network whose pre (2 bits dropped, range +-4) and act (2
#: bits dropped, range +-2) casts see rounding ties and overflows of both signs; 16 sites per
#: part, each (rounding, overflow) pair on one site of part 1 or 2.
MATRIX_NET = [3] + [16] * 8
MATRIX_FORMATS = dict(NARROW, acc="s14.7", pre="s8.5", act="s5.3")
MATRIX_SITES = [(role, layer) for layer in range(8) for role in ("pre", "act")]


def narrow(**changes) -> dict[str, RoleCast]:
    return {role: cast(changes.get(role, fmt)) for role, fmt in NARROW.items()}


def matrix_pairs(part: int) -> list[tuple[Rounding, Overflow]]:
    return MODE_PAIRS[16 * (part - 1):16 * part]


def mode_matrix(part: int) -> Datapath:
    """Every (rounding, overflow) pair of the 8 deterministic roundings and 4 overflow modes on a
    cast site of its own (test_mode_matrix_sites_tell_every_mode_apart checks that each site's
    casts differ from every other mode's); part 2 also has a 1-bit signed SAT_SYM update (fixprop
    gives 0 where ap_fixed and ac_fixed give -1: the kernel writes it as integer code)."""
    roles = {role: cast(fmt) for role, fmt in MATRIX_FORMATS.items()}
    layers: dict[int, dict[str, RoleCast]] = {}
    for (role, layer), (rounding, overflow) in zip(MATRIX_SITES, matrix_pairs(part)):
        layers.setdefault(layer, {})[role] = dataclasses.replace(roles[role], rounding=rounding, overflow=overflow)
    if part == 2:
        layers[7]["update"] = cast("s1.7", "RND", "SAT_SYM")
    return Datapath(roles, lr_shift=3, layers=layers, name=f"mode matrix {part}")


def unsigned_full() -> Datapath:
    """Unsigned activations and targets (a - t is u - u), full-word and full-frac casts."""
    roles = narrow()
    roles["act"] = cast("u8.4")
    roles["target"] = cast("u8.5")
    roles["out_err"] = RoleCast(None, None, True, Rounding.RND, Overflow.SAT)
    roles["acc"] = RoleCast(None, 6, True, Rounding.RND_CONV, Overflow.SAT)
    roles["bias_grad"] = RoleCast(12, None, True, Rounding.RND, Overflow.WRAP)
    return Datapath(roles, lr_shift=4, relu_grad_at_zero=0.0, name="unsigned, full")


def stochastic() -> Datapath:
    """STOCH from LFSR lanes on several roles, one whose cast drops no bits (draws nothing)."""
    roles = narrow()
    for role in ("act", "weight_grad", "prop_err", "update", "bias_grad"):
        roles[role] = dataclasses.replace(roles[role], rounding=Rounding.STOCH)
    roles["acc"] = cast("s16.5", "STOCH")
    roles["pre"] = cast("s12.6", "STOCH")  # more fraction bits than acc: no bits dropped, no draw
    return Datapath(roles, lr_shift=3, layers={1: {"weight": cast("s8.5", "TRN_INF", "WRAP")}}, relu_grad_at_zero=1.0,
                    name="stochastic")


def momentum_lr_constant() -> Datapath:
    dp = Datapath.uniform(16, 9, "RND_CONV", "SAT")
    return dataclasses.replace(dp, lr_shift=None, lr=FixedConstant(0.03, QFormat(12, 14, False)),
                               momentum=FixedConstant(0.875, QFormat(4, 3, False)), name="momentum, lr constant")


def fidelity_exact_registers() -> Datapath:
    """Product casts on all three sums, a sequential acc, adder trees for prop_err (5 terms in
    [3, 4, 5]: an odd node passes up twice) and weight_grad, a sequential batch sum, master and
    working weights."""
    roles = narrow()
    roles.update(product=cast("s9.6", "TRN", "SAT"), prop_product=cast("s9.6", "RND_CONV", "WRAP"),
                 grad_product=cast("s10.6", "TRN_ZERO", "SAT_SYM"), weight_fwd=cast("s6.4", "RND", "SAT"),
                 bias_fwd=cast("s6.4", "RND_INF", "SAT"), weight=cast("s12.8"), bias=cast("s12.8"))
    roles["acc"] = cast("s10.6", "RND", "SAT", accumulate="sequential")
    roles["prop_err"] = cast("s8.5", "RND", "SAT", accumulate="tree")
    roles["weight_grad"] = cast("s8.5", "RND_CONV", "WRAP", accumulate="tree")
    roles["bias_grad"] = cast("s8.5", "RND", "SAT", accumulate="sequential")
    return Datapath(roles, lr_shift=3, name="products, registers, trees, working copies")


def fidelity_stochastic_registers() -> Datapath:
    """STOCH registers and trees whose casts draw only when their input has more fraction bits
    than the register: the first tree level (exact products) draws, reg + reg does not, the
    passed-up odd term does again."""
    roles = narrow()
    roles["acc"] = cast("s10.6", "STOCH", "SAT", accumulate="sequential")
    roles["prop_err"] = cast("s8.5", "STOCH", "SAT", accumulate="tree")
    roles["weight_grad"] = cast("s8.5", "STOCH", "WRAP", accumulate="tree")
    roles["bias_grad"] = cast("s8.5", "STOCH", "SAT", accumulate="tree")
    return Datapath(roles, lr_shift=3, name="stochastic registers")


def header_pitfalls() -> Datapath:
    """Two places where the ap_fixed headers go wrong unless the kernel works around them (found
    by a review's random datapaths): an unsigned pre-activation (u40.20) compared with a PWL
    activation's negative breakpoints (a wide ap_ufixed compared with a negative ap_fixed gives the
    wrong answer: the kernel compares a signed copy), and a cast dropping more bits than its source
    has (lr * dW in s10.19 into u13.6 with RND_ZERO: a debug assertion fires falsely: the C
    simulation builds with NDEBUG)."""
    roles = narrow(weight_grad="s10.10")
    roles["pre"] = cast("u40.20", "RND_INF", "SAT")
    roles["update"] = cast("u13.6", "RND_ZERO", "SAT")
    return Datapath(roles, lr_shift=9, name="ap_fixed header pitfalls")


def proposal(name: str) -> Datapath:
    return Datapath.load(ROOT / "docs" / "results" / name)


@dataclasses.dataclass
class Case:
    name: str
    net: MLP
    datapath: Datapath
    lfsr: LfsrSource | None = None
    scale: float = 1.0  # data range
    data_seed: int = 0

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """STEPS * BATCH samples, uniform in [-scale, scale]."""
        rng = np.random.default_rng(self.data_seed)
        n_in, n_out = self.net.layer_sizes[0], self.net.layer_sizes[-1]
        return (rng.uniform(-self.scale, self.scale, (STEPS * BATCH, n_in)),
                rng.uniform(-self.scale, self.scale, (STEPS * BATCH, n_out)))


def lut_file(tmp: Path) -> str:
    path = tmp / "sigmoid8.toml"
    values = [0.0, 0.0625, 0.125, 0.3125, 0.6875, 0.875, 0.9375, 1.0]
    derivatives = [0.0, 0.0625, 0.125, 0.25, 0.25, 0.125, 0.0625, 0.0]
    path.write_text(lut_toml(-4.0, 1.0, values, derivatives, name="sigmoid8"))
    return f"lut:{path}"


def cases(tmp: Path) -> list[Case]:
    ik = MLP([3, 16, 5], seed=0)
    return [
        Case("seed", ik, Datapath.seed(24, 12)),
        Case("uniform16_rnd_sat", ik, Datapath.uniform(16, 10, "RND", "SAT")),
        Case("uniform16_rnd_conv_wrap", ik, Datapath.uniform(16, 10, "RND_CONV", "WRAP"), scale=4.0),
        Case("mode_matrix_1", MLP(MATRIX_NET, "linear", "linear", "half_sse", seed=1), mode_matrix(1), scale=5.0,
             data_seed=1),
        Case("mode_matrix_2", MLP(MATRIX_NET, "linear", "linear", "half_sse", seed=0), mode_matrix(2), scale=5.0),
        Case("unsigned_full", MLP([3, 5, 4], seed=3), unsigned_full(), scale=2.0),
        Case("proposal_ik_w16", ik, proposal("ik_w16.toml")),
        Case("proposal_digits_w16", MLP([64, 32, 10], seed=0), proposal("digits_w16.toml")),
        Case("proposal_digits_w8", MLP([64, 32, 10], seed=0), proposal("digits_w8.toml")),
        Case("momentum_lr_constant_mse", MLP([3, 6, 4], seed=4, loss="mse"), momentum_lr_constant()),
        Case("leaky_relu_hard_tanh", MLP([3, 6, 4], "leaky_relu:3", "hard_tanh", seed=5),
             Datapath.uniform(14, 9, "RND_ZERO", "SAT_ZERO"), scale=2.0),
        Case("lfsr_stochastic", MLP([3, 5, 4], seed=6), stochastic(), LfsrSource(seed=11, bits=12), scale=2.0),
        Case("fidelity_registers", MLP([3, 4, 5], "pwl_sigmoid", "hard_sigmoid:output", seed=7),
             fidelity_exact_registers(), scale=2.0),
        Case("fidelity_stochastic", MLP([3, 4, 5], "pwl_tanh:output", "linear", seed=8),
             fidelity_stochastic_registers(), LfsrSource(seed=3, bits=20), scale=2.0),
        Case("header_pitfalls", MLP([1, 5, 4], "pwl_sigmoid", "hard_sigmoid:output", "mse", seed=3),
             header_pitfalls(), scale=3.0),
        Case("lut_pwl_tanh", MLP([3, 5, 4], lut_file(tmp), "pwl_tanh", seed=9),
             Datapath.uniform(16, 10, "RND_MIN_INF", "SAT_SYM"), scale=5.0),
    ]


# -- running them ------------------------------------------------------------------------------
@dataclasses.dataclass
class Built:
    case: Case
    bundle: Path
    binaries: dict[str, Path]


def export_case(case: Case, where: Path) -> Path:
    x, y = case.data()
    return export(case.net, case.datapath, x, y, STEPS, where / "bundle", rng=case.lfsr)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Built]:
    """Every case exported, generated in both flavours and compiled (two compilations at once)."""
    _toolchain_or_skip()
    tmp = tmp_path_factory.mktemp("hls")
    jobs, result = [], {}
    assert [case.name for case in cases(tmp)] == CASE_NAMES
    for case in cases(tmp):
        where = tmp / case.name
        bundle = export_case(case, where)
        result[case.name] = Built(case, bundle, {})
        for types in hls.FLAVOURS:
            directory = hls.generate(case.net, case.datapath, BATCH, where / types, types, case.lfsr)
            jobs.append((case.name, types, directory))

    def compile_one(job):
        name, types, directory = job
        return name, types, hls.compile_testbench(directory, hls.find_headers(types))

    with ThreadPoolExecutor(max_workers=1) as pool:  # each compile runs its two units at once
        for name, types, binary in pool.map(compile_one, jobs):
            result[name].binaries[types] = binary
    return result


CASE_NAMES = ["seed", "uniform16_rnd_sat", "uniform16_rnd_conv_wrap", "mode_matrix_1", "mode_matrix_2",
              "unsigned_full", "proposal_ik_w16", "proposal_digits_w16", "proposal_digits_w8",
              "momentum_lr_constant_mse", "leaky_relu_hard_tanh", "lfsr_stochastic", "fidelity_registers",
              "fidelity_stochastic", "header_pitfalls", "lut_pwl_tanh"]


def checked_tensors(bundle) -> list[str]:
    """The bundle tensors the testbench compares (not the ones it loads: each step's input and
    target, step 0's parameters and LFSR lanes)."""
    names = []
    for name in bundle.tensors:
        parts = name.split("/")
        if parts[-1] in ("target", "lfsr_state") and len(parts) == 2:
            continue
        if parts[1] == "layer0" and parts[2] == "input":
            continue
        if parts[0] == "step0" and parts[2] in ("weight", "bias"):
            continue
        names.append(name)
    return names


def changed_copy(bundle_path: Path, out: Path, name: str, index: int) -> Path:
    """The bundle with one raw integer of one tensor moved by one (a valid, consistently hashed
    bundle that disagrees with fixprop at exactly that place)."""
    b = load(bundle_path)
    tensors = []
    for tensor_name, value in b.tensors.items():
        if tensor_name == name:
            raw = np.array(value.raw, dtype=object).reshape(-1)
            raw[index] = raw[index] + 1 if raw[index] < value.fmt.raw_max else raw[index] - 1
            value = FixedArray(np.array(raw.tolist(), dtype=value.raw.dtype).reshape(value.shape), value.fmt)
        tensors.append((tensor_name, value))
    table = b.manifest.get("lfsr")
    return write(tensors, out, b.datapath, b.manifest["network"], lfsr=None if table is None else LfsrSource(**table))


@pytest.mark.parametrize("types", hls.FLAVOURS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_c_simulation_equals_the_bundle_and_names_a_changed_integer(built, name, types, tmp_path):
    b = built[name]
    code, output = hls.run_testbench(b.binaries[types], b.bundle)
    assert code == 0, output
    assert output.startswith(f"PASS: {STEPS} steps,") and f"({types})" in output
    bundle = load(b.bundle)
    choice = random.Random(f"{name}/{types}")
    tensor = choice.choice(checked_tensors(bundle))
    index = choice.randrange(bundle[tensor].raw.size)
    code, output = hls.run_testbench(b.binaries[types], changed_copy(b.bundle, tmp_path / "changed", tensor, index))
    step, layer, stage = tensor.split("/")
    assert code == 1, output
    assert re.match(f"MISMATCH step {step[4:]} layer {layer[5:]} stage {stage} index {index}[ :]", output), output


def sites_telling_modes_apart(case: Case) -> set[tuple[str, int]]:
    """The cast sites (role, layer) whose casts over the case's steps would differ, somewhere, under
    every other deterministic rounding and under every other overflow mode: a kernel that mixed
    up two modes there would compute other integers."""
    from fixprop.nn.arithmetic import FixedArithmetic
    from fixprop.nn.mlp import Model

    told: dict[tuple[str, int], tuple[set, set, RoleCast]] = {}

    def observer(role, layer, exact, result, spec):
        if layer is None or not isinstance(exact, FixedArray):
            return
        rounded, overflowed, _ = told.setdefault((role, layer), (set(), set(), spec))
        for rounding in DETERMINISTIC:
            if rounding is not spec.rounding and (exact.cast(result.fmt, rounding, spec.overflow).raw != result.raw).any():
                rounded.add(rounding)
        for overflow in Overflow:
            if overflow is not spec.overflow and (exact.cast(result.fmt, spec.rounding, overflow).raw != result.raw).any():
                overflowed.add(overflow)

    model = Model(case.net, FixedArithmetic(case.datapath, observer=observer), case.net.init_params(), compiled=False)
    x, y = case.data()
    for t in range(STEPS):
        model.train_step(x[t * BATCH:(t + 1) * BATCH], y[t * BATCH:(t + 1) * BATCH])
    return {site for site, (rounded, overflowed, spec) in told.items()
            if len(rounded) == len(DETERMINISTIC) - 1 and len(overflowed) == len(Overflow) - 1}


def test_mode_matrix_sites_tell_every_mode_apart(tmp_path):
    """Every (rounding, overflow) pair of the mode matrix sits on a site where each other
    rounding and each other overflow would have given other integers within the 3 steps, so the
    C simulations above check all 32 pairs, not just compile them."""
    by_name = {case.name: case for case in cases(tmp_path)}
    for part in (1, 2):
        told = sites_telling_modes_apart(by_name[f"mode_matrix_{part}"])
        missing = [(site, r.name, o.name) for site, (r, o) in zip(MATRIX_SITES, matrix_pairs(part)) if site not in told]
        assert not missing, f"part {part}: these sites do not tell their modes apart: {missing}"


# -- refusals, headers, files ----------------------------------------------------------------------
def test_features_it_cannot_write_are_refused_by_name(tmp_path):
    net = MLP([3, 4, 2])
    dynamic = Datapath.uniform(12, 6)
    dynamic = dataclasses.replace(dynamic, roles={**dynamic.roles, "act": RoleCast(12, 6, dynamic=(2, 10))})
    with pytest.raises(hls.HlsError, match="dynamic fixed point"):
        hls.generate(net, dynamic, 4, tmp_path / "a")
    stoch = dataclasses.replace(Datapath.uniform(12, 6), roles={**Datapath.uniform(12, 6).roles,
                                                              "update": cast("s12.6", "STOCH")})
    with pytest.raises(hls.HlsError, match="numpy's generator.*--lfsr-seed"):
        hls.generate(net, stoch, 4, tmp_path / "b")
    data = dataclasses.replace(stoch, roles={**stoch.roles, "input": cast("s12.6", "STOCH")})
    with pytest.raises(hls.HlsError, match="the input role rounds STOCH"):
        hls.generate(net, data, 4, tmp_path / "c", lfsr=LfsrSource(1))
    tree = dataclasses.replace(Datapath.uniform(12, 6), roles={
        **Datapath.uniform(12, 6).roles, "weight_grad": RoleCast(12, None, accumulate="tree")})
    with pytest.raises(hls.HlsError, match="weight_grad accumulates 'tree' with word or frac 'full'"):
        hls.generate(net, tree, 4, tmp_path / "d")
    with pytest.raises(hls.HlsError, match="types must be one of ap_fixed, ac_fixed"):
        hls.generate(net, Datapath.uniform(12, 6), 4, tmp_path / "e", types="sc_fixed")
    assert not any((tmp_path / name).exists() for name in "abcde")  # nothing half-written


def test_a_numpy_stochastic_bundle_is_refused_naming_the_lfsr(tmp_path):
    _toolchain_or_skip()
    dp = dataclasses.replace(Datapath.uniform(12, 6), roles={**Datapath.uniform(12, 6).roles,
                                                             "update": cast("s12.6", "STOCH")})
    net = MLP([3, 4, 2])
    rng = np.random.default_rng(0)
    bundle = export(net, dp, rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2)), 1, tmp_path / "b",
                    rng=np.random.default_rng(1))
    with pytest.raises(hls.HlsError, match="numpy's generator.*--lfsr-seed"):
        hls.check(bundle)


def test_headers_come_from_hls4ml_or_include_and_are_named_when_missing(tmp_path, monkeypatch):
    _toolchain_or_skip()
    assert (hls.find_headers("ap_fixed") / "ap_fixed.h").is_file()
    assert (hls.find_headers("ac_fixed") / "ac_fixed.h").is_file()
    assert hls.find_headers("ap_fixed", hls.find_headers("ap_fixed")) == hls.find_headers("ap_fixed")
    with pytest.raises(hls.HlsError, match=f"--include {tmp_path}: no ac_fixed.h there"):
        hls.find_headers("ac_fixed", tmp_path)

    def no_hls4ml(name):
        raise hls.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(hls.importlib.metadata, "distribution", no_hls4ml)
    with pytest.raises(hls.HlsError, match=r"pip install \"fixprop\[hls\]\".*--include DIR"):
        hls.find_headers("ap_fixed")


def test_out_directory_is_not_overwritten_unless_asked(tmp_path):
    _toolchain_or_skip()
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(hls.HlsError, match="exists and is not empty"):
        hls.generate(MLP([3, 4, 2]), Datapath.uniform(12, 6), 4, tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep" and not (tmp_path / "train_step.h").exists()


def test_cli_check_passes_and_fails_with_the_testbench_status(tmp_path, capsys):
    """fixprop export, then fixprop hls --check: exit 0 and PASS; on a bundle with one changed
    integer, exit 1 and the mismatch's place."""
    from fixprop.cli import main

    _toolchain_or_skip()
    bundle = tmp_path / "bundle"
    assert main(["export", "--shape", "3,6,4", "--batch", "4", "--steps", "3", "--out", str(bundle),
                 "--preset", "uniform", "--word", "14", "--frac", "8"]) == 0
    capsys.readouterr()
    assert main(["hls", "--check", str(bundle), "--types", "ac_fixed"]) == 0
    assert capsys.readouterr().out.startswith("PASS: 3 steps,")
    changed = changed_copy(bundle, tmp_path / "changed", "step2/layer0/weight_grad", 7)
    assert main(["hls", "--check", str(changed), "--types", "ac_fixed"]) == 1
    assert capsys.readouterr().out.startswith("MISMATCH step 2 layer 0 stage weight_grad index 7 (row 2, column 1)")
    assert main(["hls", "--check", str(bundle), "--shape", "3,6,4"]) == 2
    assert "takes the network, datapath, batch and LFSR from the bundle; drop --shape" in capsys.readouterr().err


def test_trained_weights_become_c_arrays_of_the_state_types(tmp_path, capsys):
    """train --save-state, then hls --weights: weights.h's arrays, loaded into a state_t by the
    generated load_weights and printed as hex words by the testbench's own helper, are the state
    file's raw integers (and the file's digest is the training run's)."""
    from fixprop.cli import main
    from fixprop.hardware.state import load_state

    _toolchain_or_skip()
    state_file = tmp_path / "state.json"
    assert main(["train", "--dataset", "ik", "--epochs", "1", "--quiet", "--json", "--save-state", str(state_file),
                 "--preset", "uniform", "--word", "14", "--frac", "9"]) == 0
    digest = json.loads(capsys.readouterr().out)["fixed_params_sha256"]
    assert json.loads(state_file.read_text())["fixed_params_sha256"] == digest
    net, datapath, params = load_state(state_file)
    for types in hls.FLAVOURS:
        out = tmp_path / types
        assert main(["hls", "--weights", str(state_file), "--batch", "2", "--out", str(out), "--types", types]) == 0
        lines = ["#include \"weights.h\"", "#include \"fixprop_tb.h\"", "#include <iostream>",
                 "using namespace fixprop;", "static state_t state;", "int main() {", "    load_weights(state);"]
        for i, p in enumerate(params):
            for kind, value in (("weight", p.weight), ("bias", p.bias)):
                first = "[0][0]" if kind == "weight" else "[0]"
                lines.append(f"    for (int k = 0; k < {value.raw.size}; k++) std::cout << "
                             f"fixprop_tb::hex_word<{value.fmt.word}, true>((&state.l{i}.{kind}{first})[k]) << '\\n';")
        lines += ["}", ""]
        (out / "print.cpp").write_text("\n".join(lines))
        binary = out / "print"
        subprocess.run(["g++", "-std=c++14", f"-I{hls.find_headers(types)}", f"-I{out}", "-o", str(binary),
                        str(out / "print.cpp")], check=True)
        printed = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.split()
        want = [format(int(v) & ((1 << value.fmt.word) - 1), f"0{-(-value.fmt.word // 4)}x")
                for p in params for value in (p.weight, p.bias) for v in value.raw.reshape(-1)]
        assert printed == want


def test_state_files_refuse_what_they_cannot_hold(tmp_path):
    from fixprop.hardware.state import load_state, save_state
    from fixprop.errors import ConfigError
    from fixprop.nn.arithmetic import FixedArithmetic

    net, dp = MLP([3, 4, 2]), Datapath.uniform(12, 6)
    params = net.params_in(FixedArithmetic(dp), net.init_params())
    path = save_state(tmp_path / "s.json", net, dp, params)
    loaded_net, loaded_dp, loaded = load_state(path)
    assert loaded_net.layer_sizes == [3, 4, 2] and loaded_dp == dp
    assert all(a.weight.identical(b.weight) and a.bias.identical(b.bias) for a, b in zip(loaded, params))
    document = json.loads(path.read_text())
    document["layers"][1]["bias"]["raw"][0] = 1 << 11  # outside s12.6
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="s.json: layer 1 bias has a raw value outside s12.6"):
        load_state(path)
    del document["layers"][0]["weight"]
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="s.json: layer 0 has no key 'weight'"):
        load_state(path)
    with pytest.raises(ConfigError, match="cannot read the state file"):
        load_state(tmp_path / "missing.json")


def test_pragmas_leave_the_c_simulation_unchanged(built, tmp_path):
    """--pragmas only adds #pragma HLS lines (ignored by g++): the same bundle still passes."""
    b = built["fidelity_registers"]
    directory = hls.generate(b.case.net, b.case.datapath, BATCH, tmp_path / "k", "ac_fixed", pragmas=True)
    source = (directory / "train_step.cpp").read_text()
    assert "#pragma HLS PIPELINE II=1" in source and "#pragma HLS ARRAY_PARTITION variable=t type=complete" in source
    code, output = hls.run_testbench(hls.compile_testbench(directory, hls.find_headers("ac_fixed")), b.bundle)
    assert code == 0, output


def test_relu_at_zero_is_reached_where_the_datapath_sets_it(tmp_path):
    """relu'(0) = 0 (unsigned_full) and 1 (lfsr_stochastic) matter in those cases: some relu
    pre-activation is exactly 0 with a nonzero error arriving, so a kernel with another relu'(0)
    would compute other local errors."""
    from fixprop.hardware import training_tensors

    by_name = {case.name: case for case in cases(tmp_path)}
    for name, c in (("unsigned_full", 0.0), ("lfsr_stochastic", 1.0)):
        case = by_name[name]
        assert case.datapath.relu_grad_at_zero == c
        x, y = case.data()
        tensors = dict(training_tensors(case.net, case.datapath, x, y, STEPS, rng=case.lfsr))
        reached = sum(int(((tensors[f"step{t}/layer{i}/pre"].raw == 0) & (tensors[f"step{t}/layer{i}/error"].raw != 0)).sum())
                      for t in range(STEPS) for i in range(case.net.n_layers))
        assert reached > 0, name


def test_lfsr_lanes_cover_the_initial_quantization_of_stochastic_parameters(tmp_path):
    """A STOCH weight whose update casts drop no bits draws only when it is first quantized; the
    kernel still holds every lane that quantization used, loads them from step 0's lfsr_state and
    checks them at every step."""
    _toolchain_or_skip()
    roles = narrow(update="s8.5")
    roles["weight"] = cast("s8.5", "STOCH")
    dp, net = Datapath(roles, lr_shift=3), MLP([6, 5, 2])
    rng = np.random.default_rng(4)
    bundle = export(net, dp, rng.uniform(-2, 2, (3, 6)), rng.uniform(-2, 2, (3, 2)), 3, tmp_path / "b",
                    rng=LfsrSource(seed=2))
    assert load(bundle)["step2/lfsr_state"].raw.size == 30
    directory = hls.generate(net, dp, 1, tmp_path / "k", "ac_fixed", lfsr=LfsrSource(seed=2))
    assert "static const int LFSR_LANES = 30;" in (directory / "train_step.h").read_text()
    code, output = hls.run_testbench(hls.compile_testbench(directory, hls.find_headers("ac_fixed")), bundle)
    assert code == 0 and output.startswith("PASS: 3 steps"), output


def test_review_findings_stay_fixed(tmp_path, capsys):
    """What a review of the generator found: a file given as --out is one error line (exit 2); a
    non-empty --out under --check needs --force; --batch beside --check is an error; a STOCH role
    the network never casts needs no LFSR; a constant with many bits but few significant ones is
    written; a tree's term typedef is the product's format (not the first node's sum); a 1-D
    tensor's mismatch names no row and column."""
    from fixprop.cli import main

    _toolchain_or_skip()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["hls", "--out", str(afile)]) == 2
    assert f"--out {afile} is a file, not a directory" in capsys.readouterr().err
    bundle = tmp_path / "bundle"
    assert main(["export", "--shape", "3,4,2", "--batch", "2", "--steps", "1", "--out", str(bundle)]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train_step.h").write_text("// mine")
    capsys.readouterr()
    assert main(["hls", "--check", str(bundle), "--out", str(mine)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (mine / "train_step.h").read_text() == "// mine"
    assert main(["hls", "--check", str(bundle), "--batch", "2"]) == 2
    assert "drop --batch" in capsys.readouterr().err

    roles = narrow()
    roles["momentum"] = cast("s8.6", "STOCH")  # no momentum coefficient: never cast
    hls.generate(MLP([3, 4, 2]), Datapath(roles, lr_shift=3), 2, tmp_path / "never")
    dp = dataclasses.replace(Datapath(narrow(), lr_shift=None, lr=FixedConstant(0.5, QFormat(60, 60, False))))
    assert "learning_rate_t(0.5)" in (hls.generate(MLP([3, 4, 2]), dp, 2, tmp_path / "wide_lr") / "train_step.cpp").read_text()

    tree = narrow()
    tree["prop_err"] = cast("s8.5", "RND", "SAT", accumulate="tree")
    header = (hls.generate(MLP([3, 4, 5]), Datapath(tree, lr_shift=3), 2, tmp_path / "tree") / "train_step.h").read_text()
    product = QFormat(16, 10)  # local s8.5 x weight s8.5
    assert f"{hls._type(product, 'ap_fixed')} l1_prop_sum_term_t;" in header
    assert "l0_mac_term_t" not in header  # the exact acc needs no term type

    changed = changed_copy(bundle, tmp_path / "changed", "step0/layer1/bias_grad", 1)
    result = hls.check(changed, "ac_fixed")
    assert result.returncode == 1 and result.output.startswith("MISMATCH step 0 layer 1 stage bias_grad index 1: ")
