"""``FixedArray``: an immutable raw integer array plus its format, with exact arithmetic.

Arithmetic (``+ - * @``, ``sum``, negation, shifts, ``maximum``) never rounds: each result
has a format wide enough for every possible value (the rules are in ``format.py``).
The only lossy operation is :meth:`FixedArray.cast` (and :meth:`FixedArray.from_float`),
implemented in ``quantize.py``.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np

from fixprop.errors import RangeError, RawTypeError, ShapeError
from fixprop.fixed import quantize as q
from fixprop.fixed.blas import FLOAT64_EXACT_LIMIT, exact_matmul, max_abs, norms_prove_exact, sq_norm_max
from fixprop.fixed.format import (
    QFormat,
    add_format,
    as_format,
    matmul_format,
    mul_format,
    neg_format,
    sub_format,
    sum_format,
    union_format,
)
from fixprop.fixed.modes import DEFAULT_OVERFLOW, DEFAULT_ROUNDING, Overflow, Rounding

def _int_array(raw: Any) -> np.ndarray:
    """Validate raw integers; return them as int64 or as an object array of Python ints."""
    arr = q.as_exact_array(raw, "FixedArray's raw")
    kind = arr.dtype.kind
    if kind == "i":
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        return arr.astype(np.int64) if arr.dtype.itemsize < 8 else q.to_object(arr)
    if arr.dtype == object:
        out = np.empty(arr.shape, dtype=object)
        for index, v in np.ndenumerate(arr):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise RawTypeError(
                    f"raw values must be integers; got {v!r} ({type(v).__name__}) at index {index}. "
                    "For real values use FixedArray.from_float(x, fmt)."
                )
            out[index] = int(v)
        return out
    raise RawTypeError(
        f"raw values must be integers (an integer numpy array or Python ints); got dtype {arr.dtype}. "
        "For real values use FixedArray.from_float(x, fmt); for floats that hold integers, "
        "convert them explicitly (e.g. np.asarray(raw).astype(np.int64))."
    )


def _int64_in_range(ints: np.ndarray, fmt: QFormat, overflow: Overflow | None) -> int | None:
    """max |ints| when ``ints`` is a non-empty int64 array whose values all lie in the range that
    ``overflow`` keeps for ``fmt`` (so no mode changes any value), else None.

    Two reductions (min, max) instead of an elementwise mask, and max |raw| comes with them."""
    if ints.dtype != np.int64 or ints.size == 0 or not fmt.fits_int64:
        return None
    lo, hi = q.overflow_bounds(fmt, overflow)
    low, high = int(ints.min()), int(ints.max())
    if low < lo or high > hi:
        return None
    return max(high, -low)


def _frozen(raw: np.ndarray) -> np.ndarray:
    """Mark an array fixprop owns as read-only (views of read-only arrays already are)."""
    raw = np.asarray(raw)
    if raw.flags.writeable:
        raw.flags.writeable = False
    return raw


def _range_error(raw: np.ndarray, mask: np.ndarray, fmt: QFormat, what: str) -> RangeError:
    index = tuple(int(i) for i in np.argwhere(mask)[0]) if mask.ndim else ()
    return RangeError(
        f"{what}: {int(mask.sum())} value(s) outside {fmt}'s raw range [{fmt.raw_min}, {fmt.raw_max}], "
        f"first {int(raw[index])} at index {index}. Pass overflow='SAT', 'WRAP', 'SAT_SYM' or "
        "'SAT_ZERO' to bring them into range, or choose a wider format."
    )


class FixedArray:
    """An immutable array of fixed-point values: raw integers ``raw`` in format ``fmt``.

    The value of element i is ``raw[i] * 2**-fmt.frac``. ``raw`` is stored as int64 when the
    format fits 64 bits (``fmt.fits_int64``) and as Python ints (numpy object array) beyond.

    Args:
        raw: integers (numpy integer array, Python ints, nested lists).
        fmt: a :class:`QFormat` or a short string such as ``"s24.12"``.
        overflow: ``None`` (default) raises :class:`RangeError` for raw values outside the
            format; an :class:`Overflow` mode brings them into range instead.
    """

    # _pending: (flat int64 array, start, end, shape or None) of a compiled step's output whose
    # ``_ints`` view is made at its first use (``_settle``); None once made, and for every other array
    __slots__ = ("_ints", "_fmt", "_float_cache", "_max_abs_cache", "_sq_cache", "_pending")
    __array_ufunc__ = None  # numpy operators defer to FixedArray: no silent float conversion
    __hash__ = None  # elementwise == makes FixedArray unhashable, like numpy arrays

    def __init__(self, raw: Any, fmt: QFormat | str, overflow: Overflow | str | None = None) -> None:
        fmt = as_format(fmt)
        ints = _int_array(raw)
        if overflow is not None:
            overflow = Overflow.parse(overflow)
        self._float_cache = self._max_abs_cache = self._sq_cache = self._pending = None
        in_range = _int64_in_range(ints, fmt, overflow)
        if in_range is not None:  # every value already in range: no overflow mode changes any
            stored, self._max_abs_cache = ints, in_range
        else:
            stored, out_of_range = q.apply_overflow(ints, fmt, overflow)
            if overflow is None and out_of_range is not None and out_of_range.any():
                raise _range_error(ints, out_of_range, fmt, "FixedArray(raw, fmt)")
        self._ints = _frozen(np.array(stored, copy=True))  # never freeze or alias the caller's array
        self._fmt = fmt

    @classmethod
    def _trusted(cls, raw: np.ndarray, fmt: QFormat) -> "FixedArray":
        """Wrap raw integers already known to be in range; converts to fmt's storage."""
        out = object.__new__(cls)
        out._ints = _frozen(q.to_storage(np.asarray(raw), fmt))
        out._fmt = fmt
        out._float_cache = out._max_abs_cache = out._sq_cache = out._pending = None
        return out

    @classmethod
    def _trusted_int64(cls, raw: np.ndarray, fmt: QFormat) -> "FixedArray":
        """Wrap a read-only int64 array (which fixprop owns) of raw integers already known to be in
        range of ``fmt``, a format that fits int64: the compiled steps' outputs."""
        out = object.__new__(cls)
        out._ints = raw
        out._fmt = fmt
        out._float_cache = out._max_abs_cache = out._sq_cache = out._pending = None
        return out

    @classmethod
    def _trusted_int64_slice(cls, flat: np.ndarray, start: int, end: int, shape: tuple[int, ...] | None,
                             fmt: QFormat) -> "FixedArray":
        """``_trusted_int64(flat[start:end].reshape(shape), fmt)`` (``shape`` None: the 1-D slice),
        with the view made at the array's first use: a compiled step returns every result this way,
        and a caller that reads few of them does not pay for the others' views."""
        out = object.__new__(cls)
        out._ints = out._float_cache = out._max_abs_cache = out._sq_cache = None
        out._fmt = fmt
        out._pending = (flat, start, end, shape)
        return out

    def _settle(self) -> None:
        """Make the pending view of ``_trusted_int64_slice`` (called before ``_ints`` is read).
        Safe when threads race to read a fresh result: ``_ints`` is set before ``_pending`` is
        cleared, and a thread that finds nothing pending finds ``_ints`` set."""
        pending = self._pending
        if pending is not None:
            flat, start, end, shape = pending
            self._ints = flat[start:end] if shape is None else flat[start:end].reshape(shape)
            self._pending = None

    def __getstate__(self) -> dict:
        """What pickle and copy keep: this array's raw integers (a pending result's own view,
        not the buffer it shares with the other results of its call) and its format."""
        return {"raw": self.raw, "fmt": self._fmt}

    def __setstate__(self, state: Any) -> None:
        """Restore :meth:`__getstate__`'s state, read-only; also the slot state pickled by
        fixprop before 2026-12-04, ``(None, {slot: value})``."""
        if isinstance(state, tuple):  # the default state of a class with __slots__
            slots = state[1]
            fmt, ints, floats = slots["_fmt"], slots.get("_ints"), slots.get("_float_cache")
            raw = ints if ints is not None else q.to_storage(np.asarray(floats).astype(np.int64), fmt)
            state = {"raw": raw, "fmt": fmt}
        self._ints = _frozen(np.asarray(state["raw"]))
        self._fmt = state["fmt"]
        self._float_cache = self._max_abs_cache = self._sq_cache = self._pending = None

    @classmethod
    def _trusted_float(cls, values: np.ndarray, fmt: QFormat) -> "FixedArray":
        """Wrap a float64 array holding the exact raw integers (each |value| <= 2**53, in range);
        the int64 ``raw`` is made from it only when asked for."""
        out = object.__new__(cls)
        out._ints = None
        out._fmt = fmt
        out._float_cache = _frozen(values)
        out._max_abs_cache = out._sq_cache = out._pending = None
        return out

    def _view(self, ints: np.ndarray | None, floats: np.ndarray | None, same_elements: bool) -> "FixedArray":
        """A FixedArray over views of the storage, carrying the caches that stay valid (the
        squared-norm cache depends on the layout: only ``T`` carries it, swapped)."""
        out = object.__new__(FixedArray)
        out._ints, out._fmt, out._float_cache = ints, self._fmt, floats
        out._max_abs_cache = self._max_abs_cache if same_elements else None
        out._sq_cache = out._pending = None
        return out

    def _storage(self) -> np.ndarray:
        """Whichever array is present (for shapes): the ints, else the exact float copy."""
        if self._pending is not None:
            self._settle()
        return self._ints if self._ints is not None else self._float_cache

    def _float64(self) -> np.ndarray | None:
        """raw as float64 (cached; exact) when every value of the format is below 2**53, else None."""
        if self._float_cache is None and self._fmt.word <= q.FLOAT64_SIGNIFICAND_BITS:
            if self._pending is not None:
                self._settle()
            cached = self._ints.astype(np.float64)
            cached.flags.writeable = False
            self._float_cache = cached
        return self._float_cache

    def _max_abs(self) -> int:
        """max |raw| as a Python int (cached)."""
        if self._max_abs_cache is None:
            self._max_abs_cache = max_abs(self._storage())
        return self._max_abs_cache

    def _sq_norm(self, axis: int) -> float:
        """``blas.sq_norm_max`` of the exact float64 copy along ``axis`` (-1 rows, -2 columns;
        cached; the matmul's norm bound). Only called when ``_float64()`` is not None."""
        if self._sq_cache is None:
            self._sq_cache = {}
        if axis not in self._sq_cache:
            self._sq_cache[axis] = sq_norm_max(self._float64(), axis)
        return self._sq_cache[axis]

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_float(
        cls,
        x: Any,
        fmt: QFormat | str,
        rounding: Rounding | str = DEFAULT_ROUNDING,
        overflow: Overflow | str | None = DEFAULT_OVERFLOW,
        rng: np.random.Generator | None = None,
    ) -> "FixedArray":
        """Quantize real numbers into ``fmt``, rounding the exact float64 value (no double rounding).

        Integer inputs are taken exactly at any size. NaN and inf raise :class:`NonFiniteError`.
        ``overflow=None`` raises :class:`RangeError` instead of clamping or wrapping.
        ``rng`` is required by ``Rounding.STOCH``.
        """
        fmt = as_format(fmt)
        x = q.as_exact_array(x, "from_float's x")
        raw, out_of_range = q.quantize_float(x, fmt, rounding, overflow, rng)
        if overflow is None and out_of_range is not None and out_of_range.any():
            raise _range_error(raw, out_of_range, fmt, "FixedArray.from_float")
        return cls._trusted(raw, fmt)

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], fmt: QFormat | str) -> "FixedArray":
        """An array of zeros of the given shape and format."""
        fmt = as_format(fmt)
        return cls._trusted(np.zeros(shape, dtype=np.int64), fmt)

    # -- the only lossy operation ----------------------------------------------------------
    def cast(
        self,
        fmt: QFormat | str,
        rounding: Rounding | str = DEFAULT_ROUNDING,
        overflow: Overflow | str | None = DEFAULT_OVERFLOW,
        rng: np.random.Generator | None = None,
    ) -> "FixedArray":
        """Convert to ``fmt``: drop fractional bits by ``rounding``, then fit by ``overflow``.

        Defaults: ``RND_CONV`` (ties to even) and ``SAT``. ``overflow=None`` raises
        :class:`RangeError` on any out-of-range value. ``rng`` is required by ``STOCH``.
        """
        fmt = as_format(fmt)
        raw, out_of_range = q.requantize(self.raw, self._fmt, fmt, rounding, overflow, rng)
        if overflow is None and out_of_range is not None and out_of_range.any():
            raise _range_error(raw, out_of_range, fmt, f"cast {self._fmt} -> {fmt}")
        return FixedArray._trusted(raw, fmt)

    # -- views -----------------------------------------------------------------------------
    @property
    def raw(self) -> np.ndarray:
        """The raw integers (read-only; int64, or object of Python ints for wide formats)."""
        if self._ints is None:
            self._settle()  # a pending view (sets _ints)
            if self._ints is not None:
                return self._ints
            # held as an exact float64 copy so far
            self._ints = _frozen(q.to_storage(self._float_cache.astype(np.int64), self._fmt))
        return self._ints

    @property
    def fmt(self) -> QFormat:
        """The format of every element."""
        return self._fmt

    @property
    def shape(self) -> tuple[int, ...]:
        return self._storage().shape

    @property
    def ndim(self) -> int:
        return self._storage().ndim

    @property
    def size(self) -> int:
        return self._storage().size

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of ``raw``: int64, or object (Python ints) beyond 64 bits."""
        if self._ints is None:
            return np.dtype(np.int64) if self._fmt.fits_int64 else np.dtype(object)
        return self._ints.dtype

    def __len__(self) -> int:
        return len(self._storage())

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def _map(self, op: Callable[[np.ndarray], np.ndarray], same_elements: bool) -> "FixedArray":
        if self._pending is not None:
            self._settle()
        ints, floats = self._ints, self._float_cache
        return self._view(None if ints is None else op(ints), None if floats is None else op(floats), same_elements)

    def __getitem__(self, key: Any) -> "FixedArray":
        return self._map(lambda a: np.asarray(a[key]), same_elements=False)

    @property
    def T(self) -> "FixedArray":
        out = self._map(lambda a: a.T, same_elements=True)
        if self.ndim == 2 and self._sq_cache:  # a 2-D transpose swaps row and column norms
            out._sq_cache = {-1 - (axis == -1): v for axis, v in self._sq_cache.items()}
        return out

    def transpose(self, *axes: int) -> "FixedArray":
        return self._map(lambda a: a.transpose(*axes), same_elements=True)

    def reshape(self, *shape: Any) -> "FixedArray":
        return self._map(lambda a: a.reshape(*shape), same_elements=True)

    def ravel(self) -> "FixedArray":
        return self.reshape(-1)

    def to_float(self) -> np.ndarray:
        """Values as float64 (each rounded to the nearest float64; for display and comparison)."""
        frac = self._fmt.frac
        if self._pending is not None:
            self._settle()
        if self._float_cache is not None:
            return np.ldexp(self._float_cache, -frac)
        if self._ints.dtype == np.int64:
            return np.ldexp(self._ints.astype(np.float64), -frac)
        if frac >= 0:
            scale = 1 << frac
            convert: Callable[[int], float] = lambda v: v / scale  # noqa: E731 - correctly rounded
        else:
            convert = lambda v: float(v << -frac)  # noqa: E731
        return np.vectorize(convert, otypes=[np.float64])(self._ints) if self.size else np.zeros(self.shape)

    def identical(self, other: "FixedArray") -> bool:
        """True when ``other`` has the same format, shape and raw integers."""
        return (
            isinstance(other, FixedArray)
            and self._fmt == other._fmt
            and self.shape == other.shape
            and bool(np.all(self.raw == other.raw))
        )

    def __repr__(self) -> str:
        values = np.array2string(self.to_float(), separator=", ", threshold=64)
        raws = np.array2string(self.raw, separator=", ", threshold=64)
        return f"FixedArray(fmt={self._fmt}, value={values}, raw={raws})"

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError("the truth value of a FixedArray with more than one element is ambiguous")
        return bool(self.raw.reshape(-1)[0] != 0)

    # -- exact arithmetic --------------------------------------------------------------------
    def _aligned(self, fmt: QFormat) -> np.ndarray:
        """raw rescaled to ``fmt.frac`` (exact left shift), stored as ``fmt`` requires."""
        shift = fmt.frac - self._fmt.frac
        assert shift >= 0, "alignment only ever adds fractional bits"
        raw = self.raw if fmt.fits_int64 else q.to_object(self.raw)
        return raw << shift if shift else raw

    def __add__(self, other: Any) -> "FixedArray":
        other = _operand(other, "+")
        fmt = add_format(self._fmt, other._fmt)
        _broadcast_shape(self, other, "+")
        return FixedArray._trusted(self._aligned(fmt) + other._aligned(fmt), fmt)

    def __radd__(self, other: Any) -> "FixedArray":
        return _operand(other, "+").__add__(self)

    def __sub__(self, other: Any) -> "FixedArray":
        other = _operand(other, "-")
        fmt = sub_format(self._fmt, other._fmt)
        _broadcast_shape(self, other, "-")
        return FixedArray._trusted(self._aligned(fmt) - other._aligned(fmt), fmt)

    def __rsub__(self, other: Any) -> "FixedArray":
        return _operand(other, "-").__sub__(self)

    def __neg__(self) -> "FixedArray":
        fmt = neg_format(self._fmt)
        return FixedArray._trusted(-self._aligned(fmt), fmt)

    def __pos__(self) -> "FixedArray":
        return self

    def __mul__(self, other: Any) -> "FixedArray":
        other = _operand(other, "*")
        fmt = mul_format(self._fmt, other._fmt)
        _broadcast_shape(self, other, "*")
        a, b = (self.raw, other.raw) if fmt.fits_int64 else (q.to_object(self.raw), q.to_object(other.raw))
        return FixedArray._trusted(a * b, fmt)

    def __rmul__(self, other: Any) -> "FixedArray":
        return _operand(other, "*").__mul__(self)

    def __matmul__(self, other: Any) -> "FixedArray":
        if not isinstance(other, FixedArray):
            raise RawTypeError(f"@ needs two FixedArrays; got {type(other).__name__}")
        return matmul(self, other)

    def __lshift__(self, n: int) -> "FixedArray":
        """Multiply by ``2**n`` exactly: same raw integers, ``frac - n`` (as APyTypes ``<<``)."""
        n = _shift_amount(n)
        self._storage()  # a pending view made
        out = self._view(self._ints, self._float_cache, same_elements=True)
        out._fmt = QFormat(self._fmt.word, self._fmt.frac - n, self._fmt.signed)
        return out

    def __rshift__(self, n: int) -> "FixedArray":
        """Divide by ``2**n`` exactly: same raw integers, ``frac + n`` (as APyTypes ``>>``)."""
        return self.__lshift__(-_shift_amount(n))

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "FixedArray":
        """Exact sum; the word grows by ``ceil(log2 n)`` for ``n`` summed terms."""
        axes = tuple(range(self.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
        if any(not isinstance(a, (int, np.integer)) or not -self.ndim <= a < self.ndim for a in axes):
            raise ShapeError(f"sum axis {axis!r} is out of range for an array of {self.ndim} dimension(s)")
        n = int(np.prod([self.shape[a] for a in axes], dtype=np.int64)) if axes else 1
        fmt = sum_format(self._fmt, n)
        raw = self.raw if fmt.fits_int64 else q.to_object(self.raw)
        total = np.sum(raw, axis=axis, keepdims=keepdims, dtype=raw.dtype)
        return FixedArray._trusted(np.asarray(total, dtype=raw.dtype), fmt)

    # -- comparisons (exact, by value; formats may differ) -------------------------------
    def _compare(self, other: Any, op: Callable, symbol: str) -> np.ndarray:
        other = _operand(other, symbol)
        fmt = union_format(self._fmt, other._fmt)
        _broadcast_shape(self, other, symbol)
        return np.asarray(op(self._aligned(fmt), other._aligned(fmt)), dtype=bool)

    def __lt__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.lt, "<")

    def __le__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.le, "<=")

    def __gt__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.gt, ">")

    def __ge__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.ge, ">=")

    def __eq__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        return self._compare(other, operator.eq, "==")

    def __ne__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        return self._compare(other, operator.ne, "!=")


def _shift_amount(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise RawTypeError(f"shift amounts must be integers; got {n!r}")
    return int(n)


def _operand(value: Any, symbol: str) -> FixedArray:
    """A FixedArray, or an integer scalar as an exact signed constant (frac 0)."""
    if isinstance(value, FixedArray):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        v = int(value)
        return FixedArray._trusted(np.asarray(v, dtype=object), QFormat(v.bit_length() + 1, 0, True))
    raise RawTypeError(
        f"cannot apply {symbol} to a FixedArray and {type(value).__name__} {value!r} exactly: "
        "operands must be FixedArrays or integers; convert real numbers with "
        "FixedArray.from_float(value, fmt) first"
    )


def _broadcast_shape(a: FixedArray, b: FixedArray, symbol: str) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"shapes {a.shape} and {b.shape} do not broadcast for {symbol}") from None


def matmul(a: FixedArray, b: FixedArray) -> FixedArray:
    """Exact matrix product (numpy ``@`` shape rules); word = wa + wb + ceil(log2 K), frac = fa + fb.

    Computed on float64 BLAS: in one call when the formats, max |a| * max |b| * K, or the row
    and column norms (cached on the operands) bound every partial sum by 2**53, the result then
    kept as its exact float64 copy; else in exact K blocks, splitting operands into limbs where
    a single product could reach 2**53 (``fixed/blas.py``). The result is the exact integer product.
    """
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"@ needs arrays of at least one dimension; got shapes {a.shape} and {b.shape}")
    k = a.shape[-1]
    k_b = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if k != k_b:
        raise ShapeError(
            f"@ inner dimensions differ: {a.shape} @ {b.shape} (a's last axis {k} must equal "
            f"b's {'second-to-last' if b.ndim >= 2 else 'only'} axis {k_b})"
        )
    fmt = matmul_format(a.fmt, b.fmt, k)
    if fmt.word <= q.FLOAT64_SIGNIFICAND_BITS:  # the formats alone prove one float64 product exact
        return FixedArray._trusted_float(np.matmul(a._float64(), b._float64()), fmt)
    a_float, b_float = a._float64(), b._float64()
    if a_float is None or b_float is None:
        return FixedArray._trusted(exact_matmul(a.raw, b.raw, a._max_abs(), b._max_abs(), a_float, b_float), fmt)
    per_product = a._max_abs() * b._max_abs()
    if per_product * k <= FLOAT64_EXACT_LIMIT:
        return FixedArray._trusted_float(np.matmul(a_float, b_float), fmt)  # the data prove it exact
    a_sq = b_sq = None
    if per_product <= FLOAT64_EXACT_LIMIT:  # the norms may prove it (blas.norms_prove_exact)
        a_sq, b_sq = a._sq_norm(-1), b._sq_norm(-2)
        if norms_prove_exact(a_sq, b_sq, k):
            return FixedArray._trusted_float(np.matmul(a_float, b_float), fmt)
    product = exact_matmul(a.raw, b.raw, a._max_abs(), b._max_abs(), a_float, b_float, a_sq, b_sq)
    return FixedArray._trusted(product, fmt)


def maximum(a: FixedArray | int, b: FixedArray | int) -> FixedArray:
    """Elementwise exact maximum. ``maximum(x, 0)`` keeps x's format (the ReLU of hardware).

    When one operand is an integer constant representable in the other's format, the result
    has that format; otherwise it has the union format of both.
    """
    fast = _with_constant(np.maximum, a, b)
    return fast if fast is not None else _select(lambda ra, rb: ra >= rb, a, b, "maximum")


def minimum(a: FixedArray | int, b: FixedArray | int) -> FixedArray:
    """Elementwise exact minimum (format rule as :func:`maximum`)."""
    fast = _with_constant(np.minimum, a, b)
    return fast if fast is not None else _select(lambda ra, rb: ra <= rb, a, b, "minimum")


def _with_constant(ufunc: Callable, a: Any, b: Any) -> FixedArray | None:
    """``ufunc(x, k)`` in x's own format when one operand is an integer k that format holds."""
    if isinstance(b, FixedArray):
        a, b = b, a
    if not isinstance(a, FixedArray) or isinstance(b, bool) or not isinstance(b, (int, np.integer)):
        return None
    k = constant_raw(a.fmt, int(b))
    return None if k is None else FixedArray._trusted(ufunc(a.raw, k), a.fmt)


