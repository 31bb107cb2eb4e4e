"""Datapath presets, TOML round trips, and clear errors for malformed files."""

from __future__ import annotations

import pytest

import fixprop
from fixprop import ROLES, Datapath, FixedConstant, QFormat, RoleCast
from fixprop.fixed.modes import Overflow, Rounding


def test_uniform_gives_every_role_the_same_cast():
    dp = Datapath.uniform(16, 8, "RND", "WRAP")
    assert set(dp.roles) == set(ROLES)
    assert all(dp[r] == RoleCast(16, 8, True, Rounding.RND, Overflow.WRAP) for r in ROLES)
    assert dp.learning_rate == 2.0**-7


def test_seed_preset_is_the_notebook_arithmetic():
    dp = Datapath.seed(24, 12)
    assert dp["pre"].fmt == QFormat(24, 12) and dp["pre"].rounding is Rounding.RND_CONV
    assert dp["acc"].word is None and dp["acc"].frac == 12  # rne(W a / 2**q), not saturated
    assert dp["out_err"].word is None  # 2 (a - y) is not saturated
    assert dp.relu_grad_at_zero == 0.5
    # a full-width cast holds any value: one integer bit more when rounding drops bits
    assert dp["acc"].target_format(QFormat(49, 24)) == QFormat(38, 12)


def roundtrip(dp: Datapath) -> Datapath:
    return Datapath.from_toml(dp.to_toml())


@pytest.mark.parametrize("dp", [
    Datapath.uniform(16, 8),
    Datapath.seed(32, 16),
    Datapath(Datapath.uniform(12, 10, "TRN", "SAT_ZERO").with_role("act", RoleCast.of("u8.8", "STOCH")).roles,
             relu_grad_at_zero=1.0, lr_shift=None, lr=FixedConstant(0.01, QFormat(12, 16, False)),
             momentum=FixedConstant(0.9, QFormat(10, 10, False))),
])
def test_toml_round_trip(dp, tmp_path):
    assert roundtrip(dp) == dp
    path = tmp_path / "dp.toml"
    dp.save(path)
    assert Datapath.load(path) == dp
    assert "[roles.weight]" in path.read_text()


def test_constants_are_quantized_in_their_own_format():
    lr = FixedConstant(0.01, QFormat(12, 16, False))
    assert lr.raw == 655  # round(0.01 * 65536) = round(655.36)
    assert lr.quantized == 655 / 65536


GOOD = Datapath.uniform(16, 8).to_toml()


@pytest.mark.parametrize("text,message", [
    ("bogus = 1\n" + GOOD, r"unknown key\(s\) \['bogus'\] in top level"),
    (GOOD.replace('[roles.act]\nformat = "s16.8"', '[roles.act]\nformat = "s16.8"\nwidth = 3'),
     r"unknown key\(s\) \['width'\] in the role"),
    (GOOD.replace('format = "s16.8"', 'format = "q16"', 1), "cannot parse format 'q16'"),
    (GOOD.replace('rounding = "RND_CONV"', 'rounding = "banker"', 1), "unknown rounding mode 'banker'"),
    (GOOD.replace('overflow = "SAT"', 'overflow = "clip"', 1), "unknown overflow mode 'clip'"),
    (GOOD.replace("[roles.pre]", "[roles.preact]"), r"unknown datapath role\(s\) \['preact'\]"),
    (GOOD.replace("relu_grad_at_zero = 0.5", "relu_grad_at_zero = 0.25"), "relu_grad_at_zero must be 0, 0.5 or 1"),
    ("relu_grad_at_zero = [", "not valid TOML"),
    ("lr_shift = 3\n", r"needs a \[roles.<name>\] table"),
    (GOOD.replace('[roles.weight]\nformat = "s16.8"', '[roles.weight]\nword = "full"\nfrac = 8'),
     "need a fixed word and frac"),
    (GOOD.replace('format = "s16.8"', 'format = "s0.8"', 1), "word must be >= 1"),
])
def test_malformed_files_get_clear_errors(text, message):
    with pytest.raises(fixprop.ConfigError, match=message) as info:
        Datapath.from_toml(text, source="dp.toml")
    assert str(info.value).startswith("dp.toml")
    assert isinstance(info.value, ValueError)


def test_missing_role_and_missing_file(tmp_path):
    text = GOOD.replace('[roles.update]\nformat = "s16.8"\nrounding = "RND_CONV"\noverflow = "SAT"\n', "")
    with pytest.raises(fixprop.ConfigError, match=r"no cast for role\(s\) \['update'\]"):
        Datapath.from_toml(text)
    with pytest.raises(fixprop.ConfigError, match="cannot read datapath file"):
        Datapath.load(tmp_path / "missing.toml")


def test_constants_that_vanish_and_full_width_signedness_are_errors():
    with pytest.raises(fixprop.ConfigError, match="lr = 0.001 is 0 in its format u8.8"):
        Datapath(Datapath.uniform(16, 8).roles, lr_shift=None, lr=FixedConstant(0.001, QFormat(8, 8, False)))
    text = GOOD.replace('[roles.acc]\nformat = "s16.8"', '[roles.acc]\nword = "full"\nfrac = 8\nsigned = false')
    with pytest.raises(fixprop.ConfigError, match=r"\[roles.acc\]: signed applies to a fixed word"):
        Datapath.from_toml(text, source="dp.toml")
    with pytest.raises(fixprop.ConfigError, match=r"dp.toml \[roles.act\]: cannot parse format"):
        Datapath.from_toml(GOOD.replace('[roles.act]\nformat = "s16.8"', '[roles.act]\nformat = "s16"'),
                           source="dp.toml")
