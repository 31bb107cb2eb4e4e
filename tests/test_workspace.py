"""The numba kernel's workspace reuses memory: a buffer holds its memory from the operation that
writes it to its last reader (``kernels.workspace_offsets``), so that a large batch's working set
stays in cache. Checked on the layout itself (no two buffers alive at once share memory; inputs,
constants and outputs have their own) and on the results at batch 1024 and over multi-step runs,
against the stage-by-stage FixedArithmetic path (never against the kernel itself)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fixprop import Datapath
from fixprop.explore.ranges import RangeCollector
from fixprop.nn import MLP, FixedArithmetic, Model
from fixprop.nn.program import DYADIC, TRANSPOSE, WHERE, WHERE_NUMBERS, trace_program

pytest.importorskip("numba")
from fixprop.nn.kernels import SELECT, SELECT_MUL, NumbaStep, numba_step, workspace_offsets  # noqa: E402
from test_train_batches import DATAPATHS as TRAIN_BATCHES_DATAPATHS  # noqa: E402

# the datapaths of the multi-step tests, without the one whose data rounds STOCH (it runs step by step)
DATAPATHS = {name: dp for name, dp in TRAIN_BATCHES_DATAPATHS.items() if name != "stoch_data"}
NETS = {"seed": MLP([3, 7, 7, 5], seed=0), "hard_tanh": MLP([3, 6, 4], "hard_tanh", "linear", "mse", seed=2),
        "leaky": MLP([3, 7, 6, 5], "leaky_relu:3", "linear", "mse", seed=1)}


def _lifetimes(program, ops):
    """Each buffer's (first, last) index in the table's rows ``ops`` (transposes read their
    source), independently of the allocator; inputs, constants and outputs live from before the
    first to after the last."""
    root = list(range(len(program.shapes)))
    for op in program.ops:
        if op.code == TRANSPOSE:
            root[op.out] = root[op.a]
    end = len(ops) + 1
    life = {}
    for n, op in enumerate(ops):
        life[op.out] = [n, n]
        reads = [op.a, op.b] + ([op.params[0]] if op.code in (WHERE, WHERE_NUMBERS) else [])
        for buf in reads:
            if buf >= 0 and root[buf] in life:
                life[root[buf]][1] = max(life[root[buf]][1], n)
    for _, _, buf, _ in program.exact_casts:
        life[root[buf]][1] = end
    kept = [buf for _, buf, _ in program.inputs] + list(program.int_constants) + list(program.float_constants)
    kept += [root[buf] for buf, _, _ in program.outputs]
    for buf in kept:
        life[buf] = [-1, end]
    return life


@pytest.mark.parametrize("update", [False, True])
@pytest.mark.parametrize("name", ["seed", "momentum"])
def test_buffers_alive_together_never_share_memory(name, update):
    net = NETS["seed"]
    runner = numba_step(net, DATAPATHS[name], 1024, update).runner
    program = runner.step.program
    offsets, used = workspace_offsets(program, runner.table_ops)
    life = _lifetimes(program, runner.table_ops)
    sizes = {buf: r * c for buf, (r, c) in enumerate(program.shapes)}
    for kind in ("i", "f"):
        bufs = [buf for buf in life if program.kinds[buf] == kind]
        assert all(offsets[b] + sizes[b] <= used[kind] for b in bufs)
        for i, p in enumerate(bufs):
            for q in bufs[i + 1:]:
                together = life[p][0] <= life[q][1] and life[q][0] <= life[p][1]
                apart = offsets[p] + sizes[p] <= offsets[q] or offsets[q] + sizes[q] <= offsets[p]
                assert apart or not together, f"b{p} {life[p]} and b{q} {life[q]} share memory"
    # at batch 1024 the int workspace is far smaller than one slot per buffer
    assert used["i"] < 0.5 * sum(sizes[b] for b in life if program.kinds[b] == "i")


def _stepwise(net, dp, params, x, y, velocity, rng, counter=None):
    ar = FixedArithmetic(dp, rng, counter)
    trace = net.forward(ar, params, x)
    grads = net.backward(ar, params, trace, y)
    new, vel = net.sgd_step(ar, params, grads, velocity)
    return ([v for g in grads for v in (g.weight_grad, g.bias_grad)] + [v for p in new for v in (p.weight, p.bias)]
            + ([v for p in vel for v in (p.weight, p.bias)] if vel is not None else []) + [trace.output])


@pytest.mark.parametrize("name", sorted(DATAPATHS))
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_batch_1024_steps_equal_the_stepwise_path(name, net_name):
    """Gradients, new parameters, velocities and the output of one step at batch 1024, twice on
    the same runner (the second run starts from the first's leftovers in reused memory), and the
    cast counts."""
    dp, net = DATAPATHS[name], NETS[net_name]
    rng = np.random.default_rng(3)
    ar = FixedArithmetic(dp, np.random.default_rng(0))
    params = net.params_in(ar, net.init_params())
    velocity = net.zero_velocity(ar, params) if dp.momentum is not None else None
    step = numba_step(net, dp, 1024, update=True)
    assert isinstance(step, NumbaStep)
    for seed in (1, 2):
        x = ar.data(rng.uniform(-3, 3, (1024, net.layer_sizes[0])), "input")
        y = ar.data(rng.uniform(-2, 2, (1024, net.layer_sizes[-1])), "target")
        mine, theirs = RangeCollector(ranges=False), RangeCollector(ranges=False)
        got = step.outputs(params, x, y, velocity, np.random.default_rng(seed), counter=mine)
        want = _stepwise(net, dp, params, x, y, velocity, np.random.default_rng(seed), theirs)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.fmt == w.fmt and np.array_equal(g.raw, w.raw), f"output {i}"
        assert mine.to_json() == theirs.to_json()


@pytest.mark.parametrize("name", sorted(DATAPATHS))
@pytest.mark.parametrize("counting", [False, True])
def test_multi_step_runs_at_batch_256_equal_a_loop_of_stepwise_steps(name, counting):
    """train_batches: three steps of 256 samples in one kernel call (the outputs fed back into
    the inputs between steps) give the stage-by-stage path's parameters, words and counts."""
    dp, net = DATAPATHS[name], NETS["seed"]
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-3, 3, (768, 3)), rng.uniform(-2, 2, (768, 5))
    batches = [np.arange(i, i + 256) for i in range(0, 768, 256)]
    models = []
    for compiled in (True, False):
        ar = FixedArithmetic(dp, np.random.default_rng(5), RangeCollector(ranges=False) if counting else None)
        models.append(Model(net, ar, net.init_params(), dp.momentum is not None, compiled=compiled, backend="numba"))
    fast, slow = models
    fast.train_batches(x, y, batches)
    for rows in batches:
        slow.train_step(x[rows], y[rows])
    assert any(isinstance(s, NumbaStep) for s in fast._steps.values())
    for p, q in zip(fast.params, slow.params):
        assert np.array_equal(p.weight.raw, q.weight.raw) and np.array_equal(p.bias.raw, q.bias.raw)
    if dp.momentum is not None:
        for p, q in zip(fast.velocity, slow.velocity):
            assert np.array_equal(p.weight.raw, q.weight.raw) and np.array_equal(p.bias.raw, q.bias.raw)
    assert fast.arithmetic.rng.integers(1 << 62) == slow.arithmetic.rng.integers(1 << 62)
    if counting:
        assert fast.arithmetic.observer.to_json() == slow.arithmetic.observer.to_json()


