"""The faster paths of the exact matmul, each against Python ints (numpy object arrays or the
oracle's nested lists), never against fixprop's own output:

- the norm bound (Cauchy-Schwarz): one BLAS call where max|A| * max|B| * K would need blocks,
  refused at and just past the 2**53 boundary, where a single float64 product rounds;
- K blocks through one reused float64 buffer, cast into the int64 result (every numpy shape);
- FixedArray construction checking the range by min/max (and remembering max |raw|), and the
  squared-norm cache carried through a transpose.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixprop import FixedArray, RangeError
from fixprop.fixed import blas
from oracle import matmul_ints, overflow_int


def object_matmul(a: np.ndarray, b: np.ndarray) -> list:
    """numpy's matmul on Python ints (object arrays): exact, no float anywhere."""
    return np.asarray(np.matmul(np.asarray(a).astype(object), np.asarray(b).astype(object))).tolist()


def full_scale_uniform(shape, seed, bits=24):
    return np.random.default_rng(seed).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), shape)


# -- the norm bound -------------------------------------------------------------------------
def test_uniform_full_scale_takes_one_exact_call(float_matmuls):
    # the benchmark's data: products of 46 bits, max bound 2**54 (two blocks), norm bound ~0.8 * 2**53
    a, b = full_scale_uniform((256, 256), 0), full_scale_uniform((256, 256), 1)
    got = blas.exact_matmul(a, b)
    assert len(float_matmuls) == 1
    assert got.dtype == np.int64 and got.tolist() == object_matmul(a, b)


def test_fixedarray_uniform_full_scale(float_matmuls):
    ra, rb = full_scale_uniform((256, 256), 2), full_scale_uniform((256, 256), 3)
    a, b = FixedArray(ra, "s24.12"), FixedArray(rb, "s24.12")
    product = a @ b
    assert len(float_matmuls) == 1
    assert product.fmt.word == 56 and product.fmt.frac == 24
    assert product.raw.dtype == np.int64 and product.raw.tolist() == object_matmul(ra, rb)
    assert (a @ b).raw.tolist() == product.raw.tolist()  # again, from the cached norms


def boundary_vectors(extra: int):
    """Row a and column b equal to v = (2**26, 2**26, extra, 0): a @ b = 2**53 + extra**2, the
    norm bound is exactly |v|**2, and max|a| * max|b| * K = 2**54 rules out one call by max."""
    v = np.array([2**26, 2**26, extra, 0], dtype=np.int64)
    return v.reshape(1, 4), v.reshape(4, 1)


def test_norm_bound_refuses_the_boundary(float_matmuls):
    a, b = boundary_vectors(0)  # |v|**2 == 2**53 exactly: refused (the rounding margin), still exact
    assert int(blas.exact_matmul(a, b)[0, 0]) == 2**53
    assert len(float_matmuls) > 1


def test_norm_bound_refuses_past_the_boundary(float_matmuls):
    a, b = boundary_vectors(1)  # 2**53 + 1: one float64 product rounds it to 2**53
    assert int((a.astype(np.float64) @ b.astype(np.float64))[0, 0]) != 2**53 + 1
    assert int(blas.exact_matmul(a, b)[0, 0]) == 2**53 + 1
    assert len(float_matmuls) > 1  # blocks, not the single call


def test_norm_bound_accepts_below_the_boundary(float_matmuls):
    v = np.array([2**26, 2**25, 2**25 - 1, -(2**24) + 3], dtype=np.int64)
    a, b = v.reshape(1, 4), v[::-1].reshape(4, 1)
    assert 2**26 * 2**26 * 4 > 2**53  # the max bound alone would block
    assert blas.exact_matmul(a, b).tolist() == matmul_ints(a.tolist(), b.tolist())
    assert len(float_matmuls) == 1


def test_norms_prove_exact_margin():
    assert blas.norms_prove_exact(2.0**53, 2.0**53 * (1 - 2.0**-19), 256)
    assert not blas.norms_prove_exact(2.0**53, 2.0**53, 256)
    assert not blas.norms_prove_exact(1.0, 1.0, blas.NORM_BOUND_MAX_K + 1)
    assert not blas.norms_prove_exact(1.0, 1.0, 0)


