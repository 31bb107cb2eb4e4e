"""The seed's class in quantized mode runs infer and grad on the numba kernel when every value
fits the seed datapath's d-bit roles, and stage by stage otherwise. Both must give the same
integers: checked here against the stage-by-stage path (itself checked against Python ints in
test_compat_and_notebook.py and the oracle tests), on in-range and out-of-range values."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop.compat import mlp4autograd

pytest.importorskip("numba")


def _run(model, x, y, params):
    out = model.infer(x, params)
    model.grad(y)
    return out, [np.array(w) for w in model._weight_dif], [np.array(b) for b in model._bias_dif], \
        [np.array(a) for a in model._activation]


def _pair(d, q, shape):
    fast, slow = mlp4autograd(), mlp4autograd()
    for m in (fast, slow):
        m.set_quant(d, q)
        m.net_shape(shape)
    slow._compiled_step = lambda batch, forward_only: None  # force the stage-by-stage path
    return fast, slow


@pytest.mark.parametrize("d,q", [(24, 12), (16, 10), (8, 4)])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])  # 4.0: values beyond d bits, the fallback
def test_compiled_quantized_mode_equals_stage_by_stage(d, q, batch, scale):
    rng = np.random.default_rng(d * 100 + batch)
    shape = [3, 7, 7, 5]
    fast, slow = _pair(d, q, shape)
    limit = 2 ** (d - 1)
    params = [[np.round(rng.uniform(-scale, scale, (n_out, n_in)) * limit / 2) for n_in, n_out in zip(shape[:-1], shape[1:])],
              [np.round(rng.uniform(-scale, scale, (n_out, 1)) * limit / 2) for n_out in shape[1:]]]
    x = np.round(rng.uniform(-scale, scale, (3, batch)) * limit / 2)
    y = np.round(rng.uniform(-scale, scale, (5, batch)) * limit / 2)
    got, want = _run(fast, x, y, params), _run(slow, x, y, params)
    for a, b in zip([got[0]] + got[1] + got[2] + got[3], [want[0]] + want[1] + want[2] + want[3], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    fits = all(np.abs(v).max() < limit for v in params[0] + params[1] + [x, y])
    assert any(step is not None for step in fast._steps.values()), "numba is installed: the kernel is used"
    used_kernel = fast._compiled_params(*params) is not None
    assert used_kernel == fits


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.5])
def test_non_integers_are_refused_as_before(bad):
    from fixprop.errors import RawTypeError

    model = mlp4autograd()
    model.set_quant(16, 10)
    model.net_shape([3, 4, 2])
    params = [[np.ones((4, 3)), np.ones((2, 4))], [np.ones((4, 1)), np.ones((2, 1))]]
    params[0][1][1, 2] = bad
    with pytest.raises(RawTypeError, match="integers in units of 2\\*\\*-10"):
        model.infer(np.ones((3, 1)), params)


def test_parameters_changed_in_place_between_calls_are_seen():
    """The quantized class reuses the last call's parameter conversion only when every value is
    the same: a weight changed in place (as an SGD loop does) gives the new network's output."""
    rng = np.random.default_rng(3)
    shape = [3, 5, 2]
    model, fresh = _pair(12, 6, shape)[0], mlp4autograd()
    fresh.set_quant(12, 6)
    fresh.net_shape(shape)
    params = [[np.round(rng.uniform(0, 40, (o, i))) for i, o in zip(shape[:-1], shape[1:])],
              [np.round(rng.uniform(0, 40, (o, 1))) for o in shape[1:]]]
    x = np.round(rng.uniform(0, 60, (3, 1)))
    first = model.infer(x, params)
    assert first.min() > 0
    params[0][0][1, 2] += 64  # in place
    params[1][1][0, 0] -= 3
    again = model.infer(x, params)
    want = fresh.infer(x, [[w.copy() for w in params[0]], [b.copy() for b in params[1]]])
    assert np.array_equal(again, want) and not np.array_equal(again, first)
