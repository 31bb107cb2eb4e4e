"""QFormat, mode parsing, and the typed errors bad input gets."""

from __future__ import annotations

import numpy as np
import pytest

import fixprop
from fixprop import FixedArray, Overflow, QFormat, Rounding


def test_qformat_properties():
    f = QFormat(24, 12)
    assert (f.raw_min, f.raw_max) == (-(2**23), 2**23 - 1)
    assert f.resolution == 2.0**-12
    assert f.range == (-2048.0, 2048.0 - 2.0**-12)
    assert f.int_bits == 12
    assert repr(f) == "QFormat(word=24, frac=12, signed=True)"
    assert str(f) == "s24.12"
    u = QFormat(8, 8, signed=False)
    assert str(u) == "u8.8" and (u.raw_min, u.raw_max) == (0, 255) and u.max == 255 / 256
    # all-fraction and negative-fraction formats
    g = QFormat(8, 12)
    assert g.max == 127 / 4096 and g.int_bits == -4
    h = QFormat(4, -3)
    assert h.resolution == 8.0 and h.min == -64.0
    assert QFormat.parse("s24.12") == f and QFormat.parse(" u8.-2 ") == QFormat(8, -2, False)
    assert QFormat(64, 0).fits_int64 and not QFormat(64, 0, False).fits_int64 and not QFormat(65, 0).fits_int64


@pytest.mark.parametrize(
    "name,mode",
    [("trn", Rounding.TRN), ("Floor", Rounding.TRN), ("fix", Rounding.TRN_ZERO), ("Zero", Rounding.TRN_ZERO),
     ("ceiling", Rounding.TRN_INF), ("Nearest", Rounding.RND), ("Round", Rounding.RND_INF),
     ("Convergent", Rounding.RND_CONV), ("AP_RND_CONV", Rounding.RND_CONV), ("sc_rnd_min_inf", Rounding.RND_MIN_INF),
     ("rnd_zero", Rounding.RND_ZERO), ("stochastic", Rounding.STOCH), (Rounding.RND, Rounding.RND)],
)
def test_rounding_names(name, mode):
    assert Rounding.parse(name) is mode


@pytest.mark.parametrize(
    "name,mode",
    [("sat", Overflow.SAT), ("Saturate", Overflow.SAT), ("Wrap", Overflow.WRAP), ("AP_SAT_SYM", Overflow.SAT_SYM),
     ("sc_sat_zero", Overflow.SAT_ZERO)],
)
def test_overflow_names(name, mode):
    assert Overflow.parse(name) is mode


def test_unknown_mode_names_list_the_allowed_ones():
    with pytest.raises(fixprop.ModeError, match="allowed: TRN, TRN_ZERO, .*RND_CONV") as info:
        Rounding.parse("banker")
    assert isinstance(info.value, ValueError)
    with pytest.raises(fixprop.ModeError, match="allowed: SAT, WRAP, SAT_SYM, SAT_ZERO"):
        FixedArray([1], "s8.0").cast("s4.0", overflow="clip")
    with pytest.raises(fixprop.ModeError):
        Rounding.parse(3)


@pytest.mark.parametrize("word", [0, -3])
def test_word_below_one(word):
    with pytest.raises(fixprop.FormatError, match="word must be >= 1"):
        QFormat(word, 0)


@pytest.mark.parametrize("bad", [("24", 12), (24.0, 12), (24, 1.5), (True, 0)])
def test_non_integer_format_fields(bad):
    with pytest.raises(fixprop.FormatError, match="must be an integer"):
        QFormat(*bad)


def test_bad_format_strings():
    with pytest.raises(fixprop.FormatError, match="'s<word>.<frac>'"):
        QFormat.parse("q15")


@pytest.mark.parametrize("bad", [[np.nan], [1.0, np.inf], [-np.inf]])
def test_nan_and_inf_are_refused(bad):
    with pytest.raises(fixprop.NonFiniteError, match="NaN or infinity") as info:
        FixedArray.from_float(bad, "s16.8")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", [[1.5], np.array([1.0, 2.0]), ["3"], [True, False], [1, 2.5]])
def test_non_integer_raw_values(raw):
    with pytest.raises(fixprop.RawTypeError, match="integers") as info:
        FixedArray(raw, "s8.0")
    assert isinstance(info.value, TypeError)


def test_out_of_range_raw_values():
    with pytest.raises(fixprop.RangeError, match=r"outside s8.0's raw range \[-128, 127\].*overflow='SAT'"):
        FixedArray([0, 128], "s8.0")
    with pytest.raises(fixprop.RangeError, match=r"first -1 at index \(1,\)"):
        FixedArray([0, -1], "u8.0")
    assert FixedArray([0, 128], "s8.0", overflow="SAT").raw.tolist() == [0, 127]
    with pytest.raises(fixprop.RangeError, match="cast s16.0 -> s8.0"):
        FixedArray([1000], "s16.0").cast("s8.0", overflow=None)


def test_matmul_shape_mismatch():
    a = FixedArray(np.zeros((2, 3), dtype=np.int64), "s8.0")
    with pytest.raises(fixprop.ShapeError, match=r"\(2, 3\) @ \(2, 3\).*3 must equal.*2"):
        a @ a
    with pytest.raises(fixprop.ShapeError, match="do not broadcast"):
        a + a.T


def test_floats_cannot_enter_exact_arithmetic():
    x = FixedArray([1], "s8.0")
    with pytest.raises(fixprop.RawTypeError, match="from_float"):
        x * 0.5
    with pytest.raises(TypeError):
        np.float64(0.5) + x


def test_caller_array_is_neither_aliased_nor_frozen():
    a = np.array([1, 2, 3])
    x = FixedArray(a, "s8.0")
    a[0] = 5
    assert x.raw.tolist() == [1, 2, 3] and a.flags.writeable


def test_errors_are_fixprop_errors():
    for cls in (fixprop.FormatError, fixprop.ModeError, fixprop.RangeError, fixprop.NonFiniteError,
                fixprop.ShapeError, fixprop.RawTypeError):
        assert issubclass(cls, fixprop.FixpropError)


def test_zero_dimensional_values():
    assert FixedArray.from_float(0.5, "s8.4").raw.tolist() == 8
    assert FixedArray([100] * 3, "s8.0").sum().cast("s8.0").raw.tolist() == 127
    assert FixedArray(300, "s8.0", overflow="SAT").raw.tolist() == 127
    assert FixedArray.from_float(1e300, "s8.0").raw.tolist() == 127
    assert FixedArray(2**70, "s80.4").cast("s70.0", "RND").raw.tolist() == 2**66
    assert FixedArray(-7, "s8.1").cast("s8.0", "RND_CONV").raw.tolist() == -4  # -3.5 -> -4 (even)


def test_numpy_integers_make_formats():
    assert QFormat(np.int64(16), np.int32(8), np.bool_(False)) == QFormat(16, 8, False)


def test_inputs_that_would_lose_bits_are_refused():
    with pytest.raises(fixprop.RawTypeError, match="long double"):
        FixedArray.from_float(np.array([np.longdouble(1)]), "s8.0")
    with pytest.raises(fixprop.RawTypeError, match="booleans"):
        FixedArray.from_float([True], "s8.4")


def test_wide_matmul_results_are_stored_as_python_ints():
    a = FixedArray(np.ones((3, 64), dtype=np.int64), "s32.0") @ FixedArray(np.ones((64, 3), dtype=np.int64), "s32.0")
    assert a.fmt == QFormat(70, 0) and a.dtype == object and a.raw.dtype == object
    assert a.raw.tolist() == [[64] * 3] * 3
