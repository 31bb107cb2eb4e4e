"""The fixed-point network against the independent Python-int implementation (int_mlp_oracle)."""

from __future__ import annotations


import numpy as np
import pytest

from fixprop import Datapath, FixedConstant, QFormat, RoleCast
from fixprop.nn import MLP, FixedArithmetic, LayerParams
from int_mlp_oracle import train_step
from oracle_compare import assert_stages_equal, exact, vals


def put_a_zero(params: list[LayerParams], x: np.ndarray) -> None:
    """Make neuron 0 of layer 0 see exactly z = 0 on sample 0, in every datapath below (dyadic values:
    W x = 0.25*0.5 + 0.5*(-0.25) - 0.125*1.0 = -0.125, bias 0.125)."""
    x[0, :] = [0.5, -0.25, 1.0]
    params[0].weight[0, :] = [0.25, 0.5, -0.125]
    params[0].bias[0] = 0.125


def mixed_datapath() -> Datapath:
    """Every role different: widths 6..32, signed and unsigned, all modes but STOCH, lr constant, momentum."""
    roles = {
        "input": RoleCast.of("s12.8", "RND", "SAT"),
        "target": RoleCast.of("s12.8", "RND_INF", "SAT"),
        "weight": RoleCast.of("s16.12", "RND_CONV", "SAT"),
        "bias": RoleCast.of("s16.12", "RND_ZERO", "SAT_SYM"),
        "acc": RoleCast(32, 18, True, "TRN", "WRAP"),
        "pre": RoleCast.of("s14.8", "RND_MIN_INF", "SAT_SYM"),
        "act": RoleCast.of("s12.7", "TRN_ZERO", "SAT"),
        "out_err": RoleCast(None, 10, True, "RND_CONV", "SAT"),
        "prop_err": RoleCast.of("s16.12", "TRN_INF", "SAT_ZERO"),
        "bias_grad": RoleCast.of("s18.14", "RND", "SAT"),
        "weight_grad": RoleCast.of("s20.16", "RND_CONV", "WRAP"),
        "update": RoleCast.of("s24.20", "TRN", "SAT"),
        "momentum": RoleCast.of("s22.16", "RND_CONV", "SAT"),
    }
    return Datapath(roles, relu_grad_at_zero=1.0, lr_shift=None, lr=FixedConstant(0.05, QFormat(10, 12, False)),
                    momentum=FixedConstant(0.875, QFormat(8, 8, False)))


def narrow_datapath() -> Datapath:
    """Narrow words that saturate and wrap often."""
    dp = Datapath.uniform(6, 3, "TRN", "WRAP", lr_shift=2)
    return dp.with_role("act", RoleCast.of(QFormat(6, 4, signed=False), "RND", "SAT"))


def per_layer_datapath() -> Datapath:
    """The mixed datapath with per-layer overrides of forward, backward, update and state roles."""
    from dataclasses import replace

    base = mixed_datapath()
    return replace(base, layers={
        0: {"weight": RoleCast.of("s12.10", "RND", "SAT"), "acc": RoleCast.of("s16.9", "RND_CONV", "SAT"),
            "act": RoleCast.of("u10.8", "RND", "SAT"), "bias_grad": RoleCast.of("s10.6", "TRN", "SAT"),
            "update": RoleCast.of("s20.18", "RND", "SAT"), "momentum": RoleCast.of("s14.12", "TRN", "SAT")},
        1: {"pre": RoleCast.of("s10.5", "RND_INF", "SAT"), "out_err": RoleCast.of("s9.6", "RND", "SAT"),
            "prop_err": RoleCast.of("s11.7", "RND_CONV", "WRAP"), "bias": RoleCast.of("s9.7", "RND", "SAT")},
    })


CASES = [
    ("seed16", Datapath.seed(16, 10), ["relu", "relu"], "sse"),
    ("seed32", Datapath.seed(32, 16), ["relu", "relu"], "sse"),
    ("uniform24", Datapath.uniform(24, 12, "RND", "SAT"), ["leaky_relu:3", "linear"], "half_sse"),
    ("mixed", mixed_datapath(), ["relu", "hard_tanh"], "mse"),
    ("per_layer", per_layer_datapath(), ["relu", "linear"], "sse"),
    ("narrow", narrow_datapath(), ["relu", "relu"], "sse"),
    ("relu0", Datapath.uniform(20, 10, "RND_CONV", "SAT_SYM").__class__(
        {**Datapath.uniform(20, 10).roles}, relu_grad_at_zero=0.0, lr_shift=5), ["relu", "leaky_relu:2"], "mse"),
]


