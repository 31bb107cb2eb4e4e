"""Design-space exploration (fixprop.explore): range statistics, format proposals, training, sweeps,
the digits data set and the train/ranges/sweep commands, checked against values computed here
independently (Python ints and Fractions, hand-worked formats, hand-written training loops)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from oracle import round_fraction

from fixprop.nn.jit import numba_available
from fixprop import FixedArray, QFormat
from fixprop.cli import main
from fixprop.datapath import LAYER_ROLES, ROLES, Datapath, FixedConstant, RoleCast
from fixprop.errors import ConfigError
from fixprop.explore.datasets import Dataset, digits, load_dataset
from fixprop.explore.ranges import (
    RangeCollector,
    RoleStats,
    collect_training,
    format_table,
    integer_bits,
    merged,
    observe,
    propose_datapath,
)
from fixprop.explore.sweep import SweepSpec, comparable, grid, rescaled, run_point, run_sweep, write_outputs
from fixprop.explore.train import EVALUATION_STREAM, TrainConfig, batch_order, evaluate, train
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.nn.arithmetic import FixedArithmetic
from fixprop.nn.mlp import MLP, Model


# -- independent helpers (Python ints and Fractions only) ------------------------------------------

def pow2(n: int) -> Fraction:
    """2**n exactly, for any integer n."""
    return Fraction(2) ** n


def parse_fmt(text: str) -> tuple[int, int, bool]:
    """'s12.6' -> (12, 6, True), by hand."""
    sign, rest = text[0], text[1:]
    word, frac = rest.split(".")
    return int(word), int(frac), sign == "s"


def raw_bounds(word: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (word - 1)), 2 ** (word - 1) - 1) if signed else (0, 2**word - 1)


def value_bounds(fmt_text: str) -> tuple[Fraction, Fraction]:
    """[min, max] of a format as exact Fractions."""
    word, frac, signed = parse_fmt(fmt_text)
    lo, hi = raw_bounds(word, signed)
    return lo * pow2(-frac), hi * pow2(-frac)


def rnd_conv_sat(v: Fraction, fmt_text: str) -> int:
    """The raw integer of v in a format under round-half-to-even and saturation."""
    word, frac, signed = parse_fmt(fmt_text)
    lo, hi = raw_bounds(word, signed)
    r = round(v * pow2(frac))  # Fraction.__round__ rounds half to even
    return min(max(r, lo), hi)


def floor_log2(v: Fraction) -> int:
    """floor(log2 |v|) of a nonzero Fraction, from bit lengths and one exact comparison."""
    v = abs(v)
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if pow2(e) > v:
        e -= 1
    assert pow2(e) <= v < pow2(e + 1)
    return e


def expected_stats(values: list[Fraction], results: list[int], fmt_text: str, rounding: str | None = None,
                   overflow: str = "SAT") -> dict:
    """count, nonzero, min, max, saturated, underflowed and the log2 histogram, counted here.
    Saturated: without a rounding mode (observe() told no cast, or STOCH), the exact values outside
    [min, max]; with one, the values whose rounded raw integer (oracle.round_fraction) lies outside
    the raw range the overflow mode keeps (SAT_SYM: [-max, max])."""
    lo, hi = value_bounds(fmt_text)
    if rounding is not None:
        word, frac, signed = parse_fmt(fmt_text)
        raw_lo, raw_hi = raw_bounds(word, signed)
        if overflow == "SAT_SYM" and signed:
            raw_lo = -raw_hi
        rounded = [round_fraction(v * pow2(frac), rounding) for v in values]
        saturated = sum(1 for r in rounded if r < raw_lo or r > raw_hi)
    else:
        saturated = sum(1 for v in values if v < lo or v > hi)
    hist: dict[int, int] = {}
    for v in values:
        if v != 0:
            e = floor_log2(v)
            hist[e] = hist.get(e, 0) + 1
    return {
        "count": len(values),
        "nonzero": sum(1 for v in values if v != 0),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "saturated": saturated,
        "underflowed": sum(1 for v, r in zip(values, results) if v != 0 and r == 0),
        "log2_histogram": hist,
    }


def as_dict(s: RoleStats) -> dict:
    return {"count": s.count, "nonzero": s.nonzero, "min": s.min, "max": s.max, "saturated": s.saturated,
            "underflowed": s.underflowed, "log2_histogram": dict(s.log2_histogram)}


def add(a: dict, b: dict) -> dict:
    """Statistics of two sets of observations together, combined by hand."""
    hist = dict(a["log2_histogram"])
    for e, n in b["log2_histogram"].items():
        hist[e] = hist.get(e, 0) + n
    return {"count": a["count"] + b["count"], "nonzero": a["nonzero"] + b["nonzero"],
            "min": min(a["min"], b["min"]), "max": max(a["max"], b["max"]),
            "saturated": a["saturated"] + b["saturated"], "underflowed": a["underflowed"] + b["underflowed"],
            "log2_histogram": hist}


# -- a. range statistics -----------------------------------------------------------------------------

FIXED_CASES = [
    # s12.6 into s8.4 ([-8, 7.9375], LSB 1/16): 508 = 7.9375 (max), 509 one source LSB beyond,
    # 512 = 8 (one target LSB beyond), -512 = -8 (min), -513, -516 = -8.0625 beyond; 1 (1/64 =
    # 0.25 LSB) and -2 (-1/32 = -0.5 LSB, tie to even) round to zero; 3 (0.75 LSB) does not.
    ("s12.6", [0, 1, -2, 3, 508, 509, 512, -512, -513, -516, 2047, -2048, -100, 40], "s8.4"),
    # int64 extremes in an s64 source. Into s62.8 the max is (2**61 - 1) * 4 = 2**63 - 4 at frac 10
    # and the min -2**63: 2**63 - 4 and -2**63 fit exactly, 2**63 - 3 and 2**63 - 1 are beyond.
    ("s64.10", [2**63 - 1, -(2**63), 2**63 - 4, 2**63 - 3, 2**62, -(2**62), 2**62 - 1, -(2**62) + 1,
                1, -1, 0, 5, -(2**63) + 1], "s62.8"),
    ("s64.10", [2**63 - 1, -(2**63), 2**62, -(2**62), 2**62 - 1, 1, -1, 0, 5, 512, -513, 2**25], "s16.0"),
    # a target with more fraction bits: raw bounds floor((2**63-1)/4) and -2**61 at frac 10
    ("s64.10", [2**63 - 1, -(2**63), 2**61 - 1, 2**61, -(2**61), -(2**61) - 1, 3, -3], "s64.12"),
    ("s64.10", [2**63 - 1, -(2**63), 2**49, 2**49 - 1, 2**49 + 1, 1, 0], "s40.30"),
    ("s64.10", [2**63 - 1, -(2**63), -1, 0, 255 * 256, 255 * 256 + 1, 127, 128, 384], "u8.2"),
    # object storage (word > 64): Python ints beyond int64
    ("s80.20", [2**79 - 1, -(2**79), 2**70 + 3, -(2**65), 3, -1, 0, 2**20, 2**19, -(2**19), 2**15,
                3 * 2**15], "s16.4"),
    ("s80.20", [2**79 - 1, -(2**79), 2**70 + 3, -(2**65), 3, -1, 0, 2**61, 2**61 - 1], "s72.30"),
    ("s80.20", [2**79 - 1, -(2**79), 2**70 + 3, -(2**65), 3, 0, 2**90 // 2**20], "u70.0"),
    # a negative source fraction (LSB 4) and an unsigned source
    ("s8.-2", [127, -128, 1, -1, 0, 31, 32, -32, -33], "s8.0"),
    ("u10.12", [0, 1, 2, 3, 1023, 512, 511, 256, 255], "s6.8"),
]


@pytest.mark.parametrize("src,raws,target", FIXED_CASES, ids=[f"{c[0]}->{c[2]}-{i}" for i, c in enumerate(FIXED_CASES)])
def test_observe_fixed_source_against_exact_counts(src, raws, target):
    """observe() on a hand-made FixedArray and its RND_CONV/SAT cast: every statistic equals the one
    counted here with Fractions (saturation against the target's exact [min, max], underflow from the
    hand-rounded result, histogram from bit lengths)."""
    exact = FixedArray(raws, src)
    word, frac, _ = parse_fmt(src)
    if word > 64 or (src.startswith("u") and word > 63):
        assert exact.raw.dtype == object  # the object-storage path is exercised
    values = [Fraction(r) * pow2(-frac) for r in raws]
    expected_results = [rnd_conv_sat(v, target) for v in values]
    result = exact.cast(target, "RND_CONV", "SAT")
    assert [int(r) for r in result.raw.ravel()] == expected_results
    stats = observe("acc", 3, exact, result.raw, QFormat.parse(target))
    assert (stats.role, stats.layer, stats.formats) == ("acc", 3, {target})
    assert as_dict(stats) == expected_stats(values, expected_results, target)


def test_observe_fixed_case_sanity():
    """The hand cases above really contain saturated, exactly-at-bound and underflowing values."""
    for src, raws, target in FIXED_CASES[:2]:
        word, frac, _ = parse_fmt(src)
        values = [Fraction(r) * pow2(-frac) for r in raws]
        lo, hi = value_bounds(target)
        assert hi in values and lo in values and any(v > hi for v in values)
        assert any(v < lo for v in values) or lo * pow2(frac) == -(2**63)  # nothing in int64 lies below -2**63
    e = expected_stats([Fraction(r, 64) for r in FIXED_CASES[0][1]],
                       [rnd_conv_sat(Fraction(r, 64), "s8.4") for r in FIXED_CASES[0][1]], "s8.4")
    assert e["underflowed"] == 2 and e["saturated"] == 6  # 1, -2; 509, 512, -513, -516, 2047, -2048


FLOAT_CASES = [
    # into s8.4 ([-8, 7.9375]): max, one LSB beyond, min, one LSB below, 0.03 (0.48 LSB -> 0),
    # -1/32 (-0.5 LSB, tie to even -> 0), tiny and subnormal values (-> 0), far beyond, zeros
    ([0.0, 7.9375, 8.0, -8.0, -8.0625, 0.03, -0.03125, 0.09375, 1e-300, 5e-324, -5e-324, 1e300, -1e300, -0.0,
      3.0, -2.5, 0.1], "s8.4"),
    # a word > 53: exact comparison. max = 2**55 - 1/16, min = -2**55
    ([2.0**55, -(2.0**55), 2.0**55 - 4, -(2.0**55) - 8, 1.0, -(2.0**55) + 8, 0.0], "s60.4"),
    # unsigned target: negatives saturate
    ([-0.5, 0.0, 1.0, 255 / 256, 1.0 / 512, 3.0 / 512, 2.0, -1e-9], "u8.8"),
]


@pytest.mark.parametrize("xs,target", FLOAT_CASES, ids=[c[1] for c in FLOAT_CASES])
def test_observe_float_data_against_exact_counts(xs, target):
    """observe() on float64 data (the input/target casts): the same statistics, counted exactly from
    Fraction(x) (float64 values are dyadic rationals), including subnormals and words > 53 bits."""
    x = np.array(xs, dtype=np.float64)
    values = [Fraction(v) for v in xs]
    expected_results = [rnd_conv_sat(v, target) for v in values]
    result = FixedArray.from_float(x, target, "RND_CONV", "SAT")
    assert [int(r) for r in result.raw] == expected_results
    stats = observe("input", None, x, result.raw, QFormat.parse(target))
    assert as_dict(stats) == expected_stats(values, expected_results, target)


@pytest.mark.parametrize("target", ["s16.40", "s60.40"])
def test_observe_float_data_far_beyond_a_fine_format(target):
    """Float data far outside a format with many fraction bits (1e300 * 2**40 exceeds float64): the
    statistics are still exact, and neither a numpy RuntimeWarning (the project treats those as bugs)
    nor an exception escapes; the cast itself handles these values."""
    xs = [1e300, -1e300, 5e-324, 0.0, 1.0]
    x = np.array(xs)
    result = FixedArray.from_float(x, target, "RND_CONV", "SAT")
    values = [Fraction(v) for v in xs]
    assert [int(r) for r in result.raw] == [rnd_conv_sat(v, target) for v in values]
    stats = observe("input", None, x, result.raw, QFormat.parse(target))
    assert as_dict(stats) == expected_stats(values, [int(r) for r in result.raw], target)


def test_collector_as_observer_of_fixed_arithmetic():
    """A RangeCollector passed to FixedArithmetic records each (role, layer) with the format the
    datapath uses there (a layer override included), merges repeated casts, and by_role / merged
    combine the counts as computed by hand without changing the collectors they read."""
    dp = replace(Datapath.uniform(8, 4), layers={1: {"acc": RoleCast.of("s8.6")}})
    collector = RangeCollector()
    ar = FixedArithmetic(dp, np.random.default_rng(0), observer=collector)
    raws_a = FIXED_CASES[0][1]
    raws_b = [-1, 7, 16, -2047, 0, 0, 1000]
    a, b = FixedArray(raws_a, "s12.6"), FixedArray(raws_b, "s12.6")
    va, vb = [Fraction(r, 64) for r in raws_a], [Fraction(r, 64) for r in raws_b]
    out_a0 = ar.cast(a, "acc", layer=0)
    out_b0 = ar.cast(b, "acc", layer=0)
    out_a1 = ar.cast(a, "acc", layer=1)
    xs = FLOAT_CASES[0][0]
    out_x = ar.data(np.array(xs), "input")
    for out, vals, fmt in ((out_a0, va, "s8.4"), (out_b0, vb, "s8.4"), (out_a1, va, "s8.6"),
                           (out_x, [Fraction(v) for v in xs], "s8.4")):
        assert str(out.fmt) == fmt and [int(r) for r in out.raw] == [rnd_conv_sat(v, fmt) for v in vals]

    ea0 = expected_stats(va, [rnd_conv_sat(v, "s8.4") for v in va], "s8.4", "RND_CONV")
    eb0 = expected_stats(vb, [rnd_conv_sat(v, "s8.4") for v in vb], "s8.4", "RND_CONV")
    ea1 = expected_stats(va, [rnd_conv_sat(v, "s8.6") for v in va], "s8.6", "RND_CONV")
    ex = expected_stats([Fraction(v) for v in xs], [rnd_conv_sat(Fraction(v), "s8.4") for v in xs], "s8.4",
                        "RND_CONV")
    assert set(collector.stats) == {("acc", 0), ("acc", 1), ("input", None)}
    assert as_dict(collector.stats[("acc", 0)]) == add(ea0, eb0)
    assert as_dict(collector.stats[("acc", 1)]) == ea1
    assert as_dict(collector.stats[("input", None)]) == ex
    assert collector.stats[("acc", 1)].formats == {"s8.6"}
    # s8.6 keeps every bit of s12.6: nothing underflows there; at s8.4, 1 and -2 (a) and -1 (b) do
    assert ea1["underflowed"] == 0 and ea0["underflowed"] == 2 and eb0["underflowed"] == 1
    s = collector.stats[("acc", 0)]
    # rounded to s8.4 (raw = value * 16, ties to even): 509 -> 127.25 -> 127 and -513 -> -128.25 -> -128
    # stay in range although their exact values are beyond it; 512, -516, 2047, -2048 (a) and
    # -2047, 1000 (b) round outside [-128, 127]
    assert s.saturated_percent == pytest.approx(100 * (4 + 2) / 21)
    assert s.underflowed_percent == pytest.approx(100 * 3 / (13 + 5))  # of the nonzero values

    assert [(t.role, t.layer) for t in collector.table()] == [("input", None), ("acc", 0), ("acc", 1)]
    acc = collector.by_role()["acc"]
    assert as_dict(acc) == add(add(ea0, eb0), ea1) and acc.formats == {"s8.4", "s8.6"}

    before = {k: as_dict(v) for k, v in collector.stats.items()}
    twice = merged([collector, collector])
    assert {k: as_dict(v) for k, v in collector.stats.items()} == before  # inputs untouched
    assert as_dict(twice.stats[("acc", 1)]) == add(ea1, ea1)
    assert as_dict(twice.stats[("input", None)]) == add(ex, ex)

    table = format_table(collector).splitlines()
    assert table[0].split()[:4] == ["role", "layer", "format", "count"]
    assert table[3].split()[:4] == ["acc", "1", "s8.6", str(len(raws_a))]


def test_collector_with_stochastic_rounding():
    """Under STOCH the counts that do not depend on the draw (count, min, max, saturated,
    histogram) match the exact ones, and underflows are the nonzero values the cast made zero."""
    dp = Datapath.uniform(8, 4, "STOCH")
    collector = RangeCollector()
    ar = FixedArithmetic(dp, np.random.default_rng(5), observer=collector)
    raws = [1, -1, 2, -2, 3, -3, 0, 509, -516, 40] * 20
    out = ar.cast(FixedArray(raws, "s12.6"), "weight_grad", layer=2)
    values = [Fraction(r, 64) for r in raws]
    results = [int(r) for r in out.raw]
    s = collector.stats[("weight_grad", 2)]
    assert as_dict(s) == expected_stats(values, results, "s8.4")
    assert 0 < s.underflowed < sum(1 for r in raws if abs(r) <= 3)  # some, not all, small values vanished


# -- b. integer bits and proposals ----------------------------------------------------------------------

@pytest.mark.parametrize("lo,hi,word,signed,bits", [
    (Fraction(-3, 4), Fraction(3, 4), 8, True, 1),    # s8.7 = [-1, 1 - 2**-7] holds +-0.75
    (Fraction(0), Fraction(1), 8, True, 2),           # s8.7's max is 1 - 2**-7 < 1: s8.6 = [-2, 1.98]
    (Fraction(-1), Fraction(1, 2), 8, True, 1),       # s8.7's min is exactly -1
    (Fraction(-3), Fraction(3), 8, True, 3),          # s8.5 = [-4, 3.97]; s8.6 = [-2, 1.98] does not
    (Fraction(0), Fraction(0.01), 8, True, -5),       # s8.13 max 127/8192 = 0.0155 >= 0.01; s8.14 max 0.0078
    (Fraction(0), Fraction(0), 8, True, 1),           # all zero
    (Fraction(0), Fraction(0), 8, False, 0),
    (Fraction(-2), Fraction(0), 8, True, 2),          # -2 is s8.6's min
    (Fraction(-129, 128), Fraction(0), 8, True, 2),   # one LSB of s8.7 below -1
    (Fraction(-1, 2), Fraction(1, 2), 2, True, 1),    # s2.1 = {-1, -0.5, 0, 0.5}
    (Fraction(0), Fraction(1000), 8, True, 11),       # s8.-3: 127 * 8 = 1016 >= 1000; s8.-2: 508
    (Fraction(0), Fraction(1), 8, False, 1),          # u8.7 max 255/128 >= 1; u8.8 max 255/256 < 1
    (Fraction(0), Fraction(255, 256), 8, False, 0),   # exactly u8.8's max
    (Fraction(1, 4), Fraction(1, 2), 8, False, 0),    # u8.9 max 255/512 < 1/2
    (Fraction(0), Fraction(1, 1024), 8, False, -9),   # u8.17 max 255/2**17 >= 2**-10; u8.18 max < 2**-10
    (Fraction(0), Fraction(3, 2), 16, False, 1),      # u16.15 max 2 - 2**-15
    (Fraction(-5), Fraction(-1, 8), 16, True, 4),     # s16.12 = [-8, 7.99]
])
def test_integer_bits_hand_worked(lo, hi, word, signed, bits):
    """The fewest integer bits holding [lo, hi], worked out by hand (comments) per case."""
    assert integer_bits(lo, hi, word, signed) == bits


def brute_integer_bits(lo: Fraction, hi: Fraction, word: int, signed: bool) -> int:
    """Smallest I in a wide window whose format (word, word - I) holds [lo, hi], by exhaustion."""
    for bits in range(-80, 120):
        rlo, rhi = raw_bounds(word, signed)
        scale = pow2(word - bits)
        if rlo <= lo * scale and hi * scale <= rhi:
            return bits
    raise AssertionError("window too small")


def test_integer_bits_against_exhaustive_search():
    """Random rational ranges (signed and unsigned, words 2..24) against an exhaustive search."""
    rng = np.random.default_rng(11)
    for _ in range(400):
        word = int(rng.integers(2, 25))
        signed = bool(rng.integers(0, 2))
        a = Fraction(int(rng.integers(-(2**20), 2**20)), int(rng.integers(1, 2**20))) * pow2(int(rng.integers(-30, 30)))
        b = Fraction(int(rng.integers(-(2**20), 2**20)), int(rng.integers(1, 2**20))) * pow2(int(rng.integers(-30, 30)))
        if not signed:
            a, b = abs(a), abs(b)
        lo, hi = min(a, b), max(a, b)
        assert integer_bits(lo, hi, word, signed) == brute_integer_bits(lo, hi, word, signed), (lo, hi, word, signed)


def test_integer_bits_of_exact_ranges_beyond_float64():
    """Exact Fraction ranges whose magnitude is beyond float64 (2**-1100, 2**1100): the result is
    still exact (a value 2**k needs k + 2 signed integer bits, its format's max being 2**(I-1) - LSB)."""
    assert integer_bits(Fraction(0), pow2(-1100), 8) == -1098
    assert integer_bits(Fraction(0), pow2(1100), 8) == 1102
    assert integer_bits(-pow2(1100), Fraction(0), 8) == 1101


def test_integer_bits_bad_ranges():
    """An empty range and a negative minimum for an unsigned format are ConfigErrors with messages."""
    with pytest.raises(ConfigError, match="empty range"):
        integer_bits(Fraction(1), Fraction(0), 8)
    with pytest.raises(ConfigError, match="unsigned format cannot hold the negative minimum"):
        integer_bits(Fraction(-1, 8), Fraction(1), 8, signed=False)


def stat(role: str, layer: int | None, lo, hi) -> RoleStats:
    """Hand-made statistics: two values, lo and hi."""
    s = RoleStats(role, layer, {"s16.8"}, count=2, nonzero=int(lo != 0) + int(hi != 0),
                  min=Fraction(lo), max=Fraction(hi))
    return s


def proposal_base() -> Datapath:
    """uniform s16.8, lr 2**-5, relu'(0) = 1, with distinct modes per role, an unsigned act, a
    full-width out_err and a layer-1 weight override that rounds differently."""
    base = replace(Datapath.uniform(16, 8, lr_shift=5), relu_grad_at_zero=1.0)
    base = base.with_role("acc", RoleCast.of("s16.8", "TRN", "WRAP"))
    base = base.with_role("act", RoleCast.of("u16.8", "RND", "SAT"))
    base = base.with_role("update", RoleCast.of("s16.12", "RND_INF", "SAT_SYM"))
    base = base.with_role("out_err", RoleCast(None, 8, True, "RND_CONV", "SAT"))
    return replace(base, layers={1: {"weight": RoleCast.of("s16.8", "RND", "SAT")}})


def proposal_collector() -> RangeCollector:
    c = RangeCollector()
    for s in (stat("input", None, -1, 1), stat("weight", 0, Fraction(-3, 4), Fraction(1, 2)),
              stat("weight", 1, -3, 2), stat("acc", 0, 0, 1), stat("acc", 1, -1, Fraction(1, 2)),
              stat("act", 0, 0, Fraction(7, 2)), stat("act", 1, 0, Fraction(1, 4)),
              stat("out_err", 1, Fraction(-1, 100), Fraction(1, 100))):
        c.stats[(s.role, s.layer)] = s
    c.stats[("bias_grad", 0)] = RoleStats("bias_grad", 0)  # seen, but no values: as never cast
    return c


def C(fmt: str, rounding: str = "RND_CONV", overflow: str = "SAT") -> RoleCast:
    return RoleCast.of(fmt, rounding, overflow)


def test_propose_datapath_margin_one():
    """Word 8, margin 1, per layer. Integer bits by hand (+1 margin):
    input [-1, 1] -> 2 -> s8.5; weight over layers [-3, 2] -> 3 -> s8.4, layer 0 [-0.75, 0.5] -> 1 -> s8.6
    override, layer 1 needs the role's bits but base rounds it RND there -> s8.4 RND override;
    acc [-1, 1] -> 2 -> s8.5 TRN WRAP, layer 0 [0, 1] the same (no override), layer 1 [-1, 0.5] -> 1 ->
    s8.6 TRN WRAP; act unsigned [0, 3.5] -> 2 (u8.6 max 3.98) -> u8.5, layer 1 [0, 0.25] -> -1 (u8.9) ->
    u8.8; out_err (full width) [-0.01, 0.01] -> -5 -> s8.12; never observed roles keep their integer
    bits at word 8: s16.8 -> s8.0, update s16.12 -> s8.4 (bias_grad had only an empty record)."""
    base = proposal_base()
    proposed = propose_datapath(proposal_collector(), base, 8, margin=1)
    roles = {r: C("s8.0") for r in ROLES}
    roles.update(input=C("s8.5"), weight=C("s8.4"), acc=C("s8.5", "TRN", "WRAP"), act=C("u8.5", "RND"),
                 out_err=C("s8.12"), update=C("s8.4", "RND_INF", "SAT_SYM"))
    layers = {0: {"weight": C("s8.6")},
              1: {"weight": C("s8.4", "RND"), "acc": C("s8.6", "TRN", "WRAP"), "act": C("u8.8", "RND")}}
    assert proposed.roles == roles
    assert proposed.layers == layers
    assert (proposed.lr_shift, proposed.relu_grad_at_zero, proposed.momentum) == (5, 1.0, None)
    assert proposed == replace(base, roles=roles, layers=layers)
    # the proposal survives its own TOML
    assert Datapath.from_toml(proposed.to_toml()) == proposed


def test_propose_datapath_margin_words_and_per_role():
    """margin 0 gives one more fraction bit to every observed role (not to the unobserved ones);
    words overrides change one role's word (acc at 12: [-1, 1] -> 2 + 1 -> s12.9, layer 1 -> s12.10;
    bias unobserved s16.8 -> s10.2); per_layer=False gives no overrides."""
    base, c = proposal_base(), proposal_collector()
    p0 = propose_datapath(c, base, 8, margin=0)
    assert p0["input"] == C("s8.6") and p0["weight"] == C("s8.5") and p0["act"] == C("u8.6", "RND")
    assert p0["acc"] == C("s8.6", "TRN", "WRAP") and p0["out_err"] == C("s8.13")
    assert p0["bias"] == C("s8.0") and p0["update"] == C("s8.4", "RND_INF", "SAT_SYM")
    assert p0.layers == {0: {"weight": C("s8.7")},
                         1: {"weight": C("s8.5", "RND"), "acc": C("s8.7", "TRN", "WRAP"), "act": C("u8.9", "RND")}}

    pw = propose_datapath(c, base, 8, margin=1, words={"acc": 12, "bias": 10})
    assert pw["acc"] == C("s12.9", "TRN", "WRAP") and pw.layers[1]["acc"] == C("s12.10", "TRN", "WRAP")
    assert pw["bias"] == C("s10.2") and pw["weight"] == C("s8.4")

    pr = propose_datapath(c, base, 8, margin=2, per_layer=False)
    assert pr.layers == {}
    assert pr["weight"] == C("s8.3") and pr["act"] == C("u8.4", "RND") and pr["input"] == C("s8.4")


def test_propose_datapath_from_observed_arrays():
    """Ranges recorded through observe() feed the proposal: acc values in [-2.5, 0.75] (s12.6 raws
    -160..48) need 3 integer bits (s16.13 min -4) -> with margin 1, s16.12."""
    c = RangeCollector()
    base = Datapath.uniform(12, 6)
    ar = FixedArithmetic(base, observer=c)
    ar.cast(FixedArray([-160, 48, 0, 7], "s12.6"), "acc", layer=0)
    p = propose_datapath(c, base, 16, margin=1)
    assert p["acc"] == C("s16.12") and p.layers == {}
    assert p["weight"] == C("s16.10")  # unobserved: 6 integer bits kept


@pytest.mark.parametrize("kwargs,message", [
    ({"word": 1}, "word length for word must be an integer >= 2"),
    ({"word": 8.0}, "word length for word must be an integer >= 2"),
    ({"word": 8, "words": {"nope": 8}}, r"unknown role\(s\) \['nope'\]"),
    ({"word": 8, "words": {"acc": 1}}, "word length for acc must be an integer >= 2"),
    ({"word": 8, "margin": -1}, "margin must be an integer >= 0"),
    ({"word": 8, "margin": True}, "margin must be an integer >= 0"),
])
def test_propose_datapath_bad_inputs(kwargs, message):
    """Bad word lengths, unknown roles and bad margins are ConfigErrors naming the problem."""
    with pytest.raises(ConfigError, match=message):
        propose_datapath(proposal_collector(), proposal_base(), **kwargs)


def test_propose_datapath_unsigned_role_with_negative_values():
    """An unsigned role that saw a negative value cannot be proposed: ConfigError."""
    c = proposal_collector()
    c.stats[("act", 2)] = stat("act", 2, Fraction(-1, 4), 1)
    with pytest.raises(ConfigError, match="unsigned format cannot hold the negative minimum"):
        propose_datapath(c, proposal_base(), 8)


# -- c. sweeps: in-process, process pool and Dask agree -----------------------------------------------

TINY_TRAIN = {"dataset": "ik", "epochs": 1, "hidden": [4]}


def sweep_spec() -> SweepSpec:
    return SweepSpec(words=(10, 12), fracs=(6, 8), roundings=("RND_CONV", "STOCH"),
                     measures=("gradient", "train"), seeds=(0, 1), train_config=TINY_TRAIN)


@pytest.fixture(scope="module")
def three_sweeps():
    """The same 8-point sweep in this process, on 2 local processes and on a Dask LocalCluster."""
    from distributed import Client, LocalCluster

    points = grid(sweep_spec())
    inproc = run_sweep(points, workers=1)
    pool = run_sweep(points, workers=2)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        seen: list[int] = []
        dask = run_sweep(points, dask=client, on_result=lambda r: seen.append(r["index"]))
    return points, inproc, pool, dask, seen


def canonical(results: list[dict]) -> str:
    """The comparable results as JSON text (NaN spelled NaN), so equal numbers compare equal."""
    return json.dumps(comparable(results), sort_keys=True)


def test_sweep_runs_are_real(three_sweeps):
    """The sweep ran every point (8 = 2 words x 2 fracs x 2 roundings), all ok, with both measures;
    the rounding axis changes the measurements."""
    points, inproc, _, dask, seen = three_sweeps
    assert len(points) == 8 and [r["index"] for r in inproc] == list(range(8))
    assert sorted(seen) == list(range(8))
    assert all(r["status"] == "ok" and "gradient" in r and "train" in r for r in inproc)
    assert all(len(r["train"]["fixed_test_loss_curve"]) == 2 for r in inproc)
    assert all(len(r["gradient"]["mean_relative_error"]) == 2 for r in inproc)
    by = {(r["word"], r["frac"], r["rounding"]): r for r in inproc}
    assert by[(12, 8, "RND_CONV")]["train"] != by[(12, 8, "STOCH")]["train"]


def test_sweep_backends_compute_the_same_numbers(three_sweeps):
    """In-process, process pool and Dask give the same results, number for number (NaN = NaN)."""
    _, inproc, pool, dask, _ = three_sweeps
    assert canonical(pool) == canonical(inproc)
    assert canonical(dask) == canonical(inproc)


def test_sweep_comparable_results_are_equal_across_backends(three_sweeps):
    """comparable() is 'what must agree between two runs of one sweep': the three runs' comparable
    results compare equal with ==."""
    _, inproc, pool, dask, _ = three_sweeps
    assert comparable(dask) == comparable(inproc)
    assert comparable(pool) == comparable(inproc)


def test_sweep_failing_point_is_recorded_and_the_rest_finish(three_sweeps):
    """A point with broken datapath TOML is recorded as failed with its error text, in process and on
    Dask; the other points finish with the same results as in the full sweep; sweep.csv shows it."""
    from distributed import Client, LocalCluster

    points, inproc, _, _, _ = three_sweeps
    broken = [dict(p) for p in points[:3]]
    broken[1]["datapath_toml"] = "relu_grad_at_zero = ["
    local = run_sweep(broken, workers=1)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        remote = run_sweep(broken, dask=client)
    for results in (local, remote):
        assert [r["status"] for r in results] == ["ok", "failed", "ok"]
        assert results[1]["error"].startswith("ConfigError: sweep point 1: not valid TOML")
        assert "Traceback" in results[1]["traceback"]
        assert canonical([results[0], results[2]]) == canonical([inproc[0], inproc[2]])


def test_write_outputs_csv_and_json(tmp_path):
    """sweep.csv has one row per result with the measured cells (empty where not measured) and the
    error of a failed point; sweep.json holds the spec and the results with non-finite numbers as null."""
    spec = SweepSpec(words=(8,), fracs=(4,), seeds=(0,))
    results = [
        {"index": 0, "template": "uniform", "word": 8, "frac": 4, "rounding": "RND_CONV", "status": "ok",
         "seconds": 1.25, "gradient": {"max_mean_relative_error": 0.5, "mean_mean_relative_error": 0.25,
                                       "min_sqnr_db": 12.0},
         "train": {"loss_ratio": math.inf, "fixed_test_loss": 2.0, "float_test_loss": 0.0,
                   "fixed_test_accuracy_curve": [math.nan]}},
        {"index": 1, "template": "x.toml", "word": 8, "frac": None, "rounding": "STOCH", "status": "failed",
         "error": "ConfigError: boom", "seconds": math.nan},
    ]
    written = write_outputs(results, spec, tmp_path / "out")
    assert [p.name for p in written] == ["sweep.csv", "sweep.json"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "sweep.csv").read_text())))
    assert len(rows) == 2
    assert rows[0]["grad_max_mean_rel_err"] == "0.5" and rows[0]["grad_min_sqnr_db"] == "12.0"
    assert rows[0]["train_fixed_test_loss"] == "2.0" and rows[0]["seconds"] == "1.250"
    assert rows[0]["train_fixed_test_accuracy"] == ""
    assert rows[1]["frac"] == "" and rows[1]["status"] == "failed" and rows[1]["error"] == "ConfigError: boom"
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert doc["spec"]["words"] == [8] and doc["results"][0]["train"]["loss_ratio"] is None
    assert doc["results"][0]["train"]["fixed_test_accuracy_curve"] == [None]


