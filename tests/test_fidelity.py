"""Hardware-fidelity datapaths (docs/datapath.md, "Products and accumulators", "Working
copies"): product casts, sequential and tree accumulators, master and working weights. The
network equals the independent Python-int network (int_mlp_oracle, written from the docs) on
Hypothesis-generated datapaths, on the step-by-step path and through a Model (whose compiled
engines refuse these datapaths and fall back); sequential saturation is checked against sums
worked by hand; malformed TOML names the file, table and key."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.datapath import OPTIONAL_ROLES, ROLES, SUM_ROLES
from fixprop.errors import ConfigError, NotCompilable
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.nn import MLP, FixedArithmetic, LayerParams
from fixprop.nn.activations import lut_toml
from int_mlp_oracle import Val, train_step
from oracle_compare import assert_stages_equal, exact, vals

DETERMINISTIC = [r for r in Rounding if r is not Rounding.STOCH]


def _sigmoid_table(entries: int = 16, z_min: float = -4.0, step: float = 0.5) -> str:
    """A sigmoid lookup table (values and derivatives rounded to 2**-8) as TOML text."""
    centres = z_min + step * (np.arange(entries) + 0.5)
    values = np.round(256 / (1 + np.exp(-centres))) / 256
    return lut_toml(z_min, step, values, np.round(256 * values * (1 - values)) / 256, "sigmoid")


LUT_FILE = Path(tempfile.mkdtemp(prefix="fixprop-lut-")) / "sigmoid.toml"
LUT_FILE.write_text(_sigmoid_table())
ACTIVATIONS = ["relu", "leaky_relu:2", "linear", "hard_tanh", "hard_sigmoid", "pwl_sigmoid", "pwl_tanh",
               f"lut:{LUT_FILE}", "pwl_sigmoid:output", "pwl_tanh:output", "hard_sigmoid:output"]


@st.composite
def narrow_casts(draw, role: str):
    """A narrow cast (words 3..10) so that sums overflow mid-way; every deterministic rounding
    and overflow mode; sum roles take an accumulate mode."""
    word = draw(st.integers(3, 10))
    frac = draw(st.integers(0, word))
    signed = True if role in ("input", "target", "weight", "bias") else draw(st.sampled_from([True, True, False]))
    accumulate = draw(st.sampled_from(["exact", "sequential", "tree"])) if role in SUM_ROLES else "exact"
    return RoleCast(word, frac, signed, draw(st.sampled_from(DETERMINISTIC)),
                    draw(st.sampled_from(list(Overflow))), accumulate)


@st.composite
def fidelity_datapaths(draw, n_layers: int):
    roles = {role: draw(narrow_casts(role)) for role in ROLES if role != "momentum"}
    for role in OPTIONAL_ROLES:
        if draw(st.booleans()):
            roles[role] = draw(narrow_casts(role))
    layers = {}
    for layer in range(n_layers):  # sometimes a per-layer product cast or accumulate mode
        chosen = draw(st.lists(st.sampled_from(["product", "grad_product", "prop_product", "acc", "prop_err",
                                                "bias_grad", "weight_grad", "weight_fwd", "bias_fwd"]),
                               max_size=3, unique=True))
        if chosen:
            layers[layer] = {role: draw(narrow_casts(role)) for role in chosen}
    lr_shift = draw(st.integers(0, 3))
    momentum = None
    if draw(st.booleans()):
        roles["momentum"] = draw(narrow_casts("momentum"))
        momentum = FixedConstant(draw(st.sampled_from([0.5, 0.75])), QFormat(4, 4, False))
    return Datapath(roles, relu_grad_at_zero=draw(st.sampled_from([0.0, 0.5, 1.0])), lr_shift=lr_shift,
                    layers=layers, momentum=momentum)


def assert_equals_oracle(net, dp, activations, loss, params, x, y, steps: int = 2):
    """``steps`` SGD steps of the network on the step-by-step path and through a Model (its
    compiled engines refuse the datapath: the same path) against the oracle's, stage by stage
    for the first step and by the parameters after each step."""
    ar = FixedArithmetic(dp)
    state = net.params_in(ar, params)
    velocity = net.zero_velocity(ar, state) if dp.momentum is not None else None
    model = net.fixed_model(dp, params)
    weights = [p.weight.tolist() for p in params]
    biases = [p.bias.tolist() for p in params]
    oracle_velocity = None
    if dp.momentum is not None:  # at rest: zeros
        oracle_velocity = [([[Val(0, 0)] * len(p.weight[0]) for _ in p.weight], [Val(0, 0)] * len(p.bias))
                           for p in params]
    for step in range(steps):
        trace = net.forward(ar, state, x)
        grads = net.backward(ar, state, trace, y)
        state, velocity = net.sgd_step(ar, state, grads, velocity)
        model.train_step(x, y)
        want = train_step(dp, activations, loss, weights, biases, x.tolist(), y.tolist(), oracle_velocity)
        oracle_velocity = want["velocity"] if dp.momentum is not None else None
        if step == 0:
            assert_stages_equal(trace, grads, want)
        for l, (p, q) in enumerate(zip(state, model.params)):
            assert exact(p.weight) == vals(want["weights"][l]), f"step {step}: updated weight of layer {l}"
            assert exact(p.bias) == vals(want["biases"][l]), f"step {step}: updated bias of layer {l}"
            assert p.weight.fmt == dp.cast_for("weight", l).fmt  # the master copy stays in its role
            assert np.array_equal(p.weight.raw, q.weight.raw) and np.array_equal(p.bias.raw, q.bias.raw)
        weights, biases = want["weights"], want["biases"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3), batch=st.sampled_from([1, 3]),
       activation=st.sampled_from(ACTIVATIONS), output_activation=st.sampled_from(ACTIVATIONS),
       loss=st.sampled_from(["sse", "half_sse", "mse"]), seed=st.integers(0, 1000))
def test_fidelity_network_equals_the_int_oracle(data, sizes, batch, activation, output_activation, loss, seed):
    net = MLP(sizes, activation, output_activation, loss, init="uniform_neg", seed=seed)
    dp = data.draw(fidelity_datapaths(net.n_layers))
    rng = np.random.default_rng(seed)
    params = net.init_params()
    x = rng.uniform(-3, 3, (batch, sizes[0]))
    y = rng.uniform(-2, 2, (batch, sizes[-1]))
    activations = [activation] * (net.n_layers - 1) + [output_activation]
    assert_equals_oracle(net, dp, activations, loss, params, x, y)


# -- hand-worked sums: the order changes the result --------------------------------------------
def _one_sum_network(accumulate: str, overflow: str = "SAT") -> tuple[MLP, Datapath]:
    """[3] -> [1], linear: acc is one 3-term dot product. Every role s8.0; acc s4.0 (range
    [-8, 7]) with the given accumulate and overflow modes."""
    dp = Datapath.uniform(8, 0, "TRN", "SAT", lr_shift=0)
    dp = dp.with_role("acc", RoleCast(4, 0, True, "TRN", overflow, accumulate))
    return MLP([3, 1], activation="linear"), dp


@pytest.mark.parametrize("x, accumulate, overflow, want", [
    # products 6, 6, -6 (x = 3, 3, -3 times weights 2): exact sum 6
    ([3, 3, -3], "exact", "SAT", 6),        # sat(6) = 6
    ([3, 3, -3], "sequential", "SAT", 1),   # r = 6; sat(12) = 7; 7 - 6 = 1
    ([3, 3, -3], "tree", "SAT", 1),         # sat(6 + 6) = 7; the odd -6 goes up: sat(7 - 6) = 1
    ([3, 3, -3], "sequential", "WRAP", 6),  # 6; wrap(12) = -4; -4 - 6 = -10 -> wrap 6: WRAP is order-free
    ([3, 3, -3], "sequential", "SAT_ZERO", -6),  # 6; 12 out of range -> 0; 0 - 6 = -6
    # the same products in another order: -6, 6, 6
    ([-3, 3, 3], "sequential", "SAT", 6),   # -6; 0; 6
    ([-3, 3, 3], "tree", "SAT", 6),         # sat(-6 + 6) = 0; 0 + 6 = 6
    ([-3, -3, -3], "sequential", "SAT_SYM", -7),  # -6; sat_sym(-12) = -7; sat_sym(-13) = -7
])
def test_a_saturating_register_by_hand(x, accumulate, overflow, want):
    net, dp = _one_sum_network(accumulate, overflow)
    model = net.fixed_model(dp, [LayerParams(np.array([[2.0, 2.0, 2.0]]), np.array([0.0]))])
    acc = model.forward(np.array([x], dtype=float)).layers[0].acc
    assert acc.raw.tolist() == [[want]] and acc.fmt == QFormat(4, 0)


def test_product_casts_truncate_each_product_before_the_sum():
    """Products 0.75 * 0.75 = 0.5625 each, three of them; a product role u4.2 TRN keeps 0.5 of
    each: acc = 1.5 (exact products: 1.6875 -> acc s8.4 TRN = 1.6875)."""
    dp = Datapath.uniform(8, 4, "TRN", "SAT", lr_shift=0)
    net = MLP([3, 1], activation="linear")
    params = [LayerParams(np.array([[0.75, 0.75, 0.75]]), np.array([0.0]))]
    x = np.array([[0.75, 0.75, 0.75]])
    assert net.fixed_model(dp, params).forward(x).layers[0].acc.to_float().tolist() == [[1.6875]]
    cut = replace(dp, roles={**dp.roles, "product": RoleCast.of("u4.2", "TRN", "SAT")})
    assert net.fixed_model(cut, params).forward(x).layers[0].acc.to_float().tolist() == [[1.5]]


def test_working_weights_feed_forward_and_backward_while_the_master_is_updated():
    """Master weights s16.12, working copy s8.2 TRN: the forward pass sees 0.75 for a master
    0.8125; the update is applied to the master at its own precision."""
    dp = Datapath.uniform(16, 12, "TRN", "SAT", lr_shift=4)
    dp = replace(dp, roles={**dp.roles, "weight_fwd": RoleCast.of("s8.2", "TRN", "SAT")})
    net = MLP([1, 1], activation="linear", loss="half_sse")
    model = net.fixed_model(dp, [LayerParams(np.array([[0.8125]]), np.array([0.0]))])
    trace = model.forward(np.array([[1.0]]))
    assert trace.layers[0].weight.to_float().tolist() == [[0.75]]
    assert trace.layers[0].acc.to_float().tolist() == [[0.75]]
    model.train_step(np.array([[1.0]]), np.array([[0.0]]))
    # error 0.75 (from the working copy), gradient 0.75, update 0.75 / 16 = 0.046875
    assert model.params[0].weight.to_float().tolist() == [[0.8125 - 0.046875]]
    assert model.params[0].weight.fmt == QFormat(16, 12)


def test_compiled_engines_refuse_fidelity_datapaths_and_the_model_falls_back():
    from fixprop.nn.compiled import compile_step
    from fixprop.nn.program import trace_program

    net = MLP([3, 4, 2], seed=1)
    dp = Datapath.uniform(16, 8)
    for fidelity in (dp.with_role("acc", replace(dp["acc"], accumulate="tree")),
                     replace(dp, roles={**dp.roles, "grad_product": RoleCast.of("s12.6")}),
                     replace(dp, layers={1: {"acc": RoleCast(16, 8, True, "RND", "SAT", "sequential")}})):
        with pytest.raises(NotCompilable, match="step-by-step"):
            trace_program(net, fidelity, 2, update=True)
        with pytest.raises(NotCompilable, match="step-by-step"):
            compile_step(net, fidelity, 2, update=True)
    x, y = np.ones((2, 3)), np.zeros((2, 2))
    for backend in ("numpy", "numba", "auto"):
        model = net.fixed_model(fidelity, backend=backend)
        model.train_step(x, y)
        assert model._compiled(2, update=True) is None


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_working_copies_run_on_the_compiled_engines_and_equal_the_oracle(backend):
    """Working copies are one cast each: the engines run them; two steps equal the oracle's."""
    from fixprop.nn.kernels import NumbaStep

    dp = Datapath.uniform(14, 8, "RND_CONV", "SAT", lr_shift=3)
    dp = replace(dp, roles={**dp.roles, "weight_fwd": RoleCast.of("s7.4", "TRN", "SAT")},
                 layers={1: {"bias_fwd": RoleCast.of("s6.3", "RND", "SAT_SYM")}})
    net = MLP([3, 4, 2], init="uniform_neg", seed=4)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-2, 2, (3, 3)), rng.uniform(-1, 1, (3, 2))
    model = net.fixed_model(dp, backend=backend)
    params = net.init_params()
    weights, biases = [p.weight.tolist() for p in params], [p.bias.tolist() for p in params]
    for _ in range(2):
        model.train_step(x, y)
        want = train_step(dp, ["relu", "relu"], "sse", weights, biases, x.tolist(), y.tolist())
        weights, biases = want["weights"], want["biases"]
    step = model._compiled(3, update=True)
    assert step is not None and isinstance(step, NumbaStep) == (backend == "numba")
    for l, p in enumerate(model.params):
        assert exact(p.weight) == vals(weights[l]) and exact(p.bias) == vals(biases[l])