@settings(max_examples=200)
@given(bits=st.integers(20, 28), k=st.integers(2, 300), m=st.integers(1, 4), n=st.integers(1, 4),
       aligned=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_near_the_bound(bits, k, m, n, aligned, seed):
    # magnitudes where the max bound fails and the norm bound may or may not hold; ``aligned``
    # makes rows of a and columns of b equal with equal signs (Cauchy-Schwarz tight)
    rng = np.random.default_rng(seed)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)
    a = rng.integers(lo, hi, (m, k))
    b = rng.integers(lo, hi, (k, n))
    if aligned:
        b = np.abs(a[:1].T.repeat(n, axis=1))
        a = np.abs(a)
    assert blas.exact_matmul(a, b).tolist() == matmul_ints(a.tolist(), b.tolist())
    fa, fb = FixedArray(a, f"s{bits + 1}.0"), FixedArray(b, f"s{bits + 1}.0")
    assert (fa @ fb).raw.tolist() == matmul_ints(a.tolist(), b.tolist())


# -- blocks through the scratch buffer, every shape rule ------------------------------------
SHAPES = [((256,), (256, 3)), ((3, 256), (256,)), ((256,), (256,)), ((2, 3, 256), (256, 4)),
          ((3, 256), (2, 256, 4)), ((2, 1, 3, 256), (4, 256, 2)), ((1, 256), (256, 1))]


@pytest.mark.parametrize("shape_a,shape_b", SHAPES)
@pytest.mark.parametrize("kind", ["norm", "blocks"])
def test_shapes(shape_a, shape_b, kind, float_matmuls):
    if kind == "norm":  # uniform full scale: one call
        a, b = full_scale_uniform(shape_a, 4), full_scale_uniform(shape_b, 5)
    else:  # every value at the format's maximum: the norm bound fails, two K blocks of 128
        a = np.full(shape_a, 2**23 - 1, dtype=np.int64)
        b = np.full(shape_b, -(2**23), dtype=np.int64)
    got = blas.exact_matmul(a, b)
    assert np.shape(got) == np.matmul(np.zeros(shape_a, dtype=int), np.zeros(shape_b, dtype=int)).shape
    assert np.asarray(got).tolist() == object_matmul(a, b)
    assert len(float_matmuls) == (1 if kind == "norm" else 2)


def test_blocks_after_other_products_reuse_no_stale_values():
    # the scratch buffer is shared by the calls of a thread: results must not depend on what it held
    big = np.full((64, 256), 2**23 - 1, dtype=np.int64)
    first = blas.exact_matmul(big, big.T.copy())
    small = np.full((2, 300), -(2**23), dtype=np.int64)
    second = blas.exact_matmul(small, small.T.copy())
    assert first.tolist() == object_matmul(big, big.T)
    assert second.tolist() == object_matmul(small, small.T)
    third = blas.exact_matmul(big[:3], big[:5].T.copy())
    assert third.tolist() == object_matmul(big[:3], big[:5].T)


def test_wide_blocks_give_python_ints():
    # per product 2**52, K = 2**11: sums reach 2**63, past int64; blocks of 2 terms -> limbs
    a = np.full((2, 3), 2**26, dtype=np.int64)
    b = np.full((3, 2), -(2**26), dtype=np.int64)
    assert blas.exact_matmul(a, b).tolist() == object_matmul(a, b)


def test_results_are_independent_arrays():
    a, b = np.full((4, 256), 2**23 - 1), np.full((256, 4), 2**23 - 1)
    first = blas.exact_matmul(a, b)
    second = blas.exact_matmul(a, -b)
    assert not np.shares_memory(first, second)
    assert first.tolist() == object_matmul(a, b) and second.tolist() == object_matmul(a, -b)


# -- FixedArray construction and caches -------------------------------------------------------
def test_construction_checks_range_by_min_max():
    raw = np.array([[-(2**23), 2**23 - 1], [5, -7]])
    x = FixedArray(raw, "s24.12")
    assert x.raw.tolist() == raw.tolist() and not np.shares_memory(x.raw, raw)
    raw[0, 0] = 0  # the caller's array is copied, not aliased
    assert int(x.raw[0, 0]) == -(2**23)
    with pytest.raises(RangeError, match="first 8388608 at index"):
        FixedArray(np.array([1, 2**23]), "s24.12")
    with pytest.raises(RangeError):
        FixedArray(np.array([-(2**23) - 1, 0]), "s24.12")


@pytest.mark.parametrize("overflow", ["SAT", "WRAP", "SAT_SYM", "SAT_ZERO"])
@pytest.mark.parametrize("signed", [True, False])
def test_construction_overflow_modes(overflow, signed):
    word = 8
    values = [-300, -129, -128, -127, -1, 0, 1, 127, 128, 255, 256, 1000] if signed else [0, 1, 127, 255, 256, 1000]
    fmt = f"{'s' if signed else 'u'}{word}.0"
    expect = [overflow_int(v, word, signed, overflow) for v in values]
    assert FixedArray(np.array(values), fmt, overflow=overflow).raw.tolist() == expect
    in_range = [v for v in values if v == overflow_int(v, word, signed, overflow)]
    assert FixedArray(np.array(in_range), fmt, overflow=overflow).raw.tolist() == in_range