def test_grid_points_and_rescaled_templates(tmp_path):
    """grid() order (template, rounding, word, frac), frac >= word kept (s8.8 is a format: every bit
    fraction), file templates at each word with their integer bits kept (layer overrides too),
    lr_shift applied to every point."""
    template = replace(Datapath.uniform(16, 8).with_role("acc", RoleCast.of("s20.4", "TRN", "WRAP"))
                       .with_role("out_err", RoleCast(None, 8)),
                       layers={0: {"weight": RoleCast.of("s16.14")}})
    path = tmp_path / "t.toml"
    template.save(path)
    spec = SweepSpec(words=(8, 12), fracs=(6, 8), roundings=("RND_CONV", "STOCH"),
                     templates=("uniform", "seed", str(path)), seeds=(0,), lr_shift=4)
    points = grid(spec)
    coords = [(p["template"], p["rounding"], p["word"], p["frac"]) for p in points]
    expected = []
    for t in ("uniform", "seed"):
        for r in ("RND_CONV", "STOCH"):
            expected += [(t, r, 8, 6), (t, r, 8, 8), (t, r, 12, 6), (t, r, 12, 8)]
    for r in ("RND_CONV", "STOCH"):
        expected += [(str(path), r, 8, None), (str(path), r, 12, None)]
    assert coords == expected and [p["index"] for p in points] == list(range(len(expected)))
    for p in points:
        dp = Datapath.from_toml(p["datapath_toml"])
        assert dp.lr_shift == 4
        assert all(c.rounding is Rounding.parse(p["rounding"]) for _, _, c in dp.all_casts())
        w, f = p["word"], p["frac"]
        if p["template"] == "uniform":
            assert all(c.fmt == QFormat(w, f) for c in dp.roles.values())
        elif p["template"] == "seed":
            assert dp["acc"].word is None and dp["acc"].frac == f and dp["pre"].fmt == QFormat(w, f)
        else:
            # integer bits kept: s16.8 -> 8 bits; s20.4 -> 16; s16.14 -> 2
            assert dp["weight"].fmt == QFormat(w, w - 8) and dp["acc"].fmt == QFormat(w, w - 16)
            assert dp["acc"].overflow is Overflow.WRAP
            assert dp["out_err"].word is None and dp["out_err"].frac == 8
            assert dp.layers[0]["weight"].fmt == QFormat(w, w - 2)
    r = rescaled(template, 10)
    assert r["acc"] == C("s10.-6", "TRN", "WRAP") and r.layers == {0: {"weight": C("s10.8")}}


