"""The multilayer perceptron, written once for both arithmetics.

Data are (batch, features); weights (out, in) as in PyTorch; biases (out,). Every stage below
calls the arithmetic ``ar`` (``nn/arithmetic.py``); in fixed point each ``ar.cast(x, role)`` is
the datapath's cast for that role and everything else is exact. docs/datapath.md states the same
stages as equations.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError, NonFiniteError, NotInRoleFormat, ShapeError
from fixprop.fixed import quantize as q
from fixprop.fixed.array import FixedArray
from fixprop.nn.activations import Activation, get_activation
from fixprop.nn.arithmetic import FixedArithmetic, FloatArithmetic, real_array
from fixprop.nn.init import INIT_NAMES, init_layer
from fixprop.nn.losses import Loss, get_loss


@dataclass
class LayerParams:
    """One layer's state: weight (out, in) and bias (out,)."""

    weight: Any
    bias: Any


@dataclass
class LayerTrace:
    """What the forward pass of one layer computed (what backprop and test vectors need).

    input: the incoming activation (batch, in); product: the exact sum cast into ``acc``
    (``input @ weight.T``, of the cast products when the datapath casts them; None when a
    register or adder tree accumulates it: no exact sum exists); acc: the sum in ``acc``;
    pre_full: exact ``acc + bias``; pre: cast into ``pre``; act: ``f(pre)`` cast into ``act``;
    weight, bias: the working copies the layer computed with (the state itself unless the
    datapath has weight_fwd / bias_fwd).
    """

    input: Any
    product: Any
    acc: Any
    pre_full: Any
    pre: Any
    act: Any
    weight: Any = None
    bias: Any = None


@dataclass
class ForwardTrace:
    layers: list[LayerTrace]

    @property
    def output(self) -> Any:
        return self.layers[-1].act


@dataclass
class LayerGrads:
    """One layer's backward results.

    error: incoming dL/da of this layer (batch, out); local_error: ``e = cast(error * f'(pre))``
    (batch, out); weight_grad (out, in) and bias_grad (out,), summed over the batch;
    prop_err: error passed to the previous layer (batch, in), None for the first layer.
    """

    error: Any
    local_error: Any
    weight_grad: Any
    bias_grad: Any
    prop_err: Any = None


