"""The numba renderer of a datapath program (``nn/program.py``): one interpreter kernel.

``run_program`` executes a program's operations in order on one int64 workspace (and one
float64 workspace for the derivative numbers before ``dyadic``). It is a plain Python function
over runtime arrays (the operation table, each buffer's offset, shape and strides, the
workspaces, the random words): numba compiles it once, for every network, datapath and batch
size, and its on-disk cache serves every later process. Every format decision was taken when the
program was traced; the kernel only loops, shifts, rounds and clamps, and never rounds in
floating point.

Layout: values that run along the batch (x, y and everything computed from them per sample) are
stored column-major, so the innermost loops run along the batch, over contiguous memory, and
vectorize; parameters and gradients are row-major; a transpose is a view (no copy). Buffers
share the workspace: each holds memory only from the operation that writes it to its last reader
(:func:`workspace_offsets`; inputs, constants and outputs keep their own), so that at a large batch
the working set stays in cache. A derivative made of comparisons with constants selecting constant
numbers (ReLU's) is one SELECT row, and one SELECT_MUL row with the multiply by the incoming error
that reads it (:func:`table_rows`). Matmuls block their loops to save loads: four columns of A per
pass down a column of the batch; two rows by four columns per dot product along the batch.

Casts (the only rounding): a raw value ``v`` dropping ``s`` bits becomes
``floor((v + bias) / 2**s)``, where the bias encodes the mode's rule on the dropped bits (the
rules of ``quantize.round_shift_right``: :func:`rounding_bias`); STOCH rounds up when the
element's 64-bit random word is below ``dropped * 2**(64 - s)``, the word drawn by numpy (or the
LFSR source) in the stepwise path's order. Then the overflow mode.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ModeError, NotInRoleFormat
from fixprop.fixed import quantize as q
from fixprop.fixed.array import FixedArray
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.nn.mlp import MLP, LayerParams
from fixprop.nn.program import (ADD, AND, CAST, DYADIC, EQ, GE, GT, LE, LT, MATMUL, MAXIMUM, MINIMUM, MUL,
                                OP_NAMES, Op, OR, OVERFLOW_CODE, ROUNDING_CODE, SUB, SUM0, TRANSPOSE, WHERE, WHERE_NUMBERS,
                                ZEROS, NotCompilable, TracedStep, trace_float_program, trace_forward, trace_program)

# Columns of the operation table (one row per operation).
(COL_CODE, COL_OUT, COL_A, COL_B, COL_SHIFT_A, COL_SHIFT_B, COL_COND, COL_FRAC, COL_SHIFT, COL_ROUNDING,
 COL_OVERFLOW, COL_LO, COL_HI, COL_FMT_MIN, COL_FMT_MAX, COL_WRAP_OFFSET, COL_WRAP_MASK, COL_BIAS,
 COL_SIGN_BIAS, COL_ODD_BIAS, COL_FIRST_WORD, COL_NARROW, COL_FLOAT,
 COL_LO1, COL_HI1, COL_LO2, COL_HI2, COL_K1, COL_K2, COL_K3) = range(30)
OP_COLUMNS = 30
# Rows of the buffer table (BUF_FLOAT: 1 when the buffer lives in the float64 workspace).
BUF_OFFSET, BUF_ROWS, BUF_COLS, BUF_RSTRIDE, BUF_CSTRIDE, BUF_FLOAT = range(6)
# The mode codes the kernel tests (the program's own codes: one place for each).
STOCH = ROUNDING_CODE[Rounding.STOCH]
WRAP = OVERFLOW_CODE[Overflow.WRAP]
SAT_ZERO = OVERFLOW_CODE[Overflow.SAT_ZERO]
# The kernel's fast elementwise loops of two slices take the codes up to MUL.
assert (ADD, SUB, MUL) == tuple(range(MUL + 1))
#: A kernel-only operation (after the program's codes): count the nonzero values of buffer ``a``
#: (an exact cast, which the program leaves out: it only renames the format).
COUNT_EXACT = 20
assert COUNT_EXACT == len(OP_NAMES)
#: A kernel-only operation (table_rows): out = k1 where lo1 <= (a << shift_a) <= hi1, else k2 where
#: lo2 <= (a << shift_a) <= hi2, else k3 (raw integers): a chain of comparisons, where_numbers and
#: dyadic folded into one pass.
SELECT = 21
#: A kernel-only operation (table_rows): SELECT's value times ``b << shift_b``: a derivative times the
#: incoming error in one pass, when nothing else reads the derivative. The constants k1..k3 are
#: already shifted as the multiply's operand was.
SELECT_MUL = 22
# Columns of the cast counts: values nonzero before the cast, saturated, underflowed to zero;
# with ranges (a counts table COUNT_COLUMNS_RANGES wide) also the least and the greatest raw value
# before the cast, and from COUNT_LOG2 on how many nonzero values have bit length 1, 2, ... 63
# (|raw| < 2**62): floor(log2 |raw|) = bit length - 1.
COUNT_NONZERO, COUNT_SATURATED, COUNT_UNDERFLOWED, COUNT_MIN, COUNT_MAX, COUNT_LOG2 = range(6)
COUNT_COLUMNS = 3
COUNT_COLUMNS_RANGES = COUNT_LOG2 + 63


def rounding_bias(rounding: Rounding, shift: int) -> tuple[int, int, int]:
    """(base, sign_bias, odd_bias) of a deterministic rounding dropping ``shift`` > 0 bits: the
    cast is ``floor((v + base + sign_bias*[v < 0] + odd_bias*[floor(v/2**shift) odd]) / 2**shift)``,
    which rounds up exactly when ``quantize.round_shift_right``'s rule on the dropped bits says so."""
    half = 1 << (shift - 1)
    return {
        Rounding.TRN: (0, 0, 0),                  # floor
        Rounding.TRN_INF: ((1 << shift) - 1, 0, 0),  # ceiling: any dropped bit rounds up
        Rounding.TRN_ZERO: (0, (1 << shift) - 1, 0),  # ceiling for negatives only
        Rounding.RND: (half, 0, 0),               # ties up
        Rounding.RND_MIN_INF: (half - 1, 0, 0),   # ties down
        Rounding.RND_ZERO: (half - 1, 1, 0),      # ties up for negatives (toward zero)
        Rounding.RND_INF: (half, -1, 0),          # ties down for negatives (away from zero)
        Rounding.RND_CONV: (half - 1, 0, 1),      # ties up when the floor is odd (to even)
        Rounding.STOCH: (0, 0, 0),                # (decided by the random words)
    }[rounding]


