"""Model.train_batches runs consecutive batches of one size in one numba kernel call. It must
give the integers of ``for rows in batches: model.train_step(x[rows], y[rows])`` (itself equal
to the stage-by-stage path, test_numba_backend.py): parameters, velocities, the STOCH words drawn
(the generator ends in the same state), and a counting observer's counts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.explore.ranges import RangeCollector
from fixprop.hardware import LfsrSource
from fixprop.nn import MLP, FixedArithmetic, Model

pytest.importorskip("numba")
from fixprop.nn.kernels import NumbaStep  # noqa: E402

STOCH_INSIDE = replace(Datapath.uniform(14, 7), roles={
    **Datapath.uniform(14, 7).roles, "acc": RoleCast(16, 6, True, "STOCH", "SAT"),
    "weight_grad": RoleCast(12, 8, True, "STOCH", "WRAP"), "update": RoleCast(14, 10, True, "STOCH", "SAT")})
DATAPATHS = {
    "seed": Datapath.seed(24, 12),
    "stoch_inside": STOCH_INSIDE,
    "momentum": replace(Datapath.uniform(16, 9, rounding="RND_INF", overflow="SAT_SYM"), lr_shift=None,
                        lr=FixedConstant(0.05, QFormat(10, 12, False)),
                        momentum=FixedConstant(0.75, QFormat(8, 8, False))),
    "per_layer_wrap": replace(Datapath.uniform(10, 5, rounding="TRN", overflow="WRAP"),
                              layers={1: {"pre": RoleCast(8, 3, False, "RND_CONV", "SAT_ZERO")}}),
    "stoch_data": Datapath.uniform(12, 6, rounding="STOCH"),  # data rounds STOCH: words drawn ahead
}


def _models(dp, rng_factory, counting):
    """Two models of one network: on the numba backend, and on the stage-by-stage path (the
    reference: it equals the independent Python-int network, test_mlp_fixed.py)."""
    net = MLP([3, 5, 4], "leaky_relu:2", "linear", "mse", "he", 4)
    made = []
    for compiled in (True, False):
        ar = FixedArithmetic(dp, rng_factory(), RangeCollector(ranges=False) if counting else None)
        made.append(Model(net, ar, net.init_params(), dp.momentum is not None, compiled=compiled, backend="numba"))
    return made


def _assert_same_state(fast, slow):
    for p, q in zip(fast.params, slow.params):
        assert p.weight.fmt == q.weight.fmt and np.array_equal(p.weight.raw, q.weight.raw)
        assert p.bias.fmt == q.bias.fmt and np.array_equal(p.bias.raw, q.bias.raw)
    if fast.velocity is not None:
        for p, q in zip(fast.velocity, slow.velocity):
            assert np.array_equal(p.weight.raw, q.weight.raw) and np.array_equal(p.bias.raw, q.bias.raw)


def _batches_equal_a_loop(fast, slow, x, y, batches, monkeypatch) -> int:
    """Train ``fast`` by ``train_batches`` and ``slow`` by a loop of ``train_step``; assert the
    same parameters, velocities and generator state; return how many kernel calls ran batches."""
    calls = []
    original = NumbaStep.train_steps
    monkeypatch.setattr(NumbaStep, "train_steps", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x[rows], y[rows])
    _assert_same_state(fast, slow)
    assert fast.arithmetic.rng.integers(1 << 62) == slow.arithmetic.rng.integers(1 << 62)
    return len(calls)


@pytest.mark.parametrize("name", sorted(DATAPATHS))
@pytest.mark.parametrize("counting", [False, True])
def test_train_batches_equals_a_loop_of_train_steps(name, counting, monkeypatch):
    dp = DATAPATHS[name]
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-2, 2, (70, 3)), rng.uniform(-1, 1, (70, 4))
    order = rng.permutation(70)
    # runs of sizes 8, 3, 8, 3: four kernel calls; samples repeat across batches
    batches = ([order[i:i + 8] for i in range(0, 32, 8)] + [order[64:67], order[67:70]]
               + [order[i:i + 8] for i in range(32, 64, 8)] + [order[0:3], order[5:8]])
    fast, slow = _models(dp, lambda: np.random.default_rng(5), counting)
    kernel_calls = _batches_equal_a_loop(fast, slow, x, y, batches, monkeypatch)
    if counting:
        mine, theirs = fast.arithmetic.observer.to_json(), slow.arithmetic.observer.to_json()
        assert mine == theirs and sum(s["count"] for s in mine) > 0
    assert kernel_calls == 4  # one call per run of equal sizes


def test_an_lfsr_source_runs_step_by_step_with_the_same_integers():
    dp = STOCH_INSIDE
    fast, slow = _models(dp, lambda: LfsrSource(seed=3), counting=False)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-2, 2, (32, 3)), rng.uniform(-1, 1, (32, 4))
    batches = [np.arange(i, i + 8) for i in range(0, 32, 8)]
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x[rows], y[rows])
    _assert_same_state(fast, slow)


@pytest.mark.parametrize("batches, message", [
    ([np.array([], dtype=np.int64)], "batch 0 must be a non-empty 1-D array"),
    ([np.arange(4), np.array([[0, 1], [2, 3]])], "batch 1 must be a non-empty 1-D array"),
    ([np.array([0.0, 1.0])], "integer sample indices"),
    ([np.array([0, 10])], "batch 0 has a sample index outside the 10 samples"),
])
def test_bad_batches_are_refused_before_any_step(batches, message):
    from fixprop.errors import ShapeError

    fast, _ = _models(Datapath.seed(16, 10), lambda: None, counting=False)
    before = [np.array(p.weight.raw) for p in fast.params]
    x, y = np.zeros((10, 3)), np.zeros((10, 4))
    with pytest.raises(ShapeError, match=message):
        fast.train_batches(x, y, batches)
    assert all(np.array_equal(b, p.weight.raw) for b, p in zip(before, fast.params))


def test_parameters_in_another_format_run_step_by_step_counting_each_cast_once():
    """Parameters set in a format other than their role's cannot run on the kernel: the batches
    run step by step on the data quantized once, so a counting observer counts each data cast once."""
    from fixprop import FixedArray
    from fixprop.nn import LayerParams

    fast, slow = _models(Datapath.uniform(16, 8), lambda: None, counting=True)
    params = [LayerParams(FixedArray.from_float(p.weight.to_float(), "s20.14"),
                          FixedArray.from_float(p.bias.to_float(), "s20.14")) for p in fast.params]
    fast.params, slow.params = params, list(params)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-2, 2, (24, 3)), rng.uniform(-1, 1, (24, 4))
    batches = [np.arange(i, i + 6) for i in range(0, 24, 6)]
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x[rows], y[rows])
    _assert_same_state(fast, slow)
    assert fast.arithmetic.observer.to_json() == slow.arithmetic.observer.to_json()


STOCH_INPUT = replace(Datapath.uniform(12, 6), roles={**Datapath.uniform(12, 6).roles,
                                                     "input": RoleCast(10, 5, True, "STOCH", "SAT")})
STOCH_TARGET = replace(STOCH_INSIDE, roles={**STOCH_INSIDE.roles, "target": RoleCast(10, 7, True, "STOCH", "WRAP")})


@pytest.mark.parametrize("dp, tiny, params_elsewhere, kernel_calls", [
    (STOCH_INPUT, False, False, 2),   # input rounds STOCH, no other cast does: words drawn ahead
    (STOCH_TARGET, False, False, 2),  # target and casts inside the step round STOCH
    (Datapath.uniform(12, 6, rounding="STOCH"), True, False, 1),  # a value needing > 64 dropped bits (run 3)
    # parameters in another format: run 1 step by step (its steps leave them in their roles' formats)
    (Datapath.uniform(12, 6, rounding="STOCH"), False, True, 1),
])
def test_stochastic_data_draws_in_the_order_of_a_loop_of_train_steps(dp, tiny, params_elsewhere, kernel_calls,
                                                                   monkeypatch):
    """Data rounding STOCH: its words come from the Generator between the steps' own, so the
    batches' words are drawn ahead in that order (one per element), or, where a value could draw
    more (|x| below 2**(-12 - frac)), that run of batches goes step by step. Either way: the
    integers, counts and generator state of a loop of train_step."""
    from fixprop import FixedArray
    from fixprop.nn import LayerParams

    fast, slow = _models(dp, lambda: np.random.default_rng(8), counting=True)
    if params_elsewhere:
        params = [LayerParams(FixedArray.from_float(p.weight.to_float(), "s20.14"),
                              FixedArray.from_float(p.bias.to_float(), "s20.14")) for p in fast.params]
        fast.params, slow.params = params, list(params)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-2, 2, (40, 3)), rng.uniform(-1, 1, (40, 4))
    x[0, 0] = 0.0  # zero draws one word, as any value does
    if tiny:
        x[35, 1] = 2.0 ** -30  # in the third run of batches: that run goes step by step
    batches = [np.arange(i, i + 8) for i in range(0, 16, 8)] + [np.arange(16, 19)] + \
        [np.arange(i, i + 7) for i in range(19, 40, 7)]
    assert _batches_equal_a_loop(fast, slow, x, y, batches, monkeypatch) == kernel_calls
    assert fast.arithmetic.observer.to_json() == slow.arithmetic.observer.to_json()


def test_a_stochastic_tie_in_the_data_draws_another_word_as_a_loop_of_train_steps_does(monkeypatch):
    """A data value dropping 65 bits whose top 64 equal its word is a tie: the Generator path
    draws a further word for it, which shifts every later word. Built here on purpose (the
    generator seed is searched so that the element's word fits a float64 significand); the run
    holding it must go step by step, and end with the integers and generator state of the loop."""
    dp = Datapath.uniform(12, 6, rounding="STOCH")  # the parameters' casts draw words too
    made, _ = _models(dp, lambda: np.random.default_rng(0), counting=False)
    reference = np.random.default_rng(0)
    for used in range(1000):  # the words the model's creation drew (parameters cast into their roles)
        if reference.bit_generator.state == made.arithmetic.rng.bit_generator.state:
            break
        reference.bit_generator.random_raw()
    seed, word = next((s, int(w[-1])) for s in range(1 << 20)
                      for w in [np.random.default_rng(s).bit_generator.random_raw(used + 1)]
                      if 1 << 51 <= int(w[-1]) < 1 << 52)
    fast, slow = _models(dp, lambda: np.random.default_rng(seed), counting=False)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-2, 2, (16, 3)), rng.uniform(-1, 1, (16, 4))
    x[0, 0] = (2 * word + 1) * 2.0 ** -71  # the first element quantized (input frac 6): 65 dropped bits, a tie
    batches = [np.arange(0, 8), np.arange(8, 16)]
    assert _batches_equal_a_loop(fast, slow, x, y, batches, monkeypatch) == 0


def test_fixed_point_data_runs_like_the_floats_it_holds():
    dp = Datapath.seed(16, 10)
    fast, slow = _models(dp, lambda: None, counting=False)
    rng = np.random.default_rng(6)
    ar = FixedArithmetic(dp)
    x, y = ar.data(rng.uniform(-2, 2, (32, 3)), "input"), ar.data(rng.uniform(-1, 1, (32, 4)), "target")
    batches = [np.arange(i, i + 8) for i in range(0, 32, 8)]
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x.to_float()[rows], y.to_float()[rows])
    _assert_same_state(fast, slow)


@pytest.mark.parametrize("x_shape, y_shape, message", [
    ((30,), (10, 4), r"x must be \(samples, 3\); got shape \(30,\)"),
    ((10, 2), (10, 4), r"x must be \(samples, 3\); got shape \(10, 2\)"),
    ((10, 3), (10, 4, 1), r"y must be \(samples, 4\)"),
    ((10, 3), (9, 4), "x has 10 samples but y has 9"),
])
def test_bad_data_shapes_are_refused_before_any_step(x_shape, y_shape, message):
    from fixprop.errors import ShapeError

    fast, _ = _models(Datapath.seed(16, 10), lambda: None, counting=False)
    before = [np.array(p.weight.raw) for p in fast.params]
    with pytest.raises(ShapeError, match=message):
        fast.train_batches(np.zeros(x_shape), np.zeros(y_shape), [np.arange(3)])
    assert all(np.array_equal(b, p.weight.raw) for b, p in zip(before, fast.params))


def test_nan_in_a_later_batch_is_refused_before_any_step():
    from fixprop.errors import NonFiniteError

    fast, _ = _models(Datapath.seed(16, 10), lambda: None, counting=False)
    before = [np.array(p.weight.raw) for p in fast.params]
    x, y = np.ones((16, 3)), np.zeros((16, 4))
    y[13, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"y holds NaN or infinity \(sample 13\)"):
        fast.train_batches(x, y, [np.arange(0, 8), np.arange(8, 16)])
    assert all(np.array_equal(b, p.weight.raw) for b, p in zip(before, fast.params))
