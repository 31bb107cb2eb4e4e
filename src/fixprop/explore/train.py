"""Training on a data set, float and fixed point side by side from the same initial weights.

Both networks start from the same float64 weights (the fixed one quantizes them into the
weight and bias roles), see the same mini-batches in the same order and use the datapath's
learning rate (and momentum). After every epoch both are evaluated on the train and the
held-out split. ``data_seed`` draws (ik) or splits (digits) the data set, the same for every
training seed so held-out data stay held out; ``seed`` draws the initial weights, the batch
order and the generators of STOCH rounding (one for training, another for evaluations). A run
repeats bit for bit.

Reported loss: the mean over samples of the sum over outputs of (output - target)^2 (the
per-sample sse), computed in float64 from each network's outputs; accuracy (classification
data sets): the share of samples whose largest output is the target class.

Saturation: every cast of the fixed network's training (its weight quantization and every
step of every epoch, not its evaluations) is counted over the whole run: values saturated and
values underflowed to zero, per role (``result["saturation"]``, ``ranges.saturation_summary``).
The numba kernel counts while it trains (``nn/kernels.py``); without it (backend "numpy", or
numba unavailable) counting runs the training step by step (the same integers, slower).
``count_casts=False`` skips it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError
from fixprop.explore.datasets import Dataset, load_dataset
from fixprop.explore.ranges import RangeCollector, format_saturation, saturation_summary
from fixprop.nn.arithmetic import FixedArithmetic
from fixprop.nn.mlp import MLP, Model

#: Second seed word of the generator that STOCH casts of evaluations draw from (training draws
#: from ``default_rng(seed)``, so evaluating more or less often never changes the training).
EVALUATION_STREAM = 0xE7A1
#: Which casts ``result["saturation"]`` counts.
SATURATION_SCOPE = "training of the fixed network, all epochs, evaluations not counted"


@dataclass(frozen=True)
class TrainConfig:
    """What to train: a data set, the hidden layer widths, the schedule, the network's functions.

    The default network is the seed's hardware one on ik: 3 -> 16 -> 5, relu hidden, linear out.
    """

    dataset: str = "ik"
    hidden: tuple[int, ...] = (16,)
    epochs: int = 20
    batch: int = 16
    seed: int = 0
    data_seed: int = 0
    init: str = "he"
    activation: str = "relu"
    output_activation: str = "linear"
    loss: str = "sse"
    backend: str = "auto"  # the compiled engine (Model.backend): auto, numpy, or numba (both networks)

    def __post_init__(self) -> None:
        from fixprop.nn.mlp import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        for name, minimum in (("epochs", 1), ("batch", 1), ("seed", 0), ("data_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
        if not self.hidden or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.hidden):
            raise ConfigError(f"hidden must be one or more positive layer widths; got {self.hidden!r}")

    def network(self, data: Dataset) -> MLP:
        """The MLP for a data set: its inputs, the hidden widths, its outputs."""
        sizes = [data.n_inputs, *self.hidden, data.n_outputs]
        return MLP(sizes, self.activation, self.output_activation, self.loss, self.init, self.seed)


@dataclass
class Curve:
    """Per-epoch figures of one network (index 0 = before training)."""

    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


def evaluate(model: Model, x: np.ndarray, y: np.ndarray, classes: int) -> tuple[float, float]:
    """(per-sample sse, accuracy) of a model on (x, y); accuracy is nan for regression.
    A float network that diverged gives an infinite loss."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = model.predict(x)
        loss = float(np.mean(np.sum((out - y) ** 2, axis=1)))
    if not math.isfinite(loss):
        loss = math.inf
    accuracy = float(np.mean(np.argmax(out, axis=1) == np.argmax(y, axis=1))) if classes else math.nan
    return loss, accuracy


