"""Comparing the network's FixedArrays with the Python-int oracle's Vals (int_mlp_oracle), exactly."""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def exact(x) -> list:
    """FixedArray -> nested lists of exact Fractions."""
    scale = Fraction(2) ** x.fmt.frac
    return np.vectorize(lambda r: Fraction(int(r)) / scale, otypes=[object])(x.raw).tolist()


def vals(rows) -> list:
    """Oracle Vals (nested lists) -> nested lists of Fractions."""
    if isinstance(rows, list):
        return [vals(r) for r in rows]
    return rows.fraction()


def assert_stages_equal(trace, grads, want) -> None:
    """Every forward and backward stage of one step (``trace``, ``grads``) equals the oracle's
    (``want``, from int_mlp_oracle.train_step), value for value."""
    for l, layer in enumerate(trace.layers):
        assert exact(layer.pre) == vals(want["pres"][l]), f"pre-activation of layer {l}"
        assert exact(layer.act) == vals(want["acts"][l + 1]), f"activation of layer {l}"
    for l, g in enumerate(grads):
        e = want["grads"][l]
        assert exact(g.local_error) == vals(e["local"]), f"local error of layer {l}"
        assert exact(g.bias_grad) == vals(e["bias_grad"]), f"bias gradient of layer {l}"
        assert exact(g.weight_grad) == vals(e["weight_grad"]), f"weight gradient of layer {l}"
        if l > 0:
            assert exact(g.prop_err) == vals(e["prop"]), f"propagated error of layer {l}"