def run_program(ops, buffers, mem, fmem, words, counts, count, outputs, gathered,  # pragma: no cover - compiled
                fgathered, n_steps, x_data, y_data, fx_data, fy_data, x_buf, y_buf, feedback):
    """Run every operation of ``ops`` (int64 table, OP_COLUMNS wide) on the workspaces ``mem``
    (int64 raw values) and ``fmem`` (float64 numbers). ``buffers`` (int64, 6 rows: offsets,
    rows, cols, rstride, cstride, float): buffer b has shape (rows[b], cols[b]) and its element (i, j)
    lives at ``offsets[b] + i * rstride[b] + j * cstride[b]`` (row-major, column-major, or a
    transposed view of another buffer). ``words`` (uint64): the STOCH casts'
    random words, in the memory order of each cast's buffer. With ``count``, each cast adds its
    nonzero/saturated/underflowed counts to ``counts[op]``; when ``counts`` is
    ``COUNT_COLUMNS_RANGES`` wide, also the range of the values before it (least, greatest, a
    histogram of bit lengths: ``COUNT_MIN``...). Last, the buffers listed in
    ``outputs`` are copied one after another, each row-major, into ``gathered`` (int64 buffers)
    or ``fgathered`` (float64 buffers, ``buffers[BUF_FLOAT]``).

    A float64 program (``COL_FLOAT`` set on its operations: the float network) computes on
    ``fmem`` with the same loops: IEEE float64 operations in the program's order, without FMA
    or reassociation (``fastmath`` off); a matmul sums over k in increasing order.

    ``n_steps`` training steps run one after another: before each, when ``x_data`` has rows, the
    step's samples (rows ``step * batch ...``) of ``x_data``/``y_data`` (``fx_data``/``fy_data``
    for a float program) are loaded into the input buffers ``x_buf``/``y_buf``; after each, every (output, input) buffer pair of ``feedback`` is
    copied (the updated parameters become the next step's). Each step's STOCH words follow the
    previous step's in ``words``.

    Inner loops run over contiguous slices (views), which LLVM vectorizes; a strided or
    broadcast operand takes the element-at-a-time loop."""
    offsets = buffers[BUF_OFFSET]
    rows = buffers[BUF_ROWS]
    cols = buffers[BUF_COLS]
    rstride = buffers[BUF_RSTRIDE]
    cstride = buffers[BUF_CSTRIDE]
    is_float = buffers[BUF_FLOAT]
    words_per_step = words.shape[0] // n_steps
    ranges = count and counts.shape[1] > COUNT_MIN  # a wide counts table: ranges too
    for step in range(n_steps):
        word_base = step * words_per_step
        if x_data.shape[0] > 0:  # this step's samples into the x and y inputs
            batch = rows[x_buf]
            for i in range(batch):
                for j in range(cols[x_buf]):
                    mem[offsets[x_buf] + i * rstride[x_buf] + j * cstride[x_buf]] = x_data[step * batch + i, j]
                for j in range(cols[y_buf]):
                    mem[offsets[y_buf] + i * rstride[y_buf] + j * cstride[y_buf]] = y_data[step * batch + i, j]
        if fx_data.shape[0] > 0:
            batch = rows[x_buf]
            for i in range(batch):
                for j in range(cols[x_buf]):
                    fmem[offsets[x_buf] + i * rstride[x_buf] + j * cstride[x_buf]] = fx_data[step * batch + i, j]
                for j in range(cols[y_buf]):
                    fmem[offsets[y_buf] + i * rstride[y_buf] + j * cstride[y_buf]] = fy_data[step * batch + i, j]
        for n in range(ops.shape[0]):
            code = ops[n, COL_CODE]
            out = ops[n, COL_OUT]
            a = ops[n, COL_A]
            b = ops[n, COL_B]
            R = rows[out]
            C = cols[out]
            o = offsets[out]
            if ranges and (code == CAST or code == COUNT_EXACT):
                # the values before the cast (buffer a, element by element): least, greatest, and
                # the bit length of each nonzero |v| (|v| < 2**62), by halving
                values = mem[offsets[a]:offsets[a] + rows[a] * cols[a]]
                for e in range(values.shape[0]):
                    v = values[e]
                    if v < counts[n, COUNT_MIN]:
                        counts[n, COUNT_MIN] = v
                    if v > counts[n, COUNT_MAX]:
                        counts[n, COUNT_MAX] = v
                    if v != 0:
                        m = -v if v < 0 else v
                        bits = 1
                        for half in (32, 16, 8, 4, 2, 1):
                            if (m >> half) != 0:
                                m >>= half
                                bits += half
                        counts[n, COUNT_LOG2 + bits - 1] += 1
            if ops[n, COL_FLOAT] == 1:  # an operation of a float64 program
                if code == MATMUL:
                    K = cols[a]
                    oa = offsets[a]
                    ob = offsets[b]
                    a_r, a_c = rstride[a], cstride[a]
                    b_r, b_c = rstride[b], cstride[b]
                    o_r, o_c = rstride[out], cstride[out]
                    if o_r == 1 and a_r == 1 and R > 1:  # columns of the batch
                        for j in range(C):
                            fdst = fmem[o + j * o_c:o + j * o_c + R]
                            fdst[:] = 0.0
                            for k in range(K):
                                bkj = fmem[ob + k * b_r + j * b_c]
                                fsrc = fmem[oa + k * a_c:oa + k * a_c + R]
                                for i in range(R):
                                    fdst[i] += fsrc[i] * bkj
                    elif a_c == 1 and b_r == 1:  # dot products
                        for i in range(R):
                            frow = fmem[oa + i * a_r:oa + i * a_r + K]
                            for j in range(C):
                                fcolumn = fmem[ob + j * b_c:ob + j * b_c + K]
                                facc = 0.0
                                for k in range(K):
                                    facc += frow[k] * fcolumn[k]
                                fmem[o + i * o_r + j * o_c] = facc
                    else:
                        for i in range(R):
                            for j in range(C):
                                facc = 0.0
                                for k in range(K):
                                    facc += fmem[oa + i * a_r + k * a_c] * fmem[ob + k * b_r + j * b_c]
                                fmem[o + i * o_r + j * o_c] = facc
                elif code == SUM0:
                    oa = offsets[a]
                    for j in range(C):
                        facc = 0.0
                        for i in range(rows[a]):
                            facc += fmem[oa + i * rstride[a] + j * cstride[a]]
                        fmem[o + j * cstride[out]] = facc
                elif code == ZEROS:
                    fmem[o:o + R * C] = 0.0
                else:  # elementwise, numpy's broadcasting; comparisons write 0/1 into mem
                    c = ops[n, COL_COND]
                    a_r = rstride[a] if rows[a] > 1 else 0
                    a_c = cstride[a] if cols[a] > 1 else 0
                    b_r = rstride[b] if rows[b] > 1 else 0
                    b_c = cstride[b] if cols[b] > 1 else 0
                    c_r = rstride[c] if rows[c] > 1 else 0
                    c_c = cstride[c] if cols[c] > 1 else 0
                    if rstride[out] == 1 and R > 1:
                        n_outer, n_inner, o_step = C, R, cstride[out]
                        a_outer, a_inner, b_outer, b_inner, c_outer, c_inner = a_c, a_r, b_c, b_r, c_c, c_r
                    else:
                        n_outer, n_inner, o_step = R, C, rstride[out]
                        a_outer, a_inner, b_outer, b_inner, c_outer, c_inner = a_r, a_c, b_r, b_c, c_r, c_c
                    for u in range(n_outer):
                        po = o + u * o_step
                        pa = offsets[a] + u * a_outer
                        pb = offsets[b] + u * b_outer
                        pc = offsets[c] + u * c_outer
                        if a_inner == 1 and b_inner <= 1 and code <= MUL:  # ADD, SUB, MUL: slices
                            fdst = fmem[po:po + n_inner]
                            fx = fmem[pa:pa + n_inner]
                            if b_inner == 0:
                                fy = fmem[pb]
                                if code == ADD:
                                    for v in range(n_inner):
                                        fdst[v] = fx[v] + fy
                                elif code == SUB:
                                    for v in range(n_inner):
                                        fdst[v] = fx[v] - fy
                                else:
                                    for v in range(n_inner):
                                        fdst[v] = fx[v] * fy
                            else:
                                fys = fmem[pb:pb + n_inner]
                                if code == ADD:
                                    for v in range(n_inner):
                                        fdst[v] = fx[v] + fys[v]
                                elif code == SUB:
                                    for v in range(n_inner):
                                        fdst[v] = fx[v] - fys[v]
                                else:
                                    for v in range(n_inner):
                                        fdst[v] = fx[v] * fys[v]
                        else:
                            for v in range(n_inner):
                                fx1 = fmem[pa + v * a_inner]
                                fy1 = fmem[pb + v * b_inner]
                                if code == ADD:
                                    fmem[po + v] = fx1 + fy1
                                elif code == SUB:
                                    fmem[po + v] = fx1 - fy1
                                elif code == MUL:
                                    fmem[po + v] = fx1 * fy1
                                elif code == MAXIMUM:  # numpy's: a NaN on either side gives NaN
                                    fmem[po + v] = fx1 if (fx1 >= fy1 or fx1 != fx1) else fy1
                                elif code == MINIMUM:
                                    fmem[po + v] = fx1 if (fx1 <= fy1 or fx1 != fx1) else fy1
                                elif code == WHERE:
                                    fmem[po + v] = fx1 if mem[pc + v * c_inner] != 0 else fy1
                                elif code == GT:
                                    mem[po + v] = 1 if fx1 > fy1 else 0
                                elif code == LT:
                                    mem[po + v] = 1 if fx1 < fy1 else 0
                                elif code == GE:
                                    mem[po + v] = 1 if fx1 >= fy1 else 0
                                elif code == LE:
                                    mem[po + v] = 1 if fx1 <= fy1 else 0
                                elif code == EQ:
                                    mem[po + v] = 1 if fx1 == fy1 else 0
                                else:
                                    raise ValueError("run_program: a float operation this kernel does not know")
            elif code == CAST:  # input and output share one layout: element e of one is element e of the other
                size = R * C
                src = mem[offsets[a]:offsets[a] + size]
                dst = mem[o:o + size]
                shift = ops[n, COL_SHIFT]
                lo = ops[n, COL_LO]
                hi = ops[n, COL_HI]
                overflow = ops[n, COL_OVERFLOW]
                wrap_offset = ops[n, COL_WRAP_OFFSET]
                wrap_mask = ops[n, COL_WRAP_MASK]
                base = ops[n, COL_BIAS]
                sign_bias = ops[n, COL_SIGN_BIAS]
                odd_bias = ops[n, COL_ODD_BIAS]
                stochastic = ops[n, COL_ROUNDING] == STOCH
                if not count and not stochastic:
                    # rounding: r = floor((v + bias) / 2**shift) with bias = base + sign_bias*[v < 0] +
                    # odd_bias*[floor odd] (rounding_bias); a left shift when shift <= 0 (no bias then).
                    # One pass: rounding and overflow in the same loop. The products are masks (v >> 63
                    # is 0 or -1, odd_bias 0 or 1): cheaper than 64-bit vector products (none in AVX2).
                    up = -shift if shift < 0 else 0
                    down = shift if shift > 0 else 0
                    if overflow == WRAP:  # the low word bits, two's complement when signed
                        for e in range(size):
                            v = src[e]
                            r = ((v << up) + base + (sign_bias & (v >> 63)) + ((v >> down) & odd_bias)) >> down
                            dst[e] = ((r + wrap_offset) & wrap_mask) - wrap_offset
                    elif overflow == SAT_ZERO:
                        for e in range(size):
                            v = src[e]
                            r = ((v << up) + base + (sign_bias & (v >> 63)) + ((v >> down) & odd_bias)) >> down
                            dst[e] = 0 if (r < lo or r > hi) else r
                    else:  # SAT, SAT_SYM
                        for e in range(size):
                            v = src[e]
                            r = ((v << up) + base + (sign_bias & (v >> 63)) + ((v >> down) & odd_bias)) >> down
                            dst[e] = min(max(r, lo), hi)
                else:  # STOCH, or counting: one element at a time
                    fmt_min = ops[n, COL_FMT_MIN]
                    fmt_max = ops[n, COL_FMT_MAX]
                    first_word = ops[n, COL_FIRST_WORD]
                    for e in range(size):
                        v = src[e]
                        saturated = False
                        if shift > 0:
                            floor = v >> shift
                            dropped = v & ((np.int64(1) << shift) - 1)
                            if stochastic:  # up when the element's word is below dropped * 2**(64 - shift)
                                threshold = np.uint64(dropped) << np.uint64(64 - shift)
                                r = floor + 1 if (dropped != 0 and words[word_base + first_word + e] < threshold) else floor
                                # saturated: the exact value outside the format's range
                                saturated = floor + (1 if dropped != 0 else 0) > fmt_max or floor < fmt_min
                            else:
                                r = (v + base - sign_bias * (v >> 63) + odd_bias * (floor & 1)) >> shift
                                saturated = r < lo or r > hi
                        else:
                            r = v << (-shift)
                            saturated = (r > fmt_max or r < fmt_min) if stochastic else (r < lo or r > hi)
                        if r < lo or r > hi:
                            if overflow == WRAP:
                                r = ((r + wrap_offset) & wrap_mask) - wrap_offset
                            elif overflow == SAT_ZERO:
                                r = 0
                            else:
                                r = min(max(r, lo), hi)
                        dst[e] = r
                        if count:
                            if v != 0:
                                counts[n, COUNT_NONZERO] += 1
                                if r == 0:
                                    counts[n, COUNT_UNDERFLOWED] += 1
                            if saturated:
                                counts[n, COUNT_SATURATED] += 1
            elif code == MATMUL:  # out(i, j) = sum_k A(i, k) B(k, j); the loop order follows the layouts
                K = cols[a]
                oa = offsets[a]
                ob = offsets[b]
                a_r, a_c = rstride[a], cstride[a]
                b_r, b_c = rstride[b], cstride[b]
                o_r, o_c = rstride[out], cstride[out]
                narrow = ops[n, COL_NARROW] == 1  # both operands' formats fit int32 (the trace decided)
                if o_r == 1 and a_r == 1 and R > 1:  # out and A contiguous along i (the batch): axpy down columns
                    for j in range(C):
                        dst = mem[o + j * o_c:o + j * o_c + R]
                        # four columns of A per pass over dst (the passes over dst cost more than the
                        # products); the first pass writes, later ones add. Past K a column is padded:
                        # column k again, times 0 (an exact integer product).
                        for k in range(0, K, 4):
                            ks = (k, min(k + 1, K - 1), min(k + 2, K - 1), min(k + 3, K - 1))
                            b0 = mem[ob + ks[0] * b_r + j * b_c]
                            b1 = mem[ob + ks[1] * b_r + j * b_c] if k + 1 < K else np.int64(0)
                            b2 = mem[ob + ks[2] * b_r + j * b_c] if k + 2 < K else np.int64(0)
                            b3 = mem[ob + ks[3] * b_r + j * b_c] if k + 3 < K else np.int64(0)
                            s0 = mem[oa + ks[0] * a_c:oa + ks[0] * a_c + R]
                            s1 = mem[oa + ks[1] * a_c:oa + ks[1] * a_c + R]
                            s2 = mem[oa + ks[2] * a_c:oa + ks[2] * a_c + R]
                            s3 = mem[oa + ks[3] * a_c:oa + ks[3] * a_c + R]
                            if narrow:  # int32 x int32 -> int64: the same products, faster
                                c0, c1 = np.int64(np.int32(b0)), np.int64(np.int32(b1))
                                c2, c3 = np.int64(np.int32(b2)), np.int64(np.int32(b3))
                                if k == 0:
                                    for i in range(R):
                                        dst[i] = (np.int64(np.int32(s0[i])) * c0 + np.int64(np.int32(s1[i])) * c1
                                                  + np.int64(np.int32(s2[i])) * c2 + np.int64(np.int32(s3[i])) * c3)
                                else:
                                    for i in range(R):
                                        dst[i] += (np.int64(np.int32(s0[i])) * c0 + np.int64(np.int32(s1[i])) * c1
                                                   + np.int64(np.int32(s2[i])) * c2 + np.int64(np.int32(s3[i])) * c3)
                            elif k == 0:
                                for i in range(R):
                                    dst[i] = s0[i] * b0 + s1[i] * b1 + s2[i] * b2 + s3[i] * b3
                            else:
                                for i in range(R):
                                    dst[i] += s0[i] * b0 + s1[i] * b1 + s2[i] * b2 + s3[i] * b3
                        if K == 0:
                            dst[:] = 0
                elif a_c == 1 and b_r == 1:  # A and B contiguous along k: dot products
                    # a block of two rows of A by four columns of B per pass along k: 6 loads for 8
                    # products (loads bound these loops). Past R or C a row or column is repeated:
                    # its duplicate sums are the same integers, written twice.
                    for i in range(0, R, 2):
                        i1 = min(i + 1, R - 1)
                        r0 = mem[oa + i * a_r:oa + i * a_r + K]
                        r1 = mem[oa + i1 * a_r:oa + i1 * a_r + K]
                        for j in range(0, C, 4):
                            j1, j2, j3 = min(j + 1, C - 1), min(j + 2, C - 1), min(j + 3, C - 1)
                            c0 = mem[ob + j * b_c:ob + j * b_c + K]
                            c1 = mem[ob + j1 * b_c:ob + j1 * b_c + K]
                            c2 = mem[ob + j2 * b_c:ob + j2 * b_c + K]
                            c3 = mem[ob + j3 * b_c:ob + j3 * b_c + K]
                            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.int64(0)
                            if narrow:
                                for k in range(K):
                                    x0, x1 = np.int64(np.int32(r0[k])), np.int64(np.int32(r1[k]))
                                    y0, y1 = np.int64(np.int32(c0[k])), np.int64(np.int32(c1[k]))
                                    y2, y3 = np.int64(np.int32(c2[k])), np.int64(np.int32(c3[k]))
                                    s00 += x0 * y0
                                    s01 += x0 * y1
                                    s02 += x0 * y2
                                    s03 += x0 * y3
                                    s10 += x1 * y0
                                    s11 += x1 * y1
                                    s12 += x1 * y2
                                    s13 += x1 * y3
                            else:
                                for k in range(K):
                                    x0, x1 = r0[k], r1[k]
                                    y0, y1, y2, y3 = c0[k], c1[k], c2[k], c3[k]
                                    s00 += x0 * y0
                                    s01 += x0 * y1
                                    s02 += x0 * y2
                                    s03 += x0 * y3
                                    s10 += x1 * y0
                                    s11 += x1 * y1
                                    s12 += x1 * y2
                                    s13 += x1 * y3
                            for ii, t0, t1, t2, t3 in ((i, s00, s01, s02, s03), (i1, s10, s11, s12, s13)):
                                mem[o + ii * o_r + j * o_c] = t0
                                mem[o + ii * o_r + j1 * o_c] = t1
                                mem[o + ii * o_r + j2 * o_c] = t2
                                mem[o + ii * o_r + j3 * o_c] = t3
                elif o_c == 1 and b_c == 1:  # out and B contiguous along j (row-major): axpy along rows
                    for i in range(R):
                        dst = mem[o + i * o_r:o + i * o_r + C]
                        dst[:] = 0
                        for k in range(K):
                            aik = mem[oa + i * a_r + k * a_c]
                            if aik != 0:
                                src = mem[ob + k * b_r:ob + k * b_r + C]
                                for j in range(C):
                                    dst[j] += aik * src[j]
                else:
                    for i in range(R):
                        for j in range(C):
                            acc = np.int64(0)
                            for k in range(K):
                                acc += mem[oa + i * a_r + k * a_c] * mem[ob + k * b_r + j * b_c]
                            mem[o + i * o_r + j * o_c] = acc
            elif code == SUM0:  # out(0, j) = sum_i A(i, j)
                oa = offsets[a]
                Ra = rows[a]
                a_r, a_c = rstride[a], cstride[a]
                for j in range(C):
                    acc = np.int64(0)
                    if a_r == 1:
                        column = mem[oa + j * a_c:oa + j * a_c + Ra]
                        for i in range(Ra):
                            acc += column[i]
                    else:
                        for i in range(Ra):
                            acc += mem[oa + i * a_r + j * a_c]
                    mem[o + j * cstride[out]] = acc
            elif code == ZEROS:
                mem[o:o + R * C] = 0
            elif code == SELECT:  # a and out share one layout (table_rows): element e of one is e of the other
                z = mem[offsets[a]:offsets[a] + R * C]
                dst = mem[o:o + R * C]
                sa = ops[n, COL_SHIFT_A]
                lo1, hi1, lo2, hi2 = ops[n, COL_LO1], ops[n, COL_HI1], ops[n, COL_LO2], ops[n, COL_HI2]
                k1, k2, k3 = ops[n, COL_K1], ops[n, COL_K2], ops[n, COL_K3]
                for e in range(R * C):
                    v = z[e] << sa
                    dst[e] = k1 if ((v >= lo1) & (v <= hi1)) else (k2 if ((v >= lo2) & (v <= hi2)) else k3)
            elif code == SELECT_MUL:  # SELECT times b << shift_b; a, b and out share one layout
                z = mem[offsets[a]:offsets[a] + R * C]
                err = mem[offsets[b]:offsets[b] + R * C]
                dst = mem[o:o + R * C]
                sa = ops[n, COL_SHIFT_A]
                sb = ops[n, COL_SHIFT_B]
                lo1, hi1, lo2, hi2 = ops[n, COL_LO1], ops[n, COL_HI1], ops[n, COL_LO2], ops[n, COL_HI2]
                k1, k2, k3 = ops[n, COL_K1], ops[n, COL_K2], ops[n, COL_K3]
                for e in range(R * C):
                    v = z[e] << sa
                    d = k1 if ((v >= lo1) & (v <= hi1)) else (k2 if ((v >= lo2) & (v <= hi2)) else k3)
                    dst[e] = d * (err[e] << sb)
            elif code == COUNT_EXACT:  # a cast that only renames the format: its nonzero values
                if count:
                    values = mem[offsets[a]:offsets[a] + rows[a] * cols[a]]
                    for e in range(values.shape[0]):
                        if values[e] != 0:
                            counts[n, COUNT_NONZERO] += 1
            else:
                # elementwise, with numpy's broadcasting (a stride of 0): the inner loop runs along
                # the output's contiguous axis
                c = ops[n, COL_COND]
                a_r = rstride[a] if rows[a] > 1 else 0
                a_c = cstride[a] if cols[a] > 1 else 0
                b_r = 0 if b < 0 else (rstride[b] if rows[b] > 1 else 0)
                b_c = 0 if b < 0 else (cstride[b] if cols[b] > 1 else 0)
                c_r = rstride[c] if rows[c] > 1 else 0
                c_c = cstride[c] if cols[c] > 1 else 0
                if rstride[out] == 1 and R > 1:  # column-major: columns outer, rows inner
                    n_outer, n_inner, o_step = C, R, cstride[out]
                    a_outer, a_inner, b_outer, b_inner, c_outer, c_inner = a_c, a_r, b_c, b_r, c_c, c_r
                else:
                    n_outer, n_inner, o_step = R, C, rstride[out]
                    a_outer, a_inner, b_outer, b_inner, c_outer, c_inner = a_r, a_c, b_r, b_c, c_r, c_c
                sa = ops[n, COL_SHIFT_A]
                sb = ops[n, COL_SHIFT_B]
                for u in range(n_outer):
                    po = o + u * o_step
                    pa = offsets[a] + u * a_outer
                    pb = (offsets[b] if b >= 0 else 0) + u * b_outer
                    pc = offsets[c] + u * c_outer
                    done = True
                    if code == DYADIC:  # k * 2**-frac as the raw integer k: exact
                        scale = 2.0 ** ops[n, COL_FRAC]
                        dst = mem[po:po + n_inner]
                        if a_inner == 1:
                            numbers = fmem[pa:pa + n_inner]
                            for v in range(n_inner):
                                dst[v] = np.int64(numbers[v] * scale)
                        else:
                            for v in range(n_inner):
                                dst[v] = np.int64(fmem[pa + v * a_inner] * scale)
                    elif code == WHERE_NUMBERS:
                        fdst = fmem[po:po + n_inner]
                        if c_inner == 1 and a_inner == 0 and b_inner <= 1:  # where(cond, number, numbers)
                            cond = mem[pc:pc + n_inner]
                            first = fmem[pa]
                            if b_inner == 0:
                                second = fmem[pb]
                                for v in range(n_inner):
                                    fdst[v] = first if cond[v] != 0 else second
                            else:
                                seconds = fmem[pb:pb + n_inner]
                                for v in range(n_inner):
                                    fdst[v] = first if cond[v] != 0 else seconds[v]
                        else:
                            for v in range(n_inner):
                                fdst[v] = fmem[pa + v * a_inner] if mem[pc + v * c_inner] != 0 else fmem[pb + v * b_inner]
                    elif a_inner == 1 and b_inner == 0:  # against one value (a constant, or a broadcast)
                        dst = mem[po:po + n_inner]
                        x = mem[pa:pa + n_inner]
                        y = mem[pb] << sb
                        if code == ADD:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) + y
                        elif code == SUB:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) - y
                        elif code == MUL:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) * y
                        elif code == MAXIMUM:
                            for v in range(n_inner):
                                dst[v] = max(x[v] << sa, y)
                        elif code == MINIMUM:
                            for v in range(n_inner):
                                dst[v] = min(x[v] << sa, y)
                        elif code == GT:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) > y
                        elif code == LT:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) < y
                        elif code == GE:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) >= y
                        elif code == LE:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) <= y
                        elif code == EQ:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) == y
                        else:
                            done = False
                    elif a_inner == 1 and b_inner == 1 and code <= MUL:  # ADD, SUB, MUL of two slices
                        dst = mem[po:po + n_inner]
                        x = mem[pa:pa + n_inner]
                        y = mem[pb:pb + n_inner]
                        if code == ADD:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) + (y[v] << sb)
                        elif code == SUB:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) - (y[v] << sb)
                        else:
                            for v in range(n_inner):
                                dst[v] = (x[v] << sa) * (y[v] << sb)
                    else:
                        done = False
                    if not done:  # every code, one element at a time (strided or broadcast operands)
                        for v in range(n_inner):
                            x = mem[pa + v * a_inner] << sa
                            y = mem[pb + v * b_inner] << sb
                            if code == ADD:
                                r = x + y
                            elif code == SUB:
                                r = x - y
                            elif code == MUL:
                                r = x * y
                            elif code == MAXIMUM:
                                r = max(x, y)
                            elif code == MINIMUM:
                                r = min(x, y)
                            elif code == WHERE:
                                r = x if mem[pc + v * c_inner] != 0 else y
                            elif code == GT:
                                r = 1 if x > y else 0
                            elif code == LT:
                                r = 1 if x < y else 0
                            elif code == GE:
                                r = 1 if x >= y else 0
                            elif code == LE:
                                r = 1 if x <= y else 0
                            elif code == EQ:
                                r = 1 if x == y else 0
                            elif code == AND:
                                r = 1 if (x != 0 and y != 0) else 0
                            elif code == OR:
                                r = 1 if (x != 0 or y != 0) else 0
                            else:
                                raise ValueError("run_program: an operation code this kernel does not know")
                            mem[po + v] = r
        for pair in range(feedback.shape[0]):  # the new parameters (and velocities) become the inputs
            source, target = feedback[pair, 0], feedback[pair, 1]
            for i in range(rows[target]):
                for j in range(cols[target]):
                    if is_float[target] == 1:
                        fmem[offsets[target] + i * rstride[target] + j * cstride[target]] = \
                            fmem[offsets[source] + i * rstride[source] + j * cstride[source]]
                    else:
                        mem[offsets[target] + i * rstride[target] + j * cstride[target]] = \
                            mem[offsets[source] + i * rstride[source] + j * cstride[source]]

    start = 0
    fstart = 0
    for buf in outputs:
        R = rows[buf]
        C = cols[buf]
        o = offsets[buf]
        o_r, o_c = rstride[buf], cstride[buf]
        if is_float[buf] == 1:
            for i in range(R):
                for j in range(C):
                    fgathered[fstart + i * C + j] = fmem[o + i * o_r + j * o_c]
            fstart += R * C
        elif o_r == 1:  # column-major (along the batch): read each column in order
            for j in range(C):
                column = mem[o + j * o_c:o + j * o_c + R]
                for i in range(R):
                    gathered[start + i * C + j] = column[i]
            start += R * C
        else:
            for i in range(R):
                for j in range(C):
                    gathered[start + i * C + j] = mem[o + i * o_r + j * o_c]
            start += R * C

