"""Model.train_batches runs consecutive batches of one size in one numba kernel call. It must
give the integers of ``for rows in batches: model.train_step(x[rows], y[rows])`` (itself equal
to the stage-by-stage path, test_numba_backend.py): parameters, velocities, the STOCH words drawn
(the generator ends in the same state), and a counting observer's counts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.explore.ranges import RangeCollector
from fixprop.hardware import LfsrSource
from fixprop.nn import MLP, FixedArithmetic, Model

pytest.importorskip("numba")
from fixprop.nn.kernels import NumbaStep  # noqa: E402

STOCH_INSIDE = replace(Datapath.uniform(14, 7), roles={
    **Datapath.uniform(14, 7).roles, "acc": RoleCast(16, 6, True, "STOCH", "SAT"),
    "weight_grad": RoleCast(12, 8, True, "STOCH", "WRAP"), "update": RoleCast(14, 10, True, "STOCH", "SAT")})
DATAPATHS = {
    "seed": Datapath.seed(24, 12),
    "stoch_inside": STOCH_INSIDE,
    "momentum": replace(Datapath.uniform(16, 9, rounding="RND_INF", overflow="SAT_SYM"), lr_shift=None,
                        lr=FixedConstant(0.05, QFormat(10, 12, False)),
                        momentum=FixedConstant(0.75, QFormat(8, 8, False))),
    "per_layer_wrap": replace(Datapath.uniform(10, 5, rounding="TRN", overflow="WRAP"),
                              layers={1: {"pre": RoleCast(8, 3, False, "RND_CONV", "SAT_ZERO")}}),
    "stoch_data": Datapath.uniform(12, 6, rounding="STOCH"),  # data rounds STOCH: step by step
}


def _models(dp, rng_factory, counting):
    net = MLP([3, 5, 4], "leaky_relu:2", "linear", "mse", "he", 4)
    made = []
    for _ in range(2):
        ar = FixedArithmetic(dp, rng_factory(), RangeCollector(ranges=False) if counting else None)
        made.append(Model(net, ar, net.init_params(), dp.momentum is not None, backend="numba"))
    return made


@pytest.mark.parametrize("name", sorted(DATAPATHS))
@pytest.mark.parametrize("counting", [False, True])
def test_train_batches_equals_a_loop_of_train_steps(name, counting, monkeypatch):
    dp = DATAPATHS[name]
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-2, 2, (70, 3)), rng.uniform(-1, 1, (70, 4))
    order = rng.permutation(70)
    batches = [order[i:i + 8] for i in range(0, 64, 8)] + [order[64:67], order[67:70]]  # two short ones
    fast, slow = _models(dp, lambda: np.random.default_rng(5), counting)
    calls = []
    original = NumbaStep.train_steps
    monkeypatch.setattr(NumbaStep, "train_steps", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x[rows], y[rows])
    for p, q in zip(fast.params, slow.params):
        assert p.weight.fmt == q.weight.fmt and np.array_equal(p.weight.raw, q.weight.raw)
        assert np.array_equal(p.bias.raw, q.bias.raw)
    if dp.momentum is not None:
        for p, q in zip(fast.velocity, slow.velocity):
            assert np.array_equal(p.weight.raw, q.weight.raw) and np.array_equal(p.bias.raw, q.bias.raw)
    assert fast.arithmetic.rng.integers(1 << 62) == slow.arithmetic.rng.integers(1 << 62)
    if counting:
        mine, theirs = fast.arithmetic.observer.to_json(), slow.arithmetic.observer.to_json()
        assert mine == theirs and sum(s["count"] for s in mine) > 0
    # one call for the eight batches of 8 and one for the two of 3; none when data rounds STOCH
    assert len(calls) == (0 if name == "stoch_data" else 2)


def test_an_lfsr_source_runs_step_by_step_with_the_same_integers():
    dp = STOCH_INSIDE
    fast, slow = _models(dp, lambda: LfsrSource(seed=3), counting=False)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-2, 2, (32, 3)), rng.uniform(-1, 1, (32, 4))
    batches = [np.arange(i, i + 8) for i in range(0, 32, 8)]
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x[rows], y[rows])
    for p, q in zip(fast.params, slow.params):
        assert np.array_equal(p.weight.raw, q.weight.raw) and np.array_equal(p.bias.raw, q.bias.raw)


@pytest.mark.parametrize("batches, message", [
    ([np.array([], dtype=np.int64)], "batch 0 must be a non-empty 1-D array"),
    ([np.arange(4), np.array([[0, 1], [2, 3]])], "batch 1 must be a non-empty 1-D array"),
    ([np.array([0.0, 1.0])], "integer sample indices"),
    ([np.array([0, 10])], "batch 0 has a sample index outside the 10 samples"),
])
def test_bad_batches_are_refused_before_any_step(batches, message):
    from fixprop.errors import ShapeError

    fast, _ = _models(Datapath.seed(16, 10), lambda: None, counting=False)
    before = [np.array(p.weight.raw) for p in fast.params]
    x, y = np.zeros((10, 3)), np.zeros((10, 4))
    with pytest.raises(ShapeError, match=message):
        fast.train_batches(x, y, batches)
    assert all(np.array_equal(b, p.weight.raw) for b, p in zip(before, fast.params))