@pytest.mark.parametrize("activation", ["relu", "leaky_relu:3", "hard_tanh"])
@pytest.mark.parametrize("at_zero", [0.0, 0.5, 1.0])
def test_folded_derivatives_equal_the_stepwise_path(activation, at_zero):
    """A derivative made of comparisons of z with constants selecting constant numbers (ReLU's,
    leaky ReLU's) runs as one SELECT row; coarse formats put many z exactly at 0, on both
    sides and at the breakpoints."""
    dp = replace(Datapath.uniform(8, 1, rounding="RND_CONV", overflow="SAT"), relu_grad_at_zero=at_zero)
    net = MLP([3, 6, 6, 4], activation, "linear", "mse", seed=5)
    step = numba_step(net, dp, 700, update=True)
    # hard_tanh's condition is an AND: not folded; ReLU's and leaky ReLU's derivatives are each read
    # only by the multiply by the incoming error: SELECT_MUL rows
    codes = [op.code for op in step.runner.table_ops]
    assert codes.count(SELECT_MUL) == (0 if activation == "hard_tanh" else 2) and SELECT not in codes
    ar = FixedArithmetic(dp)
    params = net.params_in(ar, net.init_params())
    rng = np.random.default_rng(6)
    x = ar.data(rng.integers(-2, 3, (700, 3)).astype(float), "input")
    y = ar.data(rng.integers(-2, 3, (700, 4)).astype(float), "target")
    got = step.outputs(params, x, y)
    want = _stepwise(net, dp, params, x, y, None, None)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.fmt == w.fmt and np.array_equal(g.raw, w.raw), f"output {i}"
    hidden = net.forward(ar, params, x).layers[:-1]
    assert all(np.count_nonzero(layer.pre.raw == 0) > 10 for layer in hidden)  # z = 0 was hit
    assert np.count_nonzero(hidden[0].pre.raw < 0) > 10 and np.count_nonzero(hidden[0].pre.raw > 0) > 10