def test_run_point_records_failures_without_raising():
    """run_point never raises: an unknown train config key is recorded as a failed point."""
    p = grid(SweepSpec(words=(8,), fracs=(4,), measures=("train",), seeds=(0,), train_config={"nope": 1}))[0]
    r = run_point(p)
    assert r["status"] == "failed" and "TypeError" in r["error"] and "nope" in r["error"]
    assert "train" not in r and r["seconds"] >= 0


@pytest.mark.parametrize("kwargs,message", [
    ({"measures": ("speed",)}, "unknown measure"),
    ({"measures": ()}, "unknown measure"),
    ({"words": ()}, "at least one value in words"),
    ({"roundings": ("banker",)}, "unknown rounding mode"),
    ({"templates": ("fancy",)}, "unknown template 'fancy'"),
])
def test_sweep_spec_validation(kwargs, message):
    """A malformed sweep spec is an error naming what is wrong."""
    with pytest.raises(Exception, match=message) as info:
        SweepSpec(**kwargs)
    assert isinstance(info.value, ValueError)


# -- d. training: determinism and the compiled path against a stepwise hand loop -------------------------

MOMENTUM_STOCH = replace(Datapath.seed(16, 10).with_modes("STOCH"), momentum=FixedConstant(0.5, QFormat(8, 8, False)))
TRAIN_DATAPATHS = {
    "uniform_rnd_conv": Datapath.uniform(12, 8),
    "uniform_stoch": Datapath.uniform(12, 8, "STOCH"),
    "seed_stoch_momentum": MOMENTUM_STOCH,
}


