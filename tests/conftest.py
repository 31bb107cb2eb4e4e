import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fixprop.fixed import blas

sys.path.insert(0, os.path.dirname(__file__))  # tests import the shared oracle module

settings.register_profile(
    "fixprop",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("fixprop")


@pytest.fixture
def float_matmuls(monkeypatch):
    """Counts the float64 BLAS calls one exact product makes (to prove which path ran)."""
    calls = []
    real = np.matmul

    def counting(x, y, *args, **kwargs):
        if getattr(x, "dtype", None) == np.float64:
            calls.append((x.shape, y.shape))
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(blas.np, "matmul", counting)
    return calls