def test_a_derivative_read_elsewhere_stays_a_select():
    """A derivative that something besides the multiply reads (here: made an output of the
    program) keeps its own SELECT row and MUL row; the results still equal the stepwise path."""
    dp, net = DATAPATHS["seed"], NETS["leaky"]
    traced = trace_program(net, dp, 300, update=False)
    program = traced.program
    producer = {op.out: op for op in program.ops}
    derivative = next(op for op in program.ops if op.code == DYADIC and op.a in producer
                      and producer[op.a].code == WHERE_NUMBERS)  # the last hidden layer's (traced first)
    program.outputs.append((derivative.out, derivative.fmt, program.shapes[derivative.out]))
    step = NumbaStep(traced, numba_step(net, dp, 1, update=False).runner.kernel)
    codes = [op.code for op in step.runner.table_ops]
    assert codes.count(SELECT) == 1 and codes.count(SELECT_MUL) == 1
    ar = FixedArithmetic(dp)
    params = net.params_in(ar, net.init_params())
    rng = np.random.default_rng(8)
    x = ar.data(rng.uniform(-3, 3, (300, 3)), "input")
    y = ar.data(rng.uniform(-2, 2, (300, 5)), "target")
    got = step.outputs(params, x, y)
    want = _stepwise(net, dp, params, x, y, None, None)
    want = want[:2 * net.n_layers] + [want[-1]]  # update=False: the gradients and the output
    for i, (g, w) in enumerate(zip(got[:-1], want)):
        assert g.fmt == w.fmt and np.array_equal(g.raw, w.raw), f"output {i}"
    z = net.forward(ar, params, x).layers[-2].pre.raw
    one = 1 << derivative.params[0]  # leaky_relu:3's derivative: 1, 1/8, relu'(0) at 0, as raw integers
    want_derivative = np.where(z > 0, one, np.where(z < 0, one >> 3, int(dp.relu_grad_at_zero * one)))
    assert (z < 0).any() and (z > 0).any() and np.array_equal(got[-1].raw, want_derivative)


def test_select_mul_shifts_its_operands_as_the_multiply():
    """SELECT_MUL with shifts on both sides, against numpy: out = select(z << s_z) * (err << s_err),
    the constants already shifted by the multiply's shift on the derivative (table_rows)."""
    from fixprop.nn import kernels as K

    rng = np.random.default_rng(9)
    rows, cols = 37, 3
    size = rows * cols
    z = rng.integers(-4, 5, size)
    err = rng.integers(-(1 << 40), 1 << 40, size)
    mem = np.concatenate([z, err, np.zeros(size, dtype=np.int64)]).astype(np.int64)
    buffers = np.zeros((6, 3), dtype=np.int64)
    buffers[K.BUF_OFFSET] = (0, size, 2 * size)
    buffers[K.BUF_ROWS], buffers[K.BUF_COLS] = rows, cols
    buffers[K.BUF_RSTRIDE], buffers[K.BUF_CSTRIDE] = 1, rows
    ops = np.zeros((1, K.OP_COLUMNS), dtype=np.int64)
    s_z, s_err, s_k = 2, 5, 7
    k1, k2, k3 = 3, -1, 2
    ops[0, :K.COL_COND] = (K.SELECT_MUL, 2, 0, 1, s_z, s_err)
    ops[0, K.COL_LO1:K.COL_LO1 + 7] = (1 << s_z, K._INT64_MAX, 0, 0, k1 << s_k, k2 << s_k, k3 << s_k)
    kernel = numba_step(NETS["seed"], DATAPATHS["seed"], 1, update=False).runner.kernel
    none = np.zeros((0, 0), dtype=np.int64)
    kernel(ops, buffers, mem, np.zeros(0), np.zeros(0, dtype=np.uint64), np.zeros((1, 3), dtype=np.int64), False,
           np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), 1, none, none,
           np.zeros((0, 0)), np.zeros((0, 0)), 0, 0, np.zeros((0, 2), dtype=np.int64))
    v = z << s_z
    derivative = np.where(v >= 1 << s_z, k1, np.where(v == 0, k2, k3)) << s_k
    assert np.array_equal(mem[2 * size:], derivative * (err << s_err))
    assert K._wrap64((1 << 62) << 3) == 0 and K._wrap64(3 << 62) == -(1 << 62)


