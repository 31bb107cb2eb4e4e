"""Float64 reference gradients from autodiff libraries: autograd (core), JAX and PyTorch (extras).

Each backend differentiates the same network, written with that library's own operations:
``z = a @ W.T + b``, the activation's ``reference`` form, the loss's ``reference`` form.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from fixprop.errors import ConfigError
from fixprop.nn.mlp import MLP, LayerParams

BACKENDS = ("autograd", "jax", "torch")
INSTALL_HINT = {"jax": 'pip install "fixprop[jax]"', "torch": 'pip install "fixprop[torch]"'}

Gradients = list[tuple[np.ndarray, np.ndarray]]


def _loss_function(net: MLP, xp, x, y, relu_grad_at_zero: float, matmul_t: Callable):
    def loss(flat_params):
        a = x
        for i in range(net.n_layers):
            weight, bias = flat_params[2 * i], flat_params[2 * i + 1]
            z = matmul_t(a, weight) + bias
            a = net.activation_of(i).reference(xp, z, relu_grad_at_zero)
        return net.loss.reference(xp, a, y)

    return loss


def autograd_gradients(net: MLP, params: Sequence[LayerParams], x: np.ndarray, y: np.ndarray,
                       relu_grad_at_zero: float = 0.5) -> Gradients:
    """dL/dW and dL/db from HIPS autograd (float64)."""
    import autograd
    import autograd.numpy as anp

    loss = _loss_function(net, anp, x, y, relu_grad_at_zero, lambda a, w: anp.dot(a, w.T))
    flat = [arr for p in params for arr in (np.asarray(p.weight, float), np.asarray(p.bias, float))]
    grads = autograd.grad(loss)(flat)
    return [(np.asarray(grads[2 * i]), np.asarray(grads[2 * i + 1])) for i in range(net.n_layers)]


def jax_gradients(net: MLP, params: Sequence[LayerParams], x: np.ndarray, y: np.ndarray,
                  relu_grad_at_zero: float = 0.5) -> Gradients:
    """dL/dW and dL/db from JAX with float64 enabled."""
    jax = _import("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    loss = _loss_function(net, jnp, jnp.asarray(x), jnp.asarray(y), relu_grad_at_zero, lambda a, w: a @ w.T)
    flat = [jnp.asarray(arr, dtype=jnp.float64) for p in params for arr in (p.weight, p.bias)]
    grads = jax.grad(loss)(flat)
    return [(np.asarray(grads[2 * i]), np.asarray(grads[2 * i + 1])) for i in range(net.n_layers)]


def torch_gradients(net: MLP, params: Sequence[LayerParams], x: np.ndarray, y: np.ndarray,
                    relu_grad_at_zero: float = 0.5) -> Gradients:
    """dL/dW and dL/db from PyTorch autograd in float64."""
    torch = _import("torch")
    flat = [torch.tensor(np.asarray(arr, float), dtype=torch.float64, requires_grad=True)
            for p in params for arr in (p.weight, p.bias)]
    loss = _loss_function(net, torch, torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64),
                          relu_grad_at_zero, lambda a, w: a @ w.T)
    loss(flat).backward()
    return [(flat[2 * i].grad.numpy().copy(), flat[2 * i + 1].grad.numpy().copy()) for i in range(net.n_layers)]


def reference_gradients(backend: str, net: MLP, params: Sequence[LayerParams], x: np.ndarray, y: np.ndarray,
                        relu_grad_at_zero: float = 0.5) -> Gradients:
    """Gradients from ``backend`` (autograd, jax or torch)."""
    functions = {"autograd": autograd_gradients, "jax": jax_gradients, "torch": torch_gradients}
    if backend not in functions:
        raise ConfigError(f"unknown reference {backend!r}; allowed: {', '.join(BACKENDS)} or all")
    return functions[backend](net, params, np.asarray(x, float), np.asarray(y, float), relu_grad_at_zero)


def available(backend: str) -> bool:
    """True when the backend's library imports."""
    if backend == "autograd":
        return True
    try:
        _import(backend)
        return True
    except ConfigError:
        return False


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise ConfigError(f"reference {name!r} needs {name} installed: {INSTALL_HINT[name]}") from None
