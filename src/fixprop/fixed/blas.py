"""Exact integer matrix products on float64 BLAS.

A float64 matmul of integers is exact while every partial sum stays below 2**53 in magnitude:
each product and each addition then has an exactly representable result, whatever order and
fused multiply-adds BLAS uses. The bound used is data-dependent, ``max|A| * max|B|`` per
product; the K dimension is cut into blocks whose sums stay below 2**53, and block results are
added in int64 (or in Python ints when the total can reach 2**62). When one product alone can
reach 2**53 the wider operand is split into a high and a low limb (``A = A_hi * 2**s + A_lo``)
and each part is multiplied the same way. Python-int operands (words above 64 bits) go through
the same splitting until their limbs fit int64.
"""

from __future__ import annotations

import numpy as np

#: Every partial sum of a float64 BLAS product must stay at or below this.
FLOAT64_EXACT_LIMIT = 1 << 53
#: Above this many K blocks, splitting an operand into limbs is cheaper than blocking.
MAX_K_BLOCKS = 4
#: int64 sums are used while the result's bound stays below this (room for one addition).
INT64_SAFE_LIMIT = 1 << 62


def max_abs(raw: np.ndarray) -> int:
    """max |raw| as a Python int (exact for int64 -2**63 too); 0 for an empty array."""
    if raw.size == 0:
        return 0
    return max(int(raw.max()), -int(raw.min()))


def exact_matmul(a: np.ndarray, b: np.ndarray, a_max: int | None = None, b_max: int | None = None,
                 a_float: np.ndarray | None = None, b_float: np.ndarray | None = None) -> np.ndarray:
    """Exact ``a @ b`` of integer arrays (int64 or object), numpy matmul shape rules.

    ``a_max``/``b_max`` (max |a|, max |b|) and ``a_float``/``b_float`` (float64 copies of the
    operands, exact) are computed when not given. Returns int64 when the result's bound is below
    2**62, else an object array of Python ints.
    """
    a_max = max_abs(a) if a_max is None else a_max
    b_max = max_abs(b) if b_max is None else b_max
    return _matmul(a, b, a_max, b_max, a_float, b_float)


def _k_slice(x: np.ndarray, start: int, stop: int, is_left: bool) -> np.ndarray:
    if is_left:
        return x[..., start:stop]
    return x[start:stop] if x.ndim == 1 else x[..., start:stop, :]


def _matmul(a, b, a_max: int, b_max: int, a_float=None, b_float=None) -> np.ndarray:
    k = a.shape[-1]
    per_product = a_max * b_max
    total = per_product * k
    wide = total >= INT64_SAFE_LIMIT
    if per_product == 0 or k == 0:
        return np.zeros(_result_shape(a.shape, b.shape), dtype=np.int64)
    if per_product <= FLOAT64_EXACT_LIMIT:
        block = FLOAT64_EXACT_LIMIT // per_product  # terms whose sum is exact in float64
        n_blocks = -(-k // block)
        if n_blocks <= MAX_K_BLOCKS:
            af = a.astype(np.float64) if a_float is None else a_float
            bf = b.astype(np.float64) if b_float is None else b_float
            if n_blocks == 1:
                result = np.matmul(af, bf).astype(np.int64)
                return result.astype(object) if wide else result
            out = None
            for start in range(0, k, block):
                part = np.matmul(_k_slice(af, start, start + block, True),
                                 _k_slice(bf, start, start + block, False)).astype(np.int64)
                if wide:
                    part = part.astype(object)
                out = part if out is None else out + part
            return out
    # One product can reach 2**53 (or blocking would take too many passes): split the wider
    # operand into limbs, hi * 2**s + lo with 0 <= lo < 2**s, and multiply each limb exactly.
    if a_max >= b_max:
        hi, lo, s, hi_max, lo_max = _split(a, a_max)
        parts = (_matmul(hi, b, hi_max, b_max), _matmul(lo, b, lo_max, b_max, b_float=b_float))
    else:
        hi, lo, s, hi_max, lo_max = _split(b, b_max)
        parts = (_matmul(a, hi, a_max, hi_max), _matmul(a, lo, a_max, lo_max, a_float=a_float))
    high, low = parts
    if wide:
        return (high.astype(object) << s) + low.astype(object)
    return (high << s) + low


def _result_shape(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``a @ b`` under numpy's matmul rules (operands already checked to agree)."""
    rows = a_shape[-2:-1]  # () for a 1-D left operand
    cols = b_shape[-1:] if len(b_shape) >= 2 else ()
    batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) if len(a_shape) > 2 or len(b_shape) > 2 else ()
    return tuple(batch) + rows + cols


def _split(x: np.ndarray, x_max: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """x = hi * 2**s + lo with 0 <= lo < 2**s and s about half of x's bits; limbs as int64 when they fit."""
    s = max(x_max.bit_length() // 2, 1)
    hi = x >> s
    lo = x & ((1 << s) - 1)
    hi_max = max_abs(hi)
    if hi.dtype == object and hi_max < INT64_SAFE_LIMIT:
        hi = hi.astype(np.int64)
    if lo.dtype == object and s <= 62:
        lo = lo.astype(np.int64)
    return hi, lo, s, hi_max, (1 << s) - 1 if x_max else 0
