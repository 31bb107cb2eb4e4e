"""Losses: the output error dL/da each one feeds back, and the same loss for autodiff references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fixprop.errors import ConfigError


@dataclass(frozen=True)
class Loss:
    """``gradient(ar, a, y)`` is dL/da, exact before the ``out_err`` cast; ``value`` is float."""

    name: str

    def gradient(self, ar: Any, a: Any, y: Any) -> Any:
        diff = a - y  # exact in fixed point (one more integer bit)
        if self.name == "half_sse":
            return diff
        twice = ar.pow2(diff, 1)
        if self.name == "sse":
            return twice
        return twice * ar.mean_scale(int(np.prod(np.shape(diff))))  # mse

    def value(self, a: np.ndarray, y: np.ndarray) -> float:
        """The loss of float outputs ``a`` against targets ``y``."""
        squared = (np.asarray(a, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2
        if self.name == "mse":
            return float(squared.mean())
        return float(squared.sum()) * (0.5 if self.name == "half_sse" else 1.0)

    def reference(self, xp: Any, a: Any, y: Any) -> Any:
        """The loss written in an autodiff library (autograd.numpy, jax.numpy or torch)."""
        squared = (a - y) ** 2
        if self.name == "sse":
            return xp.sum(squared)
        if self.name == "half_sse":
            return 0.5 * xp.sum(squared)
        return xp.mean(squared)


LOSS_NAMES = ("sse", "half_sse", "mse")


def get_loss(spec: "str | Loss") -> Loss:
    """sse: sum of squared errors (gradient 2(a - y), the seed's); half_sse: gradient a - y;
    mse: mean over batch and outputs (gradient 2(a - y)/N; in fixed point 1/N is a constant)."""
    if isinstance(spec, Loss):
        return spec
    name = str(spec).strip().lower()
    if name not in LOSS_NAMES:
        raise ConfigError(f"unknown loss {spec!r}; allowed: {', '.join(LOSS_NAMES)}")
    return Loss(name)