# -- the TOML schema ----------------------------------------------------------------------------
def test_fidelity_datapaths_round_trip_through_toml():
    dp = Datapath.uniform(12, 6)
    dp = replace(dp, roles={**dp.roles, "acc": replace(dp["acc"], accumulate="sequential"),
                            "product": RoleCast.of("s10.5", "TRN", "WRAP"), "bias_fwd": RoleCast.of("s6.3")},
                 layers={0: {"weight_fwd": RoleCast.of("u8.8"),
                             "weight_grad": RoleCast(14, 7, True, "RND", "SAT", "tree")}})
    back = Datapath.from_toml(dp.to_toml())
    assert back == dp and back.uses_fidelity
    assert "accumulate = \"sequential\"" in dp.to_toml() and "[layers.0.weight_fwd]" in dp.to_toml()


@pytest.mark.parametrize("table, message", [
    ('[roles.acc]\nformat = "s16.8"\naccumulate = "serial"',
     r"x\.toml \[roles\.acc\]: accumulate must be one of 'exact', 'sequential', 'tree'; got 'serial'"),
    ('[roles.pre]\nformat = "s16.8"\naccumulate = "tree"',
     r"x\.toml: role pre is not a sum: accumulate = 'tree' applies only to acc, prop_err, weight_grad, bias_grad"),
    ('[roles.products]\nformat = "s16.8"',
     r"x\.toml: unknown datapath role\(s\) \['products'\].*optional roles: product, prop_product"),
    ('[roles.product]\nformat = "s16.8"\nacumulate = "tree"',
     r"x\.toml \[roles\.product\]: unknown key\(s\) \['acumulate'\] in the role; allowed: accumulate, format"),
    ('[layers.0.act]\nformat = "s16.8"\naccumulate = "sequential"',
     r"x\.toml: layer 0: role act is not a sum"),
    ('[roles.act]\nword = 12\nfrac = "dynamic"', r"x\.toml \[roles\.act\]: frac = \"dynamic\" needs initial_frac"),
    ('[roles.act]\nword = 12\nfrac = "dynamic"\ninitial_frac = 8\nmin_frac = 9',
     r"needs min_frac <= initial_frac <= max_frac; got 9, 8, 20"),
    ('[roles.act]\nformat = "s12.8"\ninitial_frac = 8', r"initial_frac apply only with frac = \"dynamic\""),
    ('[roles.act]\nformat = "s12.8"\n\n[dynamic]\ninterval = 10', r"a \[dynamic\] rule is given but no role"),
    ('[roles.act]\nword = 12\nfrac = "dynamic"\ninitial_frac = 8\n\n[dynamic]\ninterval = 0',
     r"x\.toml \[dynamic\]: dynamic interval must be an integer >= 1"),
    ('[roles.act]\nword = 12\nfrac = "dynamic"\ninitial_frac = 8\n\n[dynamic]\nrate = 0.1',
     r"unknown key\(s\) \['rate'\] in the dynamic rule; allowed: interval, overflow_rate"),
])
def test_malformed_fidelity_toml_names_the_file_table_and_key(table, message):
    base = Datapath.uniform(12, 6).to_toml()
    with pytest.raises(ConfigError, match=message):
        Datapath.from_toml(_replace_table(base, table), source="x.toml")


