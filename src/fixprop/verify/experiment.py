"""The verify experiment: one network's gradients in float and fixed point against autodiff."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError
from fixprop.nn.arithmetic import FixedArithmetic, FloatArithmetic
from fixprop.nn.mlp import MLP
from fixprop.verify import references
from fixprop.verify.metrics import compare_gradients

#: The seed notebook's experiment.
DEFAULT_SHAPE = (3, 7, 7, 5)
#: Which casts ``result["saturation"]`` counts.
SATURATION_SCOPE = "quantizing the weights, biases and data, forward and backward pass of the fixed gradient"


@dataclass
class Experiment:
    """What to verify: a network, a datapath, the data (drawn as the notebook draws it), references."""

    shape: Sequence[int] = DEFAULT_SHAPE
    datapath: Datapath = field(default_factory=lambda: Datapath.seed(24, 12))
    references: Sequence[str] = ("autograd",)
    batch: int = 1
    seed: int = 0
    init: str = "uniform"
    activation: str = "relu"
    output_activation: str | None = None
    loss: str = "sse"
    timing_repeats: int = 20  # 0: no timing (sweeps)
    backend: str = "auto"  # the compiled engine the fixed-point timing runs (Model.backend)


def make_data(net: MLP, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data: x uniform in [0, 1); y = float network output + uniform [0, 1) noise."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, net.layer_sizes[0]))
    y = net.float_model().predict(x) + rng.random((batch, net.layer_sizes[-1]))
    return x, y


def _seconds_per_call(function, repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs, after one warm-up call."""
    function()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _fast_gradients(net: MLP, ar, params, x, y, backend: str = "auto"):
    """The compiled gradient function (what Model.weight_gradients runs on ``backend``), or None
    when the datapath is too wide to compile; timings use it. The float path runs on numpy."""
    from fixprop.nn.compiled import NotCompilable, compile_step
    from fixprop.nn.mlp import choose_backend

    datapath = getattr(ar, "datapath", None)
    if datapath is not None and choose_backend(backend, net, np.shape(x)[0]) == "numba":
        from fixprop.nn.kernels import numba_step

        step = numba_step(net, datapath, np.shape(x)[0], update=False)
        if step is not None:
            return lambda: step.gradients(params, x, y, rng=ar.rng)
    try:
        step = compile_step(net, getattr(ar, "datapath", None), np.shape(x)[0], float_settings=ar)
    except NotCompilable:
        return None
    return lambda: step.gradients(params, x, y, rng=getattr(ar, "rng", None))


def run(exp: Experiment) -> dict:
    """Compute every gradient and every comparison; returns a JSON-ready dict (see docs/cli.md).

    ``result["saturation"]`` counts the values saturated and underflowed by the casts of the
    fixed-point gradient (``ranges.saturation_summary``); the timings run without that count."""
    if exp.batch < 1:
        raise ConfigError(f"batch must be >= 1; got {exp.batch}")
    net = MLP(exp.shape, exp.activation, exp.output_activation, exp.loss, exp.init, exp.seed)
    dp = exp.datapath
    x, y = make_data(net, exp.batch, exp.seed)
    from fixprop.explore.ranges import RangeCollector, saturation_summary  # explore imports this module

    params = net.init_params()
    counter = RangeCollector(ranges=False)  # counts the casts of the fixed gradient, not of the timings
    float_ar = FloatArithmetic.matching(dp)
    fixed_ar = FixedArithmetic(dp, np.random.default_rng(exp.seed), observer=counter)
    float_params, fixed_params = net.params_in(float_ar, params), net.params_in(fixed_ar, params)

    def float_grads():
        return net.backward(float_ar, float_params, net.forward(float_ar, float_params, x), y)

    def fixed_grads():
        return net.backward(fixed_ar, fixed_params, net.forward(fixed_ar, fixed_params, x), y)

    float_g, fixed_g = float_grads(), fixed_grads()
    fixed_ar.observer = None
    x_fixed, y_fixed = fixed_ar.data(x, "input"), fixed_ar.data(y, "target")
    timed = exp.timing_repeats > 0
    float_fast = _fast_gradients(net, float_ar, float_params, x, y) if timed else None
    fixed_fast = _fast_gradients(net, fixed_ar, fixed_params, x_fixed, y_fixed, exp.backend) if timed else None
    float_pairs = [(g.weight_grad, g.bias_grad) for g in float_g]
    fixed_pairs = [(g.weight_grad.to_float(), g.bias_grad.to_float()) for g in fixed_g]
    lsb = ([g.weight_grad.fmt.resolution for g in fixed_g], [g.bias_grad.fmt.resolution for g in fixed_g])

    result: dict = {
        "experiment": {"shape": list(net.layer_sizes), "activation": str(net.activation),
                       "output_activation": str(net.output_activation), "loss": net.loss.name,
                       "init": net.init, "batch": exp.batch, "seed": exp.seed, "backend": exp.backend,
                       "datapath": dp.name, "datapath_toml": dp.to_toml()},
        "references": {},
        "saturation": saturation_summary(counter),
    }
    timings = {"fixprop_float": _seconds_per_call(float_fast or float_grads, exp.timing_repeats),
               "fixprop_fixed": _seconds_per_call(fixed_fast or fixed_grads, exp.timing_repeats)} if timed else {}
    for name in exp.references:
        ref = references.reference_gradients(name, net, params, x, y, dp.relu_grad_at_zero)
        if timed:
            timings[name] = _seconds_per_call(
                lambda: references.reference_gradients(name, net, params, x, y, dp.relu_grad_at_zero),
                exp.timing_repeats)
        result["references"][name] = {
            "float": compare_gradients(float_pairs, ref),
            "fixed": compare_gradients(fixed_pairs, ref, lsb),
        }
    first = result["references"][exp.references[0]]
    result["reference"] = exp.references[0]
    result["float"], result["fixed"] = first["float"], first["fixed"]
    result["seconds_per_gradient"] = timings
    return result