def sse(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sum((out - y) ** 2, axis=1)))


@pytest.mark.parametrize("name", list(TRAIN_DATAPATHS))
def test_train_is_deterministic_and_equals_a_stepwise_hand_loop(name, monkeypatch):
    """train() twice with one seed gives identical float and fixed curves; another seed different
    ones; and the fixed network's final raw weights (and its curves) equal a hand loop that trains
    the same network stepwise (compiled=False) over batch_order, its evaluations drawing STOCH bits
    from their own generator (seed, EVALUATION_STREAM), never from training's. The compiled step
    was really used."""
    dp = TRAIN_DATAPATHS[name]
    config = TrainConfig(epochs=2, hidden=(4,), batch=24, seed=3)  # 2048 = 85 * 24 + 8: a short last batch
    made: list[Model] = []

    class Recorded(Model):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    monkeypatch.setattr(sys.modules["fixprop.explore.train"], "Model", Recorded)
    first = train(config, dp, count_casts=False)  # counting casts runs stepwise: here the compiled step
    fixed_model = made[-1]
    second = train(config, dp, count_casts=False)
    other = train(replace(config, seed=4), dp, count_casts=False)
    for key in ("float", "fixed"):
        for curve in ("train_loss", "test_loss"):
            assert first[key][curve] == second[key][curve]
            assert len(first[key][curve]) == 3
        assert first[key]["test_loss"] != other[key]["test_loss"]
    compiled = {k for k, v in fixed_model._steps.items() if v is not None}
    evaluations = {("forward", 2048, False), ("forward", 512, False)}  # predict on the compiled forward pass
    assert compiled in ({(24, True, False), (8, True, False)} | evaluations,
                        {(24, True, False), (8, True, False)} if not numba_available() else None)

    data = load_dataset("ik", config.data_seed)  # the data draw does not follow the training seed
    net = MLP([3, 4, 5], "relu", "linear", "sse", "he", 3)
    hand = Model(net, FixedArithmetic(dp, np.random.default_rng(3)), net.init_params(), dp.momentum is not None,
                 compiled=False)
    train_losses, test_losses = [], []
    evaluation_rng = np.random.default_rng([3, EVALUATION_STREAM])

    def record() -> None:
        training_rng, hand.arithmetic.rng = hand.arithmetic.rng, evaluation_rng
        train_losses.append(sse(hand.predict(data.x_train), data.y_train))
        test_losses.append(sse(hand.predict(data.x_test), data.y_test))
        hand.arithmetic.rng = training_rng

    record()
    for epoch in (1, 2):
        for rows in batch_order(2048, 24, epoch, 3):
            hand.train_step(data.x_train[rows], data.y_train[rows])
        record()
    for got, want in zip(fixed_model.params, hand.params):
        assert got.weight.fmt == want.weight.fmt and got.bias.fmt == want.bias.fmt
        assert np.array_equal(got.weight.raw, want.weight.raw) and np.array_equal(got.bias.raw, want.bias.raw)
    assert first["fixed"]["train_loss"] == train_losses
    assert first["fixed"]["test_loss"] == test_losses
    assert test_losses[2] < test_losses[0]  # it learned something


