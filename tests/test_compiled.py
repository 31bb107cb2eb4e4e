"""The compiled step computes exactly what the step-by-step network computes."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop import Datapath, RoleCast
from fixprop.nn import MLP, FixedArithmetic, FloatArithmetic
from fixprop.nn.compiled import NotCompilable, compile_step
from test_mlp_fixed import CASES, mixed_datapath, put_a_zero


def generic_step(net, ar, params, x, y, velocity):
    trace = net.forward(ar, params, x)
    grads = net.backward(ar, params, trace, y)
    new, vel = net.sgd_step(ar, params, grads, velocity)
    return grads, new, vel, trace.output


@pytest.mark.parametrize("name,dp,activations,loss", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch", [1, 4])
def test_compiled_fixed_step_is_bit_identical(name, dp, activations, loss, batch):
    net = MLP([3, 4, 2], activation=activations[0], output_activation=activations[1], loss=loss,
              init="uniform_neg")
    params = net.init_params(seed=batch)
    rng = np.random.default_rng(batch)
    x = rng.uniform(-2, 2, (batch, 3))
    put_a_zero(params, x)
    y = rng.uniform(-1, 2, (batch, 2))
    ar = FixedArithmetic(dp)
    p = net.params_in(ar, params)
    xq, yq = ar.data(x, "input"), ar.data(y, "target")
    velocity = net.zero_velocity(ar, p) if dp.momentum is not None else None
    try:
        step = compile_step(net, dp, batch, update=True)
    except NotCompilable:
        assert name == "seed32"  # 32-bit words: products of 64 bits do not fit the compiled storage
        return
    grads, new, vel, out = generic_step(net, ar, p, xq, yq, velocity)
    c_new, c_vel, c_out = step.train_step(p, xq, yq, velocity)
    c_grads = step.gradients(p, xq, yq, velocity)
    for g, (cw, cb) in zip(grads, c_grads):
        assert g.weight_grad.identical(cw) and g.bias_grad.identical(cb)
    for a, b in zip(new, c_new):
        assert a.weight.identical(b.weight) and a.bias.identical(b.bias)
    if vel is not None:
        for a, b in zip(vel, c_vel):
            assert a.weight.identical(b.weight) and a.bias.identical(b.bias)
    assert out.identical(c_out)


def test_compiled_stochastic_rounding_draws_the_same_numbers():
    dp = Datapath.uniform(16, 8, "STOCH", "SAT").with_role("input", RoleCast.of("s16.8", "RND_CONV", "SAT")) \
        .with_role("target", RoleCast.of("s16.8", "RND_CONV", "SAT")) \
        .with_role("weight", RoleCast.of("s16.8", "STOCH", "SAT"))
    net = MLP([5, 6, 3], init="he")
    rng = np.random.default_rng(2)
    x, y = rng.random((8, 5)), rng.random((8, 3))
    setup = FixedArithmetic(dp, np.random.default_rng(0))
    p = net.params_in(setup, net.init_params())
    xq, yq = setup.data(x, "input"), setup.data(y, "target")
    _, new, _, _ = generic_step(net, FixedArithmetic(dp, np.random.default_rng(42)), p, xq, yq, None)
    step = compile_step(net, dp, 8, update=True)
    assert step.uses_rng
    c_new, _, _ = step.train_step(p, xq, yq, rng=np.random.default_rng(42))
    for a, b in zip(new, c_new):
        assert a.weight.identical(b.weight) and a.bias.identical(b.bias)
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        step.train_step(p, xq, yq)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu:2", "hard_tanh", "linear"])
@pytest.mark.parametrize("loss", ["sse", "mse"])
def test_compiled_float_step_is_identical(activation, loss):
    dp = mixed_datapath()  # learning-rate constant and momentum, used by the float path as values
    net = MLP([4, 5, 3], activation=activation, loss=loss, init="uniform_neg")
    ar = FloatArithmetic.matching(dp)
    p = net.params_in(ar, net.init_params())
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, (6, 4)), rng.uniform(-1, 1, (6, 3))
    velocity = net.zero_velocity(ar, p)
    grads, new, vel, out = generic_step(net, ar, p, x, y, velocity)
    step = compile_step(net, None, 6, update=True, float_settings=ar)
    c_new, c_vel, c_out = step.train_step(p, x, y, velocity)
    for a, b in zip(new, c_new):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert np.array_equal(out, c_out)


def test_model_uses_the_compiled_step_and_falls_back():
    net = MLP([3, 7, 7, 5], init="uniform")
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 3)), rng.random((4, 5))
    for dp in (Datapath.seed(24, 12), Datapath.seed(32, 16)):
        fast, slow = net.fixed_model(dp), net.fixed_model(dp)
        slow.compiled = False
        for _ in range(3):
            assert fast.train_step(x, y) == slow.train_step(x, y)
        for a, b in zip(fast.params, slow.params):
            assert a.weight.identical(b.weight)
        compiled = fast._steps[(4, True, False)]
        assert (compiled is None) == (dp.name == "seed(32,16)")


def test_source_is_readable_straight_line_code():
    step = compile_step(MLP([2, 2]), Datapath.seed(16, 10), 1)
    assert step.source.startswith("def step(rng, w0, b0, x, y):")
    assert "q.round_scaled_float(" in step.source and "np.clip(" in step.source


def test_batched_seed_network_is_bit_identical():
    net = MLP([3, 7, 7, 5], seed=0)
    dp = Datapath.seed(24, 12)
    ar = FixedArithmetic(dp)
    p = net.params_in(ar, net.init_params())
    rng = np.random.default_rng(3)
    x, y = ar.data(rng.random((1024, 3)), "input"), ar.data(rng.random((1024, 5)) * 30, "target")
    grads, new, _, _ = generic_step(net, ar, p, x, y, None)
    c_new, _, _ = compile_step(net, dp, 1024, update=True).train_step(p, x, y)
    for a, b in zip(new, c_new):
        assert a.weight.identical(b.weight) and a.bias.identical(b.bias)


def test_exact_float_matmul_falls_back_to_exact_blocks():
    from fixprop.nn.compiled import _exact_float_matmul

    a = np.full((2, 1024), float(2**23 - 1))
    b = np.full((1024, 3), -float(2**23 - 1))
    got = _exact_float_matmul(a, b)
    assert got.dtype == np.int64 and int(got[0, 0]) == -1024 * (2**23 - 1) ** 2


@pytest.mark.parametrize("dp", [Datapath.seed(24, 12), mixed_datapath()], ids=["seed24", "mixed"])
def test_batched_step_equals_a_per_sample_loop(dp):
    """Every per-sample stage of a batch equals that sample run alone, and the batch gradients
    equal the per-sample exact products summed in a loop and cast once (docs/datapath.md)."""
    net = MLP([3, 6, 4], activation="relu", output_activation="hard_tanh", loss="sse", init="uniform_neg")
    ar = FixedArithmetic(dp)
    p = net.params_in(ar, net.init_params(seed=5))
    rng = np.random.default_rng(7)
    batch = 9
    x, y = ar.data(rng.uniform(-1, 1, (batch, 3)), "input"), ar.data(rng.uniform(-1, 1, (batch, 4)), "target")
    trace = net.forward(ar, p, x)
    grads = net.backward(ar, p, trace, y)
    compiled = compile_step(net, dp, batch).gradients(p, x, y)
    sums = [[None, None] for _ in grads]
    for b in range(batch):
        t1 = net.forward(ar, p, x[b:b + 1])
        g1 = net.backward(ar, p, t1, y[b:b + 1])
        for layer, (whole, one) in enumerate(zip(trace.layers, t1.layers)):
            assert whole.pre[b:b + 1].identical(one.pre) and whole.act[b:b + 1].identical(one.act)
        for layer, (whole, one) in enumerate(zip(grads, g1)):
            assert whole.local_error[b:b + 1].identical(one.local_error)
            product = one.local_error.T @ t1.layers[layer].input  # this sample's exact outer product
            bias = one.local_error.sum(axis=0)
            sums[layer][0] = product if sums[layer][0] is None else sums[layer][0] + product
            sums[layer][1] = bias if sums[layer][1] is None else sums[layer][1] + bias
    for layer, g in enumerate(grads):
        assert g.weight_grad.identical(ar.cast(sums[layer][0], "weight_grad"))
        assert g.bias_grad.identical(ar.cast(sums[layer][1], "bias_grad"))
        assert compiled[layer][0].identical(g.weight_grad) and compiled[layer][1].identical(g.bias_grad)


def test_model_rejects_mismatched_batches():
    import fixprop

    model = MLP([3, 4, 2]).fixed_model(Datapath.seed(16, 10))
    with pytest.raises(fixprop.ShapeError, match="x has 8 samples but y has 1"):
        model.train_step(np.zeros((8, 3)), np.zeros((1, 2)))
    with pytest.raises(fixprop.ShapeError, match="batch >= 1"):
        model.train_step(np.zeros((0, 3)), np.zeros((0, 2)))
