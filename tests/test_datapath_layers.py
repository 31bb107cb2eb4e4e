"""Per-layer datapath overrides (Datapath.layers): TOML round trips, hand-written TOML, clear errors
for malformed tables, the network's layer count check, with_modes and cast_for."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fixprop import FixedArray, QFormat
from fixprop.datapath import LAYER_ROLES, ROLES, Datapath, FixedConstant, RoleCast
from fixprop.errors import ConfigError
from fixprop.explore.train import TrainConfig, train
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.nn.arithmetic import FixedArithmetic
from fixprop.nn.mlp import MLP


def layered() -> Datapath:
    """A datapath with momentum and overrides in layers 0 and 2 (not 1): fixed, unsigned, full-width
    and state casts, each with its own modes."""
    base = replace(Datapath.seed(16, 10), momentum=FixedConstant(0.75, QFormat(8, 8, False)), name="layered")
    return replace(base, layers={
        0: {"weight": RoleCast.of("s12.10", "RND", "WRAP"), "acc": RoleCast(None, 6, True, "TRN", "SAT"),
            "act": RoleCast.of("u10.8", "RND_INF", "SAT"), "momentum": RoleCast.of("s14.12", "TRN", "SAT_SYM")},
        2: {"pre": RoleCast.of("s10.5", "RND_ZERO", "SAT"), "update": RoleCast(20, None, True, "RND_CONV", "SAT"),
            "prop_err": RoleCast.of("s11.7", "STOCH", "SAT_ZERO"), "bias": RoleCast.of("s9.7", "RND", "SAT")},
    })


GOOD = Datapath.uniform(16, 8).to_toml()


def test_layer_roles_are_every_role_but_the_data():
    """LAYER_ROLES: all roles except input and target, in datapath order, then the optional roles."""
    from fixprop.datapath import OPTIONAL_ROLES

    assert LAYER_ROLES == tuple(r for r in ROLES if r not in ("input", "target")) + OPTIONAL_ROLES
    assert len(LAYER_ROLES) == len(ROLES) - 2 + len(OPTIONAL_ROLES)


def test_toml_round_trip_keeps_layer_overrides(tmp_path):
    """to_toml -> from_toml (and save -> load) gives an equal Datapath, overrides included; the text
    has one [layers.N.role] table per override and none for layer 1."""
    dp = layered()
    text = dp.to_toml()
    back = Datapath.from_toml(text)
    assert back == dp and back.layers == dp.layers
    path = tmp_path / "dp.toml"
    dp.save(path)
    assert Datapath.load(path) == dp
    tables = [line for line in text.splitlines() if line.startswith("[layers.")]
    assert sorted(tables) == sorted(f"[layers.{layer}.{role}]" for layer in (0, 2) for role in dp.layers[layer])
    assert "[layers.1." not in text
    # a layer-free datapath writes no [layers] tables and reads back with none
    assert "[layers" not in GOOD and Datapath.from_toml(GOOD).layers == {}


def test_hand_written_layer_tables():
    """Hand-written [layers.N.role] tables parse to the casts they spell out (defaults RND_CONV/SAT)."""
    text = GOOD + """
[layers.1.weight]
format = "s12.10"
rounding = "RND"
overflow = "WRAP"

[layers.1.acc]
word = "full"
frac = 6