def constant_raw(fmt: QFormat, value: int) -> int | None:
    """The raw integer of ``value`` in ``fmt``, or None when fmt cannot hold it exactly."""
    if fmt.frac < 0 and value % (1 << -fmt.frac):
        return None
    raw = value << fmt.frac if fmt.frac >= 0 else value >> -fmt.frac
    return raw if fmt.contains_raw(raw) else None


def where(condition: Any, a: FixedArray | int, b: FixedArray | int) -> FixedArray:
    """Elementwise ``a`` where ``condition`` is true, else ``b`` (exact; format rule as :func:`maximum`)."""
    mask = np.asarray(condition, dtype=bool)
    return _select(lambda ra, rb: mask, a, b, "where")


def _select(take_a: Callable, a: Any, b: Any, name: str) -> FixedArray:
    """Pick elements of a or b by ``take_a(aligned_a, aligned_b)``, in a format holding both."""
    fa, fb = _operand(a, name), _operand(b, name)
    _broadcast_shape(fa, fb, name)
    wide = union_format(fa.fmt, fb.fmt)
    ra, rb = fa._aligned(wide), fb._aligned(wide)
    chosen = np.asarray(np.where(take_a(ra, rb), ra, rb), dtype=ra.dtype)
    fmt = wide
    if not isinstance(b, FixedArray) and _holds(fa.fmt, fb):
        fmt = fa.fmt
    elif not isinstance(a, FixedArray) and _holds(fb.fmt, fa):
        fmt = fb.fmt
    # Every chosen value is a value of a or of the constant, so it is exact in fmt (TRN drops zeros).
    raw, _ = q.requantize(chosen, wide, fmt, Rounding.TRN, None)
    return FixedArray._trusted(raw, fmt)


def _holds(fmt: QFormat, constant: FixedArray) -> bool:
    """True when the integer constant's value is exactly representable in ``fmt``."""
    return constant_raw(fmt, int(constant.raw.reshape(-1)[0])) is not None
