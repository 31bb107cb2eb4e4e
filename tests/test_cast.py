"""cast and from_float against the independent Python-int oracle, every mode, words 1..64."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixprop import FixedArray, QFormat
from oracle import OVERFLOWS, ROUNDINGS, cast_raw, float_to_raw, raw_range

EXAMPLES_PER_COMBINATION = 250  # x 4 overflow modes x ~12 values: ~12,000 values per rounding mode


@st.composite
def formats(draw, max_word: int = 64, min_frac: int = -24, max_frac: int = 90) -> QFormat:
    word = draw(st.integers(1, max_word))
    return QFormat(word, draw(st.integers(min_frac, max_frac)), draw(st.booleans()))


@st.composite
def raw_values(draw, fmt: QFormat, shift: int) -> list[int]:
    """Raw integers of fmt: uniform, extremes, and exact ties / near-ties of a right shift."""
    lo, hi = fmt.raw_min, fmt.raw_max
    special = [lo, hi, 0, min(lo + 1, hi), max(hi - 1, lo)]
    one = st.integers(lo, hi)
    if shift > 0:
        half = 1 << (shift - 1)
        k = st.integers(lo >> shift, hi >> shift)
        tie = k.map(lambda k: min(max((k << shift) + half, lo), hi))
        near_tie = st.tuples(tie, st.sampled_from([-1, 1])).map(lambda t: min(max(t[0] + t[1], lo), hi))
        one = st.one_of(one, tie, near_tie, st.sampled_from(special))
    else:
        one = st.one_of(one, st.sampled_from(special))
    return draw(st.lists(one, min_size=1, max_size=12))


@st.composite
def cast_cases(draw):
    src = draw(formats(max_word=draw(st.sampled_from([64, 64, 64, 130]))))
    shift = draw(st.integers(-70, 70))
    dst = QFormat(draw(st.integers(1, 64)), src.frac - shift, draw(st.booleans()))
    return src, dst, draw(raw_values(src, shift))


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@settings(max_examples=EXAMPLES_PER_COMBINATION)
@given(case=cast_cases())
def test_cast_matches_oracle(rounding, overflow, case):
    src, dst, raws = case
    x = FixedArray(raws, src)
    got = x.cast(dst, rounding, overflow)
    expected = [cast_raw(r, src.frac, dst.word, dst.frac, dst.signed, rounding, overflow) for r in raws]
    assert got.fmt == dst
    assert [int(v) for v in got.raw] == expected
    assert got.dtype == (np.int64 if dst.fits_int64 else object)


FLOAT_SPECIALS = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308]


@st.composite
def float_cases(draw):
    fmt = draw(formats(min_frac=-30, max_frac=80))
    lsb_ties = st.integers(-(2**60), 2**60).map(lambda k: math.ldexp(k + 0.5, -fmt.frac))
    near_range = st.floats(min_value=fmt.min * 1.1 - 1, max_value=fmt.max * 1.1 + 1, allow_nan=False)
    anything = st.floats(allow_nan=False, allow_infinity=False)
    one = st.one_of(anything, near_range, lsb_ties.filter(math.isfinite), st.sampled_from(FLOAT_SPECIALS))
    return fmt, draw(st.lists(one, min_size=1, max_size=12))


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@settings(max_examples=EXAMPLES_PER_COMBINATION)
@given(case=float_cases())
def test_from_float_matches_oracle(rounding, overflow, case):
    fmt, xs = case
    got = FixedArray.from_float(np.array(xs, dtype=np.float64), fmt, rounding, overflow)
    expected = [float_to_raw(x, fmt.word, fmt.frac, fmt.signed, rounding, overflow) for x in xs]
    assert [int(v) for v in got.raw] == expected


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_from_float_has_no_double_rounding(rounding):
    # 0.5 + 2**-53 is just above a tie at 0 fraction bits: rounding it via an intermediate
    # float (e.g. x * 2**frac rounded twice) would see an exact tie; the exact value is not one.
    x = 0.5 + 2.0**-53
    assert FixedArray.from_float([x], "s8.0", rounding).raw.tolist() == [
        float_to_raw(x, 8, 0, True, rounding, "SAT")
    ]
    # a float32 input converts to float64 exactly before rounding
    f32 = np.array([1.5, 2.5, -2.5], dtype=np.float32)
    assert FixedArray.from_float(f32, "s8.0", "RND_CONV").raw.tolist() == [2, 2, -2]


def test_from_float_integers_are_exact_at_any_size():
    big = [2**70 + 1, -(2**65) - 3, 7]
    got = FixedArray.from_float(np.array(big, dtype=object), QFormat(80, 4))
    assert got.raw.tolist() == [v * 16 for v in big]
    got = FixedArray.from_float(np.array([2**64 - 1], dtype=np.uint64), QFormat(64, 0, False))
    assert got.raw.tolist() == [2**64 - 1]


@pytest.mark.parametrize("word,signed", [(64, True), (64, False), (63, False), (65, True), (1, True), (1, False)])
def test_storage_and_extremes(word, signed):
    lo, hi = raw_range(word, signed)
    x = FixedArray([lo, hi], QFormat(word, 0, signed))
    assert x.raw.tolist() == [lo, hi]
    assert x.dtype == (np.int64 if (word <= 64 if signed else word <= 63) else object)
    # widening by many fraction bits and narrowing back is the identity
    wide = x.cast(QFormat(word + 70, 70, signed), "TRN", None)
    assert wide.raw.tolist() == [lo << 70, hi << 70]
    assert wide.cast(x.fmt, "RND_CONV", None).identical(x)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_float_rounding_kernel_in_place(rounding):
    """quantize.round_float (used by from_float and the compiled step) on ties, near-ties and signs."""
    from fractions import Fraction

    from fixprop.fixed import quantize
    from fixprop.fixed.modes import Rounding
    from oracle import round_fraction

    below_half = 0.49999999999999994  # 0.5 - 2**-54: v + 0.5 rounds to 1.0 in float64
    values = np.array([k / 4 for k in range(-41, 42)] + [2.0**50 + 0.5, -(2.0**50) - 0.5, 1e-300, -1e-300,
                                                         below_half, -below_half, 1.5 - 2**-52, 2**51 - 0.5])
    expected = [round_fraction(Fraction(v), rounding) for v in values]
    assert quantize.round_float(values, Rounding[rounding]).astype(object).tolist() == expected
    buffer = values.copy()
    quantize.round_float(buffer, Rounding[rounding], out=buffer)
    assert buffer.astype(object).tolist() == expected
    # the same decisions through from_float, alone and beside a value that takes the exact path
    for neighbours in ([], [1e300]):
        got = FixedArray.from_float(np.array([below_half, -below_half] + neighbours), "s64.0", rounding)
        assert got.raw.tolist()[:2] == [round_fraction(Fraction(below_half), rounding),
                                        round_fraction(Fraction(-below_half), rounding)]


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_scaled_float_rounding_kernel(rounding):
    """quantize.round_scaled_float on raw * 2**-s with |raw| <= 2**51, s in 1..52 (its contract)."""
    from fractions import Fraction

    from fixprop.fixed import quantize
    from fixprop.fixed.modes import Rounding
    from oracle import round_fraction

    rng = np.random.default_rng(11)
    for s in (1, 2, 13, 51, 52):
        half = 1 << (s - 1)
        raws = [0, 1, -1, half, -half, half - 1, -half + 1, 3 * half, 2**51, -(2**51), 2**51 - 1]
        raws += [int(v) for v in rng.integers(-(2**51), 2**51, 50)]
        v = np.array(raws, dtype=np.float64) * 2.0**-s
        expected = [round_fraction(Fraction(r, 2**s), rounding) for r in raws]
        assert quantize.round_scaled_float(v.copy(), Rounding[rounding]).astype(object).tolist() == expected
