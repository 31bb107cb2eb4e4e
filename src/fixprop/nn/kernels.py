"""The numba renderer of a datapath program (``nn/program.py``): one interpreter kernel.

``run_program`` executes a program's operations in order on one int64 workspace (and one
float64 workspace for the derivative numbers before ``dyadic``). It is a plain Python function
over runtime arrays (the operation table, buffer offsets and shapes, the workspaces, the random
words): numba compiles it once, for every network, datapath and batch size, and its on-disk
cache serves every later process. Every format decision was taken when the program was traced;
the kernel only loops, shifts, rounds and clamps, and never rounds in floating point.

Casts (the only rounding): a raw value ``v`` dropping ``s`` bits becomes ``floor(v / 2**s)`` plus
one when the mode's rule on the dropped bits says so (the rules of ``quantize.round_shift_right``);
STOCH rounds up when the element's 64-bit random word is below ``dropped * 2**(64 - s)``, the
word drawn by numpy (or the LFSR source) in the stepwise path's order. Then the overflow mode.
"""

from __future__ import annotations

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ModeError
from fixprop.fixed import quantize as q
from fixprop.fixed.array import FixedArray
from fixprop.nn.mlp import MLP, LayerParams
from fixprop.nn.program import (ADD, AND, CAST, DYADIC, GE, GT, LE, LT, MATMUL, MAXIMUM, MINIMUM, MUL, OR,
                                SUB, SUM0, TRANSPOSE, WHERE, WHERE_NUMBERS, ZEROS, NotCompilable, TracedStep,
                                trace_program)

# Column layout of the operation table (one row per operation).
COL_CODE, COL_OUT, COL_A, COL_B, COL_SHIFT_A, COL_SHIFT_B, COL_PARAMS = 0, 1, 2, 3, 4, 5, 6
N_PARAMS = 8
COL_WORDS = COL_PARAMS + N_PARAMS  # first random word of a STOCH cast
OP_COLUMNS = COL_WORDS + 1
# Rounding codes (the order of fixprop.fixed.modes.Rounding) and overflow codes (of Overflow).
TRN, TRN_ZERO, TRN_INF, RND, RND_ZERO, RND_MIN_INF, RND_INF, RND_CONV, STOCH = range(9)
SAT, WRAP, SAT_SYM, SAT_ZERO = range(4)
# Columns of the cast counts: values nonzero before the cast, saturated, underflowed to zero.
COUNT_NONZERO, COUNT_SATURATED, COUNT_UNDERFLOWED = 0, 1, 2


