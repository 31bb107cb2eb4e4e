"""The float path equals autodiff (autograd, and JAX / PyTorch when installed) to 1e-12."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixprop.nn import MLP, FloatArithmetic
from fixprop.nn.mlp import LayerParams
from fixprop.verify.references import available, reference_gradients

ACTIVATIONS = ["relu", "leaky_relu:3", "linear", "hard_tanh", "hard_sigmoid", "pwl_sigmoid", "pwl_tanh", "pwl_sigmoid:output",
               "pwl_tanh:output"]
LOSSES = ["sse", "half_sse", "mse"]
RTOL = 1e-12


#: Data and parameters are multiples of 2**-DYADIC_BITS in [-1, 1]: every product and partial sum of
#: the forward pass then has few significant bits, so float64 computes it exactly in any order
#: (numpy, BLAS with or without FMA, JAX, PyTorch). A pinned kink is then exactly the kink in every
#: library, not only in numpy's rounding (test_dyadic_cases_are_exact_in_every_library checks it).
DYADIC_BITS = 4


def dyadic(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform multiples of 2**-DYADIC_BITS in [-1, 1]."""
    scale = 2**DYADIC_BITS
    return rng.integers(-scale, scale + 1, shape) / scale


def dyadic_case(sizes, activation, output_activation, loss, batch, seed):
    """A network, dyadic parameters and data, with sample 0's first pre-activations on the kinks."""
    net = MLP(sizes, activation, output_activation, loss, init="uniform_neg", seed=seed)
    rng = np.random.default_rng(seed)
    params = [LayerParams(dyadic(rng, (n_out, n_in)), dyadic(rng, n_out))
              for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    x, y = dyadic(rng, (batch, sizes[0])), dyadic(rng, (batch, sizes[-1]))
    pin_to_kinks(params, x, net.activation_of(0).name)
    return net, params, x, y


def pin_to_kinks(params, x, activation):
    """Put pre-activations exactly on the activation's kinks (0; +-1 for hard_tanh; breakpoints of the
    piecewise-linear ones) for sample 0.
    With dyadic data ``weight @ x`` is exact, so the bias that lands on the kink is exact too."""
    targets = {"hard_tanh": [1.0, -1.0, 0.0], "hard_sigmoid": [2.0, -2.0, 0.0],
               "pwl_sigmoid": [1.0, -2.375, -1.0, 5.0], "pwl_tanh": [0.5, -1.1875, 2.5]}.get(activation, [0.0])
    for j, target in enumerate(targets[: len(params[0].bias)]):
        exact = sum(Fraction(w) * Fraction(v) for w, v in zip(params[0].weight[j], x[0]))
        params[0].bias[j] = float(Fraction(target) - exact)
        assert Fraction(params[0].bias[j]) == Fraction(target) - exact


def exact_pre_activations(net, params, x):
    """Every layer's pre-activations in exact rational arithmetic (the independent oracle)."""
    a = [[Fraction(v) for v in row] for row in x]
    pres = []
    for i, p in enumerate(params):
        z = [[sum((Fraction(w) * v for w, v in zip(p.weight[j], row)), Fraction(p.bias[j]))
              for j in range(len(p.bias))] for row in a]
        pres.append(z)
        a = [[exact_activation(net.activation_of(i), v) for v in row] for row in z]
    return pres


def exact_activation(activation, z: Fraction) -> Fraction:
    name = activation.name
    if name == "relu":
        return max(z, Fraction(0))
    if name == "leaky_relu":
        return z if z > 0 else z * Fraction(1, 2**activation.shift)
    if name == "hard_tanh":
        return min(max(z, Fraction(-1)), Fraction(1))
    return z


def float_and_reference(net, params, x, y, c, backend):
    ar = FloatArithmetic(relu_grad_at_zero=c)
    p = net.params_in(ar, params)
    trace = net.forward(ar, p, x)
    grads = net.backward(ar, p, trace, y)
    return trace, grads, reference_gradients(backend, net, params, x, y, c)


def assert_close(grads, ref):
    for g, (rw, rb) in zip(grads, ref):
        for got, want in ((g.weight_grad, rw), (g.bias_grad, rb)):
            scale = max(float(np.max(np.abs(want))), 1e-300)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale)


