"""The two arithmetics one network definition runs on.

``FloatArithmetic`` computes in float64 and every cast is the identity; ``FixedArithmetic``
computes exactly on :class:`~fixprop.FixedArray` and casts into the datapath's role formats.
The network (``mlp.py``) only calls the methods below, so there is one network and no
``if quant:`` branch anywhere.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import numpy as np

from fixprop.datapath import Datapath, FixedConstant, RoleCast
from fixprop.errors import ConfigError, NonFiniteError, RawTypeError, ShapeError
from fixprop.fixed.array import FixedArray, maximum, minimum, where
from fixprop.fixed.format import QFormat, bits_for

#: Significant bits of the fixed-point constant 1/N that the "mse" loss multiplies by.
MEAN_SCALE_BITS = 24


#: How data errors name the argument of a role (the network's x and y; parameters by role).
_ARGUMENT_OF_ROLE = {"input": "x (input)", "target": "y (target)"}


def real_array(x: Any, role: str) -> np.ndarray:
    """``x`` as a numpy array of real numbers (float or int), or a typed error naming the argument:
    booleans, complex numbers, strings and ragged nested lists are refused, never reinterpreted."""
    name = _ARGUMENT_OF_ROLE.get(role, role)
    try:
        arr = np.asarray(x)
    except ValueError:
        raise ShapeError(f"{name} is a ragged nested sequence (rows of different lengths); "
                         "give a rectangular array") from None
    kind = arr.dtype.kind
    if kind == "O":
        reals = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                    for v in arr.flat)
        kind = "f" if reals else "O"
    if kind == "b":
        raise RawTypeError(f"{name} must hold real numbers; got booleans (convert them explicitly, "
                           "e.g. x.astype(float))")
    if kind not in "iuf":
        raise RawTypeError(f"{name} must hold real numbers (float or int); got dtype {arr.dtype}"
                           + (" (complex values are not reinterpreted as their real part)" if kind == "c" else ""))
    return arr


class FloatArithmetic:
    """float64 numpy arithmetic; casts are the identity (the float reference of a datapath)."""

    name = "float"

    def __init__(self, relu_grad_at_zero: float = 0.5, learning_rate: float = 2.0**-7, momentum: float = 0.0):
        self.relu_grad_at_zero = relu_grad_at_zero
        self.learning_rate = learning_rate
        self.momentum = momentum

    @classmethod
    def matching(cls, datapath: Datapath) -> "FloatArithmetic":
        """Float arithmetic with a datapath's relu'(0), learning rate and momentum (as quantized)."""
        return cls(datapath.relu_grad_at_zero, datapath.learning_rate, datapath.momentum_coefficient)

    def data(self, x: Any, role: str, layer: int | None = None) -> np.ndarray:
        """Real-valued data (input, target, initial parameters) as float64."""
        arr = np.array(x.to_float() if isinstance(x, FixedArray) else real_array(x, role), dtype=np.float64)
        if not np.isfinite(arr).all():
            raise NonFiniteError(f"{role} data contains NaN or infinity")
        return arr

    def cast(self, x: np.ndarray, role: str, layer: int | None = None) -> np.ndarray:
        return x

    def dyadic(self, values: np.ndarray, frac: int) -> np.ndarray:
        """Exact small constants k * 2**-frac (derivative values) in this arithmetic."""
        return np.asarray(values, dtype=np.float64)

    def pow2(self, x: np.ndarray, n: int) -> np.ndarray:
        """x * 2**n."""
        return x * 2.0**n

    def times_lr(self, x: np.ndarray) -> np.ndarray:
        return x * self.learning_rate

    def times_momentum(self, x: np.ndarray) -> np.ndarray:
        return x * self.momentum

    def mean_scale(self, n: int) -> float:
        """The factor 1/n of a mean."""
        return 1.0 / n

    def zeros_like(self, x: np.ndarray, role: str, layer: int | None = None) -> np.ndarray:
        return np.zeros_like(x)

    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    where = staticmethod(np.where)

    @staticmethod
    def to_float(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


class FixedArithmetic:
    """Exact fixed-point arithmetic; ``cast(x, role)`` is the datapath's cast for that role.

    Args:
        datapath: the per-role casts and settings.
        rng: the generator that ``STOCH`` casts draw from (required when any role uses STOCH).
        observer: called as ``observer(role, layer, exact, result, cast)`` after every cast, with
            the exact value before it (a FixedArray, or float64 data), the cast result and the
            RoleCast applied; range statistics (``fixprop.explore.ranges``) use it. ``layer`` is
            None for input/target.
    """

    name = "fixed"

    def __init__(self, datapath: Datapath, rng: np.random.Generator | None = None,
                 observer: Callable[[str, int | None, Any, FixedArray, RoleCast], None] | None = None):
        if not isinstance(datapath, Datapath):
            raise ConfigError("a fixed-point arithmetic needs a Datapath (e.g. Datapath.uniform(16, 8) or "
                              f"Datapath.load('my.toml')); got {datapath!r}")
        self.datapath = datapath
        self.rng = rng
        self.relu_grad_at_zero = datapath.relu_grad_at_zero
        self.observer = observer

    def data(self, x: Any, role: str, layer: int | None = None) -> FixedArray:
        """Quantize real data (floats) into the role's format, or cast a FixedArray into it."""
        spec = self.datapath.cast_for(role, layer)
        if isinstance(x, FixedArray):
            if x.fmt == spec.fmt:  # already quantized into this role (Model.train_step did): no cast
                return x
            return self.cast(x, role, layer)
        exact = np.asarray(real_array(x, role), dtype=np.float64)
        result = FixedArray.from_float(exact, spec.fmt, spec.rounding, spec.overflow, self.rng)
        if self.observer is not None:
            self.observer(role, layer, exact, result, spec)
        return result

    def cast(self, x: FixedArray, role: str, layer: int | None = None) -> FixedArray:
        """Cast ``x`` into ``role``: the datapath's format, rounding and overflow for it
        (at ``layer``: the datapath's override for that layer when it has one)."""
        spec = self.datapath.cast_for(role, layer)
        result = x.cast(spec.target_format(x.fmt), spec.rounding, spec.overflow, self.rng)
        if self.observer is not None:
            self.observer(role, layer, x, result, spec)
        return result

    def dyadic(self, values: np.ndarray, frac: int) -> FixedArray:
        """Exact constants in [0, 1] that are multiples of 2**-frac, in format u(frac+1).frac."""
        raw = np.ldexp(np.asarray(values, dtype=np.float64), frac).astype(np.int64)
        return FixedArray._trusted(raw, _dyadic_format(frac))  # values in [0, 1]: in range

    def pow2(self, x: FixedArray, n: int) -> FixedArray:
        """x * 2**n, exact (only the format changes)."""
        return x << n

    def times_lr(self, x: FixedArray) -> FixedArray:
        """learning rate x value, exact: a right shift, or a product with the lr constant."""
        if self.datapath.lr_shift is not None:
            return x >> self.datapath.lr_shift
        return x * _constant(self.datapath.lr)

    def times_momentum(self, x: FixedArray) -> FixedArray:
        return x * _constant(self.datapath.momentum)

    def mean_scale(self, n: int) -> FixedArray:
        """1/n as the constant round(2**f / n) * 2**-f with f = MEAN_SCALE_BITS + ceil(log2 n): about
        24 significant bits, exact when n is a power of two (2**f / n is never a tie otherwise)."""
        frac = MEAN_SCALE_BITS + bits_for(n)
        raw = ((1 << (frac + 1)) + n) // (2 * n)  # floor(2**f / n + 1/2), in integers
        return FixedArray(np.asarray(raw, dtype=object), QFormat(MEAN_SCALE_BITS + 1, frac, signed=False))

    def zeros_like(self, x: FixedArray, role: str, layer: int | None = None) -> FixedArray:
        return FixedArray.zeros(x.shape, self.datapath.cast_for(role, layer).fmt)

    maximum = staticmethod(maximum)
    minimum = staticmethod(minimum)
    where = staticmethod(where)

    @staticmethod
    def to_float(x: FixedArray) -> np.ndarray:
        return x.to_float()


@lru_cache(maxsize=64)
def _dyadic_format(frac: int) -> QFormat:
    return QFormat(frac + 1, frac, signed=False)


def _constant(const: FixedConstant) -> FixedArray:
    return FixedArray(np.asarray(const.raw, dtype=object), const.fmt)

