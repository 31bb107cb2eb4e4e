"""``fixprop bench``: fixprop against float64 numpy, APyTypes and autodiff, measured side by side.

Every case of a section is timed in the same process, interleaved round by round (so a slow
moment of the machine hits all of them), after warm-up calls; the figure is the median.
Ratios are formed from medians of one run. docs/performance.md explains each case.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError
from fixprop.fixed.array import FixedArray
from fixprop.nn.arithmetic import FixedArithmetic, FloatArithmetic
from fixprop.nn.compiled import compile_step
from fixprop.nn.mlp import MLP

SECTIONS = ("matmul", "train_step", "seed", "memory", "backends", "compile", "train")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the issue's by default, small ones with --quick (for tests and smoke runs)."""

    matmul_n: int = 256
    #: the engine of fixprop's compiled fixed-point steps in train_step and seed (Model.backend)
    backend: str = "auto"
    train_shape: tuple[int, ...] = (784, 256, 256, 10)
    train_batch: int = 256
    seed_batch: int = 1024
    #: calls timed back to back per round in the seed section (``measure``'s ``number``)
    seed_calls: int = 20
    repeats: int = 15
    warmup: int = 2

    #: (layer sizes, batch, datapath) of the backends section: the seed's networks up to BLAS-sized
    #: layers; "seed" is Datapath.seed(24, 12) (its products need exact blocked BLAS), "u16" is
    #: Datapath.uniform(16, 10) (one float64 BLAS call per matmul is exact)
    backend_cases: tuple[tuple[tuple[int, ...], int, str], ...] = (
        ((3, 7, 7, 5), 1, "seed"), ((3, 16, 5), 16, "seed"), ((3, 16, 5), 1024, "seed"), ((64, 64, 10), 16, "seed"),
        ((256, 256, 10), 128, "seed"), ((256, 256, 10), 128, "u16"), ((784, 256, 256, 10), 128, "u16"))

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(matmul_n=32, train_shape=(64, 32, 32, 10), train_batch=16, seed_batch=64, seed_calls=2, repeats=3, warmup=1,
                   backend_cases=(((3, 7, 7, 5), 1, "seed"), ((16, 16, 4), 8, "u16")))


#: The 16-bit datapath of the train_step benchmark: every role s16.10, round half up, saturate,
#: learning rate 2**-7 (a shift).
def train_datapath() -> Datapath:
    """The datapath the train_step benchmark runs (every role s16.10, RND, SAT, lr 2**-7)."""
    return Datapath.uniform(16, 10, "RND", "SAT", lr_shift=7)