def test_batch_order_is_a_seeded_partition():
    """batch_order cuts a permutation of range(n) into batches of the given size (the last shorter),
    repeatably for (seed, epoch), differently for another epoch or seed."""
    batches = batch_order(50, 16, 1, 7)
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(50))
    again = batch_order(50, 16, 1, 7)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(50, 16, 2, 7)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(50, 16, 1, 8)))


def test_evaluate_by_hand():
    """evaluate(): mean per-sample sse and argmax accuracy of a linear float network with known weights."""
    from fixprop.nn.mlp import LayerParams

    net = MLP([2, 2], "linear", "linear", "sse", "ones", 0)
    model = net.float_model(None, [LayerParams(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0.0, 1.0]))])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.5]])  # outputs (1, 1), (0, 3), (3, 2)
    y = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss, acc = evaluate(model, x, y, classes=2)
    assert loss == pytest.approx((0 + 1 + 0 + 4 + 9 + 1) / 3)  # per-sample sse 1, 4, 10
    assert acc == pytest.approx(2 / 3)  # argmax (1, 1) = 0 matches class 0; (0, 3) -> 1 matches; (3, 2) -> 0 no
    loss_r, acc_r = evaluate(model, x, y, classes=0)
    assert loss_r == loss and math.isnan(acc_r)


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"batch": 1.5}, "batch must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"hidden": ()}, "hidden must be one or more positive layer widths"),
    ({"hidden": (4, 0)}, "hidden must be one or more positive layer widths"),
])
def test_train_config_validation(kwargs, message):
    """Bad training settings are ConfigErrors naming the setting."""
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


