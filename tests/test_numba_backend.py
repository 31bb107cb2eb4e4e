"""The numba kernel runs the traced datapath program (nn/program.py, nn/kernels.py) and computes,
bit for bit, what the step-by-step FixedArithmetic network computes: gradients, updated
parameters, velocities and the output, on generated datapaths (words 2..62, every rounding
including STOCH, every overflow mode, per-layer overrides, momentum, learning rate as a shift and
as a constant, every activation and loss, batches 1..64, layers of width 1) and on full-scale data.
A datapath beyond 62-bit values does not trace; the Model then falls back and stays exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.datapath import LAYER_ROLES, ROLES
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.hardware import LfsrSource
from fixprop.nn import MLP, FixedArithmetic, LayerParams
from fixprop.nn.program import NotCompilable, trace_program

pytest.importorskip("numba")
from fixprop.nn.kernels import NumbaStep, run_program  # noqa: E402

ACTIVATIONS = ["relu", "leaky_relu:3", "linear", "hard_tanh"]
LOSSES = ["sse", "half_sse", "mse"]
STATE_ROLES = ("input", "target", "weight", "bias", "momentum")


def kernel():
    from fixprop.nn.jit import compiled

    function = compiled(run_program)
    assert function is not None, "numba is installed: the kernel must compile"
    return function


@st.composite
def role_casts(draw, role: str, max_word: int):
    word = draw(st.integers(2, max_word))
    frac = draw(st.integers(-2, word + 2))
    full = role not in STATE_ROLES and draw(st.booleans()) and draw(st.booleans())
    rounding = draw(st.sampled_from(list(Rounding)))
    overflow = draw(st.sampled_from(list(Overflow)))
    signed = True if role in ("input", "target", "weight", "bias") else draw(st.booleans())
    if full:
        return RoleCast(None, frac, True, rounding, overflow)
    return RoleCast(word, frac, signed, rounding, overflow)


@st.composite
def datapaths(draw, n_layers: int, max_word: int = 24):
    roles = {role: draw(role_casts(role, max_word)) for role in ROLES}
    layers = {}
    for layer in range(n_layers):
        chosen = draw(st.lists(st.sampled_from(LAYER_ROLES), max_size=3, unique=True))
        if chosen:
            layers[layer] = {role: draw(role_casts(role, max_word)) for role in chosen}
    use_momentum = draw(st.booleans())
    momentum = FixedConstant(draw(st.sampled_from([0.5, 0.75, 0.875])), QFormat(8, 8, False)) if use_momentum else None
    if not use_momentum:
        roles.pop("momentum")
        layers = {k: {r: c for r, c in v.items() if r != "momentum"} for k, v in layers.items()}
    lr_shift = draw(st.one_of(st.none(), st.integers(0, 8)))
    lr = FixedConstant(draw(st.sampled_from([0.05, 0.3, 1.5])), QFormat(12, 10, False)) if lr_shift is None else None
    return Datapath(roles, relu_grad_at_zero=draw(st.sampled_from([0.0, 0.5, 1.0])), lr_shift=lr_shift, lr=lr,
                    momentum=momentum, layers=layers)


def stepwise(net, dp, params, x, y, velocity, rng):
    ar = FixedArithmetic(dp, rng)
    trace = net.forward(ar, params, x)
    grads = net.backward(ar, params, trace, y)
    new, vel = net.sgd_step(ar, params, grads, velocity)
    return ([v for g in grads for v in (g.weight_grad, g.bias_grad)] + [v for p in new for v in (p.weight, p.bias)]
            + ([v for p in vel for v in (p.weight, p.bias)] if vel is not None else []) + [trace.output])


def numba_outputs(net, dp, params, x, y, velocity, rng, batch):
    step = NumbaStep(trace_program(net, dp, batch, update=True), kernel())
    return step.outputs(params, x, y, velocity, rng)


def assert_identical(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.fmt == w.fmt, f"output {i}: {g.fmt} != {w.fmt}"
        assert np.array_equal(np.asarray(g.raw, dtype=object), np.asarray(w.raw, dtype=object)), f"output {i}"


def setup(net, dp, batch, seed, full_scale):
    rng = np.random.default_rng(seed)
    ar = FixedArithmetic(dp, np.random.default_rng(seed + 1))
    if full_scale:  # every parameter and input at the edges of its format
        def edge(role, shape, layer=None):
            fmt = dp.cast_for(role, layer).fmt
            raw = rng.choice([fmt.raw_min, fmt.raw_max, fmt.raw_max - 1, 0, 1], size=shape)
            from fixprop import FixedArray
            return FixedArray(raw.astype(object), fmt)
        params = [LayerParams(edge("weight", (o, i), layer), edge("bias", (o,), layer))
                  for layer, (i, o) in enumerate(zip(net.layer_sizes[:-1], net.layer_sizes[1:]))]
        x, y = edge("input", (batch, net.layer_sizes[0])), edge("target", (batch, net.layer_sizes[-1]))
    else:
        params = net.params_in(ar, net.init_params())
        x = ar.data(rng.uniform(-2, 2, (batch, net.layer_sizes[0])), "input")
        y = ar.data(rng.uniform(-2, 2, (batch, net.layer_sizes[-1])), "target")
    velocity = (net.zero_velocity(ar, params) if dp.momentum is not None else None)
    if velocity is not None and full_scale:
        velocity = [LayerParams(p.weight.cast(dp.cast_for("momentum", i).fmt), p.bias.cast(dp.cast_for("momentum", i).fmt))
                    for i, p in enumerate(params)]
    return params, x, y, velocity


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4), batch=st.sampled_from([1, 2, 3, 9, 64]),
       activation=st.sampled_from(ACTIVATIONS), output_activation=st.sampled_from(ACTIVATIONS),
       loss=st.sampled_from(LOSSES), seed=st.integers(0, 1000),
       full_scale=st.booleans(), max_word=st.sampled_from([8, 24, 62]))
def test_numba_step_equals_the_stepwise_path(data, sizes, activation, output_activation, loss, batch, seed,
                                             full_scale, max_word):
    net = MLP(sizes, activation, output_activation, loss, init="uniform_neg", seed=seed)
    dp = data.draw(datapaths(net.n_layers, max_word))
    params, x, y, velocity = setup(net, dp, batch, seed, full_scale)
    want = stepwise(net, dp, params, x, y, velocity, np.random.default_rng(seed + 7))
    try:
        got = numba_outputs(net, dp, params, x, y, velocity, np.random.default_rng(seed + 7), batch)
    except NotCompilable:
        assert beyond_int64_programs(net, dp, batch)
        return
    assert_identical(got, want)


def beyond_int64_programs(net, dp, batch) -> bool:
    """Whether the stepwise path forms a value a program cannot hold: a cast's exact input wider
    than 62 bits (or, shifted left, grown beyond), or a cast dropping more than 61 bits. Read off
    the FixedArrays the stepwise path passes to its casts (an observer), not off the program."""
    beyond = [False]

    def observe(role, layer, exact, result, cast):
        fmt = getattr(exact, "fmt", None)
        if fmt is not None:
            shift = fmt.frac - result.fmt.frac
            grown = fmt.word - min(shift, 0)
            beyond[0] |= max(fmt.word, grown, result.fmt.word) > 62 or shift > 61

    ar = FixedArithmetic(dp, np.random.default_rng(0), observe)
    params = net.params_in(ar, net.init_params())
    x = ar.data(np.zeros((batch, net.layer_sizes[0])), "input")
    y = ar.data(np.zeros((batch, net.layer_sizes[-1])), "target")
    velocity = net.zero_velocity(ar, params) if dp.momentum is not None else None
    trace = net.forward(ar, params, x)
    net.sgd_step(ar, params, net.backward(ar, params, trace, y), velocity)
    return beyond[0]


@pytest.mark.parametrize("word", [29, 30, 31, 32])
def test_both_sides_of_the_int64_bound_are_exact(word):
    """Full-scale data at widths whose products are just inside and just outside 62 bits: inside,
    the program runs on the kernel; outside, it does not trace and the Model falls back; both equal
    the stepwise path."""
    net = MLP([3, 4, 2], init="uniform_neg")
    dp = Datapath.uniform(word, word // 2, "RND_CONV", "SAT")
    params, x, y, _ = setup(net, dp, 3, word, full_scale=True)
    want = stepwise(net, dp, params, x, y, None, None)
    widest_product = 2 * word + 2  # weight x value summed over up to 4 terms (K = 3, 4; batch 3)
    try:
        trace_program(net, dp, 3, update=True)
    except NotCompilable:
        assert widest_product > 62
    else:
        assert widest_product <= 62
        assert_identical(numba_outputs(net, dp, params, x, y, None, None, 3), want)
    model = net.fixed_model(dp, backend="numba")
    model.params = params
    model.train_step(x, y)
    for got, new in zip(model.params, want[4:8:2]):
        assert np.array_equal(np.asarray(got.weight.raw, dtype=object), np.asarray(new.raw, dtype=object))


@pytest.mark.parametrize("batch", [1, 64])
def test_stochastic_rounding_and_lfsr_are_identical_across_backends(batch):
    dp = Datapath.uniform(14, 9, "STOCH", "SAT")
    net = MLP([3, 6, 2], init="he", seed=2)
    for source in (lambda: np.random.default_rng(11), lambda: LfsrSource(seed=5, bits=16)):
        params, x, y, _ = setup(net, dp, batch, 3, full_scale=False)
        want = stepwise(net, dp, params, x, y, None, source())
        got = numba_outputs(net, dp, params, x, y, None, source(), batch)
        assert_identical(got, want)


@pytest.mark.parametrize("backend", ["numpy", "numba", "auto"])
def test_model_backends_train_to_the_same_integers(backend):
    net = MLP([3, 16, 5], init="he", seed=1)
    dp = replace(Datapath.uniform(16, 10, "STOCH"), momentum=FixedConstant(0.5, QFormat(8, 8, False)))
    rng = np.random.default_rng(0)
    data = [(rng.uniform(-1, 1, (8, 3)), rng.uniform(-1, 1, (8, 5))) for _ in range(5)]
    reference = net.fixed_model(dp, rng=np.random.default_rng(4))
    reference.compiled = False
    model = net.fixed_model(dp, rng=np.random.default_rng(4), backend=backend)
    for x, y in data:
        assert model.train_step(x, y) == reference.train_step(x, y)
    for a, b in zip(model.params, reference.params):
        assert a.weight.identical(b.weight) and a.bias.identical(b.bias)
    engine = type(model._steps[(8, True, False)]).__name__
    assert engine == {"numpy": "CompiledStep", "numba": "NumbaStep", "auto": "NumbaStep"}[backend]


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of auto, numpy, numba"):
        MLP([2, 2]).fixed_model(Datapath.uniform(8, 4), backend="cuda")


@pytest.mark.parametrize("dp", [Datapath.uniform(10, 9, "RND", "SAT_SYM"), Datapath.uniform(8, 6, "STOCH", "WRAP"),
                                Datapath.seed(16, 10)], ids=["saturating", "stoch-wrap", "seed"])
def test_the_kernel_counts_casts_as_the_stepwise_observer(dp):
    """Training observed by a counts-only RangeCollector: on the numba kernel (counting in the loops)
    and stepwise (observe() on every cast) the counts per role and layer, and the weights, are equal."""
    from fixprop.explore.ranges import RangeCollector

    net = MLP([3, 5, 2], "hard_tanh", "linear", "mse", init="uniform_neg", seed=3)
    rng = np.random.default_rng(1)
    data = [(rng.uniform(-3, 3, (4, 3)), rng.uniform(-3, 3, (4, 2))) for _ in range(4)]
    runs = {}
    for backend in ("numba", "stepwise"):
        counter = RangeCollector(ranges=False)
        model = Model_with(net, dp, counter, backend)
        for x, y in data:
            model.train_step(x, y)
            model.weight_gradients(x, y)
        kinds = {type(step).__name__ for step in model._steps.values() if step is not None}
        assert kinds == ({"NumbaStep"} if backend == "numba" else set())
        runs[backend] = ({key: (s.count, s.nonzero, s.saturated, s.underflowed) for key, s in counter.stats.items()},
                         [p.weight.raw.tolist() for p in model.params])
    assert runs["numba"] == runs["stepwise"]
    assert any(s[2] for s in runs["numba"][0].values()) or dp.name.startswith("seed")


def Model_with(net, dp, counter, backend):  # noqa: N802 - reads as the constructor it wraps
    from fixprop.nn.mlp import Model

    ar = FixedArithmetic(dp, np.random.default_rng(9), counter)
    return Model(net, ar, net.init_params(), dp.momentum is not None, compiled=backend != "stepwise",
                 backend="numba")


def test_warm_cache_compiles_the_kernel_or_says_it_cannot(monkeypatch):
    """Sweeps call warm_cache before starting workers; without numba it reports False."""
    from fixprop.nn.kernels import warm_cache

    assert warm_cache() is True
    monkeypatch.setenv("FIXPROP_DISABLE_NUMBA", "1")
    assert warm_cache() is False


def test_verify_times_the_chosen_engine_and_reports_the_same_errors(capsys):
    import json

    from fixprop.cli import main

    docs = {}
    for backend in ("numpy", "numba"):
        assert main(["verify", "--backend", backend, "--repeats", "1", "--json"]) == 0
        docs[backend] = json.loads(capsys.readouterr().out)
        assert docs[backend]["experiment"]["backend"] == backend
    assert docs["numpy"]["fixed"] == docs["numba"]["fixed"]