def measure(cases: dict[str, Callable[[], object]], repeats: int, warmup: int, number: int = 1) -> dict[str, float]:
    """Median seconds per call of each case. Each round times every case once, in an order
    rotated round by round, after warm-up: ``number`` calls back to back (timeit's ``number``),
    divided by ``number``. With ``number=1`` a call runs right after another case's, so it
    starts with caches and branch predictors holding the other case's work."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    calls = range(number)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            fn = cases[name]
            start = time.perf_counter()
            for _ in calls:
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return {name: float(np.median(t)) for name, t in times.items()}


def _available(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


# -- matmul --------------------------------------------------------------------------------
def bench_matmul(sizes: Sizes) -> dict:
    """256x256 @ 256x256 in s24.12 (exact full-precision result) vs float64 and int64 numpy."""
    n = sizes.matmul_n
    rng = np.random.default_rng(0)
    results = {}
    data = {
        # typical: values of a trained layer's tensors, N(0, 1) quantized into s24.12
        "typical": (FixedArray.from_float(rng.standard_normal((n, n)), "s24.12"),
                    FixedArray.from_float(rng.standard_normal((n, n)), "s24.12")),
        # full scale: uniform over every raw value of s24.12 (products of 46 bits, sums past 2**53;
        # the rows' and columns' norms still prove one BLAS call exact)
        "full_scale": (FixedArray(rng.integers(-(2**23), 2**23, (n, n)), "s24.12"),
                       FixedArray(rng.integers(-(2**23), 2**23, (n, n)), "s24.12")),
        # the format's maximum everywhere: no bound proves one call exact, two K blocks do
        "full_scale_max": (FixedArray(np.full((n, n), 2**23 - 1), "s24.12"),
                           FixedArray(np.full((n, n), 2**23 - 1), "s24.12")),
    }
    for label, (a, b) in data.items():
        af, bf = a.to_float(), b.to_float()
        ai, bi = np.array(a.raw), np.array(b.raw)
        blas = {"numpy_float64": lambda: af @ bf}
        seconds = measure({"fixprop": lambda a=a, b=b: a @ b, **blas}, 4 * sizes.repeats, sizes.warmup)
        # Slower peers run in groups of their own, against float64 BLAS as the anchor (a 30 ms
        # int64 loop or a thread pool between two BLAS calls would disturb the headline pair).
        peers = {"numpy_int64": lambda: ai @ bi}
        if _available("apytypes"):
            import apytypes as apy

            xa = apy.APyFixedArray(np.array(a.raw), int_bits=12, frac_bits=12)
            xb = apy.APyFixedArray(np.array(b.raw), int_bits=12, frac_bits=12)
            peers["apytypes"] = lambda xa=xa, xb=xb: xa @ xb
        for name, fn in peers.items():
            group = measure({name: fn, **blas}, sizes.repeats, sizes.warmup)
            seconds[name] = group[name] * seconds["numpy_float64"] / group["numpy_float64"]
        exact = np.array_equal((a @ b).raw, (ai.astype(object) @ bi.astype(object)))
        results[label] = {"seconds": seconds, "exact": bool(exact)}
    return {"shape": [n, n, n], "format": "s24.12", **results}


# -- train step ----------------------------------------------------------------------------
def _train_setup(sizes: Sizes):
    net = MLP(list(sizes.train_shape), activation="relu", loss="sse", init="he", seed=0)
    dp = train_datapath()
    rng = np.random.default_rng(1)
    x = rng.random((sizes.train_batch, sizes.train_shape[0]))
    y = rng.random((sizes.train_batch, sizes.train_shape[-1]))
    return net, dp, x, y


def _step_function(net: MLP, ar, params, x, y) -> Callable[[], object]:
    """One SGD step, stage by stage, from the same state each call (the state is not mutated)."""
    return lambda: net.sgd_step(ar, params, net.backward(ar, params, net.forward(ar, params, x), y))


def _compiled_step(net: MLP, ar, params, x, y, backend: str = "numpy") -> Callable[[], object]:
    """One SGD step by the compiled step (what Model.train_step runs) on ``backend``'s engine
    (auto, numpy or numba; float steps run on numpy), from the same state each call."""
    from fixprop.nn.kernels import numba_step
    from fixprop.nn.mlp import choose_backend

    datapath = getattr(ar, "datapath", None)
    step = None
    if datapath is not None and choose_backend(backend, net, np.shape(x)[0]) == "numba":
        step = numba_step(net, datapath, np.shape(x)[0], update=True)
    if step is None:
        step = compile_step(net, datapath, np.shape(x)[0], update=True, float_settings=ar)
    return lambda: step.train_step(params, x, y)


def _model_gradients(model, x, y) -> Callable[[], object]:
    """Weight and bias gradients of one batch through the public API (``Model.weight_gradients``,
    FixedArrays back in fixed point), on the model's backend."""
    model.weight_gradients(x, y)  # compile (or load from the cache) before timing
    return lambda: model.weight_gradients(x, y)


def _stepwise_gradients(net: MLP, ar, params, x, y) -> Callable[[], object]:
    """The same gradients stage by stage, every intermediate kept (Model.gradients)."""
    return lambda: net.backward(ar, params, net.forward(ar, params, x), y)