def batch_axes(program) -> list[int | None]:
    """Which axis of each buffer runs along the batch (0: rows, 1: columns, None: neither):
    x and y along rows, and every value computed from them sample by sample likewise."""
    axis: list[int | None] = [None] * len(program.shapes)
    for name, buf, _ in program.inputs:
        if name in ("x", "y"):
            axis[buf] = 0
    for op in program.ops:
        if op.code == TRANSPOSE:
            axis[op.out] = None if axis[op.a] is None else 1 - axis[op.a]
        elif op.code == MATMUL:
            axis[op.out] = 0 if axis[op.a] == 0 else (1 if axis[op.b] == 1 else None)
        elif op.code in (CAST, DYADIC):
            axis[op.out] = axis[op.a]
        elif op.code == WHERE_NUMBERS:
            axis[op.out] = axis[op.params[0]]
        elif op.code not in (SUM0, ZEROS):
            full = [v for v in (op.a, op.b) if v >= 0 and program.shapes[v] == program.shapes[op.out]]
            axis[op.out] = next((axis[v] for v in full if axis[v] is not None), None)
    return axis


#: The comparisons a SELECT row folds, as the closed interval [lo, hi] of the integers v for
#: which ``v code t`` holds (the program's comparisons of integers).
_INTERVALS = {GT: lambda t: (t + 1, _INT64_MAX), GE: lambda t: (t, _INT64_MAX), LT: lambda t: (_INT64_MIN, t - 1),
              LE: lambda t: (_INT64_MIN, t), EQ: lambda t: (t, t)}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def table_rows(program, same_layout) -> list:
    """The operations the kernel runs, in order: the program's without its transposes (views),
    and each chain ``dyadic(where(z cmp t1, n1, where(z cmp t2, n2, n3)), frac)`` (a derivative
    such as ReLU's: comparisons of one buffer z with constants selecting among constant numbers,
    made fixed point) as one SELECT row, when nothing else reads the chain's comparisons and
    selections: one pass over z instead of five. ``same_layout(a, b)``: buffers a and b lay out
    their elements alike (the SELECT runs over them as flat arrays)."""
    ops = [op for op in program.ops if op.code != TRANSPOSE]
    producer = {op.out: op for op in ops}
    readers: dict[int, int] = {}
    for op in ops:
        for buf in _operands(op):
            readers[buf] = readers.get(buf, 0) + 1
    for buf in [buf for buf, _, _ in program.outputs] + [buf for _, _, buf, _ in program.exact_casts]:
        readers[buf] = readers.get(buf, 0) + 2  # read outside the table: never folded away
    folded: set[int] = set()  # the outputs of the operations a SELECT replaces

    def number(buf) -> float | None:  # a constant scalar number
        values = program.float_constants.get(buf)
        return float(values.reshape(-1)[0]) if values is not None and values.size == 1 else None

    def interval(cond) -> tuple[int, int, int, int] | None:  # (z, shift, lo, hi) of a comparison with a constant
        op = producer.get(cond)
        if op is None or op.code not in _INTERVALS or op.float_op or readers.get(cond) != 1:
            return None
        t = program.int_constants.get(op.b)
        if t is None or t.size != 1:
            return None
        return (op.a, op.shift_a, *_INTERVALS[op.code](int(t.reshape(-1)[0]) << op.shift_b))

    def select(d) -> tuple | None:  # SELECT params of the DYADIC d, or None
        outer = producer.get(d.a)
        if outer is None or outer.code != WHERE_NUMBERS or readers.get(d.a) != 1:
            return None
        first, n1 = interval(outer.params[0]), number(outer.a)
        inner = producer.get(outer.b)
        if inner is not None and inner.code == WHERE_NUMBERS and readers.get(outer.b) == 1:
            second, n2, n3 = interval(inner.params[0]), number(inner.a), number(inner.b)
            chain = [outer, inner]
        else:  # where(z cmp t1, n1, n2): the second test never holds
            second, n2, n3 = (first[0], first[1], 1, 0) if first else None, 0.0, number(outer.b)
            chain = [outer]
        if first is None or second is None or first[:2] != second[:2] or None in (n1, n2, n3):
            return None
        z, shift = first[:2]
        if program.shapes[z] != program.shapes[d.out] or not same_layout(z, d.out) or program.kinds[z] != "i":
            return None
        scale = 2.0 ** d.params[0]
        ks = [n * scale for n in (n1, n2, n3)]  # the raw integers DYADIC makes of the numbers (exact)
        if not all(np.isfinite(k) and k == int(k) and abs(k) <= 2.0 ** 53 for k in ks):
            return None
        folded.update(op.out for op in chain)
        folded.update(op.params[0] for op in chain)
        return (z, shift, first[2], first[3], second[2], second[3], *(int(k) for k in ks))

    fused = {}
    for op in ops:
        if op.code == DYADIC and not op.float_op:
            params = select(op)
            if params is not None:
                fused[op.out] = Op(SELECT, op.out, params[0], shift_a=params[1], params=params[2:], fmt=op.fmt)
    # a SELECT read only by a multiply by a value of its shape and layout: one SELECT_MUL pass
    for op in ops:
        if op.code != MUL or op.float_op:
            continue
        for sel, shift, other, other_shift in ((op.a, op.shift_a, op.b, op.shift_b), (op.b, op.shift_b, op.a, op.shift_a)):
            d = fused.get(sel)
            if (d is None or d.code != SELECT or readers.get(sel) != 1 or other < 0 or program.kinds[other] != "i"
                    or program.shapes[other] != program.shapes[op.out] or not same_layout(other, op.out)
                    or not same_layout(sel, op.out) or not 0 <= shift < 64):
                continue
            ks = [_wrap64(k << shift) for k in d.params[4:]]  # the kernel's int64 shift of the constants
            fused[op.out] = Op(SELECT_MUL, op.out, d.a, other, shift_a=d.shift_a, shift_b=other_shift,
                               params=(*d.params[:4], *ks), fmt=op.fmt)
            del fused[sel]
            folded.add(sel)
            break
    return [fused.get(op.out, op) for op in ops if op.out not in folded]