# -- e. observing training changes nothing; what it records -----------------------------------------------

def test_observer_does_not_change_training():
    """collect_training (training observed, run stepwise) gives exactly the curves of train()
    without an observer (compiled), STOCH included, and the observer saw casts."""
    config = TrainConfig(epochs=1, hidden=(4,), batch=24, seed=1)
    dp = Datapath.uniform(12, 8, "STOCH")
    collector, observed = collect_training(config, dp)
    plain = train(config, dp, count_casts=False)  # compiled
    for key in ("float", "fixed"):
        for curve in ("train_loss", "test_loss"):
            assert observed[key][curve] == plain[key][curve]
    assert collector.stats and observed["datapath_toml"] == plain["datapath_toml"]


def test_training_ranges_count_each_cast_once():
    """The casts recorded while training 3 -> 4 -> 5 on ik for one epoch (2048 samples, batch 24:
    86 steps, the last of 8), counted by hand: inputs 2048 x 3, targets 2048 x 5 (evaluations are not
    observed), weights (1 + 86) x 12, acc 2048 x 4, bias_grad 2048 x 4 + 86 x 4 (per sample, then
    summed), update 86 x (12 + 4), prop_err only into layer 0's input (layer 1); the input's min, max
    and underflows are those of the exact training inputs."""
    config = TrainConfig(epochs=1, hidden=(4,), batch=24, seed=1)
    collector, _ = collect_training(config, Datapath.uniform(12, 8))
    data = load_dataset("ik", 0)  # data seed 0, whatever the training seed
    steps = 86
    counts = {k: s.count for k, s in collector.stats.items()}
    expected = {
        ("weight", 0): (1 + steps) * 12, ("weight", 1): (1 + steps) * 20,
        ("bias", 0): (1 + steps) * 4, ("bias", 1): (1 + steps) * 5,
        ("acc", 0): 2048 * 4, ("acc", 1): 2048 * 5, ("pre", 0): 2048 * 4, ("pre", 1): 2048 * 5,
        ("act", 0): 2048 * 4, ("act", 1): 2048 * 5, ("out_err", 1): 2048 * 5, ("prop_err", 1): 2048 * 4,
        ("bias_grad", 0): 2048 * 4 + steps * 4, ("bias_grad", 1): 2048 * 5 + steps * 5,
        ("weight_grad", 0): steps * 12, ("weight_grad", 1): steps * 20,
        ("update", 0): steps * 16, ("update", 1): steps * 25,
        ("input", None): 2048 * 3, ("target", None): 2048 * 5,
    }
    assert {k: v for k, v in counts.items() if k[0] not in ("input", "target")} == \
        {k: v for k, v in expected.items() if k[0] not in ("input", "target")}
    inputs = [Fraction(v) for v in data.x_train.ravel()]
    s = collector.stats[("input", None)]
    assert (s.count, s.min, s.max) == (len(inputs), min(inputs), max(inputs))
    underflows = sum(1 for v in inputs if v != 0 and rnd_conv_sat(v, "s12.8") == 0)
    assert (s.nonzero, s.underflowed) == (sum(1 for v in inputs if v != 0), underflows)
    assert collector.stats[("target", None)].count == expected[("target", None)]