def _autograd_step(net: MLP, params, x, y, lr: float):
    import autograd
    import autograd.numpy as anp

    from fixprop.verify.references import _loss_function

    loss = _loss_function(net, anp, x, y, 0.5, lambda a, w: anp.dot(a, w.T))
    grad = autograd.grad(loss)
    flat = [arr for p in params for arr in (p.weight, p.bias)]
    return lambda: [p - lr * g for p, g in zip(flat, grad(flat))]


def _jax_step(net: MLP, params, x, y, lr: float):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from fixprop.verify.references import _loss_function

    xj, yj = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def step(flat):
        loss = _loss_function(net, jnp, xj, yj, 0.5, lambda a, w: a @ w.T)
        grads = jax.grad(loss)(flat)
        return [p - lr * g for p, g in zip(flat, grads)]

    flat = [jnp.asarray(arr) for p in params for arr in (p.weight, p.bias)]
    return lambda: jax.block_until_ready(step(flat))


def _torch_step(net: MLP, params, x, y, lr: float):
    import torch

    from fixprop.verify.references import _loss_function

    xt, yt = torch.tensor(x), torch.tensor(y)
    loss = _loss_function(net, torch, xt, yt, 0.5, lambda a, w: a @ w.T)

    def step():
        flat = [torch.tensor(arr, requires_grad=True) for p in params for arr in (p.weight, p.bias)]
        loss(flat).backward()
        with torch.no_grad():
            return [p - lr * p.grad for p in flat]

    return step


def _fixprop_train_cases(sizes: Sizes):
    """The train-step setup and fixprop's four ways to run it (fixed/float, compiled/stepwise)."""
    net, dp, x, y = _train_setup(sizes)
    fixed_ar, float_ar = FixedArithmetic(dp), FloatArithmetic.matching(dp)
    init = net.init_params()
    fixed_params, float_params = net.params_in(fixed_ar, init), net.params_in(float_ar, init)
    x_fixed, y_fixed = fixed_ar.data(x, "input"), fixed_ar.data(y, "target")
    cases = {
        "fixprop_fixed": _compiled_step(net, fixed_ar, fixed_params, x_fixed, y_fixed, sizes.backend),
        "fixprop_float": _compiled_step(net, float_ar, float_params, x, y),
        "fixprop_fixed_stepwise": _step_function(net, fixed_ar, fixed_params, x_fixed, y_fixed),
        "fixprop_float_stepwise": _step_function(net, float_ar, float_params, x, y),
    }
    return net, dp, x, y, float_params, fixed_params, x_fixed, y_fixed, cases


def bench_train_step(sizes: Sizes) -> dict:
    """One SGD step of [784,256,256,10], batch 256, relu, sse: fixed vs float vs peers."""
    net, dp, x, y, float_params, fixed_params, x_fixed, y_fixed, cases = _fixprop_train_cases(sizes)
    cases = {
        **cases,
        "autograd_float": _autograd_step(net, float_params, x, y, dp.learning_rate),
    }
    agree = None
    if _available("apytypes"):
        from fixprop.bench.apytypes_datapath import ApyTypesStep

        peer = ApyTypesStep(16, 10, dp.lr_shift, "RND", "SAT")
        w = [peer.from_raw(p.weight.raw) for p in fixed_params]
        b = [peer.from_raw(p.bias.raw) for p in fixed_params]
        xa, ya = peer.from_raw(x_fixed.raw), peer.from_raw(y_fixed.raw)
        apytypes_step = lambda: peer.step(w, b, xa, ya)  # noqa: E731
        ours, _, _ = cases["fixprop_fixed"]()
        theirs_w, theirs_b = peer.step(w, b, xa, ya)
        agree = all(np.array_equal(p.weight.raw, peer.raw(tw)) and np.array_equal(p.bias.raw, peer.raw(tb))
                    for p, tw, tb in zip(ours, theirs_w, theirs_b))
    seconds = measure(cases, sizes.repeats, sizes.warmup)
    if agree is not None:  # APyTypes' thread pool would disturb the others: its own group, anchored
        group = measure({"apytypes_fixed": apytypes_step, "fixprop_fixed": cases["fixprop_fixed"]},
                        sizes.repeats, sizes.warmup)
        seconds["apytypes_fixed"] = group["apytypes_fixed"] * seconds["fixprop_fixed"] / group["fixprop_fixed"]
    # JAX and PyTorch keep worker threads spinning after each call, which slows whatever runs
    # next: they are timed in a second group, against fixprop's float step as the anchor.
    peers: dict[str, Callable[[], object]] = {}
    if _available("jax"):
        peers["jax_jit_float64"] = _jax_step(net, float_params, x, y, dp.learning_rate)
    if _available("torch"):
        peers["torch_float64"] = _torch_step(net, float_params, x, y, dp.learning_rate)
    peer_seconds = {}
    if peers:
        peer_seconds = measure({**peers, "fixprop_float": cases["fixprop_float"]}, sizes.repeats, sizes.warmup)
    return {"shape": list(sizes.train_shape), "batch": sizes.train_batch, "datapath": "every role s16.10 RND SAT, lr 2**-7",
            "backend": sizes.backend,
            "apytypes_same_integers": agree, "seconds": seconds, "peer_group_seconds": peer_seconds}


