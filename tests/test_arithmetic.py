"""Full-precision arithmetic (+ - * @ sum neg shifts maximum) against Python ints."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixprop
from fixprop import FixedArray, QFormat
from oracle import matmul_ints, raw_range


@st.composite
def fixed_arrays(draw, shape, max_word=64, frac=None):
    word = draw(st.integers(1, max_word))
    signed = draw(st.booleans())
    fmt = QFormat(word, draw(st.integers(-16, 48)) if frac is None else frac, signed)
    lo, hi = raw_range(word, signed)
    value = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0]))
    n = int(np.prod(shape))
    raws = draw(st.lists(value, min_size=n, max_size=n))
    return FixedArray(np.array(raws, dtype=object).reshape(shape), fmt)


def exact_values(x: FixedArray) -> list[Fraction]:
    """Element values as exact fractions, flattened."""
    return [Fraction(int(r)) / Fraction(2) ** x.fmt.frac for r in x.raw.reshape(-1)]


def assert_exact(result: FixedArray, expected_values: list[Fraction]) -> None:
    """The result's raw integers are in its format's range and equal the exact values."""
    raws = [int(r) for r in result.raw.reshape(-1)]
    assert all(result.fmt.contains_raw(r) for r in raws), f"result outside its own format {result.fmt}"
    got = [Fraction(r) / Fraction(2) ** result.fmt.frac for r in raws]
    assert got == expected_values


@settings(max_examples=400)
@given(a=fixed_arrays((6,)), b=fixed_arrays((6,)))
def test_add_sub_mul_exact(a, b):
    va, vb = exact_values(a), exact_values(b)
    assert_exact(a + b, [x + y for x, y in zip(va, vb)])
    assert_exact(a - b, [x - y for x, y in zip(va, vb)])
    assert_exact(a * b, [x * y for x, y in zip(va, vb)])
    assert_exact(-a, [-x for x in va])
    assert (a * b).fmt.word == a.fmt.word + b.fmt.word
    assert (a * b).fmt.frac == a.fmt.frac + b.fmt.frac


@settings(max_examples=300)
@given(a=fixed_arrays((7,)), b=fixed_arrays((7,)))
def test_comparisons_and_maximum_exact(a, b):
    va, vb = exact_values(a), exact_values(b)
    assert (a < b).tolist() == [x < y for x, y in zip(va, vb)]
    assert (a >= b).tolist() == [x >= y for x, y in zip(va, vb)]
    assert (a == b).tolist() == [x == y for x, y in zip(va, vb)]
    assert_exact(fixprop.maximum(a, b), [max(x, y) for x, y in zip(va, vb)])
    assert_exact(fixprop.minimum(a, b), [min(x, y) for x, y in zip(va, vb)])
    relu = fixprop.maximum(a, 0)
    assert_exact(relu, [max(x, 0) for x in va])
    assert (a > 0).tolist() == [x > 0 for x in va]


def test_relu_keeps_format():
    x = FixedArray([-5, 0, 7], "s24.12")
    assert fixprop.maximum(x, 0).fmt == x.fmt
    assert fixprop.maximum(0, x).raw.tolist() == [0, 0, 7]


@settings(max_examples=300)
@given(a=fixed_arrays((3, 4)), shift=st.integers(-40, 40))
def test_sum_and_shift_exact(a, shift):
    va = np.array(exact_values(a), dtype=object).reshape(3, 4)
    assert_exact(a.sum(), [sum(va.reshape(-1))])
    assert_exact(a.sum(axis=0), list(va.sum(axis=0)))
    assert_exact(a.sum(axis=1), list(va.sum(axis=1)))
    shifted = a << shift
    assert shifted.raw.tolist() == a.raw.tolist() and shifted.fmt.frac == a.fmt.frac - shift
    assert_exact(a >> shift, [v / Fraction(2) ** shift for v in va.reshape(-1)])


@settings(max_examples=150)
@given(data=st.data(), m=st.integers(1, 4), k=st.integers(1, 40), n=st.integers(1, 4))
def test_matmul_exact_random(data, m, k, n):
    a = data.draw(fixed_arrays((m, k)))
    b = data.draw(fixed_arrays((k, n)))
    got = a @ b
    expected = matmul_ints(a.raw.tolist(), b.raw.tolist())
    assert got.fmt == QFormat(a.fmt.word + b.fmt.word + (k - 1).bit_length(), a.fmt.frac + b.fmt.frac,
                              a.fmt.signed or b.fmt.signed)
    assert got.raw.tolist() == expected
    assert all(got.fmt.contains_raw(int(v)) for v in got.raw.reshape(-1))


# Full-scale operands: every value at the format's min or max, where a naive int64 or float64
# matmul overflows or loses bits. (word_a, word_b, K) cover the float64-BLAS path (result
# <= 53 bits), the int64 path (<= 64 bits) and the Python-int path (> 64 bits).
FULL_SCALE = [
    (8, 8, 1), (16, 16, 4096), (24, 24, 256), (26, 26, 2), (26, 26, 3), (27, 27, 2),
    (31, 31, 4), (32, 32, 1), (32, 32, 2), (32, 32, 4096), (40, 40, 64), (48, 16, 17),
    (63, 1, 2), (64, 64, 1), (64, 64, 4096),
]


@pytest.mark.parametrize("word_a,word_b,k", FULL_SCALE)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("corner", ["min_min", "max_max", "min_max", "mixed"])
def test_matmul_full_scale(word_a, word_b, k, signed, corner):
    lo_a, hi_a = raw_range(word_a, signed)
    lo_b, hi_b = raw_range(word_b, signed)
    pick_a, pick_b = {"min_min": (lo_a, lo_b), "max_max": (hi_a, hi_b), "min_max": (lo_a, hi_b),
                      "mixed": (None, None)}[corner]
    rng = np.random.default_rng(k + word_a)
    if corner == "mixed":  # alternating extremes so products neither cancel nor all share a sign
        a_raw = [[(lo_a, hi_a)[int(rng.integers(2))] for _ in range(k)] for _ in range(2)]
        b_raw = [[(lo_b, hi_b)[int(rng.integers(2))] for _ in range(3)] for _ in range(k)]
    else:
        a_raw = [[pick_a] * k for _ in range(2)]
        b_raw = [[pick_b] * 3 for _ in range(k)]
    a = FixedArray(np.array(a_raw, dtype=object), QFormat(word_a, 5, signed))
    b = FixedArray(np.array(b_raw, dtype=object), QFormat(word_b, 7, signed))
    got = a @ b
    assert got.raw.tolist() == matmul_ints(a_raw, b_raw)
    assert all(got.fmt.contains_raw(int(v)) for v in got.raw.reshape(-1))
    # the same products, elementwise and summed, are exact too
    row = a[0] * b.T[0]
    assert row.raw.tolist() == [x * y for x, y in zip(a_raw[0], [r[0] for r in b_raw])]
    assert int(row.sum().raw) == sum(x * y for x, y in zip(a_raw[0], [r[0] for r in b_raw]))


@pytest.mark.parametrize("word", [32, 33, 40, 63, 64])
def test_full_scale_add_sub_neg_never_wrap(word):
    lo, hi = raw_range(word, True)
    a = FixedArray([lo, hi, lo, hi], QFormat(word, 3))
    b = FixedArray([lo, hi, hi, lo], QFormat(word, 40))
    sa = [Fraction(v, 8) for v in (lo, hi, lo, hi)]
    sb = [Fraction(v, 2**40) for v in (lo, hi, hi, lo)]
    assert_exact(a + b, [x + y for x, y in zip(sa, sb)])
    assert_exact(a - b, [x - y for x, y in zip(sa, sb)])
    assert_exact(-a, [-x for x in sa])
    assert_exact(a * b, [x * y for x, y in zip(sa, sb)])
    assert_exact(a.sum(), [sum(sa)])


def test_matmul_vector_shapes():
    a = FixedArray([[1, 2], [3, 4]], "s8.0")
    v = FixedArray([5, -6], "s8.0")
    assert (a @ v).raw.tolist() == [-7, -9]
    assert (v @ a).raw.tolist() == [-13, -14]
    assert (v @ v).raw.tolist() == 61


def test_integer_scalars_are_exact_constants():
    x = FixedArray([3, -4], "s8.2")
    assert_exact(x + 1, [Fraction(3, 4) + 1, Fraction(-1) + 1])
    assert_exact(2 * x, [Fraction(3, 2), Fraction(-2)])
    assert_exact(1 - x, [Fraction(1, 4), Fraction(2)])


def test_views_keep_format_and_are_read_only():
    x = FixedArray(np.arange(6).reshape(2, 3), "u8.4")
    assert x.T.fmt == x.fmt and x.T.raw.tolist() == [[0, 3], [1, 4], [2, 5]]
    assert x[1].raw.tolist() == [3, 4, 5] and x[1].fmt == x.fmt
    assert x.reshape(3, 2).shape == (3, 2) and x.ravel().shape == (6,)
    assert x.to_float().tolist() == [[0.0, 0.0625, 0.125], [0.1875, 0.25, 0.3125]]
    with pytest.raises(ValueError):
        x.raw[0, 0] = 1
    assert "u8.4" in repr(x) and "0.3125" in repr(x)


@pytest.mark.parametrize("fa, fb", [("u8.4", "u6.2"), ("u6.2", "u8.4"), ("u5.7", "u9.0"), ("u1.0", "u1.0"),
                                    ("u64.30", "u40.2")])
def test_unsigned_minus_unsigned_is_one_bit_wider_than_the_union(fa, fb):
    """ap_fixed's rule for ap_ufixed - ap_ufixed: signed, max(I) + 1 integer bits, max frac. It
    holds both extreme differences (max - 0 and 0 - max) exactly, and one bit fewer would not."""
    a_fmt, b_fmt = QFormat.parse(fa), QFormat.parse(fb)
    int_bits = max(a_fmt.word - a_fmt.frac, b_fmt.word - b_fmt.frac) + 1
    frac = max(a_fmt.frac, b_fmt.frac)
    a = FixedArray([a_fmt.raw_max, 0], a_fmt)
    b = FixedArray([0, b_fmt.raw_max], b_fmt)
    diff = a - b
    assert diff.fmt == QFormat(int_bits + frac, frac, True)
    want = [Fraction(a_fmt.raw_max, 2**a_fmt.frac), -Fraction(b_fmt.raw_max, 2**b_fmt.frac)]
    assert_exact(diff, want)
    narrower = QFormat(int_bits + frac - 1, frac, True)
    assert any(not (narrower.raw_min <= v * 2**frac <= narrower.raw_max) for v in want)