# -- f. the digits data set ---------------------------------------------------------------------------------

def test_digits_shapes_ranges_and_split():
    """digits: 1438 train / 359 held out of 64 inputs in [0, 1] (multiples of 1/16), one-hot rows of 10;
    train and held-out together are exactly scikit-learn's 1797 images with their labels (a partition);
    the split repeats for a seed and changes with it."""
    from sklearn.datasets import load_digits

    d = digits(0)
    assert isinstance(d, Dataset) and d.name == "digits" and d.classes == 10
    assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
    assert d.y_train.shape == (1438, 10) and d.y_test.shape == (359, 10)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.min() >= 0 and x.max() <= 1 and np.array_equal(x * 16, np.round(x * 16))
        assert set(np.unique(y).tolist()) == {0.0, 1.0} and np.array_equal(y.sum(axis=1), np.ones(len(y)))
    bunch = load_digits()
    full = sorted(tuple(row) + (int(t),) for row, t in zip((bunch.data / 16).tolist(), bunch.target))
    ours = sorted(tuple(row) + (int(np.argmax(t)),) for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test))
                  for row, t in zip(x.tolist(), y))
    assert ours == full
    again, other = digits(0), load_dataset("digits", 1)
    assert np.array_equal(again.x_test, d.x_test) and np.array_equal(again.y_train, d.y_train)
    assert not np.array_equal(other.x_test, d.x_test)
    with pytest.raises(ConfigError, match="test_fraction"):
        digits(0, test_fraction=1.0)
    with pytest.raises(ConfigError, match="unknown data set 'nope'"):
        load_dataset("nope")


# -- g. the command line ---------------------------------------------------------------------------------

