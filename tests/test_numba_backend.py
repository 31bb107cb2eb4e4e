"""The numba kernel runs the traced datapath program (nn/program.py, nn/kernels.py) and computes,
bit for bit, what the step-by-step FixedArithmetic network computes: gradients, updated
parameters, velocities and the output, on generated datapaths (words 2..62, every rounding
including STOCH, every overflow mode, per-layer overrides, momentum, learning rate as a shift and
as a constant, every activation and loss, batches 1..64, layers of width 1) and on full-scale data.
Datapaths built to hold 56..62-bit values (wide products, 60..61-bit WRAP / SAT_SYM casts, STOCH
casts dropping 56..61 bits) trace and run on the kernel exactly. A datapath beyond 62-bit values
does not trace; the Model then falls back and stays exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.datapath import LAYER_ROLES, OPTIONAL_ROLES, ROLES
from fixprop.fixed.format import matmul_format, union_format
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.hardware import LfsrSource
from fixprop.nn import MLP, FixedArithmetic, LayerParams
from fixprop.nn.program import PROGRAM_MAX_BITS, PROGRAM_MAX_SHIFT, NotCompilable, trace_program

pytest.importorskip("numba")
from fixprop.nn.kernels import NumbaStep, numba_step, run_program  # noqa: E402

ACTIVATIONS = ["relu", "leaky_relu:3", "linear", "hard_tanh", "hard_sigmoid", "pwl_sigmoid", "pwl_tanh", "pwl_sigmoid:output",
               "pwl_tanh:output"]
#: Per-layer roles of datapaths the compiled engines run (product casts run step by step; working copies
#: are one cast each).
ONE_CAST_LAYER_ROLES = [role for role in LAYER_ROLES if role not in OPTIONAL_ROLES] + ["weight_fwd", "bias_fwd"]
LOSSES = ["sse", "half_sse", "mse"]
STATE_ROLES = ("input", "target", "weight", "bias", "momentum")


def kernel():
    from fixprop.nn.jit import compiled

    function = compiled(run_program)
    assert function is not None, "numba is installed: the kernel must compile"
    return function


class CountedKernel:
    """The numba kernel, counting the calls a step makes to it (that the step ran on it)."""

    def __init__(self) -> None:
        from numba.core.dispatcher import Dispatcher

        self.function, self.calls = kernel(), 0
        assert isinstance(self.function, Dispatcher), "the kernel is numba-compiled"

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.function, name)


@st.composite
def role_casts(draw, role: str, max_word: int):
    """A role's cast: words from 1 bit, signed or unsigned (data and parameters too: an unsigned
    weight role clips every negative weight to 0), any fraction, rounding and overflow."""
    word = draw(st.one_of(st.just(1), st.integers(1, max_word)))
    frac = draw(st.integers(-2, word + 2))
    full = role not in STATE_ROLES and draw(st.booleans()) and draw(st.booleans())
    rounding = draw(st.sampled_from(list(Rounding)))
    overflow = draw(st.sampled_from(list(Overflow)))
    signed = draw(st.booleans()) if role in ("input", "target", "weight", "bias") and draw(st.booleans()) \
        else True if role in ("input", "target", "weight", "bias") else draw(st.booleans())
    if full:
        return RoleCast(None, frac, True, rounding, overflow)
    return RoleCast(word, frac, signed, rounding, overflow)


@st.composite
def datapaths(draw, n_layers: int, max_word: int = 24):
    roles = {role: draw(role_casts(role, max_word)) for role in ROLES}
    layers = {}
    for layer in range(n_layers):
        chosen = draw(st.lists(st.sampled_from(ONE_CAST_LAYER_ROLES), max_size=3, unique=True))
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
            raw = np.clip(rng.choice([fmt.raw_min, fmt.raw_max, fmt.raw_max - 1, 0, 1], size=shape),
                          fmt.raw_min, fmt.raw_max)  # 1-bit formats hold fewer of them
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
    extent = stepwise_extent(net, dp, batch)
    return extent.needed > PROGRAM_MAX_BITS or extent.dropped > PROGRAM_MAX_SHIFT


class Extent:
    """What the stepwise path forms under a datapath, read off the FixedArrays it passes to its
    casts (an observer, on zero data: formats do not depend on values), not off any program.

    needed: bits of the widest value (a cast's input or result, a cast's input shifted left, and
    ``pre`` compared with the activations' constants -1, 0, 1); held: bits of the widest value an
    operation forms (a cast's input; when the cast moves the binary point, its result, or
    the input shifted left if that is narrower); dropped: the
    most bits a cast drops; sources: (role, layer) -> the formats cast into it; casts: (input
    format, result format, rounding, overflow) of every cast of a FixedArray."""

    def __init__(self) -> None:
        self.needed = self.held = self.dropped = 0
        self.sources: dict[tuple[str, int | None], list[QFormat]] = {}
        self.casts: list[tuple[QFormat, QFormat, Rounding, Overflow]] = []

    def __call__(self, role, layer, exact, result, cast) -> None:
        self.needed = max(self.needed, result.fmt.word)
        fmt = getattr(exact, "fmt", None)
        if fmt is None:  # real data quantized into its role
            return
        shift = fmt.frac - result.fmt.frac
        self.needed = max(self.needed, fmt.word - min(shift, 0))
        moved = result.fmt.word if shift > 0 else min(result.fmt.word, fmt.word - shift) if shift < 0 else 0
        self.held = max(self.held, fmt.word, moved)
        self.dropped = max(self.dropped, shift)
        if role == "pre":
            self.needed = max(self.needed, union_format(result.fmt, QFormat(2, 0)).word)
        self.sources.setdefault((role, layer), []).append(fmt)
        self.casts.append((fmt, result.fmt, cast.rounding, cast.overflow))

    @property
    def fits(self) -> bool:
        return self.needed <= PROGRAM_MAX_BITS and self.dropped <= PROGRAM_MAX_SHIFT


def stepwise_extent(net, dp, batch) -> Extent:
    """The :class:`Extent` of one training step of ``net`` under ``dp`` on the stepwise path."""
    extent = Extent()
    ar = FixedArithmetic(dp, np.random.default_rng(0), extent)
    params = net.params_in(ar, net.init_params())
    x = ar.data(np.zeros((batch, net.layer_sizes[0])), "input")
    y = ar.data(np.zeros((batch, net.layer_sizes[-1])), "target")
    velocity = net.zero_velocity(ar, params) if dp.momentum is not None else None
    trace = net.forward(ar, params, x)
    net.sgd_step(ar, params, net.backward(ar, params, trace, y), velocity)
    return extent


#: A wide datapath's program holds a value of at least this many bits.
WIDE_BITS = 56
SIGNED_ROLES = ("input", "target", "weight", "bias")


def with_cast(dp: Datapath, role: str, layer: int | None, cast: RoleCast) -> Datapath:
    if layer is None:
        return replace(dp, roles={**dp.roles, role: cast})
    layers = {k: dict(v) for k, v in dp.layers.items()}
    layers.setdefault(layer, {})[role] = cast
    return replace(dp, layers=layers)


@st.composite
def wide_datapaths(draw, net: MLP, batch: int):
    """Datapaths whose stepwise path forms values of WIDE_BITS..62 bits and no wider, so that they
    trace. A narrow datapath (words <= 12), then casts widened one after another, each as far as
    the format rules allow given the casts around it (searched on :func:`stepwise_extent`, never
    on the tracer), ending 0..6 bits below that widest word. A widened cast keeps its binary point
    ("frac"), or its integer bits ("int": its fraction grows with its word), or sits ``drop`` bits
    below the finest input cast into it ("drop"; with ``under``, also that many bits narrower than
    that input, so that it can overflow).

    Scenarios: "product" widens a layer's input and weight (a wide dot product), then its ``acc``,
    then its ``pre`` and ``act`` at ``acc``'s fraction (so that the outputs keep the low bits of the
    wide values: the last layer's act is the network output); "gradient" widens a layer's local
    error and input, then its ``weight_grad`` (an output). The widened ``acc`` / ``weight_grad``
    either drops 56..61 bits (STOCH) or keeps the fraction and is 1..2 bits narrower than its input
    (WRAP or SAT_SYM, at 60..61 bits next to a 62-bit product). "random": one to four casts of any
    role and layer, each in a random mode."""
    dp = draw(datapaths(net.n_layers, max_word=12))
    extent = stepwise_extent(net, dp, batch)
    # words <= 12 fit 62 bits, except where full-precision roles (word None) chain through every
    # layer of a deep network: such a start is not near the bound from below, so it is not drawn
    assume(extent.fits)
    roles = [r for r in ROLES if r != "momentum" or dp.momentum is not None]
    sites = [(r, None) if r in ("input", "target") else (r, i) for r in roles
             for i in ([None] if r in ("input", "target") else range(net.n_layers))]

    def widen(dp, extent, role, layer, mode, *, slack=0, cap=PROGRAM_MAX_BITS, int_bits=0, drop=0, under=0,
              signed=None, rounding=None, overflow=None):
        current = dp.cast_for(role, layer)
        signed = current.signed if signed is None else signed
        rounding = current.rounding if rounding is None else rounding
        overflow = current.overflow if overflow is None else overflow
        if mode == "frac":
            frac_of = lambda word: current.frac
        elif mode == "int":
            frac_of = lambda word: word - int_bits
        else:
            sources = extent.sources.get((role, layer))
            if not sources:
                return dp, extent
            finest = max(sources, key=lambda f: f.frac)
            frac_of = lambda word: finest.frac - drop
            if under:
                cap = min(cap, finest.word - drop - under)

        def attempt(word):
            candidate = with_cast(dp, role, layer, RoleCast(word, frac_of(word), signed, rounding, overflow))
            return candidate, stepwise_extent(net, candidate, batch)

        if cap < 2:
            return dp, extent
        lo = attempt(2)
        if not lo[1].fits:
            return dp, extent
        lo_word, hi_word = 2, cap + 1  # lo fits; search the widest word up to cap that fits
        while hi_word - lo_word > 1:
            mid = (lo_word + hi_word) // 2
            tried = attempt(mid)
            if tried[1].fits:
                lo, lo_word = tried, mid
            else:
                hi_word = mid
        if slack and lo_word - slack >= 2:
            tried = attempt(lo_word - slack)
            if tried[1].fits:
                return tried
        return lo

    scenario = draw(st.sampled_from(["product", "gradient", "random"]))
    if scenario == "random":
        hot = draw(st.lists(st.sampled_from(sites), min_size=1, max_size=4, unique=True))
        for role, layer in sorted(hot, key=lambda site: (ROLES.index(site[0]), site[1] or 0)):
            mode = draw(st.sampled_from(["frac", "int", "drop"]))
            dp, extent = widen(
                dp, extent, role, layer, mode, slack=draw(st.integers(0, 6)), int_bits=draw(st.integers(-2, 6)),
                drop=draw(st.one_of(st.integers(PROGRAM_MAX_SHIFT - 8, PROGRAM_MAX_SHIFT),
                                    st.integers(0, PROGRAM_MAX_SHIFT))),
                signed=True if role in SIGNED_ROLES else draw(st.booleans()),
                rounding=draw(st.one_of(st.just(Rounding.STOCH), st.sampled_from(list(Rounding)))),
                overflow=draw(st.one_of(st.sampled_from([Overflow.WRAP, Overflow.SAT_SYM]),
                                        st.sampled_from(list(Overflow)))))
    else:
        i = draw(st.sampled_from([net.n_layers - 1, *range(net.n_layers)]))  # the last layer's act is the output
        data_in = ("input", None) if i == 0 else ("act", i - 1)
        first, second, target = ((data_in, ("weight", i), ("acc", i)) if scenario == "product"
                                 else (("bias_grad", i), data_in, ("weight_grad", i)))
        stochastic = draw(st.booleans())  # fine fractions (int mode) give a wide drop room
        modes = st.just("int") if stochastic else st.sampled_from(["frac", "int"])
        dp, extent = widen(dp, extent, *first, draw(modes), cap=draw(st.integers(12, 44)),
                           int_bits=draw(st.integers(0, 3)))
        dp, extent = widen(dp, extent, *second, draw(modes), slack=draw(st.integers(0, 2)),
                           int_bits=draw(st.integers(0, 3)))
        if stochastic:
            dp, extent = widen(dp, extent, *target, "drop", drop=draw(st.integers(WIDE_BITS, PROGRAM_MAX_SHIFT)),
                               signed=draw(st.booleans()), rounding=Rounding.STOCH)
        else:
            dp, extent = widen(dp, extent, *target, "drop", drop=draw(st.integers(0, 1)), under=draw(st.integers(1, 2)),
                               signed=True, rounding=draw(st.sampled_from(list(Rounding))),
                               overflow=draw(st.sampled_from([Overflow.WRAP, Overflow.SAT_SYM])))
        if scenario == "product":  # the layer's pre and act keep acc's fraction: its low bits reach the output
            for role in ("pre", "act"):
                dp, extent = widen(dp, extent, role, i, "drop", signed=True)
    for mode in ("frac", "int"):  # rarely needed: widen casts (at their binary point, then their
        for role, layer in sites:  # integer bits) until a value is wide
            if extent.held >= WIDE_BITS:
                break
            dp, extent = widen(dp, extent, role, layer, mode)
    assume(extent.held >= WIDE_BITS)  # a few tiny networks reach no wide value in either mode
    return dp, extent


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.lists(st.integers(1, 4), min_size=2, max_size=4), batch=st.sampled_from([1, 2, 3, 7, 16]),
       activation=st.sampled_from(ACTIVATIONS), output_activation=st.sampled_from(ACTIVATIONS),
       loss=st.sampled_from(LOSSES), seed=st.integers(0, 1000), full_scale=st.sampled_from([True, True, False]))
def test_numba_step_near_the_int64_bound_equals_the_stepwise_path(data, sizes, activation, output_activation, loss,
                                                                  batch, seed, full_scale):
    """Datapaths built to fit 62 bits with values of 56..62 bits (wide products, 60..62-bit WRAP
    and SAT_SYM casts, STOCH casts dropping up to 61 bits): each traces, holds a value of at least
    WIDE_BITS bits, runs on the numba kernel and equals the stepwise path bit for bit."""
    net = MLP(sizes, activation, output_activation, loss, init="uniform_neg", seed=seed)
    dp, extent = data.draw(wide_datapaths(net, batch))
    traced = trace_program(net, dp, batch, update=True)  # built to fit: NotCompilable fails the test
    widest = max(op.fmt.word for op in traced.program.ops if op.fmt is not None)
    assert widest <= PROGRAM_MAX_BITS
    # The stepwise path may form a wide value the program never needs (a lossless widening cast
    # that it skips): such rare draws do not test the bound.
    assume(widest >= WIDE_BITS)
    event(f"widest value {widest} bits")
    for src, dst, rounding, overflow in extent.casts:
        if rounding is Rounding.STOCH and src.frac - dst.frac >= WIDE_BITS:
            event(f"a STOCH cast drops >= {WIDE_BITS} bits")
        if overflow in (Overflow.WRAP, Overflow.SAT_SYM) and dst.word >= 60 and dst.int_bits < src.int_bits:
            event(f"a {overflow.name} cast into >= 60 bits that can overflow")
    params, x, y, velocity = setup(net, dp, batch, seed, full_scale)
    want = stepwise(net, dp, params, x, y, velocity, np.random.default_rng(seed + 7))
    counted = CountedKernel()
    got = NumbaStep(traced, counted).outputs(params, x, y, velocity, np.random.default_rng(seed + 7))
    assert counted.calls == 1, "the step ran on the numba kernel"
    assert_identical(got, want)


def largest_word_inside(net: MLP, batch: int):
    """The largest word w whose uniform datapath s{w}.{w//2} forms dot products of at most
    PROGRAM_MAX_BITS bits, by matmul_format: forward (K = n_in), weight gradient (K = batch),
    propagated error (K = n_out, layers after the first); and that widest product's bits."""
    def widest_product(word: int) -> int:
        fmt = QFormat(word, word // 2)
        ks = net.layer_sizes[:-1] + [batch] + net.layer_sizes[2:]
        return max(matmul_format(fmt, fmt, k).word for k in ks)

    inside = max(w for w in range(2, PROGRAM_MAX_BITS + 1) if widest_product(w) <= PROGRAM_MAX_BITS)
    return inside, widest_product


@pytest.mark.parametrize("side", ["inside", "outside"])
def test_both_sides_of_the_int64_bound_are_exact(side, monkeypatch):
    """Full-scale data at the widest uniform word whose dot products fit PROGRAM_MAX_BITS and one
    bit wider: inside, the program traces, holds that widest product, and runs on the numba kernel
    (directly and as the Model's engine); outside, it does not trace and the Model computes on the
    exact path. Gradients, updated weights and biases, and the output equal the stepwise path."""
    net, batch = MLP([3, 4, 2], init="uniform_neg"), 3
    inside, widest_product = largest_word_inside(net, batch)
    word = inside if side == "inside" else inside + 1
    assert (widest_product(word) <= PROGRAM_MAX_BITS) == (side == "inside")
    dp = Datapath.uniform(word, word // 2, "RND_CONV", "SAT")
    assert stepwise_extent(net, dp, batch).needed == widest_product(word), "the widest value is a dot product"
    params, x, y, _ = setup(net, dp, batch, word, full_scale=True)
    want = stepwise(net, dp, params, x, y, None, None)
    n = net.n_layers
    if side == "inside":
        traced = trace_program(net, dp, batch, update=True)
        assert max(op.fmt.word for op in traced.program.ops if op.fmt is not None) == widest_product(word)
        counted = CountedKernel()
        assert_identical(NumbaStep(traced, counted).outputs(params, x, y, None, None), want)
        assert counted.calls == 1
        assert isinstance(numba_step(net, dp, batch, update=True), NumbaStep)
    else:
        with pytest.raises(NotCompilable):
            trace_program(net, dp, batch, update=True)
        assert numba_step(net, dp, batch, update=True) is None

    exact_forwards = []  # forward passes the Model runs on FixedArithmetic: the exact path
    forward = net.forward

    def spied_forward(ar, *args):
        if isinstance(ar, FixedArithmetic):
            exact_forwards.append(ar)
        return forward(ar, *args)

    monkeypatch.setattr(net, "forward", spied_forward)
    model = net.fixed_model(dp, backend="numba")
    model.params = params
    grads = model.weight_gradients(x, y)
    loss = model.train_step(x, y)
    engines = [model._steps[(batch, update, False)] for update in (False, True)]
    if side == "inside":
        assert all(isinstance(e, NumbaStep) for e in engines) and exact_forwards == []
    else:
        assert engines == [None, None] and len(exact_forwards) == 2
    assert_identical([v for g in grads for v in g], want[:2 * n])
    assert_identical([v for p in model.params for v in (p.weight, p.bias)], want[2 * n:4 * n])
    assert loss == net.loss.value(want[-1].to_float(), y.to_float())


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


def test_kernel_outputs_are_made_when_first_used_and_stay_independent_of_later_calls():
    """A kernel step's results are FixedArrays whose views are made at their first use: each
    accessor, used first on a fresh result, gives the values of an independently computed
    (stepwise) result, and a later call does not change an earlier call's results."""
    net = MLP([3, 4, 2], init="he", seed=3)
    model = net.fixed_model(Datapath.seed(16, 8), backend="numba")
    ar = model.arithmetic
    rng = np.random.default_rng(1)
    x, y = ar.data(rng.uniform(-1, 1, (2, 3)), "input"), ar.data(rng.uniform(-1, 1, (2, 2)), "target")
    stepwise = [(g.weight_grad, g.bias_grad) for g in net.backward(ar, model.params, net.forward(ar, model.params, x), y)]
    want = [v for pair in stepwise for v in pair]
    accessors = {
        "raw": lambda a, e: np.array_equal(a.raw, e.raw) and not a.raw.flags.writeable,
        "shape": lambda a, e: a.shape == e.shape and a.ndim == e.ndim and a.size == e.size and len(a) == len(e),
        "dtype": lambda a, e: a.dtype == np.int64 and a.fmt == e.fmt,
        "to_float": lambda a, e: np.array_equal(a.to_float(), e.to_float()),
        "T": lambda a, e: np.array_equal(a.T.raw, np.asarray(e.raw).T),
        "<<": lambda a, e: np.array_equal((a << 2).raw, e.raw) and (a << 2).fmt.frac == e.fmt.frac - 2,
        "index": lambda a, e: a[0].identical(e[0]),
        "arithmetic": lambda a, e: (a + a).identical(e + e),
        "identical": lambda a, e: a.identical(e),
    }
    for name, check in accessors.items():
        first = [v for pair in model.weight_gradients(x, y) for v in pair]
        assert type(model._steps[(2, False, False)]) is NumbaStep
        other = ar.data(rng.uniform(-1, 1, (2, 3)), "input"), ar.data(rng.uniform(-1, 1, (2, 2)), "target")
        model.weight_gradients(*other)  # overwrites the kernel's workspace, not the results above
        for got, expected in zip(first, want, strict=True):
            assert check(got, expected), name


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of auto, numpy, numba"):
        MLP([2, 2]).fixed_model(Datapath.uniform(8, 4), backend="cuda")


@pytest.mark.parametrize("ranges", [False, True], ids=["counts", "ranges"])
@pytest.mark.parametrize("dp", [Datapath.uniform(10, 9, "RND", "SAT_SYM"), Datapath.uniform(8, 6, "STOCH", "WRAP"),
                                Datapath.seed(16, 10)], ids=["saturating", "stoch-wrap", "seed"])
def test_the_kernel_counts_casts_as_the_stepwise_observer(dp, ranges):
    """Training observed by a RangeCollector: on the numba kernel (counting, and with ranges keeping
    min, max and the log2 histogram, in the loops) and stepwise (observe() on every cast) the
    statistics per role and layer, and the weights, are equal."""
    from fixprop.explore.ranges import RangeCollector

    net = MLP([3, 5, 2], "hard_tanh", "linear", "mse", init="uniform_neg", seed=3)
    rng = np.random.default_rng(1)
    data = [(rng.uniform(-3, 3, (4, 3)), rng.uniform(-3, 3, (4, 2))) for _ in range(4)]
    runs = {}
    for backend in ("numba", "stepwise"):
        counter = RangeCollector(ranges=ranges)
        model = Model_with(net, dp, counter, backend)
        for x, y in data:
            model.train_step(x, y)
            model.weight_gradients(x, y)
        kinds = {type(step).__name__ for step in model._steps.values() if step is not None}
        assert kinds == ({"NumbaStep"} if backend == "numba" else set())
        runs[backend] = (counter.table(), [p.weight.raw.tolist() for p in model.params])
    assert runs["numba"] == runs["stepwise"]
    stats = runs["numba"][0]
    assert any(s.saturated for s in stats) or dp.name.startswith("seed")
    if ranges:  # the ranges were kept (exact Fractions), not left empty on both sides
        assert all(s.min is not None and s.min <= s.max for s in stats if s.count)
        assert sum(sum(s.log2_histogram.values()) for s in stats) == sum(s.nonzero for s in stats)


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3), batch=st.sampled_from([1, 3, 16]),
       activation=st.sampled_from(ACTIVATIONS), loss=st.sampled_from(LOSSES), seed=st.integers(0, 1000),
       full_scale=st.booleans(), ranges=st.booleans())
def test_numba_cast_counts_equal_the_stepwise_observer(data, sizes, activation, loss, batch, seed, full_scale, ranges):
    """The kernel counts every cast (elements, nonzero, saturated, underflowed; with ranges also the
    least and greatest exact value before it and the log2 histogram) inside the step: what a
    RangeCollector receives equals what it collects observing every cast of the stepwise path, on
    random datapaths (1-bit words, unsigned roles, every mode, full-scale data)."""
    from fixprop.explore.ranges import RangeCollector

    net = MLP(sizes, activation, "linear", loss, init="uniform_neg", seed=seed)
    dp = data.draw(datapaths(net.n_layers, data.draw(st.sampled_from([6, 16, 40]))))
    params, x, y, velocity = setup(net, dp, batch, seed, full_scale)
    try:
        traced = trace_program(net, dp, batch, update=True)
    except NotCompilable:
        assert beyond_int64_programs(net, dp, batch)
        return
    observed, counted = RangeCollector(ranges=ranges), RangeCollector(ranges=ranges)
    ar = FixedArithmetic(dp, np.random.default_rng(seed + 7), observed)
    trace = net.forward(ar, params, x)
    net.sgd_step(ar, params, net.backward(ar, params, trace, y), velocity)
    NumbaStep(traced, kernel()).outputs(params, x, y, velocity, np.random.default_rng(seed + 7), counter=counted)
    got = [s for s in counted.table() if s.role not in ("input", "target")]
    want = [s for s in observed.table() if s.role not in ("input", "target")]
    assert got == want and sum(s.count for s in want) > 0  # RoleStats: min and max as exact Fractions


@pytest.mark.parametrize("dp", [Datapath.seed(24, 12), Datapath.uniform(8, 6, "STOCH", "WRAP", lr_shift=5)],
                         ids=["seed", "stoch-wrap"])
def test_training_ranges_kept_by_the_kernel_equal_stage_by_stage(dp):
    """``fixprop ranges`` trains with a full RangeCollector: on the numba kernel (each epoch's steps in
    one kernel call, the ranges kept in its loops) it collects the same statistics, exact min and
    max included, and ends with the same integers as the numpy backend, which trains stage by stage
    to observe every cast."""
    from fixprop.explore.ranges import RangeCollector
    from fixprop.explore.train import TrainConfig, train

    runs = {}
    for backend in ("numba", "numpy"):
        collector = RangeCollector()
        result = train(TrainConfig(epochs=2, backend=backend), dp, observer=collector)
        runs[backend] = (collector.table(), result["fixed_params_sha256"], result["fixed"])
    assert runs["numba"] == runs["numpy"]
    assert any(s.log2_histogram for s in runs["numba"][0])