def batch_order(n: int, batch: int, epoch: int, seed: int) -> list[np.ndarray]:
    """Sample indices of each mini-batch of one epoch: a permutation drawn from (seed, epoch),
    cut into batches of ``batch`` (the last one shorter when ``batch`` does not divide n)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch] for i in range(0, n, batch)]


def train(config: TrainConfig, datapath: Datapath, progress: Callable[[int, dict], None] | None = None,
          data: Dataset | None = None, observer: Callable | None = None, count_casts: bool = True,
          on_done: Callable[[Model], None] | None = None) -> dict:
    """Train float and fixed-point networks side by side; returns a JSON-ready dict.

    ``progress(epoch, summary)`` is called after each epoch. ``observer`` sees every cast of the
    fixed network's weight quantization and training steps (``FixedArithmetic``), not those of
    its evaluations: an observer that needs every cast's values makes the steps run stage by
    stage; a RangeCollector is served by the numba kernel, which counts (and keeps ranges) as it
    trains. The result holds the config, the
    datapath (TOML), the per-epoch curves of both networks ("float", "fixed"), "final": the
    last epoch's figures and the ratio fixed / float of the held-out loss, and "saturation":
    the cast counts of the whole run (None when ``count_casts`` is False and ``observer`` is not
    a RangeCollector, whose counts are used when it is), and "dynamic_fractions": with dynamic
    fixed point, the fraction of every dynamic cast site at each epoch (epoch 0 first; None
    otherwise). ``config.backend`` is the fixed network's
    compiled engine (the same integers on every engine); "numba" runs the float network on the
    kernel too (its sums in the kernel's order: the last bits of its curves can differ).
    ``on_done(model)`` is called with the trained fixed-point Model (``train --save-state``).
    """
    loaded = data is None  # the data set of the config (not one given): float runs can be shared
    data = load_dataset(config.dataset, config.data_seed) if data is None else data
    net = config.network(data)
    params = net.init_params()
    counter = (observer if isinstance(observer, RangeCollector)
               else RangeCollector(ranges=False) if count_casts else None)
    watch = _both(observer, counter)
    fixed_ar = FixedArithmetic(datapath, np.random.default_rng(config.seed), watch)
    training_rng = fixed_ar.rng
    evaluation_rng = np.random.default_rng([config.seed, EVALUATION_STREAM])
    fixed = Model(net, fixed_ar, params, datapath.momentum is not None, backend=config.backend)
    # the two networks share nothing: the float one is trained first (or taken from the runs
    # already done in this process: a sweep's points share it), then the fixed one
    float_curve = _float_curve(config, datapath, data, net, params, loaded=loaded)
    curves = {"float": Curve(), "fixed": Curve()}
    fractions: list[dict[str, int]] = []  # dynamic fixed point: every dynamic site's frac per epoch

    def record(epoch: int) -> None:  # evaluations neither feed the observer nor draw STOCH bits of training
        dynamic = fixed.dynamic_fractions()
        if dynamic is not None:
            fractions.append(dynamic.fractions())
        fixed_ar.observer, fixed_ar.rng = None, evaluation_rng
        _record(curves["fixed"], fixed, data)
        fixed_ar.observer, fixed_ar.rng = watch, training_rng
        for name in ("train_loss", "test_loss", "test_accuracy"):
            getattr(curves["float"], name).append(getattr(float_curve, name)[epoch])

    record(0)
    for epoch in range(1, config.epochs + 1):
        # each epoch's batches in one call (on the numba kernel, its steps run in one kernel call:
        # the same integers as step by step)
        fixed.train_batches(data.x_train, data.y_train, batch_order(len(data.x_train), config.batch, epoch,
                                                                     config.seed))
        record(epoch)
        if progress is not None:
            progress(epoch, _summary(curves, data.classes))
    if on_done is not None:
        on_done(fixed)
    return {
        "config": {**asdict(config), "hidden": list(config.hidden)},
        "network": net.layer_sizes,
        "dataset": {"name": data.name, "description": data.description, "train": len(data.x_train),
                    "test": len(data.x_test), "classes": data.classes},
        "datapath": datapath.name,
        "datapath_toml": datapath.to_toml(),
        "epochs": list(range(config.epochs + 1)),
        "float": asdict(curves["float"]),
        "fixed": asdict(curves["fixed"]),
        "final": _summary(curves, data.classes),
        "saturation": None if counter is None else saturation_summary(counter),
        "fixed_params_sha256": params_sha256(fixed.params),
        "dynamic_fractions": fractions or None,
    }


#: Float runs done in this process, by what they depend on (``_float_key``): the float network
#: of a sweep is the same at every point that keeps the learning rate, momentum and relu'(0).
_FLOAT_CURVES: dict[tuple, Curve] = {}
FLOAT_CURVES_KEPT = 64


def _float_key(config: TrainConfig, datapath: Datapath) -> tuple:
    """Everything the float network's run depends on: the config (data set, network, schedule,
    seeds, backend) and the datapath's relu'(0), learning rate and momentum (FloatArithmetic.matching)."""
    return (config, datapath.relu_grad_at_zero, datapath.learning_rate, datapath.momentum_coefficient,
            datapath.momentum is not None)


def _float_curve(config: TrainConfig, datapath: Datapath, data: Dataset, net: MLP, params: list,
                 loaded: bool) -> Curve:
    """The float network's curves over every epoch (index 0: before training), trained on the
    same batches as the fixed one; reused from this process's earlier runs when ``loaded`` (the
    data set is the config's own, not one the caller passed)."""
    key = _float_key(config, datapath) if loaded else None
    if key is not None and key in _FLOAT_CURVES:
        return _FLOAT_CURVES[key]
    model = net.float_model(datapath, params, backend="numba" if config.backend == "numba" else "auto")
    curve = Curve()
    _record(curve, model, data)
    for epoch in range(1, config.epochs + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging float network shows as inf loss
            model.train_batches(data.x_train, data.y_train, batch_order(len(data.x_train), config.batch, epoch,
                                                                         config.seed))
        _record(curve, model, data)
    if key is not None:
        if len(_FLOAT_CURVES) >= FLOAT_CURVES_KEPT:
            _FLOAT_CURVES.pop(next(iter(_FLOAT_CURVES)))  # the oldest
        _FLOAT_CURVES[key] = curve
    return curve


def _record(curve: Curve, model: Model, data: Dataset) -> None:
    """Append a model's loss on the train split and loss and accuracy on the held-out split."""
    train_loss, _ = evaluate(model, data.x_train, data.y_train, data.classes)
    test_loss, accuracy = evaluate(model, data.x_test, data.y_test, data.classes)
    curve.train_loss.append(train_loss)
    curve.test_loss.append(test_loss)
    curve.test_accuracy.append(accuracy)


def params_sha256(params: list) -> str:
    """SHA-256 (hex) of fixed-point parameters: each layer's weight then bias, as its format's
    name and its raw integers (int64, little-endian, row-major). Two runs with equal digests
    ended with equal integers."""
    digest = hashlib.sha256()
    for layer in params:
        for value in (layer.weight, layer.bias):
            digest.update(f"{value.fmt}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value.raw, dtype="<i8").tobytes())
    return digest.hexdigest()


def _both(first: Callable | None, second: Callable | None) -> Callable | None:
    """One observer calling both (either may be None, or both the same object)."""
    if first is None or first is second:
        return second
    if second is None:
        return first

    def observe_both(*args: Any) -> None:
        first(*args)
        second(*args)
    return observe_both


def _summary(curves: dict[str, Curve], classes: int) -> dict:
    """The last epoch's figures; ``loss_ratio`` (fixed / float) is nan when float diverged."""
    fl, fx = curves["float"], curves["fixed"]
    diverged = not math.isfinite(fl.test_loss[-1])
    ratio = math.nan if diverged else fx.test_loss[-1] / fl.test_loss[-1] if fl.test_loss[-1] else math.inf
    summary = {"float_test_loss": fl.test_loss[-1], "fixed_test_loss": fx.test_loss[-1],
               "loss_ratio": ratio, "float_diverged": diverged}
    if classes:
        summary.update(float_test_accuracy=fl.test_accuracy[-1], fixed_test_accuracy=fx.test_accuracy[-1])
    return summary


def format_report(result: dict) -> str:
    """Per-epoch table of the training result: held-out loss (and accuracy) of both networks."""
    classes = result["dataset"]["classes"]
    lines = [f"fixprop train: {result['dataset']['name']} ({result['dataset']['train']} train, "
             f"{result['dataset']['test']} held out), MLP {result['network']}, datapath {result['datapath']}",
             "loss = mean over samples of the sum of squared output errors, on the held-out split", ""]
    header = "epoch   float loss   fixed loss   fixed/float" + ("   float acc   fixed acc" if classes else "")
    lines.append(header)
    fl, fx = result["float"], result["fixed"]
    for epoch in result["epochs"]:
        a, b = fl["test_loss"][epoch], fx["test_loss"][epoch]
        row = f"{epoch:5d}   {a:10.5g}   {b:10.5g}   {b / a if a else math.inf:11.3f}"
        if classes:
            row += f"   {fl['test_accuracy'][epoch]:9.2%}   {fx['test_accuracy'][epoch]:9.2%}"
        lines.append(row)
    final = result["final"]
    lines += ["", f"final held-out loss: float {final['float_test_loss']:.5g}, fixed {final['fixed_test_loss']:.5g} "
                  f"(fixed/float = {final['loss_ratio']:.3f})"]
    if final["float_diverged"]:
        lines.append("the float network diverged (infinite loss): no ratio; lower the learning rate (--lr-shift)")
    if classes:
        lines.append(f"final held-out accuracy: float {final['float_test_accuracy']:.2%}, "
                     f"fixed {final['fixed_test_accuracy']:.2%}")
    fractions = result.get("dynamic_fractions")
    if fractions:
        moved = ", ".join(f"{site} {fractions[0][site]}->{frac}" for site, frac in fractions[-1].items())
        lines.append(f"dynamic fractions (start->end): {moved}")
    if result.get("saturation") is not None:
        lines += [""] + format_saturation(result["saturation"], SATURATION_SCOPE)
    return "\n".join(lines)
