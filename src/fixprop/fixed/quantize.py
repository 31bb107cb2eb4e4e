"""Every rounding and every overflow decision fixprop makes, on raw integers.

This module is the one place where precision is lost. Everything else in fixprop either
keeps full precision (``FixedArray`` arithmetic) or calls :func:`requantize` /
:func:`quantize_float` from here.

Raw arrays are numpy ``int64`` when the values provably fit (|v| < 2**63) and numpy
``object`` arrays of Python ints otherwise; the same code runs on both, and each function
chooses the storage from the formats before computing, so int64 overflow cannot happen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fixprop.errors import ModeError, NonFiniteError, RawTypeError, ShapeError
from fixprop.fixed.format import QFormat
from fixprop.fixed.modes import Overflow, Rounding

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: Largest right shift done in int64 (``1 << 62`` is the largest power of two int64 holds
#: with room for the sum ``q + 1``).
MAX_INT64_SHIFT = 62

#: A float64 significand has 53 bits, so |m| < 2**53 in ``x = m * 2**e``.
FLOAT64_SIGNIFICAND_BITS = 53


def _zero_d_safe(function):
    """Run ``function`` on a 0-d input as a 1-element array and give 0-d results back
    (numpy ops on 0-d arrays return scalars, which in-place and object arithmetic mishandle)."""

    @functools.wraps(function)
    def wrapper(raw, *args, **kwargs):
        arr = as_exact_array(raw)
        if arr.ndim != 0:
            return function(arr, *args, **kwargs)
        value, mask = function(arr.reshape(1), *args, **kwargs)
        return np.asarray(value).reshape(()), None if mask is None else np.asarray(mask).reshape(())

    return wrapper


# -- storage -------------------------------------------------------------------------------
def to_object(raw: np.ndarray) -> np.ndarray:
    """The same integers as a numpy object array of Python ints (exact at any width)."""
    if raw.dtype == object:
        return raw
    return raw.astype(object)


def to_storage(raw: np.ndarray, fmt: QFormat) -> np.ndarray:
    """Store in-range raw integers as ``fmt`` requires: int64 if it fits, else Python ints."""
    if fmt.fits_int64:
        return raw if raw.dtype == np.int64 else raw.astype(np.int64)
    return to_object(raw)


def storage_for_bits(raw: np.ndarray, magnitude_bits: int) -> np.ndarray:
    """``raw`` in a storage that can hold values of ``|v| < 2**magnitude_bits`` exactly."""
    if magnitude_bits <= 63 and raw.dtype == np.int64:
        return raw
    if magnitude_bits <= 63:
        return raw.astype(np.int64)
    return to_object(raw)


# -- rounding ------------------------------------------------------------------------------
#: Random bits each element consumes per stochastic cast: one 64-bit word of the generator.
STOCH_WORD_BITS = 64


def stochastic_round_up(dropped: np.ndarray, shift, rng: np.random.Generator) -> np.ndarray:
    """Which elements round up: True with probability exactly ``dropped / 2**shift``.

    Every element consumes one 64-bit word ``W`` of ``rng.bit_generator.random_raw``, in
    row-major order, whatever its storage or its neighbours: it rounds up when
    ``W < dropped * 2**(64 - shift)`` (the dropped fraction as a 64-bit binary fraction). When
    ``shift > 64`` and ``W`` equals the fraction's top 64 bits (probability 2**-64), the element
    draws further words for the remaining bits in the same way, so the probability stays exact.
    A source that is not a numpy Generator (``fixprop.hardware.LfsrSource``) supplies its words
    through ``random_words``; on such a tie it rounds up when any lower dropped bit is set.
    """
    shape = np.shape(dropped)
    words = random_words(rng, shape)
    shifts = np.broadcast_to(np.asarray(shift), shape)
    if dropped.dtype == np.int64 and (shifts.size == 0 or int(shifts.max()) <= MAX_INT64_SHIFT):
        # dropped < 2**shift <= 2**62: the threshold fits 64 unsigned bits
        threshold = dropped.astype(np.uint64) << (STOCH_WORD_BITS - shifts).astype(np.uint64)
        return words < threshold
    out = np.empty(shape, dtype=bool)
    for index in np.ndindex(*shape):
        out[index] = _stochastic_decision(int(dropped[index]), int(shifts[index]), int(words[index]), rng)
    return out


def _stochastic_decision(dropped: int, shift: int, word: int, rng: np.random.Generator) -> bool:
    if shift <= STOCH_WORD_BITS:
        return word < (dropped << (STOCH_WORD_BITS - shift))
    rest = shift - STOCH_WORD_BITS
    top, low = dropped >> rest, dropped & ((1 << rest) - 1)
    if word != top:
        return word < top
    if not isinstance(rng, np.random.Generator):
        # a hardware source (LFSR) has drawn its bits: equal top bits round up when any lower
        # dropped bit is set (docs/hardware.md), without touching another lane
        return low != 0
    return _stochastic_decision(low, rest, int(random_words(rng, ())), rng)


def is_random_source(rng: Any) -> bool:
    """True for what STOCH can draw from: a numpy Generator, or a source with ``random_words``
    (such as ``fixprop.hardware.LfsrSource``)."""
    return isinstance(rng, np.random.Generator) or callable(getattr(rng, "random_words", None))


def random_words(rng: Any, shape: tuple[int, ...]) -> np.ndarray:
    """One 64-bit word per element (uint64, row-major): a Generator's raw bit stream
    (``bit_generator.random_raw``), or the source's own ``random_words(shape)``."""
    if isinstance(rng, np.random.Generator):
        raw = rng.bit_generator.random_raw(size=shape) if shape else rng.bit_generator.random_raw()
        return np.asarray(raw, dtype=np.uint64)
    return np.asarray(rng.random_words(shape), dtype=np.uint64)