def _replace_table(toml: str, table: str) -> str:
    """``toml`` with the table named on ``table``'s first line replaced (or appended)."""
    header = table.splitlines()[0]
    blocks = toml.split("\n\n")
    kept = [b for b in blocks if not b.startswith(header + "\n")]
    return "\n\n".join(kept) + "\n\n" + table + "\n"


def test_a_lone_optional_role_error_names_it():
    with pytest.raises(ConfigError, match="no product role"):
        Datapath.uniform(8, 4)["product"]
    with pytest.raises(ConfigError, match="accumulate must be one of"):
        RoleCast(8, 4, accumulate="pairwise")


def test_float_reference_ignores_casts_of_products_and_accumulators():
    """The float network computes the same equations with every cast the identity: the
    fidelity roles change nothing there (verify still compares against autograd)."""
    dp = Datapath.uniform(16, 8)
    fancy = replace(dp, roles={**dp.roles, "product": RoleCast.of("s4.1"), "weight_fwd": RoleCast.of("s4.1"),
                               "acc": replace(dp["acc"], accumulate="sequential")})
    net = MLP([3, 4, 2], seed=2)
    x, y = np.random.default_rng(0).uniform(-1, 1, (5, 3)), np.random.default_rng(1).uniform(-1, 1, (5, 2))
    plain, other = net.float_model(dp), net.float_model(fancy)
    assert plain.train_step(x, y) == other.train_step(x, y)
    for p, q in zip(plain.params, other.params):
        assert np.array_equal(p.weight, q.weight)