def run_program(ops, offsets, rows, cols, mem, fmem, words, counts, count):  # pragma: no cover - compiled
    """Run every operation of ``ops`` (int64 table, OP_COLUMNS wide) on the workspaces ``mem``
    (int64 raw values) and ``fmem`` (float64 numbers); buffer b lives at ``offsets[b]`` with
    shape (rows[b], cols[b]), row-major. ``words`` (uint64): the STOCH casts' random words.
    With ``count``, each cast adds its nonzero/saturated/underflowed counts to ``counts[op]``."""
    for n in range(ops.shape[0]):
        code = ops[n, COL_CODE]
        out = ops[n, COL_OUT]
        a = ops[n, COL_A]
        b = ops[n, COL_B]
        R = rows[out]
        C = cols[out]
        o = offsets[out]
        if code == MATMUL:
            K = cols[a]
            N = cols[b]
            oa = offsets[a]
            ob = offsets[b]
            for e in range(R * C):
                mem[o + e] = 0
            for i in range(R):  # i, k, j: the inner loop runs along contiguous rows (vectorizes)
                for k in range(K):
                    aik = mem[oa + i * K + k]
                    if aik != 0:
                        for j in range(N):
                            mem[o + i * C + j] += aik * mem[ob + k * N + j]
        elif code == SUM0:
            oa = offsets[a]
            Ra = rows[a]
            for j in range(C):
                acc = np.int64(0)
                for i in range(Ra):
                    acc += mem[oa + i * C + j]
                mem[o + j] = acc
        elif code == TRANSPOSE:
            oa = offsets[a]
            for i in range(R):
                for j in range(C):
                    mem[o + i * C + j] = mem[oa + j * R + i]
        elif code == ZEROS:
            for e in range(R * C):
                mem[o + e] = 0
        elif code == WHERE_NUMBERS:
            oc = offsets[ops[n, COL_PARAMS]]
            oa = offsets[a]
            ob = offsets[b]
            for i in range(R):
                for j in range(C):
                    ia = (i if rows[a] > 1 else 0) * cols[a] + (j if cols[a] > 1 else 0)
                    ib = (i if rows[b] > 1 else 0) * cols[b] + (j if cols[b] > 1 else 0)
                    fmem[o + i * C + j] = fmem[oa + ia] if mem[oc + i * C + j] != 0 else fmem[ob + ib]
        elif code == DYADIC:
            oa = offsets[a]
            scale = 2.0 ** ops[n, COL_PARAMS]
            for i in range(R):
                for j in range(C):
                    ia = (i if rows[a] > 1 else 0) * cols[a] + (j if cols[a] > 1 else 0)
                    mem[o + i * C + j] = np.int64(fmem[oa + ia] * scale)  # k * 2**-frac: exact
        elif code == CAST:
            shift = ops[n, COL_PARAMS]
            rounding = ops[n, COL_PARAMS + 1]
            overflow = ops[n, COL_PARAMS + 2]
            lo = ops[n, COL_PARAMS + 3]
            hi = ops[n, COL_PARAMS + 4]
            word = ops[n, COL_PARAMS + 5]
            signed = ops[n, COL_PARAMS + 6]
            first_word = ops[n, COL_WORDS]
            fmt_min = -(np.int64(1) << (word - 1)) if signed else np.int64(0)
            fmt_max = (np.int64(1) << (word - 1)) - 1 if signed else (np.int64(1) << word) - 1
            oa = offsets[a]
            for e in range(R * C):
                v = mem[oa + e]
                r = v
                saturated = False
                if shift > 0:
                    floor = v >> shift
                    dropped = v & ((np.int64(1) << shift) - 1)
                    half = np.int64(1) << (shift - 1)
                    up = False
                    if dropped != 0:
                        if rounding == TRN_INF:
                            up = True
                        elif rounding == TRN_ZERO:
                            up = v < 0
                        elif rounding == RND:
                            up = dropped >= half
                        elif rounding == RND_MIN_INF:
                            up = dropped > half
                        elif rounding == RND_ZERO:
                            up = dropped > half or (dropped == half and v < 0)
                        elif rounding == RND_INF:
                            up = dropped > half or (dropped == half and v >= 0)
                        elif rounding == RND_CONV:
                            up = dropped > half or (dropped == half and (floor & 1) == 1)
                        elif rounding == STOCH:
                            threshold = np.uint64(dropped) << np.uint64(64 - shift)
                            up = words[first_word + e] < threshold
                    r = floor + 1 if up else floor
                    if count:  # STOCH: the exact value outside the format's range; else the rounded one
                        if rounding == STOCH:
                            saturated = floor + (1 if dropped != 0 else 0) > fmt_max or floor < fmt_min
                        else:
                            saturated = r < lo or r > hi
                else:
                    if shift < 0:
                        r = v << (-shift)
                    if count:
                        saturated = (r > fmt_max or r < fmt_min) if rounding == STOCH else (r < lo or r > hi)
                if r < lo or r > hi:
                    if overflow == SAT or overflow == SAT_SYM:
                        r = lo if r < lo else hi
                    elif overflow == SAT_ZERO:
                        r = 0
                    else:  # WRAP: the low word bits, two's complement when signed
                        r = r & ((np.int64(1) << word) - 1)
                        if signed and r >= (np.int64(1) << (word - 1)):
                            r -= np.int64(1) << word
                mem[o + e] = r
                if count:
                    if v != 0:
                        counts[n, COUNT_NONZERO] += 1
                        if r == 0:
                            counts[n, COUNT_UNDERFLOWED] += 1
                    if saturated:
                        counts[n, COUNT_SATURATED] += 1
        elif code == AND or code == OR:
            oa = offsets[a]
            ob = offsets[b]
            for e in range(R * C):
                x = mem[oa + e] != 0
                y = mem[ob + e] != 0
                mem[o + e] = (x and y) if code == AND else (x or y)
        else:  # elementwise on aligned operands, numpy's broadcasting of rows and columns
            sa = ops[n, COL_SHIFT_A]
            sb = ops[n, COL_SHIFT_B]
            oa = offsets[a]
            ob = offsets[b]
            oc = offsets[ops[n, COL_PARAMS]] if code == WHERE else 0
            for i in range(R):
                for j in range(C):
                    x = mem[oa + (i if rows[a] > 1 else 0) * cols[a] + (j if cols[a] > 1 else 0)] << sa
                    y = mem[ob + (i if rows[b] > 1 else 0) * cols[b] + (j if cols[b] > 1 else 0)] << sb
                    if code == ADD:
                        r = x + y
                    elif code == SUB:
                        r = x - y
                    elif code == MUL:
                        r = x * y
                    elif code == MAXIMUM:
                        r = x if x >= y else y
                    elif code == MINIMUM:
                        r = x if x <= y else y
                    elif code == WHERE:
                        r = x if mem[oc + i * C + j] != 0 else y
                    elif code == GT:
                        r = 1 if x > y else 0
                    elif code == LT:
                        r = 1 if x < y else 0
                    elif code == GE:
                        r = 1 if x >= y else 0
                    elif code == LE:
                        r = 1 if x <= y else 0
                    else:  # EQ (the last code)
                        r = 1 if x == y else 0
                    mem[o + i * C + j] = r