def _wrap64(value: int) -> int:
    """``value`` modulo 2**64 as a signed int64 (what an int64 shift or product gives)."""
    return (value + (1 << 63)) % (1 << 64) - (1 << 63)


def _roots(program) -> list[int]:
    """Each buffer's root: the buffer whose memory it is (a transpose is a view of its source)."""
    root = list(range(len(program.shapes)))
    for op in program.ops:
        if op.code == TRANSPOSE:
            root[op.out] = root[op.a]
    return root


def _operands(op) -> list[int]:
    """The buffers an operation reads."""
    reads = (op.a, op.b) + ((op.params[0],) if op.code in (WHERE, WHERE_NUMBERS) else ())
    return [buf for buf in reads if buf >= 0]


def workspace_offsets(program, ops) -> tuple[list[int], dict[str, int]]:
    """Each buffer's offset in its workspace ("i": ``mem``, "f": ``fmem``) and each workspace's
    size, for the operation table's rows ``ops`` (``table_rows``). Inputs, constants and outputs
    have memory of their own (inputs keep the values written into them across runs, constants
    are written once, outputs are read after the step); every other buffer holds memory from the
    operation that writes it to its last reader, and then gives it back to later buffers, so
    that a large batch's working set stays in cache. A transpose is a view: its reads are reads
    of its source (it gets its source's offset). The exact casts' counting rows read their
    buffers after every operation."""
    root = _roots(program)
    end = len(ops)  # the counting rows come after every operation
    last_read = {}
    for n, op in enumerate(ops):
        for buf in _operands(op):
            last_read[root[buf]] = n
    for _, _, buf, _ in program.exact_casts:
        last_read[root[buf]] = end
    own = {buf for _, buf, _ in program.inputs} | set(program.int_constants) | set(program.float_constants)
    own |= {root[buf] for buf, _, _ in program.outputs}
    written = [op.out for op in ops]
    own |= {buf for buf in written if written.count(buf) > 1}  # (each buffer is written once: safe if not)
    offsets = [0] * len(program.shapes)
    workspaces = {"i": _Workspace(), "f": _Workspace()}
    size = [r * c for r, c in program.shapes]
    for buf in sorted(own):
        if root[buf] == buf:
            offsets[buf] = workspaces[program.kinds[buf]].take(size[buf])
    freed_at: dict[int, list[int]] = {}
    for n, op in enumerate(ops):
        if op.out not in own:
            offsets[op.out] = workspaces[program.kinds[op.out]].take(size[op.out])
            # given back after its last reader has written its own result (never an operand of it)
            freed_at.setdefault(max(n, last_read.get(op.out, n)), []).append(op.out)
        for buf in freed_at.pop(n, []):
            workspaces[program.kinds[buf]].give_back(offsets[buf], size[buf])
    return offsets, {kind: workspace.size for kind, workspace in workspaces.items()}