# -- the seed network ----------------------------------------------------------------------
def bench_seed(sizes: Sizes) -> dict:
    """[3,7,7,5]: one per-sample gradient, and a batch of samples vs a per-sample autograd loop."""
    import autograd

    from fixprop.compat import mlp4autograd
    from fixprop.verify.experiment import make_data
    from fixprop.verify.references import _loss_function
    import autograd.numpy as anp

    net = MLP([3, 7, 7, 5], seed=0)
    dp = Datapath.seed(24, 12)
    fixed_ar, float_ar = FixedArithmetic(dp), FloatArithmetic.matching(dp)
    init = net.init_params()
    fixed_params, float_params = net.params_in(fixed_ar, init), net.params_in(float_ar, init)
    x, y = make_data(net, sizes.seed_batch, 0)
    x1, y1 = x[:1], y[:1]
    x1_fixed, y1_fixed = fixed_ar.data(x1, "input"), fixed_ar.data(y1, "target")
    flat = [arr for p in float_params for arr in (p.weight, p.bias)]

    def autograd_grad_of(xs, ys):
        return autograd.grad(_loss_function(net, anp, xs, ys, 0.5, lambda a, w: anp.dot(a, w.T)))

    grad_one = autograd_grad_of(x1, y1)
    compat = mlp4autograd()
    compat.set_quant(quant=False)
    compat.net_shape([3, 7, 7, 5])
    compat_params = [[p.weight for p in float_params], [p.bias.reshape(-1, 1) for p in float_params]]

    def compat_grad():
        compat.infer(x1.T, compat_params)
        compat.grad(y1.T)

    compat_fixed = mlp4autograd()
    compat_fixed.set_quant(24, 12)
    compat_fixed.net_shape([3, 7, 7, 5])
    raw_params = [[np.asarray(p.weight.raw, dtype=np.float64) for p in fixed_params],
                  [np.asarray(p.bias.raw, dtype=np.float64).reshape(-1, 1) for p in fixed_params]]
    x1_raw, y1_raw = np.asarray(x1_fixed.raw.T, np.float64), np.asarray(y1_fixed.raw.T, np.float64)

    def compat_fixed_grad():
        compat_fixed.infer(x1_raw, raw_params)
        compat_fixed.grad(y1_raw)

    # the public API: a Model on the --backend engine (auto unless given), data already in the roles' formats
    float_model = net.float_model(dp, init)
    fixed_model = net.fixed_model(dp, init, backend=sizes.backend)
    per_sample_cases = {
        "fixprop_float": _model_gradients(float_model, x1, y1),
        "fixprop_fixed": _model_gradients(fixed_model, x1_fixed, y1_fixed),
        "fixprop_float_stepwise": _stepwise_gradients(net, float_ar, float_params, x1, y1),
        "fixprop_fixed_stepwise": _stepwise_gradients(net, fixed_ar, fixed_params, x1_fixed, y1_fixed),
        "autograd_grad": lambda: grad_one(flat),
        "compat_class_float": compat_grad,
        "compat_class_fixed": compat_fixed_grad,
    }
    # a loop of per-sample gradients, as the seed notebook runs them: sizes.seed_calls calls of a case
    # back to back per round; and single calls, each right after another case's (cold caches)
    per_sample = measure(per_sample_cases, sizes.repeats * 2, sizes.warmup, number=sizes.seed_calls)
    per_sample_single = measure(per_sample_cases, sizes.repeats * 4, sizes.warmup)

    x_fixed, y_fixed = fixed_ar.data(x, "input"), fixed_ar.data(y, "target")
    sample_grads = [autograd_grad_of(x[i:i + 1], y[i:i + 1]) for i in range(sizes.seed_batch)]

    def autograd_loop():
        for g in sample_grads:
            g(flat)

    # the autograd loop is seed_batch calls back to back; fixprop's batch call is timed the same
    # way, seed_calls calls back to back, and as single calls right after the loop
    batched_cases = {
        "fixprop_fixed_batched": _model_gradients(fixed_model, x_fixed, y_fixed),
        "fixprop_float_batched": _model_gradients(float_model, x, y),
        "autograd_loop": autograd_loop,
    }
    loops = max(3, sizes.repeats // 3)
    batched = measure({name: fn for name, fn in batched_cases.items() if name != "autograd_loop"}, loops, 1,
                      number=sizes.seed_calls)
    batched_single = measure(batched_cases, loops, 1)
    batched["autograd_loop"] = batched_single["autograd_loop"]
    return {"shape": [3, 7, 7, 5], "datapath": "seed(24,12)", "batch": sizes.seed_batch, "backend": sizes.backend,
            "calls_per_timing": sizes.seed_calls, "per_sample_seconds": per_sample, "batched_seconds": batched,
            "per_sample_single_call_seconds": per_sample_single, "batched_single_call_seconds": batched_single}


# -- memory --------------------------------------------------------------------------------
def _peak_bytes(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_memory(sizes: Sizes) -> dict:
    """Peak memory allocated during one train step (tracemalloc sees numpy's buffers)."""
    cases = _fixprop_train_cases(sizes)[-1]
    for fn in cases.values():
        fn()
    return {"peak_bytes": {name: _peak_bytes(fn) for name, fn in cases.items()}}


# -- compiled engines ----------------------------------------------------------------------
def bench_backends(sizes: Sizes) -> dict:
    """``Model.train_step`` (seed(24,12) and uniform(16,10)) on the numpy engine, the numba kernel and "auto", side by
    side per network and batch: which engine wins where, and whether auto's choice ever loses."""
    from fixprop.nn.jit import numba_available
    from fixprop.nn.mlp import choose_backend

    datapaths = {"seed": Datapath.seed(24, 12), "u16": Datapath.uniform(16, 10)}
    rows = []
    for shape, batch, datapath in sizes.backend_cases:
        dp = datapaths[datapath]
        net = MLP(list(shape), init="he", seed=0)
        rng = np.random.default_rng(0)
        x, y = rng.uniform(-1, 1, (batch, shape[0])), rng.uniform(-1, 1, (batch, shape[-1]))
        models = {name: net.fixed_model(dp, backend=name) for name in ("numpy", "numba", "auto")}
        seconds = measure({name: (lambda m=m: m.train_step(x, y)) for name, m in models.items()},
                          sizes.repeats, sizes.warmup)
        rows.append({"shape": list(shape), "batch": batch, "datapath": datapath,
                     "auto_chose": choose_backend("auto", net, batch), "seconds": seconds})
    return {"datapaths": "seed: seed(24,12); u16: uniform(16,10)", "numba_available": numba_available(),
            "cases": rows}


# -- the run -------------------------------------------------------------------------------
#: What one fresh process runs for the compile section: import fixprop, then time the numba
#: import, the first Model.train_step on the numba kernel (compiled, or loaded from the cache:
#: the training step and forward-pass programs share the one kernel) and a second step.
_COMPILE_PROBE = """
import json, time
t0 = time.perf_counter()
import numpy as np
from fixprop import Datapath
from fixprop.nn import MLP
t1 = time.perf_counter()
from fixprop.nn.jit import numba_available
available = numba_available()
t2 = time.perf_counter()
model = MLP([3, 7, 7, 5]).fixed_model(Datapath.seed(24, 12), backend="numba")
x, y = np.zeros((1, 3)), np.zeros((1, 5))
t3 = time.perf_counter()
model.train_step(x, y)
t4 = time.perf_counter()
model.train_step(x, y)
t5 = time.perf_counter()
print(json.dumps({"numba_available": available, "import_fixprop": t1 - t0, "import_numba": t2 - t1,
                  "first_step": t4 - t3, "second_step": t5 - t4}))
"""


def bench_compile(sizes: Sizes) -> dict:
    """The numba kernel's cost to a new process: cold (an empty ``NUMBA_CACHE_DIR``: numba
    compiles) and cached (a second process on the same directory: numba loads it), each in its
    own fresh process, rounds alternating; medians. The kernel set is one interpreter kernel
    (``nn/kernels.run_program``) that every network, datapath and batch size share."""
    import json
    import subprocess
    import sys
    import tempfile

    rounds = 1 if sizes.repeats <= 3 else 3
    runs: dict[str, list[dict]] = {"cold": [], "cached": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="fixprop-numba-cache-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            env.pop("FIXPROP_DISABLE_NUMBA", None)
            for kind in ("cold", "cached"):
                done = subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, capture_output=True,
                                      text=True, check=True)
                runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out: dict = {"kernel_set": "nn/kernels.run_program (every network, datapath and batch)", "rounds": rounds}
    for kind, results in runs.items():
        out[kind] = {key: float(np.median([r[key] for r in results]))
                     for key in ("import_numba", "first_step", "second_step")}
        out[kind]["first_step_with_numba_import"] = out[kind]["first_step"] + out[kind]["import_numba"]
    out["numba_available"] = all(r["numba_available"] for rs in runs.values() for r in rs)
    return out


def bench_train(sizes: Sizes) -> dict:
    """``fixprop train --dataset ik`` (20 epochs; 2 with --quick), the seed's hardware network
    3 -> 16 -> 5 at seed(24,12), on the numpy engine and on the numba kernel in one process,
    with the command's default saturation counting and without it; the two engines' final
    integers (``fixed_params_sha256``), curves and counts are checked equal (a difference raises)."""
    from fixprop.explore.train import TrainConfig, train

    epochs = 2 if sizes.repeats <= 3 else 20
    dp = Datapath.seed(24, 12)
    seconds: dict[str, float] = {}
    for counting in (True, False):
        finals = {}
        for backend in ("numba", "numpy"):
            config = TrainConfig(dataset="ik", epochs=epochs, backend=backend)
            train(config, dp, count_casts=counting)  # compile / warm up
            start = time.perf_counter()
            result = train(config, dp, count_casts=counting)
            seconds[f"{backend}{'' if counting else '_no_counts'}"] = time.perf_counter() - start
            finals[backend] = (result["fixed_params_sha256"], result["fixed"], result["saturation"])
        if finals["numba"] != finals["numpy"]:
            raise AssertionError("fixprop train: the numba and numpy engines' final integers, curves or counts differ")
    return {"dataset": "ik", "epochs": epochs, "network": [3, 16, 5], "datapath": "seed(24,12)",
            "same_results": True, "seconds": seconds}


def run(sections: tuple[str, ...] = SECTIONS, quick: bool = False,
        progress: Callable[[str], None] | None = None, backend: str = "auto") -> dict:
    """Run the chosen sections; returns every median and the ratios. ``backend``: the engine of
    the fixed-point steps in train_step and seed (auto, numpy or numba; backends times all)."""
    from dataclasses import replace

    from fixprop.nn.mlp import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    sizes = replace(Sizes.quick() if quick else Sizes(), backend=backend)
    functions = {"matmul": bench_matmul, "train_step": bench_train_step, "seed": bench_seed, "memory": bench_memory,
                 "backends": bench_backends, "compile": bench_compile, "train": bench_train}
    result: dict = {"quick": quick, "sizes": sizes.__dict__ | {"train_shape": list(sizes.train_shape)},
                    "peers": {name: _available(name) for name in ("apytypes", "jax", "torch")}}
    for i, name in enumerate(sections, 1):
        if progress:
            progress(f"[{i}/{len(sections)}] {name} ...")
        result[name] = functions[name](sizes)
    result["ratios"] = ratios(result)
    # the targets are stated for the full sizes: a --quick run is a smoke run, not a verdict
    result["targets"] = {} if quick else {
        key: {"target": f"{op} {bound}", "met": _meets(result["ratios"].get(key), op, bound)}
        for key, (op, bound) in TARGETS.items() if key in result["ratios"]}
    return result


#: The targets of docs/performance.md: ratio key -> (comparison, bound).
TARGETS = {
    "matmul_vs_blas": ("<=", 1.3),
    "train_step_vs_float": ("<=", 2.0),
    "apytypes_vs_fixprop": (">=", 5.0),
    "autograd_vs_fixprop_per_sample": (">=", 200.0),
    "autograd_vs_fixprop_per_sample_fixed": (">=", 100.0),
    "autograd_loop_vs_fixprop_batched": (">=", 15_000.0),
    "autograd_vs_compat_class": (">=", 100.0),
    "matmul_full_scale_vs_blas": ("<=", 1.3),
    "memory_vs_float": ("<=", 3.0),
    "compile_cached_seconds": ("<=", 0.5),
    "ik_train_numpy_vs_compiled": (">=", 20.0),
}


def _best(seconds: dict[str, float], path: str) -> float:
    """The faster of fixprop's two ways to run a step: compiled (``path``) or stage by stage."""
    return min(seconds[path], seconds.get(f"{path}_stepwise", seconds[path]))


def _meets(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return value <= bound if op == "<=" else value >= bound


def format_table(result: dict) -> str:
    """The medians of every section and the ratios, as text."""
    lines = []
    for section in SECTIONS:
        if section not in result:
            continue
        lines.append(f"== {section}")
        for key, value in result[section].items():
            if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
                unit = "bytes" if key == "peak_bytes" else "ms"
                for name, v in value.items():
                    shown = f"{v / 1e6:10.2f} MB" if unit == "bytes" else f"{v * 1e3:10.3f} ms"
                    lines.append(f"  {key:<20} {name:<24} {shown}")
            elif isinstance(value, dict) and not value:
                continue
            elif key == "cases":
                for case in value:
                    shown = "  ".join(f"{name} {v * 1e3:.3f} ms" for name, v in case["seconds"].items())
                    lines.append(f"  {str(case['shape']) + ' b' + str(case['batch']) + ' ' + case['datapath']:<28} {shown}  "
                                 f"(auto chose {case['auto_chose']})")
            elif isinstance(value, dict) and "seconds" in value:
                for name, v in value["seconds"].items():
                    lines.append(f"  {key:<20} {name:<24} {v * 1e3:10.3f} ms")
                lines.append(f"  {key:<20} {'exact':<24} {value['exact']}")
            else:
                lines.append(f"  {key:<20} {value}")
    lines.append("== ratios (medians of this run)" + (" (--quick: small sizes, targets not judged)"
                                                      if result["quick"] else ""))
    for key, value in result["ratios"].items():
        target = result["targets"].get(key)
        mark = "" if target is None else f"   target {target['target']}: {'met' if target['met'] else 'NOT met'}"
        lines.append(f"  {key:<40} {value:12.2f}{mark}")
    return "\n".join(lines)


def ratios(result: dict) -> dict:
    """The headline ratios (docs/performance.md states the targets)."""
    out: dict = {}
    if "matmul" in result:
        t = result["matmul"]["typical"]["seconds"]
        out["matmul_vs_blas"] = t["fixprop"] / t["numpy_float64"]
        out["matmul_full_scale_vs_blas"] = (result["matmul"]["full_scale"]["seconds"]["fixprop"]
                                            / result["matmul"]["full_scale"]["seconds"]["numpy_float64"])
        out["matmul_full_scale_max_vs_blas"] = (result["matmul"]["full_scale_max"]["seconds"]["fixprop"]
                                                / result["matmul"]["full_scale_max"]["seconds"]["numpy_float64"])
        out["int64_matmul_vs_blas"] = t["numpy_int64"] / t["numpy_float64"]
        if "apytypes" in t:
            out["apytypes_matmul_vs_blas"] = t["apytypes"] / t["numpy_float64"]
    if "train_step" in result:
        t = result["train_step"]["seconds"]
        fixed, flt = _best(t, "fixprop_fixed"), _best(t, "fixprop_float")
        out["train_step_vs_float"] = fixed / flt
        if "apytypes_fixed" in t:
            out["apytypes_vs_fixprop"] = t["apytypes_fixed"] / fixed
        out["autograd_vs_fixprop_train_step"] = t["autograd_float"] / flt
        peers = result["train_step"]["peer_group_seconds"]
        for name in ("jax_jit_float64", "torch_float64"):
            if name in peers:
                out[f"{name}_vs_fixprop_float_train_step"] = peers[name] / peers["fixprop_float"]
    if "seed" in result:
        t = result["seed"]["per_sample_seconds"]
        out["autograd_vs_fixprop_per_sample"] = t["autograd_grad"] / _best(t, "fixprop_float")
        out["autograd_vs_fixprop_per_sample_fixed"] = t["autograd_grad"] / _best(t, "fixprop_fixed")
        out["autograd_vs_compat_class"] = t["autograd_grad"] / t["compat_class_fixed"]
        out["autograd_vs_compat_class_float"] = t["autograd_grad"] / t["compat_class_float"]
        b = result["seed"]["batched_seconds"]
        out["autograd_loop_vs_fixprop_batched"] = b["autograd_loop"] / b["fixprop_fixed_batched"]
        out["autograd_loop_vs_fixprop_batched_float"] = b["autograd_loop"] / b["fixprop_float_batched"]
        single = result["seed"]["per_sample_single_call_seconds"]  # no targets: a call after another case's
        out["autograd_vs_fixprop_per_sample_fixed_single_call"] = (single["autograd_grad"]
                                                                   / _best(single, "fixprop_fixed"))
        out["autograd_vs_compat_class_single_call"] = single["autograd_grad"] / single["compat_class_fixed"]
        b = result["seed"]["batched_single_call_seconds"]
        out["autograd_loop_vs_fixprop_batched_single_call"] = b["autograd_loop"] / b["fixprop_fixed_batched"]
    if "memory" in result:
        p = result["memory"]["peak_bytes"]
        out["memory_vs_float"] = p["fixprop_fixed"] / p["fixprop_float"]
    if "train" in result:
        t = result["train"]["seconds"]
        out["ik_train_numpy_vs_compiled"] = t["numpy"] / t["numba"]
        out["ik_train_numpy_vs_compiled_no_counts"] = t["numpy_no_counts"] / t["numba_no_counts"]
    if "compile" in result and result["compile"]["numba_available"]:
        out["compile_cold_seconds"] = result["compile"]["cold"]["first_step_with_numba_import"]
        out["compile_cached_seconds"] = result["compile"]["cached"]["first_step_with_numba_import"]
    if "backends" in result:
        worst = 0.0
        for case in result["backends"]["cases"]:
            t = case["seconds"]
            label = f"{'x'.join(map(str, case['shape']))}_b{case['batch']}_{case['datapath']}"
            out[f"numpy_vs_numba_train_step_{label}"] = t["numpy"] / t["numba"]
            worst = max(worst, t["auto"] / min(t["numpy"], t["numba"]))
        out["backend_auto_vs_best_worst"] = worst
    return out