def test_cli_train_json(capsys):
    """fixprop train --epochs 1 --json: curves of 2 epochs (before and after); the float network's
    loss before training equals a numpy forward pass of the same initial weights written here."""
    assert main(["train", "--epochs", "1", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == [0, 1] and out["network"] == [3, 16, 5]
    for key in ("float", "fixed"):
        assert len(out[key]["test_loss"]) == 2 and len(out[key]["train_loss"]) == 2
    assert out["final"]["fixed_test_loss"] == out["fixed"]["test_loss"][1]
    data = load_dataset("ik", 0)
    (w0, b0), (w1, b1) = [(p.weight, p.bias) for p in MLP([3, 16, 5], init="he", seed=0).init_params()]
    out0 = np.maximum(data.x_test @ w0.T + b0, 0) @ w1.T + b1
    assert out["float"]["test_loss"][0] == pytest.approx(sse(out0, data.y_test), rel=1e-12)
    assert out["fixed"]["test_loss"][0] == pytest.approx(out["float"]["test_loss"][0], rel=1e-2)
    assert out["float"]["test_loss"][1] < out["float"]["test_loss"][0]
    assert Datapath.from_toml(out["datapath_toml"]) == Datapath.seed(24, 12)


@pytest.mark.parametrize("per_role", [False, True])
def test_cli_ranges_propose(per_role, tmp_path, capsys):
    """fixprop ranges --seeds 0-1 --propose 16 --out X.toml: the written datapath loads with every
    word 16 (nothing wider), and each observed range, doubled (the 1-bit margin), fits the proposed
    cast of its role and layer; per-layer overrides have fewer integer bits than their role."""
    out_path = tmp_path / "X.toml"
    args = ["ranges", "--seeds", "0-1", "--propose", "16", "--out", str(out_path), "--json"]
    assert main(args + (["--per-role"] if per_role else [])) == 0
    doc = json.loads(capsys.readouterr().out)
    dp = Datapath.load(out_path)
    casts = dp.all_casts()
    assert all(c.word is not None and c.word <= 16 for _, _, c in casts)
    assert all(c.word == 16 for _, _, c in casts)
    assert (dp.layers == {}) == per_role
    assert not per_role or "[layers." not in out_path.read_text()
    seen_roles = {row["role"] for row in doc["stats"]}
    assert {"input", "target", "weight", "bias", "acc", "pre", "act", "out_err", "prop_err", "bias_grad",
            "weight_grad", "update"} <= seen_roles
    for row in doc["stats"]:
        for cast in (dp[row["role"]], dp.cast_for(row["role"], row["layer"])):
            assert cast.fmt.min <= 2 * row["min"] and 2 * row["max"] <= cast.fmt.max, row
    for layer, overrides in dp.layers.items():
        for role, cast in overrides.items():
            assert cast.fmt.int_bits < dp[role].fmt.int_bits
            assert role in LAYER_ROLES


def test_cli_ranges_role_word_and_text(capsys):
    """--role-word acc=20 gives acc a 20-bit word; the text report lists every recorded role."""
    assert main(["ranges", "--seeds", "0", "--propose", "12", "--role-word", "acc=20"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  acc +s20\.\d+ RND_CONV SAT$", text, re.M)  # the proposed datapath's acc row
    assert re.search(r"^  weight +s12\.\d+ RND_CONV SAT$", text, re.M)
    lines = [line.split() for line in text.splitlines()]
    assert any(w[:2] == ["weight_grad", "0"] for w in lines) and any(w[:2] == ["prop_err", "2"] for w in lines)


def test_cli_sweep_writes_csv(tmp_path, capsys):
    """fixprop sweep --words 12 --fracs 6,8 --seeds 0 --workers 1: sweep.csv has 2 data rows whose
    gradient errors are those of the verify experiment on the same datapaths."""
    from fixprop.verify.experiment import Experiment, run

    out = tmp_path / "sw"
    assert main(["sweep", "--words", "12", "--fracs", "6,8", "--seeds", "0", "--workers", "1", "--out", str(out),
                 "--no-plot", "--quiet"]) == 0
    assert "2 of 2 point(s) done, 0 failed" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert [(r["word"], r["frac"], r["status"]) for r in rows] == [("12", "6", "ok"), ("12", "8", "ok")]
    for row in rows:
        ref = run(Experiment(datapath=Datapath.uniform(12, int(row["frac"])), seed=0, timing_repeats=0))
        assert float(row["grad_max_mean_rel_err"]) == ref["fixed"]["mean_relative_error"]
    assert (out / "sweep.json").exists() and not (out / "heatmap.png").exists()


@pytest.mark.parametrize("argv,option", [
    (["sweep", "--fracs", "x", "--quiet", "--no-plot"], "--fracs"),
    (["sweep", "--words", "4-", "--quiet", "--no-plot"], "--words"),
    (["sweep", "--seeds", "a", "--quiet", "--no-plot"], "--seeds"),
    (["ranges", "--propose", "8", "--role-word", "acc=x"], "--role-word"),
    (["ranges", "--out", "never.toml"], "--out"),
    (["train", "--hidden", "4,x", "--epochs", "1", "--quiet"], "--hidden"),
])
def test_cli_bad_options_exit_2(argv, option, capsys, tmp_path, monkeypatch):
    """Malformed option values exit with status 2 and a message naming the option."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "error" in err
    assert not (tmp_path / "never.toml").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("argv,option", [
    (["train", "--dataset", "nope"], "--dataset"),
    (["ranges", "--propose", "1"], "--propose"),
    (["sweep", "--workers", "0"], "--workers"),
])
def test_cli_bad_choices_are_argparse_errors(argv, option, capsys):
    """Values argparse itself rejects: SystemExit 2 and a usage message naming the option."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert option in capsys.readouterr().err


def test_cli_sweep_frac_beyond_word_and_unknown_role(tmp_path, capsys):
    """frac >= word is a point like any other (s8.10: every value in [-1/8, 1/8)), as ranges
    --propose may give; an unknown role in --role-word is an error with exit code 2."""
    out = tmp_path / "s"
    assert main(["sweep", "--words", "8", "--fracs", "8,10", "--seeds", "0", "--workers", "1", "--out", str(out),
                 "--quiet", "--no-plot"]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert [(r["word"], r["frac"], r["status"]) for r in rows] == [("8", "8", "ok"), ("8", "10", "ok")]
    point, = grid(SweepSpec(words=(8,), fracs=(10,)))
    assert Datapath.from_toml(point["datapath_toml"])["weight"].fmt.max == 0.125 - 2**-10
    capsys.readouterr()
    assert main(["ranges", "--propose", "8", "--role-word", "nope=8"]) == 2
    assert "unknown role(s) ['nope']" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_train_final_integers_equal_a_stage_by_stage_loop(backend):
    """`train` on an engine (each epoch in one call on the kernel) ends with the integers of a
    plain loop of stage-by-stage steps over the same batches: its ``fixed_params_sha256`` is
    the digest of those integers, and changes when one integer does."""
    from fixprop.explore.train import TrainConfig, batch_order, params_sha256, train
    from fixprop.nn import FixedArithmetic, Model

    if backend == "numba" and not numba_available():
        pytest.skip("numba is not installed")
    dp = Datapath.seed(24, 12)
    config = TrainConfig(dataset="ik", epochs=2, backend=backend)
    data = load_dataset("ik", config.data_seed)
    result = train(config, dp, data=data)
    net = config.network(data)
    model = Model(net, FixedArithmetic(dp, np.random.default_rng(config.seed)), net.init_params(), compiled=False)
    for epoch in range(1, config.epochs + 1):
        for rows in batch_order(len(data.x_train), config.batch, epoch, config.seed):
            model.train_step(data.x_train[rows], data.y_train[rows])
    assert result["fixed_params_sha256"] == params_sha256(model.params)
    raw = np.array(model.params[0].weight.raw)
    raw[0, 0] += 1
    model.params[0].weight = FixedArray(raw, model.params[0].weight.fmt)
    assert result["fixed_params_sha256"] != params_sha256(model.params)


def test_float_runs_are_shared_by_points_with_the_same_float_network():
    """A sweep's points train the same float network when they keep the learning rate, momentum and
    relu'(0): train() runs it once per process and reuses its curves. A reused run's result is the
    one a fresh process gives; another learning rate trains its own float network."""
    from fixprop.explore import train as training

    config = TrainConfig(epochs=2)
    training._FLOAT_CURVES.clear()
    first = training.train(config, Datapath.uniform(16, 10), count_casts=False)
    reused = training.train(config, Datapath.uniform(12, 8), count_casts=False)
    assert len(training._FLOAT_CURVES) == 1 and reused["float"] == first["float"]
    training._FLOAT_CURVES.clear()
    fresh = training.train(config, Datapath.uniform(12, 8), count_casts=False)
    assert json.dumps(fresh, sort_keys=True) == json.dumps(reused, sort_keys=True)
    faster = training.train(config, Datapath.uniform(16, 10, lr_shift=5), count_casts=False)
    assert len(training._FLOAT_CURVES) == 2 and faster["float"]["test_loss"] != first["float"]["test_loss"]
    given = training.train(config, Datapath.uniform(16, 10), count_casts=False, data=load_dataset("ik", 0))
    assert len(training._FLOAT_CURVES) == 2  # data given by the caller: not shared
    assert given["float"]["test_loss"] == first["float"]["test_loss"]