class MLP:
    """A fully connected network definition (sizes, activations, loss, init); no arithmetic.

    Args:
        layer_sizes: e.g. [3, 16, 5]: inputs, hidden widths, outputs.
        activation: hidden activation (relu, leaky_relu[:k], linear, hard_tanh).
        output_activation: last layer's activation (defaults to ``activation``, as in the seed).
        loss: sse, half_sse or mse.
        init: uniform, uniform_neg, ones, he or glorot.
        seed: seed of the numpy Generator that draws the initial weights.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: str | Activation = "relu",
        output_activation: str | Activation | None = None,
        loss: str | Loss = "sse",
        init: str = "uniform",
        seed: int = 0,
    ) -> None:
        try:
            sizes = list(layer_sizes)
        except TypeError:
            sizes = []
        if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in sizes):
            raise ConfigError(f"layer_sizes must be >= 2 positive integers, e.g. [3, 16, 5]; got {layer_sizes!r}")
        if init not in INIT_NAMES:
            raise ConfigError(f"unknown init {init!r}; allowed: {', '.join(INIT_NAMES)}")
        self.layer_sizes = [int(n) for n in sizes]
        self.activation = get_activation(activation)
        self.output_activation = get_activation(activation if output_activation is None else output_activation)
        self.loss = get_loss(loss)
        self.init = init
        self.seed = seed

    def __repr__(self) -> str:
        return (f"MLP({self.layer_sizes}, activation={str(self.activation)!r}, "
                f"output_activation={str(self.output_activation)!r}, loss={self.loss.name!r}, "
                f"init={self.init!r}, seed={self.seed})")

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def activation_of(self, layer: int) -> Activation:
        return self.output_activation if layer == self.n_layers - 1 else self.activation

    # -- parameters ----------------------------------------------------------------------
    def init_params(self, seed: int | None = None) -> list[LayerParams]:
        """Initial float64 parameters, drawn layer by layer (weight, then bias)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return [LayerParams(*init_layer(self.init, n_out, n_in, rng))
                for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:])]

    def params_in(self, ar: Any, params: Sequence[LayerParams]) -> list[LayerParams]:
        """Parameters converted into an arithmetic (quantized into the weight/bias roles in fixed point)."""
        self._check_params(params)
        datapath = getattr(ar, "datapath", None)
        if datapath is not None:
            datapath.check_layers(self.n_layers)
            self._check_activation_casts(datapath)
        return [LayerParams(ar.data(p.weight, "weight", layer=i), ar.data(p.bias, "bias", layer=i))
                for i, p in enumerate(params)]

    def _check_activation_casts(self, datapath: Datapath) -> None:
        """A piecewise-linear or table activation's exact output has the format its pieces'
        selection gives (docs/datapath.md): an ``act`` cast with a fixed word and ``frac =
        "full"`` would leave integer bits that depend on it. Refused (ConfigError)."""
        from fixprop.nn.activations import FromOutput, PiecewiseLinear

        for i in range(self.n_layers):
            cast = datapath.cast_for("act", i)
            if isinstance(self.activation_of(i), (PiecewiseLinear, FromOutput)) and cast.word is not None \
                    and cast.frac is None:
                raise ConfigError(f"layer {i}: {self.activation_of(i)} into act with word {cast.word} and frac "
                                  "'full': give act a fixed frac with piecewise-linear and table activations")

    def _check_params(self, params: Sequence[LayerParams]) -> None:
        if len(params) != self.n_layers:
            raise ShapeError(f"expected {self.n_layers} layers of parameters, got {len(params)}")
        for i, (p, n_in, n_out) in enumerate(zip(params, self.layer_sizes[:-1], self.layer_sizes[1:])):
            if np.shape(p.weight) != (n_out, n_in) or np.shape(p.bias) != (n_out,):
                raise ShapeError(f"layer {i}: weight must be ({n_out}, {n_in}) and bias ({n_out},); "
                                 f"got {np.shape(p.weight)} and {np.shape(p.bias)}")

    # -- the three stages ----------------------------------------------------------------
    def forward(self, ar: Any, params: Sequence[LayerParams], x: Any) -> ForwardTrace:
        """Forward pass of a batch ``x`` (batch, n_in); keeps every stage for backprop."""
        a = ar.data(self._batch(x, self.layer_sizes[0], "x"), "input")
        layers = []
        for i, p in enumerate(params):
            weight = ar.working_copy(p.weight, "weight", layer=i)
            bias = ar.working_copy(p.bias, "bias", layer=i)
            product, acc = ar.matmul_cast(a, weight.T, "acc", layer=i)  # exact, or as the datapath's MACs
            pre_full = acc + bias                         # exact (bias aligned)
            pre = ar.cast(pre_full, "pre", layer=i)
            act = ar.cast(self.activation_of(i).forward(ar, pre), "act", layer=i)
            layers.append(LayerTrace(a, product, acc, pre_full, pre, act, weight, bias))
            a = act
        return ForwardTrace(layers)

    def backward(self, ar: Any, params: Sequence[LayerParams], trace: ForwardTrace, y: Any) -> list[LayerGrads]:
        """Backprop of the loss against targets ``y`` (batch, n_out); gradients summed over the batch."""
        y = ar.data(self._batch(y, self.layer_sizes[-1], "y"), "target")
        if np.shape(y)[0] != np.shape(trace.output)[0]:
            raise ShapeError(f"y has {np.shape(y)[0]} samples but the forward pass had {np.shape(trace.output)[0]}")
        error = ar.cast(self.loss.gradient(ar, trace.output, y), "out_err", layer=self.n_layers - 1)
        grads: list[LayerGrads] = []
        for i in reversed(range(self.n_layers)):
            layer = trace.layers[i]
            weight = params[i].weight if layer.weight is None else layer.weight  # the forward pass's copy
            local = ar.cast(error * self.activation_of(i).derivative(ar, layer.pre, layer.act), "bias_grad", layer=i)
            bias_grad = ar.sum_cast(local, "bias_grad", layer=i)
            weight_grad = ar.matmul_cast(local.T, layer.input, "weight_grad", layer=i)[1]
            prop = ar.matmul_cast(local, weight, "prop_err", layer=i)[1] if i > 0 else None
            grads.append(LayerGrads(error, local, weight_grad, bias_grad, prop))
            error = prop
        return grads[::-1]

    def sgd_step(
        self,
        ar: Any,
        params: Sequence[LayerParams],
        grads: Sequence[LayerGrads],
        velocity: list[LayerParams] | None = None,
        updates: list[LayerParams] | None = None,
    ) -> tuple[list[LayerParams], list[LayerParams] | None]:
        """One SGD update: v = cast(mu v + g, momentum) when momentum is used;
        u = cast(lr * (v or g), update); param = cast(param - u, weight | bias). When ``updates``
        is a list, each layer's (weight u, bias u) is appended to it (test vectors keep them)."""
        new_params, new_velocity = [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            updated, velocities, applied = [], [], []
            for value, grad, role, old_v in ((p.weight, g.weight_grad, "weight", velocity and velocity[i].weight),
                                             (p.bias, g.bias_grad, "bias", velocity and velocity[i].bias)):
                step = grad
                if velocity is not None:
                    step = ar.cast(ar.times_momentum(old_v) + grad, "momentum", layer=i)
                    velocities.append(step)
                update = ar.cast(ar.times_lr(step), "update", layer=i)
                updated.append(ar.cast(value - update, role, layer=i))
                applied.append(update)
            new_params.append(LayerParams(*updated))
            if updates is not None:
                updates.append(LayerParams(*applied))
            if velocity is not None:
                new_velocity.append(LayerParams(*velocities))
        return new_params, (new_velocity if velocity is not None else None)

    def zero_velocity(self, ar: Any, params: Sequence[LayerParams]) -> list[LayerParams]:
        """Momentum state at rest, in the momentum role's format."""
        return [LayerParams(ar.zeros_like(p.weight, "momentum", i), ar.zeros_like(p.bias, "momentum", i))
                for i, p in enumerate(params)]

    @staticmethod
    def _batch(x: Any, width: int, name: str) -> Any:
        if not hasattr(x, "shape"):  # a nested sequence: an array (ar.data checks the values' type)
            x = real_array(x, {"x": "input", "y": "target"}[name])
        shape = np.shape(x)
        if len(shape) == 1:
            x = x.reshape(1, -1) if hasattr(x, "reshape") else np.asarray(x).reshape(1, -1)
            shape = np.shape(x)
        if len(shape) != 2 or shape[1] != width or shape[0] < 1:
            raise ShapeError(f"{name} must be (batch, {width}) with batch >= 1, or ({width},); got shape {shape}")
        return x

    # -- bound models --------------------------------------------------------------------
    def float_model(self, datapath: Datapath | None = None, params: Sequence[LayerParams] | None = None,
                    backend: str = "auto") -> "Model":
        """This network in float64 (with a datapath's relu'(0), learning rate and momentum when given).
        ``backend``: "numba" runs it on the kernel (``Model.backend``); otherwise numpy."""
        if datapath is not None and not isinstance(datapath, Datapath):
            raise ConfigError(f"float_model takes a Datapath or None; got {datapath!r}")
        ar = FloatArithmetic.matching(datapath) if datapath is not None else FloatArithmetic()
        momentum = datapath is not None and datapath.momentum is not None
        return Model(self, ar, self.init_params() if params is None else params, momentum, backend=backend)

    def fixed_model(self, datapath: Datapath, params: Sequence[LayerParams] | None = None,
                    rng: np.random.Generator | None = None, backend: str = "auto") -> "Model":
        """This network in fixed point under ``datapath``; float params are quantized into it.
        ``backend``: the compiled engine (``Model.backend``: auto, numpy or numba)."""
        ar = FixedArithmetic(datapath, rng)
        return Model(self, ar, self.init_params() if params is None else params, datapath.momentum is not None,
                     backend=backend)


def _batch_indices(rows: Any, n: int, k: int) -> np.ndarray:
    """Batch ``k`` of ``Model.train_batches`` as a non-empty 1-D array of sample indices < n."""
    arr = np.asarray(rows)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ShapeError(f"batch {k} must be a non-empty 1-D array of integer sample indices; "
                         f"got shape {arr.shape}, dtype {arr.dtype}")
    if int(arr.min()) < -n or int(arr.max()) >= n:
        raise ShapeError(f"batch {k} has a sample index outside the {n} samples of x")
    return arr


#: The compiled engines a Model can use (``Model.backend``).
BACKENDS = ("auto", "numpy", "numba")
#: "auto" uses the numba kernel for networks whose widest layer has at most AUTO_NUMBA_MAX_WEIGHTS
#: weights while a step does at most AUTO_NUMBA_MAX_MACS multiply-accumulates (three per weight
#: and sample: forward, propagated error, weight gradient), and numpy (BLAS) beyond. Measured on
#: the 2-core reference machine, numpy/numba train_step time (seed(24,12); 16-bit alike): 2.3 at
#: [3,7,7,5] batch 1, 1.5 at [3,16,5] batch 1024, 1.3 at [64,64,10] batch 128, 1.1/0.9 at
#: [64,64,10] batch 512 (7.3M MACs); 0.6 at [128,128,10] batch 64, 0.2 to 0.6 at [256,256,10]
#: and [784,256,256,10] at batches 8 to 128 (the kernel's batch-innermost loops are short there).
AUTO_NUMBA_MAX_WEIGHTS = 64 * 64
AUTO_NUMBA_MAX_MACS = 1 << 22


def choose_backend(backend: str, net: MLP, batch: int) -> str:
    """The engine of a compiled step: ``backend`` itself, or for "auto" numba on small networks
    and batches and numpy (BLAS) on wide layers and large batches."""
    if backend != "auto":
        return backend
    weights = [n_in * n_out for n_in, n_out in zip(net.layer_sizes[:-1], net.layer_sizes[1:])]
    small = max(weights) <= AUTO_NUMBA_MAX_WEIGHTS and 3 * batch * sum(weights) <= AUTO_NUMBA_MAX_MACS
    return "numba" if small else "numpy"


@dataclass
class Model:
    """A network bound to an arithmetic and its state (parameters, momentum velocity).

    ``train_step`` and ``weight_gradients`` run the network compiled for each batch size they
    meet, when the datapath fits 62-bit integers; it computes the same integers as the
    step-by-step path (``forward``/``gradients``), which keeps every intermediate stage.
    ``backend`` chooses the compiled engine: "numba" (the traced program on the numba kernel,
    ``nn/kernels.py``), "numpy" (straight-line numpy with BLAS, ``nn/compiled.py``) or "auto"
    (:func:`choose_backend`). A float64 network runs on numpy unless "numba" is asked for: the
    kernel sums in the program's order, BLAS in its own, so the last bit can differ. Without numba
    (it failed to import: one warning) every backend runs numpy. ``compiled=False`` always uses
    the step-by-step path.
    """

    net: MLP
    arithmetic: Any
    params: list[LayerParams]
    momentum: bool = False
    velocity: list[LayerParams] | None = field(default=None)
    compiled: bool = True
    backend: str = "auto"
    _steps: dict = field(default_factory=dict, init=False, repr=False)
    _traced_from: tuple | None = field(default=None, init=False, repr=False)
    _dynamic: Any = field(default=None, init=False, repr=False)
    _data_formats: tuple | None = field(default=None, init=False, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "backend":  # a new engine: the steps compiled for the old one are dropped
            if value not in BACKENDS:
                raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {value!r}")
            if "_steps" in self.__dict__:
                self._steps.clear()
        super().__setattr__(name, value)

    def __post_init__(self) -> None:
        self.params = self.net.params_in(self.arithmetic, self.params)
        if self.momentum and self.velocity is None:
            self.velocity = self.net.zero_velocity(self.arithmetic, self.params)

    def forward(self, x: Any) -> ForwardTrace:
        return self.net.forward(self.arithmetic, self.params, x)

    def predict(self, x: Any) -> np.ndarray:
        """Network outputs as float64 (batch, n_out); the forward pass runs compiled (the numba
        kernel) when available, else stage by stage: the same values."""
        ar = self.arithmetic
        if getattr(ar, "datapath", None) is None and self.backend != "numba":
            return ar.to_float(self.forward(x).output)
        x_q = ar.data(MLP._batch(x, self.net.layer_sizes[0], "x"), "input")
        step = self._compiled(x_q.shape[0], update=False, forward_only=True)
        if step is not None:
            try:
                return ar.to_float(step.activations(self.params, x_q, getattr(ar, "rng", None),
                                                    **self._counting())[-1])
            except NotInRoleFormat:  # parameters set in other formats: computed as given, stage by stage
                pass
        return ar.to_float(self.net.forward(ar, self.params, x_q).output)

    def gradients(self, x: Any, y: Any) -> list[LayerGrads]:
        """Forward and backward on one batch, every stage kept; returns per-layer gradients (not applied)."""
        return self.net.backward(self.arithmetic, self.params, self.forward(x), y)

    def weight_gradients(self, x: Any, y: Any) -> list[tuple[Any, Any]]:
        """[(weight_grad, bias_grad), ...] of one batch, by the compiled step when available."""
        x_q, y_q = self._data(x, y)
        step = self._compiled(x_q.shape[0], update=False)
        if step is not None:
            try:
                return step.gradients(self.params, x_q, y_q, self.velocity, getattr(self.arithmetic, "rng", None),
                                      **self._counting())
            except NotInRoleFormat:  # parameters set in other formats: computed as given, stage by stage
                pass
        return [(g.weight_grad, g.bias_grad) for g in self.net.backward(
            self.arithmetic, self.params, self.net.forward(self.arithmetic, self.params, x_q), y_q)]

    def train_step(self, x: Any, y: Any) -> float:
        """One SGD step on a batch; returns the loss before the step (float). With dynamic
        fractions (``dynamic_fractions``), the step's casts are counted, and every
        ``interval`` steps the fractions move (the arithmetic gets the new datapath)."""
        dynamic = self.dynamic_fractions()
        if dynamic is None:
            return self._train_step(x, y)
        ar = self.arithmetic
        original = ar.observer
        before = {site: list(counts) for site, counts in dynamic.counts.items()}
        ar.observer = dynamic.watching(original)
        try:
            loss = self._train_step(x, y)
        except BaseException:  # a step that failed (bad data) counts nothing
            dynamic.counts = before
            raise
        finally:
            ar.observer = original
        self.params, self.velocity = dynamic.step_done(ar, self.params, self.velocity)
        return loss

    def dynamic_fractions(self):
        """The :class:`~fixprop.nn.dynamic.DynamicFractions` of a datapath with dynamic casts
        (made at the first call for this arithmetic), or None."""
        ar = self.arithmetic
        datapath = getattr(ar, "datapath", None)
        if datapath is None or datapath.dynamic is None:
            return None
        if self._dynamic is None or self._dynamic.arithmetic is not ar or self._dynamic.datapath is not datapath:
            # first use, or the arithmetic or its datapath was replaced: start from its fractions
            from fixprop.nn.dynamic import DynamicFractions

            self._dynamic = DynamicFractions(datapath, self.net.n_layers)
            self._dynamic.arithmetic = ar
        return self._dynamic

    def _train_step(self, x: Any, y: Any) -> float:
        ar = self.arithmetic
        x_q, y_q = self._data(x, y)
        step = self._compiled(x_q.shape[0], update=True)
        output = None
        if step is not None:
            try:
                self.params, self.velocity, output = step.train_step(self.params, x_q, y_q, self.velocity,
                                                                     getattr(ar, "rng", None), **self._counting())
            except NotInRoleFormat:  # parameters set in other formats: computed as given, stage by stage
                pass
        if output is None:
            trace = self.net.forward(ar, self.params, x_q)
            grads = self.net.backward(ar, self.params, trace, y_q)
            self.params, self.velocity = self.net.sgd_step(ar, self.params, grads, self.velocity)
            output = trace.output
        return self.net.loss.value(ar.to_float(output), ar.to_float(y_q))

    def train_batches(self, x: Any, y: Any, batches: Sequence[np.ndarray]) -> None:
        """SGD steps on ``x[rows]``, ``y[rows]`` for each index array ``rows`` of ``batches``, in
        order: the integers of ``for rows in batches: self.train_step(x[rows], y[rows])``. On
        the numba kernel, consecutive batches of one size run in one kernel call (their data
        quantized into the input and target roles once: an observer sees one data cast per run
        of batches instead of one per batch, the same counts; data rounding STOCH takes words
        drawn ahead in the loop's order, see ``_run_data``). ``x`` (samples, n_in) and ``y``
        (samples, n_out) are real numbers or FixedArrays; they and ``batches`` are checked
        before any step, so bad input leaves the model as it was."""
        x, y = self._samples(x, "x"), self._samples(y, "y")
        if len(x) != len(y):
            raise ShapeError(f"x has {len(x)} samples but y has {len(y)}")
        batches = [_batch_indices(rows, len(x), k) for k, rows in enumerate(batches)]
        start = 0
        while start < len(batches):
            size = len(batches[start])
            end = start
            while end < len(batches) and len(batches[end]) == size:
                end += 1
            if end - start < 2 or not self._steps_in_one_call(size):
                for rows in batches[start:end]:
                    self.train_step(x[rows], y[rows])
            else:
                rows = np.concatenate(batches[start:end])
                step = self._compiled(size, update=True)
                in_role_formats = step.accepts(self.params, self.velocity)
                run_data = self._run_data(x[rows], y[rows], end - start, step) if in_role_formats else None
                if run_data is not None:
                    x_q, y_q, drawn = run_data
                    self.params, self.velocity, _ = step.train_steps(
                        self.params, x_q, y_q, self.velocity, getattr(self.arithmetic, "rng", None), **self._counting(),
                        drawn=drawn)
                elif not in_role_formats and not any(self._data_draws(x, y)):
                    # parameters in other formats: step by step, as given, on the data quantized once
                    # (cast once, counted once)
                    x_q, y_q = self._data(x[rows], y[rows])
                    for k in range(end - start):
                        one = slice(k * size, (k + 1) * size)
                        self.train_step(x_q[one], y_q[one])
                else:  # data rounding STOCH, drawn between the steps' own words: step by step
                    for rows in batches[start:end]:
                        self.train_step(x[rows], y[rows])
            start = end

    def _samples(self, values: Any, name: str) -> Any:
        """``x`` or ``y`` of :meth:`train_batches` as a 2-D float64 array or FixedArray of
        (samples, width), finite; else a ShapeError, RawTypeError or NonFiniteError naming it."""
        width = self.net.layer_sizes[0 if name == "x" else -1]
        if not isinstance(values, FixedArray):
            values = np.asarray(real_array(values, "input" if name == "x" else "target"), dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                sample = int(np.argwhere(bad)[0][0])
                raise NonFiniteError(f"{name} holds NaN or infinity (sample {sample}); no step was taken")
        if values.ndim != 2 or values.shape[1] != width:
            raise ShapeError(f"{name} must be (samples, {width}); got shape {tuple(values.shape)}")
        return values

    def _steps_in_one_call(self, batch: int) -> bool:
        """True when batches of this size can run several steps in one numba kernel call: the
        numba step is in use, the fractions stay put, and STOCH words (if any) come from a numpy
        Generator (drawn ahead, in the order a loop of train_step draws them)."""
        from fixprop.nn.kernels import NumbaStep

        datapath = getattr(self.arithmetic, "datapath", None)
        if datapath is not None and datapath.dynamic is not None:  # fractions may move between steps
            return False
        if not isinstance(self._compiled(batch, update=True), NumbaStep):
            return False
        rng = getattr(self.arithmetic, "rng", None)
        return datapath is None or rng is None or isinstance(rng, np.random.Generator)

    def _data_draws(self, x: Any, y: Any) -> list[bool]:
        """For x and y: whether quantizing it into the input / target role draws STOCH words."""
        from fixprop.fixed.modes import Rounding

        datapath = getattr(self.arithmetic, "datapath", None)
        if datapath is None:
            return [False, False]
        draws = []
        for values, role in ((x, "input"), (y, "target")):
            cast = datapath.cast_for(role, None)
            in_role = isinstance(values, FixedArray) and (values.fmt == cast.fmt)
            draws.append(cast.rounding is Rounding.STOCH and not in_role)
        return draws

    def _run_data(self, x: Any, y: Any, n_steps: int, step: Any) -> tuple[Any, Any, np.ndarray | None] | None:
        """``x`` and ``y`` of ``n_steps`` consecutive batches of one size in the input and target
        roles, and the steps' STOCH words drawn ahead ((steps, words per step); None: the steps
        draw their own from the Generator, as they do when the data draws nothing).
        Data rounding STOCH draws its words from the arithmetic's Generator in the order a loop of
        ``train_step`` would: step by step, x's words, y's, then the step's own. That needs one
        word per element (:func:`~fixprop.fixed.quantize.stochastic_words_one_each`) from float
        data; otherwise None (nothing drawn): a loop of ``train_step`` must run them."""
        ar = self.arithmetic
        draws = self._data_draws(x, y)
        rng = getattr(ar, "rng", None)
        if not any(draws):  # the steps draw their words themselves
            x_q, y_q = self._data(x, y)
            return x_q, y_q, None
        if not isinstance(rng, np.random.Generator):
            return None
        roles = (("input", x), ("target", y))
        if any(draw and (isinstance(values, FixedArray)
                         or not q.stochastic_words_one_each(values, ar.datapath.cast_for(role, None).fmt))
               for draw, (role, values) in zip(draws, roles)):
            return None
        widths = [values.size // n_steps if draw else 0 for draw, (_, values) in zip(draws, roles)]
        per_step = sum(widths) + step.words_per_step
        words = q.random_words(rng, (n_steps * per_step,)).reshape(n_steps, per_step)
        data, start = [], 0
        for width, (role, values) in zip(widths, roles):
            source = q.DrawnWords(words[:, start:start + width]) if width else None
            data.append(ar.data(values, role, rng=source))
            if source is not None and source.used != source.words.size:
                raise AssertionError(f"fixprop internal error: quantizing the {role} data drew {source.used} of "
                                     f"{source.words.size} words")
            start += width
        return data[0], data[1], words[:, start:] if step.uses_rng else None

    def _data(self, x: Any, y: Any) -> tuple[Any, Any]:
        """x and y in the input and target roles (quantized once), as 2-D batches."""
        ar = self.arithmetic
        datapath = getattr(ar, "datapath", None)
        if type(x) is FixedArray and type(y) is FixedArray and datapath is not None:
            if self._data_formats is None or self._data_formats[0] is not datapath:
                self._data_formats = (datapath, datapath.cast_for("input", None).fmt,
                                      datapath.cast_for("target", None).fmt)
            _, input_fmt, target_fmt = self._data_formats  # the common case, checked cheaply
            x_shape, y_shape = x.shape, y.shape
            if ((x.fmt is input_fmt or x.fmt == input_fmt) and (y.fmt is target_fmt or y.fmt == target_fmt)
                    and len(x_shape) == 2 and len(y_shape) == 2 and x_shape[0] == y_shape[0] >= 1
                    and x_shape[1] == self.net.layer_sizes[0] and y_shape[1] == self.net.layer_sizes[-1]):
                return x, y
        x = MLP._batch(x, self.net.layer_sizes[0], "x")
        y = MLP._batch(y, self.net.layer_sizes[-1], "y")
        if np.shape(x)[0] != np.shape(y)[0]:
            raise ShapeError(f"x has {np.shape(x)[0]} samples but y has {np.shape(y)[0]}")
        return ar.data(x, "input"), ar.data(y, "target")

    def _counting(self) -> dict:
        """The keyword that hands a counting observer to a compiled step (only numba steps count)."""
        observer = getattr(self.arithmetic, "observer", None)
        return {} if observer is None else {"counter": observer}

    def _compiled(self, batch: int, update: bool, forward_only: bool = False):
        """The compiled step for this batch size (with ``forward_only``, the forward pass, which
        only the numba kernel runs), or None (not wanted, the datapath is too wide, or the
        arithmetic's observer needs every cast's values: only an observer the kernel can serve,
        a RangeCollector (``kernel_served``: counts, and ranges and histograms when it keeps them),
        is served, and only by the numba kernel, which counts)."""
        observer = getattr(self.arithmetic, "observer", None)
        counting = observer is not None
        if not self.compiled or (counting and not getattr(observer, "kernel_served", False)):
            return None
        key = ("forward", batch, counting) if forward_only else (batch, update, counting)
        steps = self._current_steps()
        if key not in steps:
            steps[key] = self._new_step(batch, update, counting, forward_only)
        return steps[key]

    def _current_steps(self) -> dict:
        """The compiled steps, dropped first if anything they were traced from was replaced since:
        the network or its activations and loss, the arithmetic, its datapath, relu'(0), learning
        rate or momentum (compared by identity: cheap, and a replaced equal value only costs a
        new trace). The settings are read when a step is traced, so a stale step would compute
        the old network's integers."""
        net, ar = self.net, self.arithmetic
        traced_from = (net, net.layer_sizes, net.activation, net.output_activation, net.loss, ar,
                       getattr(ar, "datapath", None), ar.relu_grad_at_zero, getattr(ar, "learning_rate", None),
                       getattr(ar, "momentum", None))
        previous = self._traced_from
        if previous is None or not all(map(operator.is_, traced_from, previous)):
            self._steps.clear()
            self._traced_from = traced_from
        return self._steps

    def _new_step(self, batch: int, update: bool, counting: bool, forward_only: bool):
        from fixprop.nn.compiled import NotCompilable, compile_step
        from fixprop.nn.kernels import numba_float_step, numba_step

        datapath = getattr(self.arithmetic, "datapath", None)
        if datapath is None and self.backend == "numba":  # the float network on the kernel: asked for only
            step = numba_float_step(self.net, self.arithmetic, batch, update, forward_only)
            if step is not None or forward_only:
                return step
        numba_wanted = datapath is not None and (choose_backend(self.backend, self.net, batch) == "numba"
                                                 or (self.backend != "numpy" and (counting or forward_only)))
        if numba_wanted:
            step = numba_step(self.net, datapath, batch, update, forward_only)
            if step is not None:
                return step
        if counting or forward_only:  # the numpy step neither counts nor runs a forward pass alone
            return None
        try:
            return compile_step(self.net, datapath, batch, update,
                                float_settings=None if datapath is not None else self.arithmetic)
        except NotCompilable:  # else: numba unavailable, or too wide: numpy, or stage by stage
            return None

    def weights(self) -> list[np.ndarray]:
        """Weights as float64 arrays (out, in)."""
        return [self.arithmetic.to_float(p.weight) for p in self.params]

    def biases(self) -> list[np.ndarray]:
        return [self.arithmetic.to_float(p.bias) for p in self.params]