def test_an_export_bundle_holds_the_working_copies_and_no_product_for_a_register(tmp_path):
    """Layer 0's acc is a sequential register (no exact sum: no product stage), layer 1 keeps
    an exact acc of cast products; both layers compute with s6.3 working weights. The bundle's
    integers equal the oracle's, and loading checks the stage list."""
    from fixprop.hardware import export, load
    from fixprop.hardware.bundle import layer_stages

    dp = Datapath.uniform(10, 5, "RND_CONV", "SAT", lr_shift=2)
    dp = replace(dp, roles={**dp.roles, "weight_fwd": RoleCast.of("s6.3", "TRN", "SAT"),
                            "product": RoleCast.of("s8.4", "TRN", "SAT")},
                 layers={0: {"acc": RoleCast(7, 4, True, "TRN", "SAT", "sequential")}})
    net = MLP([3, 4, 2], init="uniform_neg", seed=5)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-2, 2, (4, 3)), rng.uniform(-1, 1, (4, 2))
    with pytest.raises(ConfigError, match="no compiled engine to check"):
        export(net, dp, x, y, steps=2, out=tmp_path / "b", check_backend="numba")
    bundle = load(export(net, dp, x, y, steps=2, out=tmp_path / "b"))
    assert "product" not in layer_stages(dp, 0) and "product" in layer_stages(dp, 1)
    assert "step0/layer0/product" not in bundle.tensors and "step0/layer1/product" in bundle.tensors
    params = net.init_params()
    weights, biases = [p.weight.tolist() for p in params], [p.bias.tolist() for p in params]
    for t in range(2):
        want = train_step(dp, ["relu", "relu"], "sse", weights, biases, x[2 * t:2 * t + 2].tolist(),
                          y[2 * t:2 * t + 2].tolist())
        for l in range(2):
            working = bundle.tensors[f"step{t}/layer{l}/weight_fwd"]
            master = bundle.tensors[f"step{t}/layer{l}/weight"]
            assert working.fmt == QFormat(6, 3) and master.fmt == QFormat(10, 5)
            assert exact(working) == vals(_cast_rows(weights[l], dp))
            assert exact(bundle.tensors[f"step{t}/layer{l}/act"]) == vals(want["acts"][l + 1])
            assert exact(bundle.tensors[f"step{t}/layer{l}/weight_updated"]) == vals(want["weights"][l])
        weights, biases = want["weights"], want["biases"]


