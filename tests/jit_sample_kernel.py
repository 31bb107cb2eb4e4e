"""A tiny kernel for tests/test_jit.py: plain Python that ``fixprop.nn.jit.compiled`` compiles."""

import numpy as np


def add_int64(a, b):
    """Elementwise ``a + b`` of two int64 vectors, as a loop (what numba compiles)."""
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        out[i] = a[i] + b[i]
    return out
