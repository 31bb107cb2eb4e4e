"""A Model's compiled steps are traced from its network and arithmetic. Replacing either (or a
setting a step bakes in: the datapath, the learning rate, an activation) after a step has run
must give the new network's integers, not the old step's: checked against the independent
Python-int network (int_mlp_oracle) for fixed point, and the step-by-step float path (itself
checked against autograd) for float."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.nn import MLP, FixedArithmetic
from int_mlp_oracle import Val, train_step

BACKENDS = ["numpy", "numba"]


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2))


def _as_vals(model):
    """The model's parameters as oracle Vals: weights[l][j][i], biases[l][j]."""
    weights = [[[Val(int(r), p.weight.fmt.frac) for r in row] for row in p.weight.raw.tolist()] for p in model.params]
    biases = [[Val(int(r), p.bias.fmt.frac) for r in p.bias.raw.tolist()] for p in model.params]
    return weights, biases


def _assert_oracle_step(model, dp, activations, loss, x, y):
    """One model.train_step equals the oracle's step from the same parameters under ``dp``."""
    weights, biases = _as_vals(model)
    want = train_step(dp, activations, loss, weights, biases, x.tolist(), y.tolist())
    model.train_step(x, y)
    for p, w_rows, b_vals in zip(model.params, want["weights"], want["biases"]):
        scale_w, scale_b = Fraction(2) ** p.weight.fmt.frac, Fraction(2) ** p.bias.fmt.frac
        assert [[r / scale_w for r in row] for row in p.weight.raw.tolist()] == [[v.fraction() for v in row] for row in w_rows]
        assert [r / scale_b for r in p.bias.raw.tolist()] == [v.fraction() for v in b_vals]


def _other_datapath(dp: Datapath) -> Datapath:
    """The same parameter formats (so a stale step would accept the parameters), but a narrow
    wrapping accumulator, another rounding of the gradients and another learning rate."""
    changed = (dp.with_role("acc", RoleCast.of("s10.6", "TRN", "WRAP"))
               .with_role("weight_grad", RoleCast.of("s16.10", "RND_INF", "SAT")))
    return replace(changed, lr_shift=None, lr=FixedConstant(0.375, QFormat(8, 8, False)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_arithmetic_is_used_after_a_step(backend):
    net, dp = MLP([3, 4, 2], seed=1), Datapath.uniform(16, 8)
    x, y = _data()
    model = net.fixed_model(dp, backend=backend)
    _assert_oracle_step(model, dp, ["relu", "relu"], "sse", x, y)
    other = _other_datapath(dp)
    model.arithmetic = FixedArithmetic(other)
    _assert_oracle_step(model, other, ["relu", "relu"], "sse", x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_datapath_replaced_in_place_is_used_after_a_step(backend):
    net, dp = MLP([3, 4, 2], seed=2), Datapath.uniform(16, 8)
    x, y = _data(1)
    model = net.fixed_model(dp, backend=backend)
    _assert_oracle_step(model, dp, ["relu", "relu"], "sse", x, y)
    other = _other_datapath(dp)
    model.arithmetic.datapath = other
    _assert_oracle_step(model, other, ["relu", "relu"], "sse", x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_activation_is_used_after_a_step(backend):
    from fixprop.nn.activations import get_activation

    net, dp = MLP([3, 4, 2], seed=3), Datapath.uniform(16, 8)
    x, y = _data(2)
    model = net.fixed_model(dp, backend=backend)
    _assert_oracle_step(model, dp, ["relu", "relu"], "sse", x, y)
    net.activation = get_activation("hard_tanh")
    _assert_oracle_step(model, dp, ["hard_tanh", "relu"], "sse", x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_float_learning_rate_is_used_after_a_step(backend):
    net = MLP([3, 4, 2], seed=4)
    x, y = _data(3)
    model = net.float_model(backend=backend)
    reference = net.float_model()
    reference.compiled = False
    for lr in (0.125, 0.5):
        model.arithmetic.learning_rate = lr
        reference.arithmetic.learning_rate = lr
        model.train_step(x, y)
        reference.train_step(x, y)
        for got, want in zip(model.params, reference.params):
            np.testing.assert_allclose(got.weight, want.weight, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(got.bias, want.bias, rtol=1e-12, atol=1e-15)