def _cast_rows(rows, dp):
    """The oracle's working copy of one layer's weights (floats or Vals) under ``dp``."""
    from int_mlp_oracle import cast, quantize

    spec = dp.roles["weight_fwd"]
    return [[cast(w if isinstance(w, Val) else quantize(w, dp["weight"]), spec) for w in row] for row in rows]


def test_ranges_observe_product_casts_and_every_register_addition():
    """A counts-and-ranges observer sees each product cast (B * n_out * n_in values per layer)
    and each addition of a sequential register (n_in casts of B * n_out values); a proposal
    gives the product role a format from its observed range."""
    from fixprop.explore.ranges import RangeCollector, propose_datapath

    dp = Datapath.uniform(16, 8)
    dp = replace(dp, roles={**dp.roles, "product": RoleCast.of("s16.8", "TRN", "SAT"),
                            "acc": replace(dp["acc"], accumulate="sequential")})
    net = MLP([3, 4, 2], init="uniform_neg", seed=1)
    collector = RangeCollector()
    ar = FixedArithmetic(dp, observer=collector)
    params = net.params_in(ar, net.init_params())
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    net.forward(ar, params, x)
    counts = {(s.role, s.layer): s.count for s in collector.table()}
    assert counts[("product", 0)] == 5 * 4 * 3 and counts[("product", 1)] == 5 * 2 * 4
    assert counts[("acc", 0)] == 5 * 4 * 3 and counts[("acc", 1)] == 5 * 2 * 4
    proposed = propose_datapath(collector, dp, 12, per_layer=False)
    stats = collector.by_role()["product"]
    largest = max(abs(stats.min), abs(stats.max))
    fmt = proposed["product"].fmt
    assert fmt.word == 12 and fmt.max >= largest and fmt.max / 4 < max(largest, 2 ** -fmt.frac)


def test_sweep_templates_carry_fidelity_casts_to_every_word():
    from fixprop.explore.sweep import rescaled

    dp = Datapath.uniform(16, 8)
    dp = replace(dp, roles={**dp.roles, "grad_product": RoleCast.of("s14.10", "TRN", "SAT"),
                            "weight_grad": replace(dp["weight_grad"], accumulate="tree")},
                 layers={1: {"weight_fwd": RoleCast.of("s8.6")}})
    small = rescaled(dp, 10)
    assert small["grad_product"].fmt == QFormat(10, 6) and small["weight_grad"].accumulate == "tree"
    assert small.layers[1]["weight_fwd"].fmt == QFormat(10, 8) and small.uses_fidelity



