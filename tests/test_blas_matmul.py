"""Every path of the exact BLAS matmul against Python ints: one block, K blocks at their
boundaries, limb splits, Python-int operands and results, zeros, numpy shape rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixprop.fixed import blas
from oracle import matmul_ints


def full_scale(shape, value, dtype=np.int64):
    return np.full(shape, value, dtype=dtype)


def check(a, b):
    got = blas.exact_matmul(a, b)
    assert got.tolist() == matmul_ints(a.tolist(), b.tolist())
    return got


def test_single_block(float_matmuls):
    a = full_scale((3, 2), -(2**26))  # products 2**52, K = 2: the sum 2**53 is still exact
    b = full_scale((2, 4), -(2**26))
    assert check(a, b).dtype == np.int64
    assert len(float_matmuls) == 1


def test_block_boundary(float_matmuls):
    # products 2**52: two terms per exact block; K = 3 needs two blocks
    a = full_scale((2, 3), 2**26)
    b = full_scale((3, 2), -(2**26))
    check(a, b)
    assert [s[0][1] for s in float_matmuls] == [2, 1]


def test_benchmark_shape_takes_two_blocks(float_matmuls):
    # s24 full scale, K = 256: each product (2**23 - 1)**2 needs 46 bits and the sums 54, so a
    # single float64 matmul rounds; two exact blocks of 128 terms do not
    a = full_scale((256, 256), 2**23 - 1)
    b = full_scale((256, 256), 2**23 - 1)
    b[:, 1] = -(2**23)
    got = blas.exact_matmul(a, b)
    assert int(got[0, 0]) == 256 * (2**23 - 1) ** 2 and int(got[5, 1]) == -256 * (2**23 - 1) * 2**23
    assert len(float_matmuls) == 2
    naive = (a.astype(np.float64) @ b.astype(np.float64))
    assert int(naive[0, 0]) != 256 * (2**23 - 1) ** 2  # what the shortcut would have returned


@pytest.mark.parametrize("k", [1, 2, 7, 4096])
@pytest.mark.parametrize("value_a,value_b", [(2**31 - 1, -(2**31)), (-(2**31), -(2**31)), (2**40 + 3, 2**40 - 5)])
def test_limb_splits(k, value_a, value_b, float_matmuls):
    a = full_scale((2, k), value_a)
    b = full_scale((k, 3), value_b)
    b[0, 0] = -value_b
    check(a, b)
    assert len(float_matmuls) > 1  # a single product exceeds 2**53: the operands were split


@pytest.mark.parametrize("k", [1, 3, 4096])
def test_int64_extremes_give_python_int_results(k):
    a = full_scale((2, k), -(2**63))
    b = full_scale((k, 2), -(2**63))
    got = check(a, b)
    assert got.dtype == object and int(got[0, 0]) == k * 2**126


def test_python_int_operands():
    rng = np.random.default_rng(5)
    a = np.array([[int(v) * 2**50 + 12345 for v in rng.integers(-(2**30), 2**30, 6)]], dtype=object).reshape(2, 3)
    b = np.array([[-(2**79)], [2**79 - 1], [7]], dtype=object)
    check(a, b)


def test_zeros_and_shapes():
    z = np.zeros((3, 4), dtype=np.int64)
    assert blas.exact_matmul(z, np.ones((4, 2), dtype=np.int64)).tolist() == [[0, 0]] * 3
    v = np.array([3, -4], dtype=np.int64)
    m = np.array([[1, 2], [3, 4]], dtype=np.int64)
    assert blas.exact_matmul(v, m).tolist() == [-9, -10]
    assert blas.exact_matmul(m, v).tolist() == [-5, -7]
    assert int(blas.exact_matmul(v, v)) == 25
    batched = np.arange(12, dtype=np.int64).reshape(2, 2, 3)
    assert blas.exact_matmul(batched, np.ones((3, 1), dtype=np.int64)).tolist() == [[[3], [12]], [[21], [30]]]
    assert blas.exact_matmul(np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)).tolist() == [[0] * 3] * 2


@settings(max_examples=300)
@given(
    bits_a=st.integers(1, 64), bits_b=st.integers(1, 64), k=st.integers(1, 300),
    m=st.integers(1, 3), n=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
)
def test_random_magnitudes(bits_a, bits_b, k, m, n, seed):
    rng = np.random.default_rng(seed)

    def draw(shape, bits):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        out = np.array([int(v) for v in rng.integers(lo, hi, size=shape, endpoint=True).ravel()], dtype=object)
        out[rng.integers(out.size)] = lo  # one full-scale value
        return out.reshape(shape).astype(np.int64)

    check(draw((m, k), bits_a), draw((k, n), bits_b))