class DrawnWords:
    """A STOCH source handing out words already drawn from a Generator's stream, in order
    (``random_words``), for quantizations that draw exactly one word per element
    (:func:`stochastic_words_one_each`): they then round as on the Generator itself."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1)
        self.used = 0

    def random_words(self, shape: tuple[int, ...]) -> np.ndarray:
        """The next ``prod(shape)`` words, row-major."""
        count = int(np.prod(shape, dtype=np.int64))
        if self.used + count > self.words.size:
            raise ModeError(f"fixprop internal error: {self.words.size} words were drawn ahead, "
                            f"{self.used + count} are asked for")
        out = self.words[self.used:self.used + count].reshape(shape)
        self.used += count
        return out


def round_shift_right(raw: np.ndarray, shift, rounding: Rounding, rng: np.random.Generator | None = None):
    """Exact ``raw / 2**shift`` rounded to an integer by ``rounding``.

    Args:
        raw: integer array (int64 or object).
        shift: number of dropped bits, an int >= 0 or an integer array broadcastable to raw.
            int64 input needs ``shift <= 62``; callers widen to object beyond that.
        rounding: the mode; ``STOCH`` rounds up with probability ``dropped / 2**shift``
            using ``rng`` (see :func:`stochastic_round_up`: one 64-bit word per element).
    Returns:
        integer array of the same storage as ``raw`` (values never exceed |raw| + 1).
    """
    rounding = Rounding.parse(rounding)
    one = 1 if raw.dtype == object else np.int64(1)
    floor = raw >> shift
    dropped = raw & ((one << shift) - 1)  # in [0, 2**shift): the exact dropped fraction
    half = (one << shift) >> 1
    inexact = dropped != 0
    if rounding is Rounding.TRN:
        return floor
    if rounding is Rounding.TRN_INF:
        up = inexact
    elif rounding is Rounding.TRN_ZERO:
        up = inexact & (raw < 0)
    elif rounding is Rounding.RND:
        up = inexact & (dropped >= half)
    elif rounding is Rounding.RND_MIN_INF:
        up = inexact & (dropped > half)
    elif rounding is Rounding.RND_ZERO:
        up = inexact & ((dropped > half) | ((dropped == half) & (raw < 0)))
    elif rounding is Rounding.RND_INF:
        up = inexact & ((dropped > half) | ((dropped == half) & (raw >= 0)))
    elif rounding is Rounding.RND_CONV:
        up = inexact & ((dropped > half) | ((dropped == half) & ((floor & 1) == 1)))
    elif rounding is Rounding.STOCH:
        if not is_random_source(rng):
            raise ModeError(
                "rounding STOCH needs rng=numpy.random.Generator (e.g. np.random.default_rng(seed)) "
                f"or a source with random_words (fixprop.hardware.LfsrSource); got rng={rng!r}"
            )
        up = stochastic_round_up(np.asarray(dropped), shift, rng)
    else:  # pragma: no cover - the enum is closed
        raise ModeError(f"unhandled rounding mode {rounding}")
    return floor + np.asarray(up, dtype=bool)


#: Largest |raw| for which :func:`round_shift_right_int64` may add its bias (< 2**62 with room).
FAST_ROUNDING_MAX_BITS = 61


def round_shift_right_int64(raw: np.ndarray, shift: int, rounding: Rounding) -> np.ndarray:
    """:func:`round_shift_right` for int64 arrays with |raw| < 2**61 and 1 <= shift <= 61, in
    two to five numpy operations: every deterministic mode is ``(raw + bias) >> shift``.

    With ``half = 2**(shift-1)`` and ``neg = raw >> 63`` (-1 for negative raw, else 0):
    TRN 0; TRN_INF 2**shift - 1; TRN_ZERO (2**shift - 1) & neg; RND half; RND_MIN_INF half - 1;
    RND_INF half + neg; RND_ZERO half - 1 - neg; RND_CONV half - 1 + ((raw >> shift) & 1).
    The bias adds at most 2**shift, so the sum stays below 2**62.
    """
    half = 1 << (shift - 1)
    if rounding is Rounding.TRN:
        return raw >> shift
    if rounding is Rounding.TRN_INF:
        bias = (1 << shift) - 1
    elif rounding is Rounding.RND:
        bias = half
    elif rounding is Rounding.RND_MIN_INF:
        bias = half - 1
    elif rounding is Rounding.RND_CONV:
        bias = ((raw >> shift) & 1) + (half - 1)
    elif rounding is Rounding.RND_INF:
        bias = (raw >> 63) + half
    elif rounding is Rounding.RND_ZERO:
        bias = (half - 1) - (raw >> 63)
    elif rounding is Rounding.TRN_ZERO:
        bias = (raw >> 63) & ((1 << shift) - 1)
    else:
        raise ModeError(f"round_shift_right_int64 handles deterministic modes only, not {rounding}")
    out = raw + bias
    out >>= shift
    return out


# -- overflow ------------------------------------------------------------------------------
def overflow_bounds(fmt: QFormat, overflow: Overflow | None) -> tuple[int, int]:
    """The raw range a value must end in: ``[-max, max]`` for signed SAT_SYM, else the format's."""
    lo, hi = fmt.raw_min, fmt.raw_max
    if overflow is Overflow.SAT_SYM and fmt.signed:
        lo = -hi
    return lo, hi


