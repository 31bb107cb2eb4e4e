"""Exact integer matrix products on float64 BLAS.

A float64 matmul of integers is exact while every partial sum stays below 2**53 in magnitude:
each product and each addition then has an exactly representable result, whatever order and
fused multiply-adds BLAS uses. The bound used is data-dependent, ``max|A| * max|B|`` per
product; the K dimension is cut into blocks whose sums stay below 2**53, and block results are
added in int64 (or in Python ints when the total can reach 2**62). When one product alone can
reach 2**53 the wider operand is split into a high and a low limb (``A = A_hi * 2**s + A_lo``)
and each part is multiplied the same way. Python-int operands (words above 64 bits) go through
the same splitting until their limbs fit int64.

Before blocking, a second data bound is tried: by Cauchy-Schwarz every partial sum of row i of A
times column j of B is at most ``sum_k |a_ik| |b_kj| <= ||a_i|| * ||b_j||``, so one BLAS call is
exact when ``max_i ||a_i||**2 * max_j ||b_j||**2 <= 2**106``. The squared norms are computed in
float64 and the test keeps a margin that covers their rounding (see :func:`norms_prove_exact`).
On uniform full-scale data (s24.12, K = 256) this bound holds with room to spare while the
``max|A| * max|B| * K`` bound needs two blocks.
"""

from __future__ import annotations

import threading

import numpy as np

#: Every partial sum of a float64 BLAS product must stay at or below this.
FLOAT64_EXACT_LIMIT = 1 << 53
#: Above this many K blocks, splitting an operand into limbs is cheaper than blocking.
MAX_K_BLOCKS = 4
#: int64 sums are used while the result's bound stays below this (room for one addition).
INT64_SAFE_LIMIT = 1 << 62
#: The norm bound is used up to this K (its rounding margin, 2**-20, is proven for K <= 2**24).
NORM_BOUND_MAX_K = 1 << 24
#: Block products up to this size go through one float64 scratch buffer kept per thread, at most
#: this big: a fresh temporary can cost a page fault per 4 KiB page on first touch (measured on a
#: 2-core VM: 0.2 to 0.4 ms for 512 KiB once glibc has returned freed memory to the system, a
#: third to a half of a 256x256x256 BLAS call). Larger products get a temporary of their own.
SCRATCH_MAX_BYTES = 1 << 22

_scratch = threading.local()


