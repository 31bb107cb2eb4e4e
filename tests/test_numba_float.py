"""The float64 network on the numba kernel (backend="numba"). Its operations are IEEE float64 in
the program's order, no FMA; BLAS sums in its own order. So: on dyadic data where every product
and partial sum is exact in float64 (any order), it equals the numpy path bit for bit; on random
data it agrees to rounding (rtol 1e-12). train_batches equals a loop of train_step exactly (the
same kernel)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixprop import Datapath, FixedConstant, QFormat
from fixprop.nn import MLP, FloatArithmetic, LayerParams, Model

pytest.importorskip("numba")

ACTIVATIONS = ["relu", "leaky_relu:2", "hard_tanh", "linear", "hard_sigmoid", "pwl_sigmoid", "pwl_tanh"]
LOSSES = ["sse", "half_sse", "mse"]
MOMENTUM = replace(Datapath.uniform(16, 8), lr_shift=None, lr=FixedConstant(0.125, QFormat(8, 8, False)),
                   momentum=FixedConstant(0.5, QFormat(8, 8, False)))


def _pair(net, datapath, params):
    fast = net.float_model(datapath, params, backend="numba")
    slow = net.float_model(datapath, params, backend="numpy")
    return fast, slow


def _dyadic(rng, shape, bits=3):
    """Values k / 2**bits with |k| <= 8: products and every sum of a few of them are exact (mse's
    1/n is not dyadic: the random-data test covers it)."""
    return rng.integers(-8, 9, shape) / 2.0**bits


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), batch=st.integers(1, 9),
       activation=st.sampled_from(ACTIVATIONS), loss=st.sampled_from(["sse", "half_sse"]), seed=st.integers(0, 2**16),
       momentum=st.booleans())
def test_dyadic_data_gives_the_numpy_paths_floats_exactly(sizes, batch, activation, loss, seed, momentum):
    rng = np.random.default_rng(seed)
    net = MLP(sizes, activation, "linear", loss, seed=seed)
    params = [LayerParams(_dyadic(rng, (o, i)), _dyadic(rng, (o,))) for i, o in zip(sizes[:-1], sizes[1:])]
    x, y = _dyadic(rng, (batch, sizes[0])), _dyadic(rng, (batch, sizes[-1]))
    datapath = MOMENTUM if momentum else Datapath.uniform(16, 8)
    fast, slow = _pair(net, datapath, params)
    for (gw, gb), (hw, hb) in zip(fast.weight_gradients(x, y), slow.weight_gradients(x, y)):
        assert np.array_equal(gw, hw) and np.array_equal(gb, hb)
    assert np.array_equal(fast.predict(x), slow.predict(x))
    assert fast.train_step(x, y) == slow.train_step(x, y)  # one step: later steps carry more bits than exact
    for p, q in zip(fast.params, slow.params):
        assert np.array_equal(p.weight, q.weight) and np.array_equal(p.bias, q.bias)
    from fixprop.nn.kernels import NumbaStep
    assert isinstance(fast._steps[(batch, True, False)], NumbaStep)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("batch", [1, 16, 300])
def test_random_data_agrees_to_rounding(activation, loss, batch):
    rng = np.random.default_rng(batch)
    net = MLP([3, 16, 7, 5], activation, loss=loss, seed=1)
    x, y = rng.uniform(-2, 2, (batch, 3)), rng.uniform(-1, 1, (batch, 5))
    fast, slow = _pair(net, MOMENTUM, None)
    for (gw, gb), (hw, hb) in zip(fast.weight_gradients(x, y), slow.weight_gradients(x, y)):
        np.testing.assert_allclose(gw, hw, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(hw).max())))
        np.testing.assert_allclose(gb, hb, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(hb).max())))
    np.testing.assert_allclose(fast.predict(x), slow.predict(x), rtol=1e-12, atol=1e-13)


def test_train_batches_equals_a_loop_of_train_steps_on_the_kernel():
    rng = np.random.default_rng(3)
    net = MLP([3, 8, 5], "relu", "linear", "sse", "he", 2)
    x, y = rng.uniform(-1, 1, (50, 3)), rng.uniform(-1, 1, (50, 5))
    batches = [np.arange(i, min(i + 8, 50)) for i in range(0, 50, 8)]
    one_call = net.float_model(MOMENTUM, backend="numba")
    loop = net.float_model(MOMENTUM, backend="numba")
    one_call.train_batches(x, y, batches)
    for rows in batches:
        loop.train_step(x[rows], y[rows])
    for p, q in zip(one_call.params + one_call.velocity, loop.params + loop.velocity):
        assert np.array_equal(p.weight, q.weight) and np.array_equal(p.bias, q.bias)


def test_auto_keeps_the_float_network_on_numpy():
    net = MLP([3, 4, 2])
    model = net.float_model(backend="auto")
    model.weight_gradients(np.zeros((2, 3)), np.zeros((2, 2)))
    assert type(model._steps[(2, False, False)]).__name__ == "CompiledStep"
    assert isinstance(Model(net, FloatArithmetic(), net.init_params(), backend="numba"), Model)
