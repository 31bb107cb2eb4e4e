"""Bad input to the library: every row raises a fixprop error type, and its message names the
argument and what is allowed. Then the regressions behind the rows (issue 13): values that used to
be accepted and silently reinterpreted."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop import MLP, Datapath, FixedArray, FixedConstant, QFormat
from fixprop.compat import mlp4autograd
from fixprop.errors import ConfigError, FixpropError, FormatError, RawTypeError, ShapeError

NET = MLP([3, 4, 2], init="uniform_neg", seed=1)
DP = Datapath.uniform(16, 8)
ROLES = DP.roles
X, Y = np.full((2, 3), 0.25), np.zeros((2, 2))


def _model_call(method: str, x=X, y=Y, fixed: bool = True):
    def call():
        model = NET.fixed_model(DP) if fixed else NET.float_model(DP)
        return getattr(model, method)(x) if method in ("forward", "predict") else getattr(model, method)(x, y)
    return call


BAD_INPUT = [
    # (id, call, error type, phrases the message must contain)
    ("MLP(None)", lambda: MLP(None), ConfigError, ["layer_sizes", "got None"]),
    ("MLP([3])", lambda: MLP([3]), ConfigError, ["layer_sizes", ">= 2"]),
    ("fixed_model(None)", lambda: NET.fixed_model(None), ConfigError, ["Datapath", "got None"]),
    ("float_model('s16.8')", lambda: NET.float_model("s16.8"), ConfigError, ["Datapath", "'s16.8'"]),
    ("from_float ragged", lambda: FixedArray.from_float([[1, 2], [3]], "s8.2"), ShapeError, ["x", "ragged"]),
    ("FixedArray ragged raw", lambda: FixedArray([[1, 2], [3]], "s8.2"), ShapeError, ["raw", "ragged"]),
    ("QFormat huge word", lambda: QFormat.parse("s99999999999999999999.0"), FormatError, ["word", "65536"]),
    ("QFormat huge frac", lambda: QFormat(16, 10**9), FormatError, ["frac", "65536"]),
    *[(f"{method} complex x {kind}", _model_call(method, x=X + 0j, fixed=kind == "fixed"), RawTypeError,
       ["x (input)", "complex"]) for method in ("train_step", "gradients", "forward", "weight_gradients")
      for kind in ("fixed", "float")],
    *[(f"{method} bool x {kind}", _model_call(method, x=X > 0, fixed=kind == "fixed"), RawTypeError,
       ["x (input)", "booleans"]) for method in ("train_step", "gradients", "predict") for kind in ("fixed", "float")],
    ("train_step bool y", _model_call("train_step", y=Y > 0), RawTypeError, ["y (target)", "booleans"]),
    ("train_step complex y", _model_call("train_step", y=Y + 1j, fixed=False), RawTypeError,
     ["y (target)", "complex"]),
    ("train_step ragged x", _model_call("train_step", x=[[1, 2, 3], [1]]), ShapeError, ["x (input)", "ragged"]),
    ("forward strings", _model_call("forward", x=[["a", "b", "c"]]), RawTypeError, ["x (input)", "real numbers"]),
    ("params complex", lambda: NET.fixed_model(DP, [p.__class__(p.weight + 0j, p.bias) for p in NET.init_params()]),
     RawTypeError, ["weight", "complex"]),
    ("lr constant beyond its format", lambda: FixedConstant(1000.0, QFormat(8, 4, False)), ConfigError,
     ["1000.0", "u8.4", "15.9375"]),
    ("momentum beyond its format", lambda: FixedConstant(5.0, QFormat(10, 10, False)), ConfigError,
     ["5.0", "u10.10"]),
    ("constant NaN", lambda: FixedConstant(float("nan"), "u8.8"), ConfigError, ["finite"]),
    ("constant STOCH", lambda: FixedConstant(0.5, "u8.8", "STOCH"), ConfigError, ["STOCH"]),
    ("constant bad mode", lambda: FixedConstant(0.5, "u8.8", "ROUND_UP"), FixpropError, ["ROUND_UP"]),
    ("negative lr", lambda: Datapath(ROLES, lr_shift=None, lr=FixedConstant(-0.01, QFormat(12, 16))),
     ConfigError, ["lr must be > 0", "-0.01"]),
    ("zero lr", lambda: Datapath(ROLES, lr_shift=None, lr=FixedConstant(0.0, QFormat(12, 16, False))),
     ConfigError, ["lr must be > 0"]),
    ("negative lr_shift", lambda: Datapath(ROLES, lr_shift=-3), ConfigError, ["lr_shift", ">= 0", "-3"]),
    ("momentum 1.0", lambda: Datapath(ROLES, momentum=FixedConstant(1.0, QFormat(4, 3, False))),
     ConfigError, ["momentum must be in [0, 1)", "1.0"]),
    ("momentum rounds to 1", lambda: Datapath(ROLES, momentum=FixedConstant(0.99, QFormat(4, 2, False))),
     ConfigError, ["momentum must be in [0, 1)", "quantized 1.0"]),
    ("negative momentum", lambda: Datapath(ROLES, momentum=FixedConstant(-0.5, QFormat(8, 7))),
     ConfigError, ["momentum must be in [0, 1)", "-0.5"]),
]


@pytest.mark.parametrize("call,error,phrases", [row[1:] for row in BAD_INPUT], ids=[row[0] for row in BAD_INPUT])
def test_bad_input_raises_a_typed_error_naming_it(call, error, phrases):
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, FixpropError)
    for phrase in phrases:
        assert phrase in str(caught.value)


TOML_ROLES = "\n".join(f'[roles.{role}]\nformat = "s16.8"\n' for role in ROLES)


@pytest.mark.parametrize("settings,phrases", [
    ('[lr]\nvalue = 1000.0\nformat = "u8.4"\n', ["[lr]", "1000.0", "does not fit", "u8.4"]),
    ('[lr]\nvalue = -0.01\nformat = "s12.16"\n', ["lr must be > 0"]),
    ("lr_shift = -3\n", ["lr_shift", ">= 0", "-3"]),
    ('[momentum]\nvalue = 5.0\nformat = "u10.10"\n',
     ["[momentum]", "5.0", "does not fit", "u10.10"]),
    ('[momentum]\nvalue = 0.9999\nformat = "u10.2"\n',
     ["momentum must be in [0, 1)"]),
], ids=["lr-too-big", "lr-negative", "lr_shift-negative", "momentum-too-big", "momentum-rounds-to-1"])
def test_toml_learning_settings_follow_the_same_rule(settings, phrases):
    """TOML, API and CLI share one rule (Datapath._check_learning_settings)."""
    with pytest.raises(ConfigError) as caught:
        Datapath.from_toml(settings + TOML_ROLES, source="dp.toml")
    assert str(caught.value).startswith("dp.toml")
    for phrase in phrases:
        assert phrase in str(caught.value)


def test_learning_settings_that_are_allowed():
    """lr above 1 as a constant that fits, momentum 0, lr_shift 0: legal, and the values are exact."""
    dp = Datapath(ROLES, lr_shift=None, lr=FixedConstant(2.5, "u4.2"),
                  momentum=FixedConstant(0.0, "u8.8"))
    assert dp.learning_rate == 2.5 and dp.momentum_coefficient == 0.0
    assert Datapath(ROLES, lr_shift=0).learning_rate == 1.0


def test_empty_toml_does_not_call_momentum_required():
    with pytest.raises(ConfigError) as caught:
        Datapath.from_toml("", source="empty.toml")
    message = str(caught.value)
    required = message.split("for each of:")[1].split("(")[0]
    assert "momentum" not in required and "update" in required
    assert "momentum when [momentum] is given" in message


@pytest.mark.parametrize("encoding,phrase", [("latin-1", "not UTF-8 text (byte 0xe9 on line 1)"),
                                             ("utf-16", "UTF-16")])
def test_datapath_file_not_utf8_is_a_config_error(tmp_path, encoding, phrase):
    path = tmp_path / "dp.toml"
    path.write_bytes(("# réseau\n" + DP.to_toml()).encode(encoding))
    with pytest.raises(ConfigError) as caught:
        Datapath.load(path)
    assert str(caught.value).startswith(str(path)) and phrase in str(caught.value)


def test_datapath_file_with_utf8_bom_loads(tmp_path):
    path = tmp_path / "dp.toml"
    path.write_bytes(b"\xef\xbb\xbf" + ("# réseau\n" + DP.to_toml()).encode("utf-8"))
    assert Datapath.load(path) == DP


def test_constant_mode_names_save_and_export(tmp_path):
    """FixedConstant takes mode names as the rest of the API does; the datapath then saves, loads and
    exports (these failed with AttributeError: 'str' object has no attribute 'name')."""
    from fixprop.hardware import export, load

    lr = FixedConstant(0.0123, QFormat(12, 16, False), "TRN")
    dp = Datapath(ROLES, lr_shift=None, lr=lr)
    # 0.0123 * 2**16 = 806.09...: TRN keeps 806
    assert lr.raw == 806 and lr.quantized == 806 / 2**16
    dp.save(tmp_path / "dp.toml")
    assert Datapath.load(tmp_path / "dp.toml") == dp
    bundle = export(NET, dp, X, Y, steps=1, out=tmp_path / "bundle")
    assert load(bundle).datapath.lr == lr


def _seed_class(quant: bool) -> tuple[mlp4autograd, list, np.ndarray]:
    m = mlp4autograd()
    m.net_shape([3, 7, 5])
    np.random.seed(0)
    m.init_params()
    x = np.array([[0.5], [0.25], [1.0]])
    params = [m._weight, m._bias]
    if quant:
        m.set_quant(24, 12, True)
        params = [[np.round(w * 4096) for w in m._weight], [np.round(b * 4096) for b in m._bias]]
        x = np.round(x * 4096)
    return m, params, x


@pytest.mark.parametrize("quant", [False, True], ids=["float", "quantized"])
def test_seed_class_refuses_1d_input_in_both_modes(quant):
    """A (3,) input used to give (5, 7) broadcast garbage in float mode and (5, 1) in quantized mode."""
    m, params, x = _seed_class(quant)
    with pytest.raises(ShapeError, match=r"x must have shape \(3, 1\).*got shape \(3,\).*x.reshape\(3, -1\)"):
        m.infer(x.ravel(), params)
    # a failed infer leaves nothing behind: grad asks for infer, not the old error again
    with pytest.raises(ConfigError, match=r"call infer\(x, params\) before grad"):
        m.grad(np.zeros((5, 1)))
    assert m.infer(x, params).shape == (5, 1)


@pytest.mark.parametrize("quant", [False, True], ids=["float", "quantized"])
def test_seed_class_names_the_shape_it_was_given(quant):
    m, params, x = _seed_class(quant)
    m.infer(x, params)
    with pytest.raises(ShapeError, match=r"truth must have shape \(5, 1\).*got shape \(1, 5\)"):
        m.grad(np.zeros((1, 5)))
    m.grad(np.zeros((5, 1)))  # the earlier failure does not stick
    assert [g.shape for g in m.params_grad[0]] == [(7, 3), (5, 7)]


@pytest.mark.parametrize("params", [None, [[np.zeros((7, 3))], [np.zeros((7, 1))]], "weights"],
                         ids=["None", "one-layer", "string"])
def test_seed_class_names_bad_params(params):
    m, _, x = _seed_class(False)
    with pytest.raises(ShapeError, match=r"infer\(x, params\): "):
        m.infer(x, params)