class ProgramRunner:
    """A traced step laid out for ``run_program``: the operation table, the workspaces (constants
    written once) and where each input and output lives. ``run`` executes one step."""

    def __init__(self, step: TracedStep, kernel) -> None:
        program = step.program
        self.step, self.kernel = step, kernel
        sizes = [r * c for r, c in program.shapes]
        self.rows = np.array([r for r, _ in program.shapes], dtype=np.int64)
        self.cols = np.array([c for _, c in program.shapes], dtype=np.int64)
        self.offsets = np.zeros(len(sizes), dtype=np.int64)
        used = {"i": 0, "f": 0}
        for buf, (size, kind) in enumerate(zip(sizes, program.kinds)):
            self.offsets[buf] = used[kind]
            used[kind] += size
        self.mem = np.zeros(used["i"], dtype=np.int64)
        self.fmem = np.zeros(used["f"], dtype=np.float64)
        for buf, values in program.int_constants.items():
            self.mem[self.offsets[buf]:self.offsets[buf] + sizes[buf]] = values.ravel()
        for buf, values in program.float_constants.items():
            self.fmem[self.offsets[buf]:self.offsets[buf] + sizes[buf]] = values.ravel()
        self.ops = np.zeros((len(program.ops), OP_COLUMNS), dtype=np.int64)
        self.stochastic_sizes: list[int] = []
        words = 0
        for n, op in enumerate(program.ops):
            self.ops[n, :COL_PARAMS] = (op.code, op.out, op.a, op.b, op.shift_a, op.shift_b)
            self.ops[n, COL_PARAMS:COL_PARAMS + len(op.params)] = op.params
            if op.code == CAST and op.params[1] == STOCH and op.params[0] > 0:
                self.ops[n, COL_WORDS] = words
                words += sizes[op.a]
                self.stochastic_sizes.append(sizes[op.a])
        self.words = np.zeros(words, dtype=np.uint64)
        self.counts = np.zeros((len(program.ops), 3), dtype=np.int64)
        self.cast_ops = [(n, op) for n, op in enumerate(program.ops) if op.code == CAST]
        # the inputs were the first buffers made: one contiguous block at the start of ``mem``
        assert [buf for _, buf, _ in program.inputs] == list(range(len(program.inputs)))
        self.input_words = sum(sizes[buf] for _, buf, _ in program.inputs)
        # the outputs, gathered by one index; each output a view of the gathered copy
        self.output_index = np.concatenate([np.arange(self.offsets[buf], self.offsets[buf] + sizes[buf])
                                            for buf, _, _ in program.outputs])
        ends = np.cumsum([sizes[buf] for buf, _, _ in program.outputs])
        self.output_slices = [(int(end - sizes[buf]), int(end), shape)
                              for end, (buf, _, shape) in zip(ends, program.outputs)]

    def report_counts(self, counter) -> None:
        """Give the last counted run's cast counts to ``counter.add_counts(role, layer, fmt, count,
        nonzero, saturated, underflowed)``, in the order the casts ran (exact casts after them)."""
        sizes = self.rows * self.cols
        for n, op in self.cast_ops:
            nonzero, saturated, underflowed = (int(c) for c in self.counts[n])
            counter.add_counts(op.role, op.layer, op.fmt, int(sizes[op.a]), nonzero, saturated, underflowed)
        for role, layer, buf, fmt in self.step.program.exact_casts:
            values = self.mem[self.offsets[buf]:self.offsets[buf] + sizes[buf]]
            counter.add_counts(role, layer, fmt, int(sizes[buf]), int(np.count_nonzero(values)), 0, 0)

    def run(self, raws: list[np.ndarray], rng=None, count: bool = False) -> list[np.ndarray]:
        """One step on the inputs' raw integers (int64, in ``program.inputs`` order); returns the
        outputs' raw integers (int64 arrays of their shapes), in ``program.outputs`` order."""
        np.concatenate([np.ravel(raw) for raw in raws], out=self.mem[:self.input_words], casting="same_kind")
        if self.stochastic_sizes:  # one word per element, cast by cast, as the stepwise path draws them
            self.words[:] = np.concatenate([q.random_words(rng, (size,)) for size in self.stochastic_sizes])
        if count:
            self.counts[:] = 0
        self.kernel(self.ops, self.offsets, self.rows, self.cols, self.mem, self.fmem, self.words,
                    self.counts, count)
        gathered = self.mem[self.output_index]
        return [gathered[start:end].reshape(shape) for start, end, shape in self.output_slices]


