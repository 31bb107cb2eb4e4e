"""Model.predict runs the forward pass as a traced program on the numba kernel; it must give the
same floats (from the same integers) as the stage-by-stage forward pass, draw the same STOCH
words, and fall back when parameters are not in their roles' formats."""

from __future__ import annotations

import numpy as np
import pytest

from dataclasses import replace

from fixprop import Datapath, FixedArray, RoleCast
from fixprop.nn import MLP, LayerParams

pytest.importorskip("numba")

DATAPATHS = {
    "seed": Datapath.seed(24, 12),
    "uniform8_wrap": Datapath.uniform(8, 4, rounding="TRN", overflow="WRAP"),
    "stoch": Datapath.uniform(12, 6, rounding="STOCH"),
    "per_layer": replace(Datapath.uniform(16, 8), layers={0: {"acc": RoleCast(10, 3, True, "RND_INF", "SAT_SYM"),
                                                              "act": RoleCast(6, 2, False, "TRN_ZERO", "SAT_ZERO")}}),
}


@pytest.mark.parametrize("name", sorted(DATAPATHS))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu:2", "hard_tanh", "linear"])
@pytest.mark.parametrize("batch", [1, 7, 300])
def test_compiled_predict_equals_the_stepwise_forward_pass(name, activation, batch):
    dp = DATAPATHS[name]
    net = MLP([3, 6, 4, 2], activation, seed=2)
    rng = np.random.default_rng(batch)
    x = rng.uniform(-3, 3, (batch, 3))
    compiled = net.fixed_model(dp, rng=np.random.default_rng(9), backend="numba")
    stepwise = net.fixed_model(dp, rng=np.random.default_rng(9))
    stepwise.compiled = False
    got, want = compiled.predict(x), stepwise.predict(x)
    assert np.array_equal(got, want)
    assert ("forward", batch, False) in compiled._steps and compiled._steps[("forward", batch, False)] is not None
    # the same random words were drawn, in the same order
    assert compiled.arithmetic.rng.integers(1 << 62) == stepwise.arithmetic.rng.integers(1 << 62)


def test_predict_with_parameters_in_other_formats_runs_stage_by_stage():
    dp = Datapath.uniform(16, 8)
    net = MLP([3, 4, 2], seed=1)
    model = net.fixed_model(dp, backend="numba")
    model.params = [LayerParams(FixedArray.from_float(p.weight, "s20.14"), FixedArray.from_float(p.bias, "s20.14"))
                    for p in net.init_params()]
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    want = model.arithmetic.to_float(net.forward(model.arithmetic, model.params, x).output)
    assert np.array_equal(model.predict(x), want)
