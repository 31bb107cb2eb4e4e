"""The seed notebook's class, ``mlp4autograd``, on top of fixprop.

Same API and conventions as the notebook's class: column vectors (n, 1); weights (out, in);
biases (out, 1); ``params = [list of weights, list of biases]``; ReLU on every layer; loss
``sum((a - y)**2)``. In float mode ``infer`` and ``error`` are written in ``autograd.numpy`` so
``autograd.grad`` can differentiate them. In quantized mode (``set_quant(d, q, True)``) values are
integers in units of ``2**-q`` and the arithmetic is :meth:`fixprop.Datapath.seed` (round half to
even, saturate to d bits), computed exactly at any width, where the seed's float64 stand-in was
exact only below 2**53. Inputs and targets beyond d bits are saturated into the input/target role.

Unlike the seed's class, repeated calls do not grow memory: each ``infer`` replaces the stored
activations.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError, RawTypeError, ShapeError
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat
from fixprop.nn.arithmetic import FixedArithmetic, FloatArithmetic
from fixprop.nn.mlp import MLP, LayerParams

INIT_MODES = ("uniform", "uniform_neg", "ones")


class mlp4autograd:  # noqa: N801 - the seed notebook's name
    """The seed's MLP: ``set_quant``, ``net_shape``, ``init_params``, ``infer``, ``error``, ``grad``."""

    def __init__(self) -> None:
        self._quant = False
        self._d_bits = 16
        self._q_bits = 10
        self._shape: list[int] = []
        self._weight: list[Any] = []
        self._bias: list[Any] = []
        self._activation: list[Any] = []
        self._weight_dif: list[np.ndarray] = []
        self._bias_dif: list[np.ndarray] = []
        self.params_grad: list[list[np.ndarray]] = [[], []]
        self._last_input: Any = None
        self._last_params: Any = None
        self._steps: dict = {}  # the numba steps of the quantized mode, per shape, datapath and batch
        self._fmt_cache: QFormat | None = None
        self._params_cache: tuple | None = None  # (format, the values as given, their FixedArrays)

    # -- configuration ----------------------------------------------------------------------
    def set_quant(self, d_bits: int = 16, q_bits: int = 10, quant: bool = True) -> None:
        """Quantized mode with d-bit words and q fraction bits (``quant=True``), or float64."""
        QFormat(d_bits, q_bits)  # validates
        self._d_bits, self._q_bits, self._quant = int(d_bits), int(q_bits), bool(quant)

    def net_shape(self, shape: Sequence[int]) -> None:
        """Layer sizes, e.g. [3, 7, 7, 5]."""
        self._shape = list(MLP(shape).layer_sizes)

    def init_params(self, mode: str = "uniform") -> None:
        """Float weights and biases from numpy's global generator (np.random.seed makes them repeatable):
        uniform in [0, 1), uniform_neg in [-1, 1), or ones."""
        if mode not in INIT_MODES:
            raise ConfigError(f"unknown init mode {mode!r}; allowed: {', '.join(INIT_MODES)}")
        self._require_shape()
        self._weight, self._bias = [], []
        for n_in, n_out in zip(self._shape[:-1], self._shape[1:]):
            if mode == "uniform":
                w, b = np.random.random((n_out, n_in)), np.random.random((n_out, 1))
            elif mode == "uniform_neg":
                w, b = np.random.uniform(-1, 1, (n_out, n_in)), np.random.uniform(-1, 1, (n_out, 1))
            else:
                w, b = np.ones((n_out, n_in)), np.ones((n_out, 1))
            self._weight.append(w)
            self._bias.append(b)

    # -- the network ------------------------------------------------------------------------
    def infer(self, x: Any, params: Sequence[Sequence[Any]]) -> Any:
        """Forward pass of one column vector x (n_in, 1); returns the output column (n_out, 1)."""
        self._require_shape()
        self._check_columns(x, self._shape[0], "x", "infer(x, params)")
        weights, biases = self._check_params(params)
        self._last_input = self._last_params = None  # a failed infer leaves nothing for grad to reuse
        self._activation = []
        if not self._quant:  # autograd-traceable float64
            a = x
            activations = [a]
            for w, b in zip(weights, biases):
                a = anp.maximum(anp.dot(w, a) + b, 0.0)
                activations.append(a)
        else:
            activations = self._compiled_infer(x, weights, biases)
            if activations is None:  # values beyond the roles' d bits (or no numba): stage by stage
                trace = self._net().forward(self._fixed(), self._fixed_params(weights, biases),
                                            self._raw_fixed(x, "x").T)
                activations = [self._raw(trace.layers[0].input).T] + [self._raw(t.act).T for t in trace.layers]
        self._activation = activations
        self._last_input, self._last_params = x, params
        return activations[-1]

    def error(self, truth: Any) -> Any:
        """Sum of squared errors of the last inference. In quantized mode with integer ``truth``
        (raw units, as the seed passes it) an exact Python int in raw units squared: int64
        squares would wrap beyond 2**31.5 raw units (d >= 33 bits)."""
        if not self._activation:
            raise ConfigError("call infer(x, params) before error(truth)")
        output = self._activation[-1]
        if self._quant and np.asarray(truth).dtype.kind in "iu":
            diff = np.asarray(output).astype(object) - np.asarray(truth).astype(object)
            return int(np.sum(diff * diff))
        return anp.sum((output - truth) ** 2)

    def grad(self, truth: Any, debug: bool = False) -> None:
        """Backprop of the last inference against ``truth`` (n_out, 1); sets ``_weight_dif``,
        ``_bias_dif`` and ``params_grad`` (= [weight grads, bias grads]); ``debug`` prints them."""
        if self._last_params is None:
            raise ConfigError("call infer(x, params) before grad(truth)")
        self._check_columns(truth, self._shape[-1], "truth", "grad(truth)", np.shape(getval(self._last_input))[1])
        net = self._net()
        weights, biases = self._last_params
        if self._quant and not debug:
            compiled = self._compiled_grad(self._last_input, truth, weights, biases)
            if compiled is not None:
                self._weight_dif = [np.array(w.raw) for w, _ in compiled]
                self._bias_dif = [np.array(b.raw).reshape(-1, 1) for _, b in compiled]
                self.params_grad = [self._weight_dif, self._bias_dif]
                return
        if self._quant:
            ar: Any = self._fixed()
            params = self._fixed_params(weights, biases)
            x, y = self._raw_fixed(self._last_input, "x").T, self._raw_fixed(truth, "truth").T
            convert = self._raw
        else:
            ar = FloatArithmetic(relu_grad_at_zero=0.5)
            params = [LayerParams(np.asarray(getval(w), float), np.asarray(getval(b), float).reshape(-1))
                      for w, b in zip(weights, biases)]
            x = np.asarray(getval(self._last_input), float).T
            y = np.asarray(getval(truth), float).T
            convert = np.array
        grads = net.backward(ar, params, net.forward(ar, params, x), y)
        self._weight_dif = [convert(g.weight_grad) for g in grads]
        self._bias_dif = [convert(g.bias_grad).reshape(-1, 1) for g in grads]
        self.params_grad = [self._weight_dif, self._bias_dif]
        if debug:
            for i, g in enumerate(grads):
                print(f"layer {i}: incoming error {convert(g.error).ravel()}\nweight grad\n{self._weight_dif[i]}\n"
                      f"bias grad {self._bias_dif[i].ravel()}")

    # -- the compiled path (quantized mode) ------------------------------------------------------
    # Values that fit the seed datapath's d-bit roles are the same numbers in those formats, and
    # every cast of the datapath depends only on the value: the numba kernel's forward pass and
    # gradient step then compute exactly what the stage-by-stage pass computes on them.
    def _role_arrays(self, arrays: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> list[FixedArray] | None:
        """Integer-valued ``arrays`` (units of 2**-q) as FixedArrays of the given shapes in the
        d-bit roles' format; None when a value is not an integer or does not fit d bits (the
        stage-by-stage path handles those). One conversion and one check for all of them."""
        values = [np.asarray(getval(v)) for v in arrays]
        if len(values) == 1:  # one array (the data of a call): no concatenation
            flat, kinds = values[0].reshape(-1), values[0].dtype.kind
        else:
            flat, kinds = np.concatenate([v.reshape(-1) for v in values]), "".join({v.dtype.kind for v in values})
        limit = 1 << (self._d_bits - 1)
        if not flat.size or not (flat.min() >= -limit and flat.max() < limit):  # nan fails both
            return None
        if kinds == "f" and self._d_bits <= 53:  # float64 holds every d-bit integer exactly
            ints = flat.astype(np.int64)  # finite and in range: the cast is defined (a new array)
            if (ints != flat).any():  # a fraction
                return None
        elif kinds == "i" and flat.dtype == np.int64:
            ints = flat.copy()
        else:
            return None
        ints.flags.writeable = False  # the FixedArrays below are read-only views of it
        fmt, out, start = self._role_format(), [], 0
        for shape in shapes:
            size = math.prod(shape)
            out.append(FixedArray._trusted_int64(ints[start:start + size].reshape(shape), fmt))
            start += size
        return out if start == ints.size else None

    def _role_format(self) -> QFormat:
        if self._fmt_cache is None or self._fmt_cache.word != self._d_bits or self._fmt_cache.frac != self._q_bits:
            self._fmt_cache = Datapath.seed(self._d_bits, self._q_bits)["weight"].fmt
        return self._fmt_cache

    def _compiled_step(self, batch: int, forward_only: bool):
        """The numba step of this shape, datapath and batch (made once), or None."""
        from fixprop.nn.kernels import numba_step

        key = (tuple(self._shape), self._d_bits, self._q_bits, batch, forward_only)
        cache = self._steps
        if key not in cache:
            cache[key] = numba_step(self._net(), Datapath.seed(self._d_bits, self._q_bits), batch, update=False,
                                    forward_only=forward_only)
        return cache[key]

    def _compiled_params(self, weights: Sequence[Any], biases: Sequence[Any]) -> list[LayerParams] | None:
        """The parameters as FixedArrays in the role format, or None. The seed's loop passes the
        same parameters to every infer and grad: when their values (compared in full, so an
        array changed in place is seen) and the format are those of the last call, its
        FixedArrays are reused."""
        arrays = [np.asarray(getval(v)) for w, b in zip(weights, biases) for v in (w, b)]
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
        fmt = self._role_format()
        cached = self._params_cache
        if (cached is not None and cached[0] is fmt and cached[1].dtype == flat.dtype
                and cached[1].shape == flat.shape and (cached[1] == flat).all()):
            return cached[2]
        shapes = [s for n_in, n_out in zip(self._shape[:-1], self._shape[1:]) for s in ((n_out, n_in), (n_out,))]
        values = self._role_arrays(arrays, shapes)
        if values is None:
            return None
        params = [LayerParams(values[2 * i], values[2 * i + 1]) for i in range(len(values) // 2)]
        self._params_cache = (fmt, flat, params)
        return params

    def _compiled_infer(self, x: Any, weights: Sequence[Any], biases: Sequence[Any]) -> list[np.ndarray] | None:
        """The activations [input, layer 1, ...] (raw, columns) on the numba kernel, or None."""
        batch = np.shape(getval(x))[1]
        step = self._compiled_step(batch, forward_only=True)
        if step is None:
            return None
        params = self._compiled_params(weights, biases)
        x_q = self._role_arrays([np.asarray(getval(x)).T], [(batch, self._shape[0])])
        if params is None or x_q is None:
            return None
        acts = step.activations(params, x_q[0])
        return [np.array(x_q[0].raw.T)] + [np.array(a.raw.T) for a in acts]

    def _compiled_grad(self, x: Any, truth: Any, weights: Sequence[Any], biases: Sequence[Any]):
        """[(weight_grad, bias_grad), ...] (FixedArrays) on the numba kernel, or None."""
        batch = np.shape(getval(x))[1]
        step = self._compiled_step(batch, forward_only=False)
        if step is None:
            return None
        params = self._compiled_params(weights, biases)
        data = self._role_arrays([np.asarray(getval(x)).T, np.asarray(getval(truth)).T],
                                 [(batch, self._shape[0]), (batch, self._shape[-1])])
        if params is None or data is None:
            return None
        return step.gradients(params, data[0], data[1])

    # -- helpers ----------------------------------------------------------------------------
    def _check_params(self, params: Any) -> tuple[Sequence[Any], Sequence[Any]]:
        """``params`` as the seed's ``[weights, biases]``, one (out, in) weight and one (out, 1) bias per layer."""
        layers = len(self._shape) - 1
        try:
            weights, biases = params
            shapes = [(np.shape(getval(w)), np.shape(getval(b))) for w, b in zip(weights, biases, strict=True)]
        except (TypeError, ValueError):
            raise ShapeError(f"infer(x, params): params must be [weights, biases], two lists of {layers} arrays "
                             f"(as [ref._weight, ref._bias]); got {type(params).__name__}") from None
        wanted = [((n_out, n_in), (n_out, 1)) for n_in, n_out in zip(self._shape[:-1], self._shape[1:])]
        if shapes != wanted:
            raise ShapeError(f"infer(x, params): weights and biases must have shapes {wanted}; got {shapes}")
        return weights, biases

    @staticmethod
    def _check_columns(values: Any, rows: int, name: str, call: str, columns: int | None = None) -> None:
        """The seed's convention, in both modes: samples are columns, so ``values`` is (rows, 1)
        (or (rows, batch)); a 1-D or transposed array is refused rather than broadcast."""
        shape = np.shape(getval(values))
        wanted = f"({rows}, {columns})" if columns is not None else f"({rows}, 1) (a column; or ({rows}, batch))"
        if len(shape) != 2 or shape[0] != rows or (columns is not None and shape[1] != columns) or shape[1] < 1:
            hint = f"; reshape it with {name}.reshape({rows}, -1)" if len(shape) == 1 and shape[0] % rows == 0 else ""
            raise ShapeError(f"{call}: {name} must have shape {wanted}, as in the seed's class; "
                             f"got shape {shape}{hint}")

    def _require_shape(self) -> None:
        if not self._shape:
            raise ConfigError("call net_shape([n_in, ..., n_out]) first")

    def _net(self) -> MLP:
        return MLP(self._shape, "relu", "relu", "sse", "uniform")

    def _fixed(self) -> FixedArithmetic:
        return FixedArithmetic(Datapath.seed(self._d_bits, self._q_bits))

    def _fixed_params(self, weights: Sequence[Any], biases: Sequence[Any]) -> list[LayerParams]:
        return [LayerParams(self._raw_fixed(w, "weight"), self._raw_fixed(b, "bias").reshape(-1))
                for w, b in zip(weights, biases)]

    def _raw_fixed(self, values: Any, name: str) -> FixedArray:
        """Integer-valued arrays in units of 2**-q as a FixedArray (wide enough to hold them)."""
        arr = np.asarray(getval(values))
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise RawTypeError(f"quantized mode needs {name} as integers in units of 2**-{self._q_bits} "
                                   "(e.g. np.round(w * 2**q)); got non-integer values")
            arr = np.array([int(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)
        fmt_bits = max([int(v).bit_length() for v in np.ravel(arr)] + [1]) + 1
        return FixedArray(arr, QFormat(fmt_bits, self._q_bits))

    def _raw(self, x: FixedArray) -> np.ndarray:
        """Raw integers in units of 2**-q (every role of the seed datapath has q fraction bits)."""
        if x.fmt.frac != self._q_bits:
            raise AssertionError(f"seed datapath value in {x.fmt}, expected {self._q_bits} fraction bits")
        return np.array(x.raw)