class NumbaStep:
    """A traced step run by the numba kernel; the interface of ``compiled.CompiledStep``
    (``gradients`` and ``train_step`` on FixedArrays in their role formats)."""

    def __init__(self, step: TracedStep, kernel) -> None:
        self.runner = ProgramRunner(step, kernel)
        self.net, self.update, self.momentum = step.net, step.update, step.momentum
        self.formats = [fmt for _, fmt, _ in step.program.outputs]
        self.uses_rng = bool(self.runner.stochastic_sizes)

    def outputs(self, params, x, y, velocity=None, rng=None, counter=None) -> list[FixedArray]:
        """Every result of one step, in ``TracedStep`` order: per layer (weight_grad, bias_grad);
        with update the new (weight, bias) per layer, then the new velocities; last the output.
        ``counter`` (``add_counts``, e.g. a counts-only RangeCollector) receives every cast's counts."""
        values = [v for p in params for v in (p.weight, p.bias)]
        if self.momentum:
            values += [v for p in velocity for v in (p.weight, p.bias)]
        if self.uses_rng and not q.is_random_source(rng):
            raise ModeError("this datapath rounds stochastically: pass rng=numpy.random.Generator "
                            "(or a fixprop.hardware.LfsrSource)")
        outputs = self.runner.run([v.raw for v in values] + [x.raw, y.raw], rng, count=counter is not None)
        if counter is not None:
            self.runner.report_counts(counter)
        return [FixedArray._trusted(raw, fmt) for raw, fmt in zip(outputs, self.formats)]

    def gradients(self, params, x, y, velocity=None, rng=None, counter=None) -> list[tuple[FixedArray, FixedArray]]:
        """[(weight_grad, bias_grad), ...] per layer."""
        out = self.outputs(params, x, y, velocity, rng, counter)
        return [(out[2 * i], out[2 * i + 1]) for i in range(self.net.n_layers)]

    def train_step(self, params, x, y, velocity=None, rng=None, counter=None):
        """(new params, new velocity or None, the network output before the step)."""
        if not self.update:
            raise ValueError("this step was traced without update=True")
        out = self.outputs(params, x, y, velocity, rng, counter)
        n = self.net.n_layers
        new = [LayerParams(out[2 * n + 2 * i], out[2 * n + 2 * i + 1]) for i in range(n)]
        vel = [LayerParams(out[4 * n + 2 * i], out[4 * n + 2 * i + 1]) for i in range(n)] if self.momentum else None
        return new, vel, out[-1]


def numba_step(net: MLP, datapath: Datapath, batch: int, update: bool) -> NumbaStep | None:
    """The step of ``net`` under ``datapath`` for ``batch`` samples on the numba kernel; None when
    numba is unavailable (``nn/jit.py`` warned once) or the datapath is too wide for int64 programs."""
    from fixprop.nn.jit import compiled

    kernel = compiled(run_program)
    if kernel is None:
        return None
    try:
        return NumbaStep(trace_program(net, datapath, batch, update), kernel)
    except NotCompilable:
        return None


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