[layers.3.act]
format = "u8.8"
"""
    dp = Datapath.from_toml(text, source="dp.toml")
    assert dp.layers == {
        1: {"weight": RoleCast(12, 10, True, Rounding.RND, Overflow.WRAP),
            "acc": RoleCast(None, 6, True, Rounding.RND_CONV, Overflow.SAT)},
        3: {"act": RoleCast(8, 8, False, Rounding.RND_CONV, Overflow.SAT)},
    }


@pytest.mark.parametrize("extra,message", [
    ('[layers.0.preact]\nformat = "s8.4"\n', r"layer 0: role\(s\) \['preact'\] cannot differ per layer"),
    ('[layers.2.input]\nformat = "s8.4"\n', r"layer 2: role\(s\) \['input'\] cannot differ per layer"),
    ('[layers.1.target]\nformat = "s8.4"\n', r"layer 1: role\(s\) \['target'\] cannot differ per layer"),
    ('[layers.a.weight]\nformat = "s8.4"\n', r"\[layers\.a\] must be \[layers\.<index>\.<role>\]"),
    ('[layers.-1.weight]\nformat = "s8.4"\n', r"\[layers\.-1\] must be \[layers\.<index>\.<role>\]"),
    ('[layers."1.5".weight]\nformat = "s8.4"\n', r"\[layers\.1\.5\] must be \[layers\.<index>\.<role>\]"),
    ('[layers."²".weight]\nformat = "s8.4"\n', r"\[layers\.²\] must be \[layers\.<index>\.<role>\]"),
    ('[layers.0.weight]\nword = "full"\nfrac = 8\n', r"layer 0: role\(s\) \['weight'\] hold state"),
    ('[layers.4.bias]\nword = 12\nfrac = "full"\n', r"layer 4: role\(s\) \['bias'\] hold state"),
    ('[layers.0.momentum]\nformat = "s8.4"\n', "layer 0: a momentum override needs a momentum coefficient"),
    ('[layers.0.acc]\nformat = "s8.4"\nwidth = 3\n', r"\[layers\.0\.acc\]: unknown key\(s\) \['width'\]"),
    ('[layers.0.acc]\nformat = "s0.4"\n', r"\[layers\.0\.acc\]: .*word must be >= 1"),
    ('[layers.0.acc]\nformat = "s8.4"\nrounding = "banker"\n', r"\[layers\.0\.acc\]: .*unknown rounding mode"),
    ("[layers]\n0 = 5\n", r"\[layers\.0\] must be \[layers\.<index>\.<role>\]"),
    ("layers = 3\n", "layers must be tables"),
])
def test_malformed_layer_tables_are_config_errors(extra, message):
    """Each malformed per-layer table is a ConfigError that starts with the file and names the layer
    (and role or key) at fault."""
    text = extra + GOOD if extra.startswith("layers =") else GOOD + "\n" + extra
    with pytest.raises(ConfigError, match=message) as info:
        Datapath.from_toml(text, source="dp.toml")
    assert str(info.value).startswith("dp.toml")


def test_two_spellings_of_one_layer_index_do_not_drop_overrides():
    """[layers.1.weight] and [layers.01.acc] both name layer 1: the file is either refused
    (ConfigError) or both overrides are kept; neither may vanish silently."""
    text = GOOD + '\n[layers.1.weight]\nformat = "s12.10"\n\n[layers.01.acc]\nformat = "s12.6"\n'
    try:
        dp = Datapath.from_toml(text, source="dp.toml")
    except ConfigError:
        return
    assert dp.layers == {1: {"weight": RoleCast.of("s12.10"), "acc": RoleCast.of("s12.6")}}


@pytest.mark.parametrize("layers,message", [
    ({"0": {"acc": RoleCast.of("s8.4")}}, "keyed by layer index"),
    ({-1: {"acc": RoleCast.of("s8.4")}}, "keyed by layer index"),
    ({True: {"acc": RoleCast.of("s8.4")}}, "keyed by layer index"),
    ({0: {"target": RoleCast.of("s8.4")}}, "cannot differ per layer"),
])
def test_constructor_checks_layer_keys_and_roles(layers, message):
    """Datapath(...) itself refuses non-integer or negative layer keys and data roles in a layer."""
    with pytest.raises(ConfigError, match=message):
        replace(Datapath.uniform(16, 8), layers=layers)


def test_check_layers_against_the_network():
    """An override of a layer the network lacks is refused when the network is built on the
    datapath (fixed_model, train); the last existing layer is accepted and its override used."""
    base = Datapath.uniform(16, 8)
    net = MLP([3, 4, 2], init="uniform_neg", seed=1)  # layers 0 and 1
    bad = replace(base, layers={2: {"acc": RoleCast.of("s8.4")}, 5: {"pre": RoleCast.of("s8.4")}}, name="bad")
    with pytest.raises(ConfigError, match=r"datapath 'bad' overrides layer\(s\) \[2, 5\] but the network has "
                                          r"2 layer\(s\), 0\.\.1"):
        net.fixed_model(bad)
    with pytest.raises(ConfigError, match=r"overrides layer\(s\) \[2, 5\]"):
        bad.check_layers(2)
    bad.check_layers(6)  # a network with layers 0..5 has both
    with pytest.raises(ConfigError, match=r"overrides layer\(s\) \[3\] but the network has 2 layer"):
        train(TrainConfig(epochs=1, hidden=(4,)), replace(base, layers={3: {"acc": RoleCast.of("s8.4")}}))

    good = replace(base, layers={1: {"acc": RoleCast.of("s10.3"), "weight": RoleCast.of("s12.11")}})
    model = net.fixed_model(good)
    assert model.params[1].weight.fmt == QFormat(12, 11) and model.params[0].weight.fmt == QFormat(16, 8)
    trace = model.forward(np.array([[0.5, -0.25, 1.0]]))
    assert trace.layers[1].acc.fmt == QFormat(10, 3) and trace.layers[0].acc.fmt == QFormat(16, 8)
    assert trace.layers[1].pre.fmt == QFormat(16, 8)


def test_with_modes_applies_to_overrides():
    """with_modes changes the rounding and/or overflow of every role and every override, keeping
    each cast's format; None keeps each cast's own mode."""
    dp = layered()
    stoch = dp.with_modes("STOCH")
    wrap = dp.with_modes(overflow="WRAP")
    both = dp.with_modes("TRN", "SAT_ZERO")
    for layer, overrides in dp.layers.items():
        for role, cast in overrides.items():
            assert (stoch.layers[layer][role].rounding, stoch.layers[layer][role].overflow) == \
                (Rounding.STOCH, cast.overflow)
            assert (wrap.layers[layer][role].rounding, wrap.layers[layer][role].overflow) == \
                (cast.rounding, Overflow.WRAP)
            assert (both.layers[layer][role].rounding, both.layers[layer][role].overflow) == \
                (Rounding.TRN, Overflow.SAT_ZERO)
            for d in (stoch, wrap, both):
                got = d.layers[layer][role]
                assert (got.word, got.frac, got.signed) == (cast.word, cast.frac, cast.signed)
    assert all(c.rounding is Rounding.STOCH for _, _, c in stoch.all_casts())
    assert set(stoch.layers) == {0, 2} and all(set(stoch.layers[k]) == set(dp.layers[k]) for k in dp.layers)


def test_cast_for_falls_back_to_the_role():
    """cast_for(role, layer): the override when that layer has one for that role, else the role's
    cast (other layers, other roles of an overridden layer, layer None, data roles)."""
    dp = layered()
    assert dp.cast_for("weight", 0) == RoleCast.of("s12.10", "RND", "WRAP")
    assert dp.cast_for("weight", 1) == dp["weight"] == RoleCast.of("s16.10", "RND_CONV", "SAT")
    assert dp.cast_for("weight", 2) == dp["weight"]
    assert dp.cast_for("pre", 0) == dp["pre"] and dp.cast_for("pre", 2) == RoleCast.of("s10.5", "RND_ZERO", "SAT")
    assert dp.cast_for("acc", None) == dp["acc"] == RoleCast(None, 10, True, "RND_CONV", "SAT")
    assert dp.cast_for("input", None) == dp["input"]
    assert dp.cast_for("act", 7) == dp["act"]
    with pytest.raises(ConfigError, match="unknown datapath role 'nope'"):
        dp.cast_for("nope", 0)


def test_fixed_arithmetic_casts_through_the_override():
    """FixedArithmetic.cast at a layer uses that layer's override: 0.3 (s12.10 raw 307) into acc at
    layer 0 (full width, frac 6, TRN) gives raw floor(307 / 16) = 19; at layer 1 (full.10) it stays 307."""
    ar = FixedArithmetic(layered())
    x = FixedArray([307], "s12.10")
    at0, at1 = ar.cast(x, "acc", layer=0), ar.cast(x, "acc", layer=1)
    assert at0.fmt.frac == 6 and at0.raw.tolist() == [19]
    assert at1.fmt.frac == 10 and at1.raw.tolist() == [307]


def test_all_casts_lists_roles_then_overrides_by_layer():
    """all_casts: every role (layer None) in order, then each override in layer order."""
    dp = layered()
    casts = dp.all_casts()
    assert [(r, layer) for r, layer, _ in casts[:len(dp.roles)]] == [(r, None) for r in dp.roles]
    assert [(r, layer) for r, layer, _ in casts[len(dp.roles):]] == \
        [(r, 0) for r in dp.layers[0]] + [(r, 2) for r in dp.layers[2]]
    assert all(c == dp.cast_for(r, layer) for r, layer, c in casts)