# -- lookup-table activations -------------------------------------------------------------------
def test_a_lookup_table_float_network_equals_autodiff_at_its_breakpoints():
    """The float network with a lut activation equals autograd (and JAX, PyTorch when installed)
    to 1e-12, on dyadic data with pre-activations placed exactly on table breakpoints (the
    derivative there is the upper entry's, on both sides)."""
    from fixprop.nn import FloatArithmetic, LayerParams
    from fixprop.verify.references import available, reference_gradients

    net = MLP([2, 3, 2], f"lut:{LUT_FILE}", "linear", "sse")
    params = [LayerParams(np.array([[0.5, -0.25], [1.0, 0.75], [-0.5, 0.5]]), np.array([0.0, -0.25, 1.5])),
              LayerParams(np.array([[0.25, -1.0, 0.5], [0.75, 0.5, -0.25]]), np.array([0.125, -0.5]))]
    x, y = np.array([[1.0, 2.0], [-3.0, 0.5]]), np.array([[0.25, -0.5], [1.0, 0.0]])
    pre = x @ params[0].weight.T + params[0].bias
    assert {0.0, -0.5, 3.5} & set(pre.ravel().tolist())  # breakpoints of the table (z_min + k/2)
    ar = FloatArithmetic()
    grads = net.backward(ar, params, net.forward(ar, params, x), y)
    for backend in ("autograd", "jax", "torch"):
        if not available(backend):
            continue
        for g, (w, b) in zip(grads, reference_gradients(backend, net, params, x, y)):
            np.testing.assert_allclose(g.weight_grad, w, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(g.bias_grad, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("change, message", [
    ("step = 0.75", "step must be a power of two"),
    ("z_min = -3.75", "z_min must be a multiple of step"),
    ("index_bits = 3", r"values must be a list of 2\*\*index_bits = 8 numbers; got 16"),
    ("index_bits = 13", r"index_bits must be an integer in 1..12"),
    ("colour = 1", r"unknown key\(s\) \['colour'\]"),
    ("values = 0", "values must be a list"),
])
def test_malformed_lookup_tables_name_the_file_and_key(tmp_path, change, message):
    key = change.split(" = ")[0]
    text = "\n".join(line for line in _sigmoid_table().splitlines() if not line.startswith(key + " ")) + "\n" + change
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as error:
        MLP([2, 2], f"lut:{path}")
    assert str(error.value).startswith(f"{path}: ")


def test_lookup_table_numbers_must_be_exact_and_in_range(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(lut_toml(-1, 1, [0.1, 0.5], [0.25, 0.25]))
    with pytest.raises(ConfigError, match=r"values\[0\] = 0.1 needs more than 32 fraction bits"):
        MLP([1, 1], f"lut:{path}")
    path.write_text(lut_toml(-1, 1, [0.5, 1.5], [0.25, 0.25]))
    with pytest.raises(ConfigError, match=r"values\[1\] = 1.5 must be in \[-1, 1\]"):
        MLP([1, 1], f"lut:{path}")
    with pytest.raises(ConfigError, match="cannot read lookup table"):
        MLP([1, 1], f"lut:{tmp_path / 'missing.toml'}")


# -- dynamic fixed point --------------------------------------------------------------------------
def _format_range(cast, frac: int) -> tuple[Fraction, Fraction]:
    """[min, max] of the cast's word at ``frac`` fraction bits (docs/datapath.md)."""
    lo, hi = (-(2 ** (cast.word - 1)), 2 ** (cast.word - 1) - 1) if cast.signed else (0, 2**cast.word - 1)
    scale = Fraction(2) ** -frac
    return lo * scale, hi * scale


def _with_frac(dp: Datapath, role: str, layer, frac: int) -> Datapath:
    """``dp`` with one site's frac changed (a data role in its table, others as a layer override)."""
    if layer is None:
        return replace(dp, roles={**dp.roles, role: replace(dp.roles[role], frac=frac)})
    cast = dp.layers.get(layer, {}).get(role, dp.roles.get(role))
    layers = {k: dict(v) for k, v in dp.layers.items()}
    layers.setdefault(layer, {})[role] = replace(cast, frac=frac)
    return replace(dp, layers=layers)


def oracle_dynamic_run(dp, sites, activations, loss, weights, biases, batches):
    """The docs' dynamic rule driven on the oracle: count each site's exact cast inputs per
    interval (values, overflowing at frac, overflowing at frac + 1), move the fracs, cast the
    moved state. Returns (weights, biases, the fracs after each check)."""
    from int_mlp_oracle import cast as oracle_cast
    from int_mlp_oracle import quantize

    rule = dp.dynamic
    # the initial parameters are quantized before training (not a training step's cast)
    weights = [[[quantize(w, dp.cast_for("weight", l)) for w in row] for row in layer] for l, layer in enumerate(weights)]
    biases = [[quantize(b, dp.cast_for("bias", l)) for b in layer] for l, layer in enumerate(biases)]
    counts = {site: [0, 0, 0] for site in sites}
    history = []
    for step, (xs, ys) in enumerate(batches, start=1):
        record: dict = {}
        out = train_step(dp, activations, loss, weights, biases, xs.tolist(), ys.tolist(), record=record)
        weights, biases = out["weights"], out["biases"]
        for site in sites:
            spec = dp.layers.get(site[1], {}).get(site[0], dp.roles.get(site[0])) if site[1] is not None \
                else dp.roles[site[0]]
            here, up = _format_range(spec, spec.frac), _format_range(spec, spec.frac + 1)
            for v in record.get(site, []):
                counts[site][0] += 1
                counts[site][1] += not here[0] <= v <= here[1]
                counts[site][2] += not up[0] <= v <= up[1]
        if step % rule.interval:
            continue
        moved = {}
        for site in sites:
            spec = dp.layers.get(site[1], {}).get(site[0], dp.roles.get(site[0])) if site[1] is not None \
                else dp.roles[site[0]]
            n, over, over_up = counts[site]
            frac = spec.frac
            if n and over > rule.overflow_rate * n and frac > spec.dynamic[0]:
                frac -= 1
            elif n and over_up <= rule.overflow_rate * n and frac < spec.dynamic[1]:
                frac += 1
            if frac != spec.frac:
                moved[site] = frac
        for site, frac in moved.items():
            dp = _with_frac(dp, site[0], site[1], frac)
        for (role, layer) in moved:
            if role == "weight":
                weights[layer] = [[oracle_cast(w, dp.cast_for("weight", layer)) for w in row] for row in weights[layer]]
            if role == "bias":
                biases[layer] = [oracle_cast(b, dp.cast_for("bias", layer)) for b in biases[layer]]
        counts = {site: [0, 0, 0] for site in sites}
        history.append({(role if layer is None else f"{role}/{layer}"): (
            dp.roles[role] if layer is None else dp.layers.get(layer, {}).get(role, dp.roles[role])).frac
            for role, layer in sites})
    return weights, biases, history


@st.composite
def dynamic_datapaths(draw, n_layers: int):
    """Narrow datapaths (words 5..9) with 1-4 dynamic roles, a check every 1-3 steps and an
    overflow rate of 0, 5% or 30%."""
    from fixprop.datapath import DynamicRule

    dp = draw(fidelity_datapaths(n_layers))
    dp = replace(dp, roles={r: c for r, c in dp.roles.items() if r not in OPTIONAL_ROLES and r != "momentum"},
                 layers={}, momentum=None)
    chosen = draw(st.lists(st.sampled_from(["input", "weight", "bias", "acc", "act", "bias_grad", "weight_grad",
                                            "prop_err", "update", "pre"]), min_size=1, max_size=4, unique=True))
    roles = dict(dp.roles)
    for role in chosen:
        cast = roles[role]
        word = draw(st.integers(5, 9))
        frac = draw(st.integers(0, word))
        roles[role] = replace(cast, word=word, frac=frac, dynamic=(frac - draw(st.integers(0, 3)),
                                                                    frac + draw(st.integers(0, 3))))
    rule = DynamicRule(draw(st.integers(1, 3)), draw(st.sampled_from([0.0, 0.05, 0.3])))
    return replace(dp, roles=roles, dynamic=rule)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.lists(st.integers(1, 3), min_size=2, max_size=3), batch=st.sampled_from([1, 3]),
       activation=st.sampled_from(ACTIVATIONS[:5]), seed=st.integers(0, 1000))
def test_dynamic_fractions_equal_the_oracle_over_several_steps(data, sizes, batch, activation, seed):
    net = MLP(sizes, activation, "linear", "sse", init="uniform_neg", seed=seed)
    dp = data.draw(dynamic_datapaths(net.n_layers))
    rng = np.random.default_rng(seed)
    batches = [(rng.uniform(-3, 3, (batch, sizes[0])), rng.uniform(-2, 2, (batch, sizes[-1]))) for _ in range(6)]
    model = net.fixed_model(dp)
    for xs, ys in batches:
        model.train_step(xs, ys)
    params = net.init_params()
    sites = dp.dynamic_sites(net.n_layers)
    weights, biases, history = oracle_dynamic_run(dp, sites, [activation] * (net.n_layers - 1) + ["linear"], "sse",
                                                  [p.weight.tolist() for p in params],
                                                  [p.bias.tolist() for p in params], batches)
    assert model.dynamic_fractions().history == history
    for l, p in enumerate(model.params):
        assert exact(p.weight) == vals(weights[l]), f"weights of layer {l}"
        assert exact(p.bias) == vals(biases[l]), f"biases of layer {l}"


def _dynamic_ik_datapath() -> Datapath:
    text = Datapath.uniform(12, 8).to_toml().replace(
        '[roles.act]\nformat = "s12.8"', '[roles.act]\nword = 12\nfrac = "dynamic"\ninitial_frac = 10').replace(
        '[roles.weight]\nformat = "s12.8"', '[roles.weight]\nword = 12\nfrac = "dynamic"\ninitial_frac = 6')
    return Datapath.from_toml(text + "\n[dynamic]\ninterval = 8\noverflow_rate = 0.001\n")


def test_train_reports_the_fractions_of_every_epoch():
    from fixprop.explore.train import TrainConfig, train

    dp = _dynamic_ik_datapath()
    result = train(TrainConfig(dataset="ik", epochs=2), dp, count_casts=False)
    fracs = result["dynamic_fractions"]
    assert len(fracs) == 3 and set(fracs[0]) == {"weight/0", "weight/1", "act/0", "act/1"}
    assert fracs[0] == {"weight/0": 6, "weight/1": 6, "act/0": 10, "act/1": 10}
    assert fracs[-1] != fracs[0]  # the fractions moved
    from fixprop.explore.train import format_report

    line = [text for text in format_report(result).splitlines() if text.startswith("dynamic fractions")]
    assert line == ["dynamic fractions (start->end): " + ", ".join(
        f"{site} {fracs[0][site]}->{frac}" for site, frac in fracs[-1].items())]
    assert train(TrainConfig(dataset="ik", epochs=1), Datapath.uniform(12, 8), count_casts=False)[
        "dynamic_fractions"] is None


def test_an_export_bundle_holds_each_step_in_its_formats(tmp_path):
    from fixprop.hardware import export, load

    dp = replace(_dynamic_ik_datapath(), dynamic=replace(_dynamic_ik_datapath().dynamic, interval=1))
    net = MLP([3, 4, 2], seed=2)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-2, 2, (8, 3)), rng.uniform(-1, 1, (8, 2))
    bundle = load(export(net, dp, x, y, steps=4, out=tmp_path / "b"))
    fracs = [bundle.tensors[f"step{t}/layer0/weight"].fmt.frac for t in range(4)]
    assert len(set(fracs)) > 1  # the weight format moved between steps
    for t in range(3):
        assert bundle.tensors[f"step{t}/layer0/weight_updated"].fmt == bundle.tensors[f"step{t + 1}/layer0/weight"].fmt
        assert np.array_equal(bundle.tensors[f"step{t}/layer0/weight_updated"].raw,
                              bundle.tensors[f"step{t + 1}/layer0/weight"].raw)



def test_a_sequential_register_needs_a_fixed_word_and_with_role_adds_optional_roles():
    dp = Datapath.seed(16, 10)
    with pytest.raises(ConfigError, match="a sequential register needs a fixed word"):
        dp.with_role("acc", replace(dp["acc"], accumulate="sequential"))
    assert dp.with_role("acc", replace(dp["acc"], accumulate="tree"))["acc"].accumulate == "tree"
    assert dp.with_role("product", RoleCast.of("s12.8"))["product"].fmt == QFormat(12, 8)


def test_the_example_rtl_refuses_fidelity_datapaths():
    import importlib.util
    from pathlib import Path as P

    spec = importlib.util.spec_from_file_location(
        "run_readmemh", P(__file__).parent.parent / "examples" / "rtl" / "run_readmemh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dp = Datapath.uniform(16, 8, "RND", "SAT")
    dp = replace(dp, roles={**dp.roles, "acc": RoleCast(None, None, True, "RND", "SAT"),
                            "product": RoleCast.of("s16.8", "TRN", "SAT")})
    with pytest.raises(ConfigError, match="product casts, register accumulators"):
        module.rtl_rounding(dp)


def test_proposals_keep_per_layer_fidelity_overrides():
    """An optional role given only per layer, and a per-layer accumulate mode, survive a
    proposal (per layer or per role), refitted to the proposed word."""
    from fixprop.explore.ranges import RangeCollector, propose_datapath

    dp = Datapath.uniform(16, 8)
    dp = replace(dp, layers={1: {"weight_fwd": RoleCast.of("s8.6"), "product": RoleCast.of("s12.8", "TRN", "SAT"),
                                 "acc": RoleCast(16, 8, True, "RND", "SAT", "tree")}})
    net = MLP([3, 4, 2], init="uniform_neg", seed=1)
    collector = RangeCollector()
    model = net.fixed_model(dp)
    model.arithmetic.observer = collector
    model.train_step(np.ones((2, 3)), np.zeros((2, 2)))
    for per_layer in (True, False):
        proposed = propose_datapath(collector, dp, 12, per_layer=per_layer)
        assert proposed.uses_fidelity
        assert proposed.optional_cast("weight_fwd", 1).word == 12 and proposed.optional_cast("product", 1).word == 12
        assert proposed.optional_cast("weight_fwd", 0) is None
        assert proposed.cast_for("acc", 1).accumulate == "tree" and proposed.cast_for("acc", 0).accumulate == "exact"



def test_full_frac_casts_after_piecewise_linear_activations():
    """bias_grad with a fixed word and frac "full" keeps the derivative's documented u(k+1).k
    fraction: equal to the oracle; act with a fixed word and frac "full" is refused."""
    dp = Datapath.uniform(10, 5, "RND", "SAT", lr_shift=2)
    full_grad = dp.with_role("bias_grad", RoleCast(10, None, True, "RND", "SAT"))
    net = MLP([2, 3, 2], "pwl_sigmoid", "linear", "sse", init="uniform_neg", seed=7)
    x, y = np.array([[1.5, -0.75], [0.25, 2.0]]), np.array([[0.5, -1.0], [1.0, 0.25]])
    assert_equals_oracle(net, full_grad, ["pwl_sigmoid", "linear"], "sse", net.init_params(), x, y)
    with pytest.raises(ConfigError, match="layer 0: pwl_sigmoid into act with word 10 and frac 'full'"):
        net.fixed_model(dp.with_role("act", RoleCast(10, None, True, "RND", "SAT")))


def _momentum_dynamic_datapath() -> Datapath:
    from fixprop.datapath import DynamicRule

    dp = replace(Datapath.uniform(12, 6, "RND_CONV", "SAT"), momentum=FixedConstant(0.5, QFormat(4, 4, False)))
    roles = dict(dp.roles)
    roles["weight"] = replace(roles["weight"], dynamic=(2, 10))
    roles["momentum"] = replace(roles["momentum"], dynamic=(2, 10))
    return replace(dp, roles=roles, dynamic=DynamicRule(1, 0.0))


def test_moved_state_and_velocity_are_cast_into_their_new_formats():
    """Every step is a check: after each, every weight and velocity is in its site's current
    format (the momentum role's, not another's), and the sites are the casts the network makes."""
    dp = _momentum_dynamic_datapath()
    net = MLP([3, 4, 2], init="uniform_neg", seed=1)
    model = net.fixed_model(dp)
    assert model.dynamic_fractions().sites == [("weight", 0), ("weight", 1), ("momentum", 0), ("momentum", 1)]
    rng = np.random.default_rng(2)
    moved = False
    for _ in range(4):
        model.train_step(rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2)))
        current = model.arithmetic.datapath
        moved |= current.cast_for("weight", 0).frac != 6
        for i, (p, v) in enumerate(zip(model.params, model.velocity)):
            assert p.weight.fmt == current.cast_for("weight", i).fmt
            assert v.weight.fmt == v.bias.fmt == current.cast_for("momentum", i).fmt
    assert moved


def test_a_failed_step_counts_nothing_and_a_new_datapath_restarts_the_fractions():
    from fixprop.errors import NonFiniteError

    dp = _momentum_dynamic_datapath()
    net = MLP([3, 4, 2], seed=1)
    model = net.fixed_model(replace(dp, dynamic=replace(dp.dynamic, interval=5)))
    dynamic = model.dynamic_fractions()
    with pytest.raises(NonFiniteError):
        model.train_step(np.full((2, 3), 40.0), np.array([[0.0, np.nan], [0.0, 0.0]]))
    assert all(counts == [0, 0, 0] for counts in dynamic.counts.values()) and dynamic.steps == 0
    other = dp.with_fracs({("weight", 0): 4})
    model.arithmetic.datapath = other
    assert model.dynamic_fractions() is not dynamic and model.dynamic_fractions().fractions()["weight/0"] == 4