@pytest.mark.parametrize("name,dp,activations,loss", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch", [1, 3])
def test_fixed_network_equals_int_oracle(name, dp, activations, loss, batch):
    rng = np.random.default_rng(abs(hash(name)) % 1000 + batch)
    sizes = [3, 4, 2]
    net = MLP(sizes, activation=activations[0], output_activation=activations[1], loss=loss, init="uniform_neg")
    params = net.init_params(seed=batch)
    x = rng.uniform(-2, 2, (batch, 3))
    put_a_zero(params, x)
    y = rng.uniform(-1, 2, (batch, 2))
    ar = FixedArithmetic(dp)
    model = net.fixed_model(dp, params)
    trace = net.forward(ar, model.params, x)
    grads = net.backward(ar, model.params, trace, y)
    new_params, velocity = net.sgd_step(ar, model.params, grads, net.zero_velocity(ar, model.params)
                                        if dp.momentum is not None else None)

    w_float = [p.weight.tolist() for p in params]
    b_float = [p.bias.tolist() for p in params]
    vel0 = None
    if dp.momentum is not None:
        from int_mlp_oracle import Val
        vel0 = [([[Val(0, 16)] * 3] * 4, [Val(0, 16)] * 4), ([[Val(0, 16)] * 4] * 2, [Val(0, 16)] * 2)]
    expected = train_step(dp, activations, loss, w_float, b_float, x.tolist(), y.tolist(), vel0)

    assert_stages_equal(trace, grads, expected)
    for l, p in enumerate(new_params):
        assert exact(p.weight) == vals(expected["weights"][l]), f"updated weight of layer {l}"
        assert exact(p.bias) == vals(expected["biases"][l]), f"updated bias of layer {l}"
        assert p.weight.fmt == dp.cast_for("weight", l).fmt and p.bias.fmt == dp.cast_for("bias", l).fmt
    if velocity is not None:
        for l, v in enumerate(velocity):
            assert exact(v.weight) == vals(expected["velocity"][l][0])


def test_some_pre_activation_is_exactly_zero():
    """The cases above do reach z == 0 (so relu'(0) is exercised)."""
    dp = Datapath.seed(24, 12)
    net = MLP([3, 4, 2], init="uniform_neg")
    params = net.init_params(seed=1)
    x = np.zeros((1, 3))
    put_a_zero(params, x)
    trace = net.forward(FixedArithmetic(dp), net.params_in(FixedArithmetic(dp), params), x)
    assert int(trace.layers[0].pre.raw[0, 0]) == 0


def test_one_sgd_step_by_hand():
    """[2] -> [1], linear, half_sse, every role s8.4 TRN SAT, lr = 2**-1.

    w = [0.5, -0.25], b = 0.125, x = [1.0, 0.5], y = 0.25 (raw in 1/16: w = [8, -4], b = 2,
    x = [16, 8], y = 4).
    acc = W x = 8*16 + (-4)*8 = 96 at 1/256 -> 6/16 (0.375); pre = 6 + 2 = 8 (0.5); act = 8.
    error = a - y = 8 - 4 = 4 (0.25); local = 4 * 1 = 4; bias grad = 4; weight grad = 4 * x =
    [4*16, 4*8] = [64, 32] at 1/256 -> [4, 2] (0.25, 0.125).
    update = grad / 2: weight [2, 1], bias 2; new w = [8 - 2, -4 - 1] = [6, -5]; new b = 2 - 2 = 0.
    """
    dp = Datapath.uniform(8, 4, "TRN", "SAT", lr_shift=1)
    net = MLP([2, 1], activation="linear", loss="half_sse")
    model = net.fixed_model(dp, [LayerParams(np.array([[0.5, -0.25]]), np.array([0.125]))])
    model.train_step(np.array([[1.0, 0.5]]), np.array([[0.25]]))
    assert model.params[0].weight.raw.tolist() == [[6, -5]]
    assert model.params[0].bias.raw.tolist() == [0]
    trace = model.forward(np.array([[1.0, 0.5]]))
    # new forward: acc = 6*16 + (-5)*8 = 56 at 1/256 -> TRN 3 (0.1875); pre = 3 + 0 = 3
    assert trace.layers[0].acc.raw.tolist() == [[3]]
    assert trace.layers[0].pre.raw.tolist() == [[3]]