def test_sat_sym_moves_the_signed_minimum():
    assert FixedArray(np.array([-(2**23), 3]), "s24.0", overflow="SAT_SYM").raw.tolist() == [-(2**23) + 1, 3]


def test_max_abs_from_construction_bounds_the_product():
    # max |raw| comes from the construction's min/max; a wrong one would let a rounding product through
    ra = np.array([[2**26, 2**26, 1, 0]])
    rb = ra.T.copy()
    a, b = FixedArray(ra, "s28.0"), FixedArray(rb, "s28.0")
    assert a._max_abs() == 2**26 and b._max_abs() == 2**26
    assert int((a @ b).raw[0, 0]) == 2**53 + 1


def test_transpose_carries_the_right_norms(float_matmuls):
    # a: a row of large norm (2**53 + 1), columns of small norm (at most 2**52). a.T's column
    # norms are a's row norms; a cache mixed up by the transpose would prove a rounding product exact.
    v = np.array([[2**26, 2**26, 1, 0], [0, 0, 0, 0]])
    a = FixedArray(v, "s28.0")
    a @ FixedArray(np.array([[2**26], [0], [0], [0]]), "s28.0")  # the norm check: caches a's row norms
    FixedArray(np.array([[2**26 + 1, 2**26 + 1]]), "s28.0") @ a     # ... and a's column norms
    assert a._sq_cache == {-1: float(2**53 + 1), -2: float(2**52)}
    assert a.T._sq_cache == {-1: float(2**52), -2: float(2**53 + 1)}
    assert blas.norms_prove_exact(2.0**53 + 1, 2.0**52, 4)  # what a mixed-up cache would accept
    del float_matmuls[:]
    got = (a @ a.T).raw  # 2**53 + 1: refused by the norms, computed in blocks
    assert int(got[0, 0]) == 2**53 + 1 and len(float_matmuls) > 1
    big = np.full((3, 300), 2**23 - 1)
    x = FixedArray(big, "s24.0")
    x @ FixedArray(np.ones((300, 1), dtype=np.int64), "s24.0")
    FixedArray(np.ones((1, 3), dtype=np.int64), "s24.0") @ x
    assert (x @ x.T).raw.tolist() == object_matmul(big, big.T)
    assert (x.T @ x).raw.tolist() == object_matmul(big.T, big)


def test_chained_products_stay_exact():
    ra, rb, rc = full_scale_uniform((8, 64), 6, 20), full_scale_uniform((64, 8), 7, 20), full_scale_uniform((8, 3), 8, 4)
    a, b, c = FixedArray(ra, "s20.0"), FixedArray(rb, "s20.0"), FixedArray(rc, "s4.0")
    assert ((a @ b) @ c).raw.tolist() == object_matmul(object_matmul(ra, rb), rc)


# -- float64 operands holding integers (what the compiled step has at hand) -----------------
@pytest.mark.parametrize("case", ["one call", "norm", "blocks", "limbs"])
def test_float64_operands(case, float_matmuls):
    if case == "one call":
        a, b = full_scale_uniform((5, 256), 9, 16), full_scale_uniform((256, 3), 10, 16)
    elif case == "norm":
        a, b = full_scale_uniform((5, 256), 9), full_scale_uniform((256, 3), 10)
    elif case == "blocks":
        a, b = np.full((5, 256), 2**23 - 1), np.full((256, 3), -(2**23))
    else:  # one product past 2**53: the operands are split into limbs (converted to int64 first)
        a, b = np.full((2, 7), 2**53 - 1), np.full((7, 3), -(2**40) + 3)
        a[1, 2] = -(2**53)
    af, bf = a.astype(np.float64), b.astype(np.float64)
    assert np.array_equal(af.astype(np.int64), a) and np.array_equal(bf.astype(np.int64), b)
    got = blas.exact_matmul(af, bf)
    assert got.dtype in (np.int64, object)
    assert got.tolist() == matmul_ints(a.tolist(), b.tolist())
    assert len(float_matmuls) == {"one call": 1, "norm": 1, "blocks": 2}.get(case, len(float_matmuls))
    assert case != "limbs" or len(float_matmuls) > 1
