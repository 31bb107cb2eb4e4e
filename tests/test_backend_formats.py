"""Compiled steps are traced for parameters in their roles' formats. Parameters set in another
format (a user's own FixedArrays) must not be read as if they were in the role's format: the
Model computes them on the step-by-step path (which uses them exactly as given), and a step
called directly refuses them."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop import Datapath, FixedArray
from fixprop.errors import NotInRoleFormat
from fixprop.nn import MLP, FixedArithmetic, LayerParams
from fixprop.nn.compiled import compile_step


def _other_format_params(net, dp):
    """The network's initial parameters quantized into s20.14 (the roles are s16.8)."""
    return [LayerParams(FixedArray.from_float(p.weight, "s20.14"), FixedArray.from_float(p.bias, "s20.14"))
            for p in net.init_params()]


def _stepwise(net, dp, params, x, y):
    ar = FixedArithmetic(dp)
    trace = net.forward(ar, params, x)
    grads = net.backward(ar, params, trace, y)
    new, _ = net.sgd_step(ar, params, grads)
    return grads, new


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_parameters_in_another_format_are_used_as_given(backend):
    net, dp = MLP([3, 4, 2], seed=1), Datapath.uniform(16, 8)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, (5, 2))
    params = _other_format_params(net, dp)
    model = net.fixed_model(dp, backend=backend)
    model.params = params
    ar = FixedArithmetic(dp)
    grads, new = _stepwise(net, dp, params, ar.data(x, "input"), ar.data(y, "target"))
    got = model.weight_gradients(x, y)
    for (w, b), g in zip(got, grads):
        assert w.fmt == g.weight_grad.fmt and np.array_equal(w.raw, g.weight_grad.raw)
        assert b.fmt == g.bias_grad.fmt and np.array_equal(b.raw, g.bias_grad.raw)
    model.train_step(x, y)
    for p, q in zip(model.params, new):
        assert p.weight.fmt == q.weight.fmt and np.array_equal(p.weight.raw, q.weight.raw)
        assert np.array_equal(p.bias.raw, q.bias.raw)


def test_a_step_called_directly_refuses_parameters_in_another_format():
    pytest.importorskip("numba")
    from fixprop.nn.kernels import numba_step

    net, dp = MLP([3, 4, 2], seed=1), Datapath.uniform(16, 8)
    ar = FixedArithmetic(dp)
    x, y = ar.data(np.zeros((2, 3)), "input"), ar.data(np.zeros((2, 2)), "target")
    params = _other_format_params(net, dp)
    for step in (numba_step(net, dp, 2, update=True), compile_step(net, dp, 2, update=True)):
        assert step is not None and not step.accepts(params)
        assert step.accepts(net.params_in(ar, net.init_params()))
        with pytest.raises(NotInRoleFormat, match="s20.14"):
            step.gradients(params, x, y)


def test_changing_the_backend_drops_the_steps_of_the_old_one():
    pytest.importorskip("numba")
    from fixprop.errors import ConfigError
    from fixprop.nn.kernels import NumbaStep

    net, dp = MLP([3, 4, 2], seed=1), Datapath.uniform(16, 8)
    x, y = np.zeros((2, 3)), np.zeros((2, 2))
    model = net.fixed_model(dp, backend="numba")
    model.weight_gradients(x, y)
    assert isinstance(model._steps[(2, False, False)], NumbaStep)
    model.backend = "numpy"
    model.weight_gradients(x, y)
    assert type(model._steps[(2, False, False)]).__name__ == "CompiledStep"
    with pytest.raises(ConfigError, match="backend must be one of auto, numpy, numba"):
        model.backend = "gpu"
