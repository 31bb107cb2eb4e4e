"""Stochastic rounding: only floor or ceil, unbiased, and reproducible for a seed."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import fixprop
from fixprop import FixedArray, QFormat

N = 200_000


def _binomial_bound(n: int, p: float) -> float:
    """Six standard deviations of a Binomial(n, p) count: exceeded by chance with p < 1e-8."""
    return 6 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("dropped_bits", [3, 20, 62, 63, 90])
@pytest.mark.parametrize("sign", [1, -1])
def test_cast_is_unbiased(dropped_bits, sign):
    # value = k + p with p = 5/16 (plus a tiny bit below the top 4 dropped bits when there are many)
    p = Fraction(5, 16) if dropped_bits >= 4 else Fraction(3, 8)
    frac_part = int(p * 2**dropped_bits)
    k = 7
    raw = sign * ((k << dropped_bits) + frac_part)
    src = QFormat(dropped_bits + 8, dropped_bits)
    x = FixedArray(np.full(N, raw, dtype=object if src.word > 64 else np.int64), src)
    rounded = x.cast(QFormat(8, 0), "STOCH", rng=np.random.default_rng(1234))
    exact = Fraction(raw, 2**dropped_bits)
    low = math.floor(exact)
    values = np.asarray(rounded.raw, dtype=np.int64)
    assert set(np.unique(values).tolist()) <= {low, low + 1}, "stochastic rounding only picks floor or ceil"
    ups = int((values == low + 1).sum())
    p_up = float(exact - low)
    assert abs(ups - N * p_up) < _binomial_bound(N, p_up)
    # a deterministic rounding gives 0 or N ups: both lie over 50 bounds (300 sigma) away
    assert _binomial_bound(N, p_up) < min(N * p_up, N * (1 - p_up)) / 50


@pytest.mark.parametrize("x", [0.3, -0.3, 1e-6, -2.5e-20, 12345.678])
def test_from_float_is_unbiased(x):
    fmt = QFormat(32, 4)
    got = FixedArray.from_float(np.full(N, x), fmt, "STOCH", rng=np.random.default_rng(99))
    exact = Fraction(x) * 16
    low = math.floor(exact)
    values = got.raw
    assert set(np.unique(values).tolist()) <= {low, low + 1}
    p_up = float(exact - low)
    ups = int((values == low + 1).sum())
    bound = max(_binomial_bound(N, p_up), 0.5)
    assert abs(ups - N * p_up) < bound + 1


def test_exact_values_are_never_moved():
    x = FixedArray(np.arange(-50, 50) * 16, "s16.4")
    assert x.cast("s16.0", "STOCH", rng=np.random.default_rng(0)).raw.tolist() == list(range(-50, 50))


def test_deterministic_for_a_seed():
    x = FixedArray.from_float(np.linspace(-3, 3, 1001), "s32.20")
    a = x.cast("s16.4", "STOCH", rng=np.random.default_rng(7))
    b = x.cast("s16.4", "STOCH", rng=np.random.default_rng(7))
    c = x.cast("s16.4", "STOCH", rng=np.random.default_rng(8))
    assert a.identical(b)
    assert not a.identical(c)


def test_stochastic_needs_a_generator():
    x = FixedArray([1, 2, 3], "s8.2")
    with pytest.raises(fixprop.ModeError, match="numpy.random.Generator"):
        x.cast("s8.0", "STOCH")


def test_draws_do_not_depend_on_storage_or_neighbours():
    raws = np.arange(-500, 500) * 37
    narrow = FixedArray(raws, "s16.8").cast("s16.0", "STOCH", rng=np.random.default_rng(5))
    wide = FixedArray(raws.astype(object), "s80.8").cast("s16.0", "STOCH", rng=np.random.default_rng(5))
    assert narrow.raw.tolist() == wide.raw.tolist()
    alone = FixedArray.from_float([0.3] * 8, "s16.4", "STOCH", rng=np.random.default_rng(9))
    beside = FixedArray.from_float([0.3] * 8 + [1e-300], "s16.4", "STOCH", rng=np.random.default_rng(9))
    assert alone.raw.tolist() == beside.raw.tolist()[:8]


def test_one_64_bit_word_per_element():
    """The documented draw: round up when W < dropped * 2**(64 - s), W = random_raw() row-major."""
    x = FixedArray([5, -3, 7, 1], "s8.3")  # dropped 3 bits when cast to s8.0
    got = x.cast("s8.0", "STOCH", rng=np.random.default_rng(21))
    words = np.random.default_rng(21).bit_generator.random_raw(4)
    expected = [(r >> 3) + (int(w) < ((r & 7) << 61)) for r, w in zip([5, -3, 7, 1], words)]
    assert got.raw.tolist() == expected
