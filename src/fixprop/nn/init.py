"""Weight initialisation (float64, seeded with numpy.random.Generator)."""

from __future__ import annotations

import numpy as np

from fixprop.errors import ConfigError

INIT_NAMES = ("uniform", "uniform_neg", "ones", "he", "glorot")


def init_layer(kind: str, n_out: int, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One layer's (weight (n_out, n_in), bias (n_out,)); the weight is drawn before the bias.

    uniform: both in [0, 1) (the seed's); uniform_neg: both in [-1, 1); ones: all ones;
    he: weight U(-sqrt(6/n_in), sqrt(6/n_in)), bias 0; glorot: weight
    U(-sqrt(6/(n_in+n_out)), +...), bias 0.
    """
    if kind == "uniform":
        return rng.random((n_out, n_in)), rng.random(n_out)
    if kind == "uniform_neg":
        return rng.uniform(-1.0, 1.0, (n_out, n_in)), rng.uniform(-1.0, 1.0, n_out)
    if kind == "ones":
        return np.ones((n_out, n_in)), np.ones(n_out)
    if kind == "he":
        limit = np.sqrt(6.0 / n_in)
        return rng.uniform(-limit, limit, (n_out, n_in)), np.zeros(n_out)
    if kind == "glorot":
        limit = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-limit, limit, (n_out, n_in)), np.zeros(n_out)
    raise ConfigError(f"unknown init {kind!r}; allowed: {', '.join(INIT_NAMES)}")