@_zero_d_safe
def apply_overflow(
    raw: np.ndarray, fmt: QFormat, overflow: Overflow | None, want_mask: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Bring integers into ``fmt``'s raw range by ``overflow``.

    Returns ``(raw_in_range, out_of_range_mask)``. ``SAT_SYM`` treats the signed minimum
    ``-2**(word-1)`` as out of range too (its range is ``[-max, max]``). ``overflow=None``
    leaves values as they are and always returns the mask (the caller raises if any is True);
    otherwise the mask is computed only when ``want_mask`` (else it is None).
    The result is stored as ``fmt`` requires (int64 or Python ints).
    """
    overflow = None if overflow is None else Overflow.parse(overflow)
    lo, hi = overflow_bounds(fmt, overflow)
    if raw.dtype == np.int64:  # clamp the bounds to what int64 can compare against
        lo, hi = max(lo, INT64_MIN), min(hi, INT64_MAX)
    if overflow is None or want_mask or overflow in (Overflow.SAT_ZERO, Overflow.WRAP):
        mask = np.asarray((raw < lo) | (raw > hi), dtype=bool)
        if not mask.any():
            return to_storage(raw, fmt), mask
        if overflow is None:
            return raw, mask
    else:
        mask = None
    if overflow in (Overflow.SAT, Overflow.SAT_SYM):
        if raw.dtype == np.int64:
            result = np.minimum(raw, hi)
            np.maximum(result, lo, out=result)
        else:
            result = np.where(raw < lo, lo, np.where(raw > hi, hi, raw))
    elif overflow is Overflow.SAT_ZERO:
        result = np.where(mask, 0, raw)
    else:
        result = _wrap(raw, fmt)
    return to_storage(np.asarray(result), fmt), mask


def _wrap(raw: np.ndarray, fmt: QFormat) -> np.ndarray:
    """Keep the low ``fmt.word`` bits, read as two's complement (signed) or binary (unsigned)."""
    if raw.dtype == np.int64 and fmt.signed and fmt.word >= 64:
        return raw  # every int64 is already a 64-bit two's-complement word
    if raw.dtype == np.int64 and fmt.word >= 63:  # the mask 2**word - 1 needs Python ints
        raw = to_object(raw)
    one = 1 if raw.dtype == object else np.int64(1)
    low_bits = raw & ((one << fmt.word) - 1)
    if not fmt.signed:
        return low_bits
    half_range = one << (fmt.word - 1)  # 2**(word-1); subtracting it twice avoids forming 2**63
    return np.where(low_bits >= half_range, low_bits - half_range - half_range, low_bits)


# -- full casts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CastPlan:
    """What a cast from ``src`` to ``dst`` needs to do, decided once from the formats."""

    shift: int  # fraction bits dropped (> 0) or gained (< 0)
    fast: bool  # the int64 bias-and-shift kernel applies
    wide: bool  # the computation needs Python ints
    grown_bits: int  # magnitude bits after a left shift
    may_overflow: bool  # some value of src can land outside dst's range


@lru_cache(maxsize=4096)
def cast_plan(src: QFormat, dst: QFormat, rounding: Rounding, overflow: Overflow | None) -> CastPlan:
    shift = src.frac - dst.frac
    if shift > 0:
        reach = (src.raw_min >> shift, -((-src.raw_max) >> shift))  # floor and ceiling of the range
    else:
        reach = (src.raw_min << -shift, src.raw_max << -shift)
    lo, hi = overflow_bounds(dst, overflow)
    fast = (shift > 0 and src.word <= FAST_ROUNDING_MAX_BITS and shift <= FAST_ROUNDING_MAX_BITS
            and rounding is not Rounding.STOCH)
    return CastPlan(shift, fast, shift > MAX_INT64_SHIFT, src.word + max(-shift, 0) - (1 if src.signed else 0),
                     not (lo <= reach[0] and reach[1] <= hi))


@_zero_d_safe
def requantize(
    raw: np.ndarray,
    src: QFormat,
    dst: QFormat,
    rounding: Rounding | str,
    overflow: Overflow | str | None,
    rng: np.random.Generator | None = None,
    want_mask: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cast raw integers of format ``src`` into format ``dst``: round, then overflow.

    Returns ``(raw_dst, out_of_range_mask)``; the mask is None when no value can be out of
    range (decided from the formats) or when it was not asked for (see :func:`apply_overflow`).
    With ``overflow=None`` the caller must check the mask (values are then unchanged beyond
    rounding).
    """
    rounding = Rounding.parse(rounding)
    overflow = None if overflow is None else Overflow.parse(overflow)
    plan = cast_plan(src, dst, rounding, overflow)
    if plan.shift > 0:  # drop fractional bits
        if plan.fast and raw.dtype == np.int64:
            value = round_shift_right_int64(raw, plan.shift, rounding)
        else:
            value = round_shift_right(to_object(raw) if plan.wide else raw, plan.shift, rounding, rng)
    elif plan.shift < 0:  # gain fractional bits: exact, but the value grows by -shift bits
        value = storage_for_bits(raw, plan.grown_bits) << (-plan.shift)
    else:
        value = raw
    if not plan.may_overflow:  # no value can leave the range: nothing to check
        return to_storage(value, dst), None
    return apply_overflow(value, dst, overflow, want_mask)


def float_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact decomposition ``x == m * 2**e`` of float64 values (m int64 with |m| < 2**53, e int64)."""
    significand, exponent = np.frexp(x)
    m = np.ldexp(significand, FLOAT64_SIGNIFICAND_BITS).astype(np.int64)
    e = exponent.astype(np.int64) - FLOAT64_SIGNIFICAND_BITS
    return m, e


def stochastic_words_one_each(x: np.ndarray, dst: QFormat) -> bool:
    """True when quantizing the finite float64 array ``x`` into ``dst`` with ``STOCH``
    (:func:`quantize_float`) draws exactly one word per element, in row-major order: no element
    drops more than 64 bits (``x == 0`` or ``|x| >= 2**(-12 - dst.frac)``), so no tie can draw
    another (:func:`stochastic_round_up`). The words can then be drawn ahead, for many arrays at once."""
    if not x.size:
        return True
    _, e = float_parts(x)
    return int(np.max(-(e + dst.frac))) <= STOCH_WORD_BITS


def _check_finite(x: np.ndarray) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)
        first = tuple(int(i) for i in bad[0]) if x.ndim else ()
        raise NonFiniteError(
            f"cannot convert NaN or infinity to fixed point: {len(bad)} non-finite value(s), "
            f"first {x[first]!r} at index {first}"
        )


@_zero_d_safe
def quantize_float(
    x,
    dst: QFormat,
    rounding: Rounding | str,
    overflow: Overflow | str | None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Round real numbers to raw integers of ``dst``, deciding on their exact value.

    Floats (any numpy float width; float32 and float16 convert to float64 exactly) are split
    into ``m * 2**e`` with integer ``m`` and rounded from that exact value, so there is no
    double rounding. Integer inputs are taken exactly at any size.
    Returns ``(raw_dst, out_of_range_mask)`` as :func:`requantize`.
    """
    rounding = Rounding.parse(rounding)
    arr = as_exact_array(x)
    if arr.dtype.kind == "b":
        raise RawTypeError("from_float needs numbers; got booleans (convert them explicitly, e.g. x.astype(int))")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise RawTypeError(
            f"from_float takes float16/32/64 exactly; {arr.dtype} (long double) would lose bits in "
            "float64: pass Python ints or split the value first"
        )
    if arr.dtype.kind in "iu" or (arr.dtype == object and _all_ints(arr)):
        small = arr.dtype.kind == "i" or (arr.dtype.kind == "u" and arr.dtype.itemsize < 8)
        ints = arr.astype(np.int64) if small else to_object(arr)
        exact_int_format = QFormat(_bit_length(ints) + 1, 0)  # signed, holds every input
        return requantize(ints, exact_int_format, dst, rounding, overflow, rng)
    if arr.dtype.kind != "f":
        raise RawTypeError(
            f"from_float needs real numbers (float or int arrays); got dtype {arr.dtype} "
            f"(complex, strings and other objects are not allowed)"
        )
    arr = arr.astype(np.float64, copy=False)
    _check_finite(arr)
    if rounding is not Rounding.STOCH and dst.frac >= 0 and arr.size:
        # Scaling by 2**frac (frac >= 0) is exact in float64; below 2**51 every mode is then an
        # exact float operation (x +- 0.5 is exact there), so the decision is on the exact value.
        with np.errstate(over="ignore"):  # an overflow to inf fails the test below: exact path
            scaled = np.ldexp(arr, dst.frac)
        if float(np.max(np.abs(scaled))) < FLOAT_ROUNDING_LIMIT:
            return apply_overflow(round_float(scaled, rounding).astype(np.int64), dst, overflow)
    m, e = float_parts(arr)
    lift = e + dst.frac  # raw value = m * 2**lift exactly
    left = np.maximum(lift, 0)
    right = np.maximum(-lift, 0)
    deterministic = rounding is not Rounding.STOCH
    if deterministic:
        # For |m| < 2**53 every right shift >= 54 rounds the same way (to 0 or -1 by sign and
        # mode), so shifts are clamped there and the computation stays in int64.
        right = np.minimum(right, FLOAT64_SIGNIFICAND_BITS + 1)
    fits_int64 = (arr.size == 0) or (
        int(left.max()) + FLOAT64_SIGNIFICAND_BITS <= 62 and int(right.max()) <= MAX_INT64_SHIFT
    )
    if not fits_int64:
        m, left, right = to_object(m), to_object(left), to_object(right)
    value = round_shift_right(m << left, right, rounding, rng)
    return apply_overflow(value, dst, overflow)


#: |x * 2**frac| below this is rounded in float64 arithmetic (x +- 0.5 is exact there).
FLOAT_ROUNDING_LIMIT = 2.0**51


def round_float(v: np.ndarray, rounding: Rounding, out: np.ndarray | None = None) -> np.ndarray:
    """Round float64 values |v| < 2**51 to integral float64 values by a deterministic mode, exactly.

    ``floor(v)`` and the midpoint ``floor(v) + 0.5`` are exact floats, and comparing v with the
    midpoint is exact, so ties are decided on v's exact value (``v + 0.5`` and ``v - floor(v)``
    are not always exact: 0.49999999999999994 + 0.5 rounds to 1.0). ``out=v`` rounds in place.
    """
    if rounding is Rounding.TRN:
        return np.floor(v, out=out)
    if rounding is Rounding.TRN_INF:
        return np.ceil(v, out=out)
    if rounding is Rounding.TRN_ZERO:
        return np.trunc(v, out=out)
    if rounding is Rounding.RND_CONV:
        return np.rint(v, out=out)  # IEEE round half to even
    floor = np.floor(v)
    midpoint = floor + 0.5
    if rounding is Rounding.RND:
        up = v >= midpoint
    elif rounding is Rounding.RND_MIN_INF:
        up = v > midpoint
    elif rounding is Rounding.RND_INF:
        up = (v > midpoint) | ((v == midpoint) & (v >= 0))
    elif rounding is Rounding.RND_ZERO:
        up = (v > midpoint) | ((v == midpoint) & (v < 0))
    else:
        raise ModeError(f"round_float handles deterministic modes only, not {rounding}")
    return np.add(floor, up, out=out)


def round_scaled_float(v: np.ndarray, rounding: Rounding, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`round_float` for values ``v = raw * 2**-s`` with |raw| <= 2**51 and 1 <= s <= 52
    (the compiled step's casts), where ``v +- 0.5 = (raw +- 2**(s-1)) * 2**-s`` has a numerator
    below 2**52 and is exact: RND is ``floor(v + 0.5)``, RND_MIN_INF ``ceil(v - 0.5)``.
    """
    if rounding is Rounding.RND:
        return np.floor(np.add(v, 0.5, out=out), out=out)
    if rounding is Rounding.RND_MIN_INF:
        return np.ceil(np.subtract(v, 0.5, out=out), out=out)
    return round_float(v, rounding, out=out)


def as_exact_array(x, name: str = "the values") -> np.ndarray:
    """``np.asarray(x)``, except that Python ints never pass through float64.

    (``np.asarray([0, 2**63])`` is float64 and would lose bits; such input becomes an object
    array of Python ints instead.)
    """
    if isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except ValueError:
        raise ShapeError(f"{name} is a ragged nested sequence (rows of different lengths); "
                         "give a rectangular array") from None
    if arr.dtype.kind == "f" and arr.size:
        as_objects = np.asarray(x, dtype=object)
        if _all_ints(as_objects):
            return as_objects
    return arr


def _all_ints(arr: np.ndarray) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.flat)


def _bit_length(ints: np.ndarray) -> int:
    """Bits of the largest magnitude in an integer array."""
    if ints.size == 0:
        return 0
    return max(int(ints.max()).bit_length(), int(ints.min()).bit_length())