def _run_rows(ops, shapes, layouts, values):
    """Run the kernel on a hand-built table: buffers of ``shapes`` laid out as ``layouts`` ("c":
    column-major, "r": row-major), one after another in ``mem``, holding ``values`` (None: 0).
    Returns each buffer as a numpy array."""
    from fixprop.nn import kernels as K

    sizes = [r * c for r, c in shapes]
    offsets = np.cumsum([0] + sizes[:-1])
    buffers = np.zeros((6, len(shapes)), dtype=np.int64)
    buffers[K.BUF_OFFSET] = offsets
    buffers[K.BUF_ROWS] = [r for r, _ in shapes]
    buffers[K.BUF_COLS] = [c for _, c in shapes]
    buffers[K.BUF_RSTRIDE] = [1 if lay == "c" else c for (r, c), lay in zip(shapes, layouts)]
    buffers[K.BUF_CSTRIDE] = [r if lay == "c" else 1 for (r, c), lay in zip(shapes, layouts)]
    mem = np.zeros(sum(sizes), dtype=np.int64)
    for off, (r, c), lay, v in zip(offsets, shapes, layouts, values):
        if v is not None:
            mem[off:off + r * c] = (v.T if lay == "c" else v).reshape(-1)
    kernel = numba_step(NETS["seed"], DATAPATHS["seed"], 1, update=False).runner.kernel
    none = np.zeros((0, 0), dtype=np.int64)
    kernel(ops, buffers, mem, np.zeros(0), np.zeros(0, dtype=np.uint64), np.zeros((len(ops), 3), dtype=np.int64),
           False, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), 1, none, none,
           np.zeros((0, 0)), np.zeros((0, 0)), 0, 0, np.zeros((0, 2), dtype=np.int64))
    return [(mem[off:off + r * c].reshape(c, r).T if lay == "c" else mem[off:off + r * c].reshape(r, c))
            for off, (r, c), lay in zip(offsets, shapes, layouts)]


@pytest.mark.parametrize("narrow", [0, 1])
@pytest.mark.parametrize("layout", ["columns", "dots"])
@pytest.mark.parametrize("R,K,C", [(1, 1, 1), (2, 3, 1), (3, 1, 5), (5, 7, 6), (7, 9, 3), (9, 4, 8), (300, 5, 7)])
def test_matmul_blocks_equal_numpy(narrow, layout, R, K, C):
    """The kernel's matmul loops (four columns of A per pass down the result's columns; blocks of
    two rows by four columns for dot products), with shapes that leave partial blocks, against
    numpy's int64 matmul (exact: the sums fit int64). Wide operands use the 64-bit products."""
    from fixprop.nn import kernels as K_

    rng = np.random.default_rng(R * 100 + K * 10 + C)
    bound = (1 << 29) if narrow else (1 << 40)  # products up to 2**58: the sums of <= 9 fit int64
    a = rng.integers(-bound, bound, (R, K))
    b = rng.integers(-bound if narrow else -(1 << 18), bound if narrow else 1 << 18, (K, C))
    layouts = ("c", "r", "c") if layout == "columns" else ("r", "c", "r")
    ops = np.zeros((1, K_.OP_COLUMNS), dtype=np.int64)
    ops[0, :K_.COL_COND] = (K_.MATMUL, 2, 0, 1, 0, 0)
    ops[0, K_.COL_NARROW] = narrow
    out = _run_rows(ops, [(R, K), (K, C), (R, C)], layouts, [a, b, None])[2]
    assert np.array_equal(out, a @ b)
