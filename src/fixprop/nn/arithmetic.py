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

from fixprop.datapath import PRODUCT_ROLE_OF, Datapath, FixedConstant, RoleCast
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


#: Why a compiled step refuses a datapath that ``Datapath.needs_stepwise`` (NotCompilable): the
#: Model then runs it on the exact step-by-step path.
FIDELITY_IS_STEPWISE = ("product casts, register or tree accumulators and dynamic fractions run on the exact "
                        "step-by-step path (FixedArithmetic), not on a compiled engine")


class OneCastPerSum:
    """Sums as a datapath without product casts or register accumulators computes them: a
    matmul or batch sum is exact and cast once. The float arithmetic (casts are the identity)
    and the compiled steps' tracers (which refuse datapaths with such sums) use these;
    ``FixedArithmetic`` models them. Working copies are one cast each, here for every arithmetic."""

    def matmul_cast(self, x: Any, y: Any, role: str, layer: int | None = None) -> tuple[Any, Any]:
        """(the exact product ``x @ y``, its cast into ``role``)."""
        exact = x @ y
        return exact, self.cast(exact, role, layer)

    def sum_cast(self, x: Any, role: str, layer: int | None = None) -> Any:
        """``x`` summed over axis 0 (the batch), cast into ``role``."""
        return self.cast(x.sum(axis=0), role, layer)

    def working_copy(self, value: Any, role: str, layer: int | None = None) -> Any:
        """The copy of a parameter (role weight or bias) that forward and backward use: cast into
        weight_fwd / bias_fwd when the datapath has that role at ``layer``, else the state itself."""
        datapath = getattr(self, "datapath", None)
        working_role = f"{role}_fwd"
        if datapath is None or datapath.optional_cast(working_role, layer) is None:
            return value
        return self.cast(value, working_role, layer)


class FloatArithmetic(OneCastPerSum):
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


class FixedArithmetic(OneCastPerSum):
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

    def data(self, x: Any, role: str, layer: int | None = None, rng: Any = None) -> FixedArray:
        """Quantize real data (floats) into the role's format, or cast a FixedArray into it.
        ``rng``: where this quantization's STOCH words come from instead of the arithmetic's
        generator (words drawn ahead of time: ``Model.train_batches``)."""
        spec = self.datapath.cast_for(role, layer)
        if isinstance(x, FixedArray):
            if x.fmt == spec.fmt:  # already quantized into this role (Model.train_step did): no cast
                return x
            return self.cast(x, role, layer)
        exact = np.asarray(real_array(x, role), dtype=np.float64)
        rng = self.rng if rng is None else rng
        result = FixedArray.from_float(exact, spec.fmt, spec.rounding, spec.overflow, rng)
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

    # -- sums as hardware accumulates them (docs/datapath.md, "Products and accumulators") ----
    def matmul_cast(self, x: FixedArray, y: FixedArray, role: str, layer: int | None = None) -> tuple[Any, FixedArray]:
        """``x @ y`` ((M, K) @ (K, N)) cast into the sum role ``role``: each product
        ``x[m, k] * y[k, n]`` is exact, or cast into the role's product role when the datapath
        has one (``PRODUCT_ROLE_OF``); the K terms of each sum are added as ``role``'s
        ``accumulate`` mode says. Returns (the exact sum of the terms, or None when a register or
        tree accumulates them; the result in ``role``)."""
        product_role = PRODUCT_ROLE_OF[role]
        product_cast = self.datapath.optional_cast(product_role, layer)
        accumulate = self.datapath.cast_for(role, layer).accumulate
        if product_cast is None and accumulate == "exact":
            return super().matmul_cast(x, y, role, layer)
        terms = [x[:, k:k + 1] * y[k:k + 1, :] for k in range(x.shape[1])]  # exact products, (M, N) each
        if product_cast is not None:
            terms = [self.cast(t, product_role, layer) for t in terms]
        return self._accumulate(terms, role, layer, accumulate)

    def sum_cast(self, x: FixedArray, role: str, layer: int | None = None) -> FixedArray:
        """``x`` summed over axis 0 (the batch) into the sum role ``role``, as its ``accumulate``
        mode says (samples in order)."""
        accumulate = self.datapath.cast_for(role, layer).accumulate
        if accumulate == "exact":
            return super().sum_cast(x, role, layer)
        return self._accumulate([x[b] for b in range(x.shape[0])], role, layer, accumulate)[1]

    def _accumulate(self, terms: list[FixedArray], role: str, layer: int | None,
                    accumulate: str) -> tuple[FixedArray | None, FixedArray]:
        """The terms t_0..t_{K-1} (one array each, summed elementwise) into ``role``:
        exact: cast(t_0 + ... + t_{K-1}); sequential: r = cast(t_0), then r = cast(r + t_k) for
        k = 1..K-1 (a register that starts at 0); tree: levels of cast(t_2i + t_2i+1), an odd
        last term passed up as it is, the root cast when it is a single term (K = 1)."""
        if accumulate == "exact":
            exact = _pairwise(terms, lambda a, b: a + b)
            return exact, self.cast(exact, role, layer)
        if accumulate == "sequential":
            register = self.cast(terms[0], role, layer)
            for term in terms[1:]:
                register = self.cast(register + term, role, layer)
            return None, register
        if len(terms) == 1:
            return None, self.cast(terms[0], role, layer)
        return None, _pairwise(terms, lambda a, b: self.cast(a + b, role, layer))

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


def _pairwise(terms: list[FixedArray], combine: Callable[[FixedArray, FixedArray], FixedArray]) -> FixedArray:
    """A balanced binary tree over the terms: level by level, ``combine(t_2i, t_2i+1)``, an odd
    last term passed up unchanged. With exact addition the format grows by ceil(log2 K) bits,
    as a K-term adder tree's."""
    while len(terms) > 1:
        pairs = [combine(terms[i], terms[i + 1]) for i in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


@lru_cache(maxsize=64)
def _dyadic_format(frac: int) -> QFormat:
    return QFormat(frac + 1, frac, signed=False)


def _constant(const: FixedConstant) -> FixedArray:
    return FixedArray(np.asarray(const.raw, dtype=object), const.fmt)