def _float_scratch(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float64 array of ``shape``: a view of this thread's scratch buffer when
    small enough (its contents are overwritten by the next caller), else a new array."""
    size = 1
    for n in shape:
        size *= n
    if size * 8 > SCRATCH_MAX_BYTES:
        return np.empty(shape, dtype=np.float64)
    buf = getattr(_scratch, "buffer", None)
    if buf is None or buf.size < size:
        buf = _scratch.buffer = np.empty(max(size, 1), dtype=np.float64)
    return buf[:size].reshape(shape)


def max_abs(raw: np.ndarray) -> int:
    """max |raw| as a Python int (exact for int64 -2**63 too); 0 for an empty array."""
    if raw.size == 0:
        return 0
    return max(int(raw.max()), -int(raw.min()))


def sq_norm_max(x: np.ndarray, axis: int) -> float:
    """max over the other axes of ``sum(x**2)`` along ``axis`` (-1: rows, -2: columns; a 1-D
    array is one vector), computed in float64 from a float64 array of integers.

    Computed in any order, the sum of K squares is within a relative ``gamma_K = K u / (1 - K u)``
    (u = 2**-53) of the exact one; :func:`norms_prove_exact` allows for that.
    """
    if x.size == 0:
        return 0.0
    if x.ndim == 1:
        return float(np.dot(x, x))
    sq = np.einsum("...i,...i->...", x, x) if axis == -1 else np.einsum("...ij,...ij->...j", x, x)
    return float(sq.max())


def norms_prove_exact(a_sq: float, b_sq: float, k: int) -> bool:
    """True when computed squared norms prove every partial sum of ``a @ b`` at most 2**53.

    ``a_sq`` is :func:`sq_norm_max` of a's rows, ``b_sq`` of b's columns, each over K terms.
    Exact squared norms A, B satisfy A <= a_sq / (1 - gamma_K) (and likewise B), and the float
    product p = fl(a_sq * b_sq) >= a_sq * b_sq * (1 - u). For K <= 2**24, gamma_K < 2**-28, so
    ``p <= 2**106 * (1 - 2**-20)`` gives A * B <= 2**106 * (1 - 2**-20) / ((1 - u)(1 - gamma_K)**2)
    <= 2**106, hence ||a_i|| ||b_j|| <= 2**53 for every i, j, and by Cauchy-Schwarz every partial
    sum (and every product) of integers in the BLAS product is an integer of magnitude <= 2**53,
    exactly representable: the float64 result is exact whatever order or FMA BLAS uses.
    """
    return 0 < k <= NORM_BOUND_MAX_K and a_sq * b_sq <= float(1 << 106) * (1.0 - 2.0**-20)


def exact_matmul(a: np.ndarray, b: np.ndarray, a_max: int | None = None, b_max: int | None = None,
                 a_float: np.ndarray | None = None, b_float: np.ndarray | None = None,
                 a_sq: float | None = None, b_sq: float | None = None) -> np.ndarray:
    """Exact ``a @ b`` of integer arrays (int64 or object), numpy matmul shape rules.

    ``a`` and ``b`` may also be float64 arrays holding integers of magnitude at most 2**53
    (they are converted to int64 only if an operand has to be split into limbs).

    ``a_max``/``b_max`` (max |a|, max |b|), ``a_float``/``b_float`` (float64 copies of the
    operands, exact) and ``a_sq``/``b_sq`` (:func:`sq_norm_max` of a's rows and b's columns)
    are computed when needed and not given. Returns int64 when the result's bound is below
    2**62, else an object array of Python ints.
    """
    a_max = max_abs(a) if a_max is None else a_max
    b_max = max_abs(b) if b_max is None else b_max
    k = a.shape[-1]
    per_product = a_max * b_max
    if 0 < per_product <= FLOAT64_EXACT_LIMIT and per_product * k > FLOAT64_EXACT_LIMIT:
        # The max bound alone needs blocks or limbs: try the norm bound first (one BLAS call).
        # per_product <= 2**53 with both maxima >= 1 keeps every operand exact in float64.
        a_float = _as_float(a) if a_float is None else a_float
        b_float = _as_float(b) if b_float is None else b_float
        if k <= NORM_BOUND_MAX_K:
            a_sq = sq_norm_max(a_float, -1) if a_sq is None else a_sq
            b_sq = sq_norm_max(b_float, -2) if b_sq is None else b_sq
            if norms_prove_exact(a_sq, b_sq, k):
                return _blocked(a_float, b_float, k, False)  # one block: one BLAS call
    return _matmul(a, b, a_max, b_max, a_float, b_float)


def _as_float(x: np.ndarray) -> np.ndarray:
    """x as float64 (exact: only called when every |x| <= 2**53); float64 input as it is."""
    return x if x.dtype == np.float64 else x.astype(np.float64)


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
            af = _as_float(a) if a_float is None else a_float
            bf = _as_float(b) if b_float is None else b_float
            return _blocked(af, bf, block, wide)
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


def _blocked(af: np.ndarray, bf: np.ndarray, block: int, wide: bool) -> np.ndarray:
    """Sum of the exact float64 products of K blocks of ``block`` terms (one block when
    ``block >= K``), as int64 (object if wide).

    One float64 buffer (this thread's scratch, :func:`_float_scratch`) takes every block
    (``out=``); the first block is cast into the int64 result and later ones are added to it
    with the cast done on the fly (``np.add`` with ``dtype=int64``), so the result is the only
    new array of its size. The casts are exact: every block sum is an integer of magnitude
    <= 2**53.
    """
    k = af.shape[-1]
    shape = _result_shape(af.shape, bf.shape)
    buf = _float_scratch(shape)
    out = None if wide else np.empty(shape, dtype=np.int64)
    for start in range(0, k, block):
        np.matmul(_k_slice(af, start, start + block, True), _k_slice(bf, start, start + block, False), out=buf)
        if wide:
            part = buf.astype(np.int64).astype(object)
            out = part if start == 0 else out + part
        elif start == 0:
            np.copyto(out, buf, casting="unsafe")
        else:
            np.add(out, buf, out=out, dtype=np.int64, casting="unsafe")
    return out


def _result_shape(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``a @ b`` under numpy's matmul rules (operands already checked to agree)."""
    rows = a_shape[-2:-1]  # () for a 1-D left operand
    cols = b_shape[-1:] if len(b_shape) >= 2 else ()
    batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) if len(a_shape) > 2 or len(b_shape) > 2 else ()
    return tuple(batch) + rows + cols


def _split(x: np.ndarray, x_max: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """x = hi * 2**s + lo with 0 <= lo < 2**s and s about half of x's bits; limbs as int64 when they fit."""
    s = max(x_max.bit_length() // 2, 1)
    if x.dtype == np.float64:  # float64 operands hold integers <= 2**53
        x = x.astype(np.int64)
    hi = x >> s
    lo = x & ((1 << s) - 1)
    hi_max = max_abs(hi)
    if hi.dtype == object and hi_max < INT64_SAFE_LIMIT:
        hi = hi.astype(np.int64)
    if lo.dtype == object and s <= 62:
        lo = lo.astype(np.int64)
    return hi, lo, s, hi_max, (1 << s) - 1 if x_max else 0
