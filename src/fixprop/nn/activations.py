"""Activation functions: forward, derivative, and the same function for autodiff references.

Each is written once against the arithmetic interface (``nn/arithmetic.py``): the forward pass
is exact in fixed point (ReLU keeps the format; a leaky slope is a shift), and derivatives are
small dyadic constants (0, 2**-k, 1/2, 1) so ``delta * f'(z)`` is an exact product before the
cast into the ``bias_grad`` role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fixprop.errors import ConfigError

#: Default leaky-ReLU slope exponent: slope 2**-7 (0.0078), the power of two nearest PyTorch's 0.01.
DEFAULT_LEAKY_SHIFT = 7


@dataclass(frozen=True)
class Activation:
    """Base: ``forward(ar, z)``, ``derivative(ar, z)``, ``reference(xp, z, relu_grad_at_zero)``."""

    name: str

    def forward(self, ar: Any, z: Any) -> Any:
        raise NotImplementedError

    def derivative(self, ar: Any, z: Any) -> Any:
        raise NotImplementedError

    def reference(self, xp: Any, z: Any, relu_grad_at_zero: float) -> Any:
        """The same function in an autodiff library (``xp`` = autograd.numpy, jax.numpy or torch),
        written so that the library's derivative equals :meth:`derivative` everywhere, at 0 too."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ReLU(Activation):
    """max(z, 0); derivative 1 above 0, 0 below, and the datapath's choice (0, 1/2, 1) at 0."""

    name: str = "relu"

    def forward(self, ar, z):
        return ar.maximum(z, 0)

    def derivative(self, ar, z):
        c = ar.relu_grad_at_zero
        return ar.dyadic(np.where(z > 0, 1.0, np.where(z == 0, c, 0.0)), 1)

    def reference(self, xp, z, relu_grad_at_zero):
        # where() passes the gradient to the branch it takes: strict > gives 0 at 0, >= gives 1;
        # the blend gives c at 0 and the same value everywhere (both terms equal max(z, 0)).
        c = relu_grad_at_zero
        strict = xp.where(z > 0, z, z * 0.0)
        if c == 0:
            return strict
        closed = xp.where(z >= 0, z, z * 0.0)
        return closed if c == 1 else strict * (1 - c) + closed * c


@dataclass(frozen=True)
class LeakyReLU(Activation):
    """z above 0, z * 2**-shift at or below 0 (an exact shift in hardware); derivative 1 or 2**-shift."""

    name: str = "leaky_relu"
    shift: int = DEFAULT_LEAKY_SHIFT

    def forward(self, ar, z):
        return ar.where(z > 0, z, ar.pow2(z, -self.shift))

    def derivative(self, ar, z):
        return ar.dyadic(np.where(z > 0, 1.0, 2.0**-self.shift), self.shift)

    def reference(self, xp, z, relu_grad_at_zero):
        return xp.where(z > 0, z, z * 2.0**-self.shift)

    def __str__(self) -> str:
        return f"leaky_relu:{self.shift}"


@dataclass(frozen=True)
class Linear(Activation):
    """The identity; derivative 1."""

    name: str = "linear"

    def forward(self, ar, z):
        return z

    def derivative(self, ar, z):
        return ar.dyadic(np.ones(np.shape(z)), 0)

    def reference(self, xp, z, relu_grad_at_zero):
        return z


@dataclass(frozen=True)
class HardTanh(Activation):
    """clip(z, -1, 1); derivative 1 strictly inside (-1, 1), 0 at and beyond +-1 (as autograd's clip)."""

    name: str = "hard_tanh"

    def forward(self, ar, z):
        return ar.minimum(ar.maximum(z, -1), 1)

    def derivative(self, ar, z):
        return ar.dyadic(np.where((z > -1) & (z < 1), 1.0, 0.0), 0)

    def reference(self, xp, z, relu_grad_at_zero):
        inside = (z > -1) & (z < 1)
        return xp.where(inside, z, xp.where(z >= 1, z * 0.0 + 1.0, z * 0.0 - 1.0))


ACTIVATION_NAMES = ("relu", "leaky_relu", "leaky_relu:<k>", "linear", "hard_tanh")


def get_activation(spec: "str | Activation") -> Activation:
    """Parse an activation name: relu, leaky_relu (slope 2**-7), leaky_relu:<k> (slope 2**-k), linear, hard_tanh."""
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"activation must be a name; got {spec!r}; allowed: {', '.join(ACTIVATION_NAMES)}")
    name = spec.strip().lower().replace("-", "_")
    if name == "relu":
        return ReLU()
    if name in ("linear", "identity"):
        return Linear()
    if name in ("hard_tanh", "hardtanh"):
        return HardTanh()
    if name.startswith("leaky_relu"):
        _, _, k = name.partition(":")
        if not k:
            return LeakyReLU()
        if k.isdigit() and int(k) >= 1:
            return LeakyReLU(shift=int(k))
        raise ConfigError(f"leaky_relu slope must be leaky_relu:<k> with k >= 1 (slope 2**-k); got {spec!r}")
    raise ConfigError(f"unknown activation {spec!r}; allowed: {', '.join(ACTIVATION_NAMES)}")