class _Workspace:
    """First-fit allocation of one workspace: the free blocks (offset, size), by offset."""

    def __init__(self) -> None:
        self.size = 0
        self.free: list[tuple[int, int]] = []

    def take(self, size: int) -> int:
        for k, (offset, free) in enumerate(self.free):
            if free >= size:
                self.free[k:k + 1] = [(offset + size, free - size)] if free > size else []
                return offset
        if self.free and self.free[-1][0] + self.free[-1][1] == self.size:  # grow the last free block
            offset = self.free.pop()[0]
        else:
            offset = self.size
        self.size = offset + size
        return offset

    def give_back(self, offset: int, size: int) -> None:
        self.free.append((offset, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for start, length in self.free:  # adjacent blocks become one
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free = merged


class ProgramRunner:
    """A traced step laid out for ``run_program``: the operation table, the workspaces (constants
    written once), each buffer's offset and strides, and a numpy view of each input and output in
    the workspace. ``run`` executes one step."""

    def __init__(self, step: TracedStep, kernel) -> None:
        program = step.program
        self.step, self.kernel = step, kernel
        n_buffers = len(program.shapes)
        sizes = [r * c for r, c in program.shapes]
        self.buffers = np.zeros((6, n_buffers), dtype=np.int64)
        self.is_float = self.buffers[BUF_FLOAT]
        self.is_float[:] = [kind == "f" for kind in program.kinds]
        self.rows, self.cols = self.buffers[BUF_ROWS], self.buffers[BUF_COLS]
        self.offsets, self.rstride, self.cstride = (self.buffers[BUF_OFFSET], self.buffers[BUF_RSTRIDE],
                                                    self.buffers[BUF_CSTRIDE])
        self.rows[:] = [r for r, _ in program.shapes]
        self.cols[:] = [c for _, c in program.shapes]
        axis = batch_axes(program)
        views = {op.out: op.a for op in program.ops if op.code == TRANSPOSE}
        for buf in range(n_buffers):
            rows, cols = program.shapes[buf]
            if buf in views:  # a transpose: the same memory, strides swapped
                source = views[buf]
                self.rstride[buf], self.cstride[buf] = self.cstride[source], self.rstride[source]
            elif axis[buf] == 0 and rows > 1:  # along the batch: column-major
                self.rstride[buf], self.cstride[buf] = 1, rows
            else:
                self.rstride[buf], self.cstride[buf] = cols, 1
        self.table_ops = table_rows(program, lambda a, b: (self.rstride[a], self.cstride[a]) ==
                                    (self.rstride[b], self.cstride[b]))
        offsets, used = workspace_offsets(program, self.table_ops)
        root = _roots(program)
        for buf in range(n_buffers):
            self.offsets[buf] = offsets[root[buf]]
        self.mem = np.zeros(used["i"], dtype=np.int64)
        self.fmem = np.zeros(used["f"], dtype=np.float64)
        for buf, values in program.int_constants.items():
            self.view(buf)[...] = values
        for buf, values in program.float_constants.items():
            self.view(buf)[...] = values
        self.ops, self.stochastic = self._table(program, sizes)
        self.words = np.zeros(sum(size for _, size, _ in self.stochastic), dtype=np.uint64)
        self.counts = np.zeros((len(self.ops), COUNT_COLUMNS), dtype=np.int64)
        self.range_counts = None  # (ops, COUNT_COLUMNS_RANGES), made at the first run with ranges
        self.last_counts = self.counts  # the table the last counted run filled (its width says which)
        self.input_views = [self.view(buf) for _, buf, _ in program.inputs]
        buffer_of = {name: buf for name, buf, _ in program.inputs}
        self.x_buf, self.y_buf = buffer_of.get("x", 0), buffer_of.get("y", 0)
        self.counted_steps = 1
        # the FixedArray last written into each input buffer: FixedArrays are immutable, so the
        # same object given again is already in place (float inputs are the caller's numpy
        # arrays, which can change: always written)
        self.loaded: list = [None] * len(self.input_views)
        self.output_buffers = np.array([buf for buf, _, _ in program.outputs], dtype=np.int64)
        # outputs in an input's format share its QFormat object: the next step's check is `is`
        same = {fmt: fmt for _, _, fmt in program.inputs}
        output_formats = [None if fmt is None else same.get(fmt, fmt) for _, fmt, _ in program.outputs]
        self.output_slices = []  # (float?, start, end, shape, format) in gathered or fgathered
        used = {False: 0, True: 0}
        for (buf, _, shape), fmt in zip(program.outputs, output_formats):
            kind = bool(self.is_float[buf])
            # shape None: a 1-D output, the slice itself (no reshape)
            self.output_slices.append((kind, used[kind], used[kind] + sizes[buf], shape if len(shape) != 1 else None,
                                       fmt))
            used[kind] += sizes[buf]
        self.gathered_size, self.fgathered_size = used[False], used[True]

    def view(self, buf: int) -> np.ndarray:
        """Buffer ``buf`` as a 2-D numpy view of its workspace (``fmem`` or ``mem``)."""
        workspace = self.fmem if self.is_float[buf] else self.mem
        step = workspace.itemsize
        return np.lib.stride_tricks.as_strided(
            workspace[int(self.offsets[buf]):], shape=(int(self.rows[buf]), int(self.cols[buf])),
            strides=(int(self.rstride[buf]) * step, int(self.cstride[buf]) * step))

    def _table(self, program, sizes) -> tuple[np.ndarray, list[tuple[int, int, bool]]]:
        """The operation table (transposes are views: no row) and the stochastic casts in the order
        they run (rows, number of words, whether the buffer is column-major)."""
        ops = self.table_ops
        table = np.zeros((len(ops) + len(program.exact_casts), OP_COLUMNS), dtype=np.int64)
        self.exact_rows = []  # the exact casts' counting rows, after every operation
        for k, (role, layer, buf, fmt) in enumerate(program.exact_casts):
            table[len(ops) + k, :COL_COND] = (COUNT_EXACT, buf, buf, -1, 0, 0)
            self.exact_rows.append((len(ops) + k, role, layer, buf, fmt))
        self.cast_rows = []
        stochastic, words = [], 0
        for n, op in enumerate(ops):
            table[n, :COL_COND] = (op.code, op.out, op.a, op.b, op.shift_a, op.shift_b)
            table[n, COL_FLOAT] = int(op.float_op)
            if op.code in (WHERE, WHERE_NUMBERS):
                table[n, COL_COND] = op.params[0]
            elif op.code == DYADIC:
                table[n, COL_FRAC] = op.params[0]
            elif op.code == MATMUL and op.params:
                table[n, COL_NARROW] = op.params[0]
            elif op.code in (SELECT, SELECT_MUL):
                table[n, COL_LO1:COL_LO1 + 7] = op.params
            elif op.code == CAST:
                shift, rounding, overflow, lo, hi, word, signed = op.params
                fmt = op.fmt
                layouts = [(int(self.rstride[b]), int(self.cstride[b])) for b in (op.a, op.out)]
                if self.rows[op.a] > 1 and self.cols[op.a] > 1 and layouts[0] != layouts[1]:
                    raise AssertionError(f"fixprop internal error: the cast into {op.role} (layer {op.layer}) reads "
                                         f"strides {layouts[0]} and writes {layouts[1]}; the kernel casts element "
                                         "e of its input into element e of its output (one layout)")
                base, sign_bias, odd_bias = rounding_bias(list(Rounding)[rounding], shift) if shift > 0 else (0, 0, 0)
                assert odd_bias in (0, 1)  # the kernel masks with it
                table[n, COL_SHIFT:COL_FIRST_WORD] = (
                    shift, rounding, overflow, lo, hi, fmt.raw_min, fmt.raw_max,
                    (1 << (word - 1)) if signed else 0, (1 << word) - 1, base, sign_bias, odd_bias)
                self.cast_rows.append((n, op))
                if rounding == STOCH and shift > 0:
                    table[n, COL_FIRST_WORD] = words
                    words += sizes[op.a]
                    rows = int(self.rows[op.a])
                    stochastic.append((rows, sizes[op.a], rows > 1 and self.rstride[op.a] == 1))
        return table, stochastic

    def _draw_words(self, rng) -> None:
        """One word per element, cast by cast, as the stepwise path draws them (row-major), stored
        in the memory order of each cast's buffer."""
        start = 0
        for rows, size, colmajor in self.stochastic:
            drawn = q.random_words(rng, (size,))
            if colmajor:
                drawn = drawn.reshape(rows, size // rows).T.ravel()
            self.words[start:start + size] = drawn
            start += size

    def report_counts(self, counter) -> None:
        """Give the last counted run's cast counts to ``counter.add_counts(role, layer, fmt, count,
        nonzero, saturated, underflowed)`` (after a run with ranges: to ``counter.add_ranges(...,
        minimum, maximum, log2_histogram)``, the range of the exact values before each cast), in the
        order the casts ran (exact casts after them), summed over the run's steps."""
        sizes = self.rows * self.cols
        rows = [(n, op.role, op.layer, op.fmt, int(sizes[op.a]), op.fmt.frac + op.params[0]) for n, op in self.cast_rows]
        rows += [(n, role, layer, fmt, int(sizes[buf]), fmt.frac) for n, role, layer, buf, fmt in self.exact_rows]
        ranges = self.last_counts.shape[1] > COUNT_MIN  # the kernel's test
        for n, role, layer, fmt, size, source_frac in rows:
            counts = self.last_counts[n]
            nonzero, saturated, underflowed = (int(c) for c in counts[:COUNT_MIN])
            if not ranges:
                counter.add_counts(role, layer, fmt, size * self.counted_steps, nonzero, saturated, underflowed)
                continue
            scale = Fraction(2) ** -source_frac  # the raw values before the cast, in units of 2**-source_frac
            histogram = {bits - 1 - source_frac: int(counts[COUNT_LOG2 + bits - 1])
                         for bits in range(1, 64) if counts[COUNT_LOG2 + bits - 1]}
            counter.add_ranges(role, layer, fmt, size * self.counted_steps, nonzero, saturated, underflowed,
                               int(counts[COUNT_MIN]) * scale, int(counts[COUNT_MAX]) * scale, histogram)

    def load(self, values, formats, names) -> None:
        """Write each input's raw integers (a FixedArray in ``formats[i]``; for a float program a
        real array) into its buffer, in ``program.inputs`` order. A FixedArray already written
        there (the same object) is skipped. A value in another format raises NotInRoleFormat."""
        loaded, views = self.loaded, self.input_views
        for i, value in enumerate(values):
            if value is loaded[i]:
                continue
            fmt = formats[i]
            if not _in_format(value, fmt):
                raise _not_in_role_format(names[i], value, fmt)
            if fmt is None:
                views[i][...] = np.asarray(value, dtype=np.float64)
            else:
                views[i][...] = value.raw
                loaded[i] = value

    def run(self, rng=None, count: bool = False, ranges: bool = False) -> list:
        """One step on the inputs last loaded (:meth:`load`); returns the outputs in
        ``program.outputs`` order (:meth:`_call`). ``count``: count every cast (with ``ranges``,
        keep the range of its values too) for :meth:`report_counts`."""
        if self.stochastic:
            self._draw_words(rng)
        return self._call(1, self.words, None, None, _NO_FEEDBACK, count, ranges)

    def run_steps(self, raws: list[np.ndarray], x_data: np.ndarray, y_data: np.ndarray, feedback: np.ndarray,
                  rng=None, count: bool = False, ranges: bool = False, drawn: np.ndarray | None = None) -> list:
        """``len(x_data) // batch`` steps: ``raws`` are the inputs other than x and y (in
        ``program.inputs`` order), step s trains on rows [s*batch, (s+1)*batch) of ``x_data``
        and ``y_data`` (int64 raws in the input and target roles) and ``feedback`` (output
        buffer, input buffer) pairs carry the new parameters to the next step. STOCH words come
        from a numpy Generator, every step's after the previous one's, as step-by-step calls
        draw them (``drawn``: those words already drawn, (steps, words per step) in that order).
        Returns the last step's outputs (as :meth:`run`)."""
        batch = int(self.rows[self.x_buf])
        n_steps = len(x_data) // batch
        self.loaded = [None] * len(self.input_views)  # the steps overwrite the inputs
        for view, raw in zip(self.input_views[:-2], raws):
            view[...] = raw
        words = self.words
        if self.stochastic:
            per_step = self.words.size
            if drawn is None:
                if not isinstance(rng, np.random.Generator):
                    raise ModeError("run_steps draws STOCH words from a numpy Generator (an LFSR source "
                                    "draws per step: call run once per step)")
                drawn = q.random_words(rng, (n_steps * per_step,)).reshape(n_steps, per_step)
            elif drawn.shape != (n_steps, per_step) or drawn.dtype != np.uint64:
                raise ValueError(f"run_steps needs drawn words of shape {(n_steps, per_step)} (uint64); "
                                 f"got {drawn.shape} ({drawn.dtype})")
            else:
                drawn = drawn.copy()  # put into the buffers' memory order below
            start = 0
            for rows, size, colmajor in self.stochastic:
                if colmajor:  # each step's words of this cast, into its buffer's memory order
                    block = drawn[:, start:start + size].reshape(n_steps, rows, size // rows)
                    drawn[:, start:start + size] = block.transpose(0, 2, 1).reshape(n_steps, size)
                start += size
            words = drawn.reshape(-1)
        return self._call(n_steps, words, x_data, y_data, feedback, count, ranges)

    def _call(self, n_steps, words, x_data, y_data, feedback, count, ranges=False) -> list:
        """Run the kernel; the outputs as FixedArrays in their formats over read-only int64
        views of one new array, each view made at the array's first use (a float program's:
        read-only float64 arrays)."""
        counts = self.counts
        if count and ranges:
            if self.range_counts is None:
                self.range_counts = np.zeros((len(self.ops), COUNT_COLUMNS_RANGES), dtype=np.int64)
            counts = self.range_counts
            counts[:] = 0
            counts[:, COUNT_MIN] = np.iinfo(np.int64).max  # no value seen yet
            counts[:, COUNT_MAX] = np.iinfo(np.int64).min
        elif count:
            counts[:] = 0
        self.counted_steps = n_steps
        if count:
            self.last_counts = counts
        data = _NO_STEP_DATA
        if x_data is not None and self.is_float[self.x_buf]:
            data = (_NO_DATA, _NO_DATA, np.ascontiguousarray(x_data, dtype=np.float64),
                    np.ascontiguousarray(y_data, dtype=np.float64))
        elif x_data is not None:
            data = (np.ascontiguousarray(x_data, dtype=np.int64), np.ascontiguousarray(y_data, dtype=np.int64),
                    _NO_FLOAT_DATA, _NO_FLOAT_DATA)
        gathered = np.empty(self.gathered_size, dtype=np.int64) if self.gathered_size else _NO_INTS
        fgathered = np.empty(self.fgathered_size, dtype=np.float64) if self.fgathered_size else _NO_FLOATS
        self.kernel(self.ops, self.buffers, self.mem, self.fmem, words, counts, count,
                    self.output_buffers, gathered, fgathered, n_steps, *data, self.x_buf, self.y_buf, feedback)
        # the outputs are read-only views of these (the shared empty ones stay writeable: numba
        # types a read-only array as another signature, and they hold no elements)
        if self.gathered_size:
            gathered.flags.writeable = False
        if self.fgathered_size:
            fgathered.flags.writeable = False
        wrap = FixedArray._trusted_int64_slice  # each view made when the array is first used
        return [wrap(gathered, start, end, shape, fmt)
                if fmt is not None else (fgathered if kind else gathered)[start:end].reshape(shape or (-1,))
                for kind, start, end, shape, fmt in self.output_slices]


#: run()'s empty step data and feedback (one step on inputs already written).
_NO_DATA = np.zeros((0, 0), dtype=np.int64)
_NO_FLOAT_DATA = np.zeros((0, 0), dtype=np.float64)
_NO_FEEDBACK = np.zeros((0, 2), dtype=np.int64)
_NO_STEP_DATA = (_NO_DATA, _NO_DATA, _NO_FLOAT_DATA, _NO_FLOAT_DATA)
#: the gathered outputs of a program without int64 (or without float64) outputs
_NO_INTS = np.zeros(0, dtype=np.int64)
_NO_FLOATS = np.zeros(0, dtype=np.float64)


class NumbaStep:
    """A traced step run by the numba kernel; the interface of ``compiled.CompiledStep``
    (``gradients`` and ``train_step`` on FixedArrays in their role formats; on float64 arrays
    for a float program, ``float_program``)."""

    def __init__(self, step: TracedStep, kernel) -> None:
        self.runner = ProgramRunner(step, kernel)
        self.float_program = step.datapath is None
        self.net, self.update, self.momentum = step.net, step.update, step.momentum
        self.forward_only = step.forward_only
        self.input_names = [name for name, _, _ in step.program.inputs]
        self.input_formats = [fmt for _, _, fmt in step.program.inputs]
        self.uses_rng = bool(self.runner.stochastic)
        self.words_per_step = int(self.runner.words.size)  # STOCH words one step draws
        # train_steps: the updated parameters (outputs 2n.., velocities 4n..) feed the next step's inputs
        n = self.net.n_layers
        program = step.program
        pairs = []
        if self.update and not self.forward_only:
            pairs = [(program.outputs[2 * n + k][0], program.inputs[k][1]) for k in range(2 * n)]
            if self.momentum:
                pairs += [(program.outputs[4 * n + k][0], program.inputs[2 * n + k][1]) for k in range(2 * n)]
        self.feedback = np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def _values(self, params, velocity) -> list:
        values = [v for p in params for v in (p.weight, p.bias)]
        if self.momentum:
            values += [v for p in velocity for v in (p.weight, p.bias)]
        return values

    def accepts(self, params, velocity=None) -> bool:
        """True when the parameters (and velocities) are in the formats the program was traced
        for (their roles'); values in other formats are computed on the step-by-step path."""
        return all(_in_format(v, fmt) for v, fmt in zip(self._values(params, velocity), self.input_formats))

    def outputs(self, params, x, y, velocity=None, rng=None, counter=None) -> list[FixedArray]:
        """Every result of one step, in ``TracedStep`` order: per layer (weight_grad, bias_grad);
        with update the new (weight, bias) per layer, then the new velocities; last the output.
        ``counter`` (a RangeCollector: ``add_counts``, and ``add_ranges`` when its ``ranges`` is
        set) receives every cast's counts (and the range of its values).
        Every value must be in its role's format (``accepts``); anything else is refused."""
        if self.forward_only:
            raise ValueError("this program is a forward pass: call activations(params, x)")
        return self._run(self._values(params, velocity) + [x, y], rng, counter)

    def activations(self, params, x, rng=None, counter=None) -> list[FixedArray]:
        """Each layer's activation ``act`` (first layer first) of a forward-only program."""
        if not self.forward_only:
            raise ValueError("this program is a training step: call outputs(params, x, y)")
        return self._run(self._values(params, None) + [x], rng, counter)

    def _run(self, values, rng, counter) -> list[FixedArray]:
        self.runner.load(values, self.input_formats, self.input_names)
        if self.uses_rng and not q.is_random_source(rng):
            raise ModeError("this datapath rounds stochastically: pass rng=numpy.random.Generator "
                            "(or a fixprop.hardware.LfsrSource)")
        outputs = self.runner.run(rng, count=counter is not None, ranges=_wants_ranges(counter))
        if counter is not None:
            self.runner.report_counts(counter)
        return outputs

    def _check_formats(self, values) -> None:
        """Raise NotInRoleFormat at the first value not in the format its input was traced for."""
        for v, fmt, name in zip(values, self.input_formats, self.input_names):
            if not _in_format(v, fmt):
                raise _not_in_role_format(name, v, fmt)

    def _raws(self, values) -> list[np.ndarray]:
        if self.float_program:
            return [np.asarray(v, dtype=np.float64) for v in values]
        return [v.raw for v in values]

    def train_steps(self, params, x, y, velocity=None, rng=None, counter=None, drawn=None):
        """SGD steps on consecutive batches of ``x`` and ``y`` (FixedArrays in the input and target
        roles, ``k * batch`` rows: step s on rows [s*batch, (s+1)*batch)) in one kernel call: the
        integers ``train_step`` gives step after step. Returns (new params, new velocity or None,
        the last step's output before its update). STOCH words come from a numpy Generator, or are
        given already drawn (``drawn``: (steps, ``words_per_step``) uint64, each step's in the order
        ``train_step`` draws them)."""
        if not self.update:
            raise ValueError("this step was traced without update=True")
        batch = int(self.runner.rows[self.runner.x_buf])
        if x.shape[0] != y.shape[0] or x.shape[0] % batch or x.shape[0] == 0:
            raise ValueError(f"train_steps needs x and y of k * {batch} rows; got {x.shape[0]} and {y.shape[0]}")
        values = self._values(params, velocity)
        self._check_formats(values + [x, y])
        if self.uses_rng and drawn is None and not isinstance(rng, np.random.Generator):
            raise ModeError("this datapath rounds stochastically: train_steps needs rng=numpy.random.Generator "
                            "(an LFSR source draws per step: call train_step once per step)")
        x_raw, y_raw = self._raws([x, y])
        out = self.runner.run_steps(self._raws(values), x_raw, y_raw, self.feedback, rng, count=counter is not None,
                                    ranges=_wants_ranges(counter), drawn=drawn)
        if counter is not None:
            self.runner.report_counts(counter)
        n = self.net.n_layers
        new = [LayerParams(out[2 * n + 2 * i], out[2 * n + 2 * i + 1]) for i in range(n)]
        vel = [LayerParams(out[4 * n + 2 * i], out[4 * n + 2 * i + 1]) for i in range(n)] if self.momentum else None
        return new, vel, out[-1]

    def gradients(self, params, x, y, velocity=None, rng=None, counter=None) -> list[tuple[FixedArray, FixedArray]]:
        """[(weight_grad, bias_grad), ...] per layer."""
        out = iter(self.outputs(params, x, y, velocity, rng, counter))
        return list(zip(out, out))[:self.net.n_layers]  # pairs (weight_grad, bias_grad), layer by layer

    def train_step(self, params, x, y, velocity=None, rng=None, counter=None):
        """(new params, new velocity or None, the network output before the step)."""
        if not self.update:
            raise ValueError("this step was traced without update=True")
        out = self.outputs(params, x, y, velocity, rng, counter)
        n = self.net.n_layers
        new = [LayerParams(out[2 * n + 2 * i], out[2 * n + 2 * i + 1]) for i in range(n)]
        vel = [LayerParams(out[4 * n + 2 * i], out[4 * n + 2 * i + 1]) for i in range(n)] if self.momentum else None
        return new, vel, out[-1]


def _in_format(value, fmt) -> bool:
    """True when ``value`` is a FixedArray in format ``fmt`` (``fmt`` None: a float program's
    input, any real array)."""
    if fmt is None:
        return not isinstance(value, FixedArray)
    value_fmt = getattr(value, "fmt", None)
    return value_fmt is fmt or value_fmt == fmt


def _wants_ranges(counter) -> bool:
    """True when ``counter`` keeps ranges (``add_ranges``), not only counts (``add_counts``)."""
    return counter is not None and bool(getattr(counter, "ranges", False))


def _not_in_role_format(name: str, value, fmt) -> NotInRoleFormat:
    return NotInRoleFormat(f"{name} is in format {getattr(value, 'fmt', type(value).__name__)}, but this step was "
                           f"traced for {fmt} (its role's format): cast it, or use the step-by-step path")


def numba_step(net: MLP, datapath: Datapath, batch: int, update: bool, forward_only: bool = False) -> NumbaStep | None:
    """The step of ``net`` under ``datapath`` for ``batch`` samples on the numba kernel (with
    ``forward_only``, the forward pass: ``NumbaStep.activations``); None when numba is unavailable
    (``nn/jit.py`` warned once) or the datapath is too wide for int64 programs."""
    from fixprop.nn.jit import compiled

    kernel = compiled(run_program)
    if kernel is None:
        return None
    try:
        traced = trace_forward(net, datapath, batch) if forward_only else trace_program(net, datapath, batch, update)
        return NumbaStep(traced, kernel)
    except NotCompilable:
        return None


def numba_float_step(net: MLP, settings, batch: int, update: bool, forward_only: bool = False) -> NumbaStep | None:
    """The float64 network (``settings``: a FloatArithmetic) for ``batch`` samples on the numba
    kernel; None when numba is unavailable. Its sums run in the program's order (a matmul over k
    in increasing order, no FMA): the numpy path's BLAS may round the last bit differently."""
    from fixprop.nn.jit import compiled

    kernel = compiled(run_program)
    if kernel is None:
        return None
    return NumbaStep(trace_float_program(net, settings, batch, update, forward_only), kernel)


def warm_cache() -> bool:
    """Compile the kernel once in this process (one step of a tiny network), so that numba's disk
    cache holds it before worker processes start: they then load it instead of each compiling.
    Returns False when numba is unavailable."""
    step = numba_step(MLP([1, 1]), Datapath.uniform(8, 4), 1, update=True)
    if step is None:
        return False
    zero = FixedArray.zeros((1, 1), "s8.4")
    step.train_step([LayerParams(FixedArray.zeros((1, 1), "s8.4"), FixedArray.zeros((1,), "s8.4"))], zero, zero)
    return True