@settings(max_examples=60)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    activation=st.sampled_from(ACTIVATIONS),
    output_activation=st.sampled_from(ACTIVATIONS),
    loss=st.sampled_from(LOSSES),
    batch=st.integers(1, 5),
    relu_at_zero=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_float_gradients_equal_autograd(sizes, activation, output_activation, loss, batch, relu_at_zero, seed):
    net, params, x, y = dyadic_case(sizes, activation, output_activation, loss, batch, seed)
    _, grads, ref = float_and_reference(net, params, x, y, relu_at_zero, "autograd")
    assert_close(grads, ref)


@pytest.mark.parametrize("relu_at_zero", [0.0, 0.5, 1.0])
def test_relu_derivative_at_zero_is_the_configured_one(relu_at_zero):
    net = MLP([2, 1], activation="relu", loss="half_sse")
    params = net.init_params()
    params[0].weight[:] = [[1.0, -1.0]]
    params[0].bias[:] = [0.0]
    x = np.array([[0.5, 0.5]])  # z = 0 exactly
    trace, grads, ref = float_and_reference(net, params, x, np.array([[-2.0]]), relu_at_zero, "autograd")
    assert trace.layers[0].pre[0, 0] == 0.0
    # dL/db = (a - y) * relu'(0) = (0 - (-2)) * c
    assert grads[0].bias_grad[0] == 2.0 * relu_at_zero == ref[0][1][0]


REFERENCE_CASES = [([3, 7, 7, 5], 1, 0.5), ([4, 6, 2], 8, 0.0), ([2, 3, 3], 3, 1.0)]


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dyadic_cases_are_exact_in_every_library(backend, activation):
    """The reference cases' pre-activations, as each library computes ``a @ W.T + b``, equal the
    exact rational values: so a pinned kink is the kink in every library whatever its matmul kernel."""
    if backend != "numpy" and not available(backend):
        pytest.skip(f"{backend} not installed (CI installs it)")
    for seed, (sizes, batch, _) in enumerate(REFERENCE_CASES):
        net, params, x, _ = dyadic_case(sizes, activation, activation, "sse", batch, seed)
        exact = exact_pre_activations(net, params, x)
        on_kink = {"hard_tanh": 1.0, "hard_sigmoid": 2.0, "pwl_sigmoid": 1.0, "pwl_tanh": 0.5}.get(activation, 0.0)
        assert exact[0][0][0] == on_kink  # the pin worked
        a = x
        for i, p in enumerate(params):
            z = library_affine(backend, a, p.weight, p.bias)
            assert [[Fraction(v) for v in row] for row in z] == exact[i], f"layer {i} inexact in {backend}"
            a = np.array([[float(exact_activation(net.activation_of(i), v)) for v in row] for row in exact[i]])


def library_affine(backend, a, w, b) -> np.ndarray:
    """``a @ w.T + b`` in float64 by the given library."""
    if backend == "torch":
        import torch

        t = torch.tensor(a, dtype=torch.float64) @ torch.tensor(w, dtype=torch.float64).T
        return (t + torch.tensor(b, dtype=torch.float64)).numpy()
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return np.asarray(jnp.asarray(a) @ jnp.asarray(w).T + jnp.asarray(b))
    return a @ w.T + b


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_float_gradients_equal_jax_and_torch(backend, activation, loss):
    if not available(backend):
        pytest.skip(f"{backend} not installed (CI installs it)")
    for seed, (sizes, batch, c) in enumerate(REFERENCE_CASES):
        net, params, x, y = dyadic_case(sizes, activation, activation, loss, batch, seed)
        _, grads, ref = float_and_reference(net, params, x, y, c, backend)
        assert_close(grads, ref)


def test_float_sgd_step_matches_the_update_rule():
    """param - lr * (mu * v + g), checked against numpy on autograd's gradient."""
    from fixprop import Datapath, FixedConstant, QFormat

    dp = Datapath(Datapath.uniform(16, 8).roles, lr_shift=3, momentum=FixedConstant(0.5, QFormat(4, 3, False)))
    net = MLP([3, 4, 2], loss="half_sse", init="uniform_neg")
    model = net.float_model(dp)
    rng = np.random.default_rng(3)
    x, y = rng.random((4, 3)), rng.random((4, 2))
    before = [(p.weight.copy(), p.bias.copy()) for p in model.params]
    ref = reference_gradients("autograd", net, model.params, x, y, 0.5)
    model.train_step(x, y)
    for (w, b), (gw, gb), p in zip(before, ref, model.params):
        np.testing.assert_allclose(p.weight, w - 0.125 * gw, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(p.bias, b - 0.125 * gb, rtol=1e-12, atol=1e-15)