def to_json(result: dict) -> dict:
    """The result with Metrics objects turned into plain dicts."""
    def convert(value):
        if hasattr(value, "to_json"):
            return value.to_json()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, float) and not np.isfinite(value):
            return None
        return value

    return convert(result)


def format_report(result: dict) -> str:
    """A readable table of the verify result."""
    from fixprop.explore.ranges import format_saturation

    e = result["experiment"]
    lines = [
        f"fixprop verify: MLP {e['shape']}, {e['activation']}/{e['output_activation']}, loss {e['loss']}, "
        f"init {e['init']}, batch {e['batch']}, seed {e['seed']}",
        f"datapath: {e['datapath']}",
        "",
        "mean relative error = the seed notebook's 'percentage difference' (entries with a zero reference",
        "excluded and counted); LSB = one unit of the gradient's format",
        "",
    ]
    header = ("reference", "path", "mean rel err", "zero refs", "max |err| LSB", "rel RMS", "SQNR dB",
              "cosine", "sign agree")
    rows = [header]
    for name, pair in result["references"].items():
        for path in ("float", "fixed"):
            m = pair[path]
            o = m["overall"]
            zero_refs = sum(t.zero_reference_count for layer in m["layers"] for t in layer.values())
            rows.append((
                name, path, _pct(m["mean_relative_error"]), str(zero_refs),
                "-" if o.max_abs_error_lsb is None else f"{o.max_abs_error_lsb:.2f}",
                f"{o.relative_rms_error:.3g}", "inf" if not np.isfinite(o.sqnr_db) else f"{o.sqnr_db:.1f}",
                f"{o.cosine_similarity:.6f}", f"{o.sign_agreement:.3f}",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    first = result["references"][result["reference"]]["fixed"]
    lines += ["", f"per layer, fixed vs {result['reference']} (mean rel err weight / bias, max |err| in LSB):"]
    for i, layer in enumerate(first["layers"]):
        w, b = layer["weight"], layer["bias"]
        lines.append(f"  layer {i}: {_pct(w.mean_relative_error)} / {_pct(b.mean_relative_error)}, "
                     f"{w.max_abs_error_lsb:.2f} / {b.max_abs_error_lsb:.2f} LSB")
    lines += [""] + format_saturation(result["saturation"], SATURATION_SCOPE)
    t = result["seconds_per_gradient"]
    lines += ["", "time per gradient (median):" if t else "not timed"]
    for name, seconds in t.items():
        lines.append(f"  {name:<14} {seconds * 1e6:10.1f} us")
    for name in result["references"] if t else []:
        lines.append(f"  {name} / fixprop float = {t[name] / t['fixprop_float']:.1f}x, "
                     f"{name} / fixprop fixed = {t[name] / t['fixprop_fixed']:.1f}x")
    lines += ["", f"Float percentage difference: {result['float']['mean_relative_error']:.2%}",
              f"Fixed percentage difference: {result['fixed']['mean_relative_error']:.2%}"]
    return "\n".join(lines)


def _pct(value: float) -> str:
    """A fraction as percent: two decimals, or two significant digits below 0.1% (0.0023%)."""
    if not np.isfinite(value):
        return "n/a"
    return f"{100 * value:.2g}%" if 0 < value < 1e-3 else f"{value:.2%}"
