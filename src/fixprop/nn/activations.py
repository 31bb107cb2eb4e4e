"""Activation functions: forward, derivative, and the same function for autodiff references.

Each is written once against the arithmetic interface (``nn/arithmetic.py``): the forward pass
is exact in fixed point (ReLU keeps the format; a leaky slope is a shift), and derivatives are
small dyadic constants (0, 2**-k, 1/2, 1) so ``delta * f'(z)`` is an exact product before the
cast into the ``bias_grad`` role.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fixprop.errors import ConfigError

#: Default leaky-ReLU slope exponent: slope 2**-7 (0.0078), the power of two nearest PyTorch's 0.01.
DEFAULT_LEAKY_SHIFT = 7


@dataclass(frozen=True)
class Activation:
    """Base: ``forward(ar, z)``, ``derivative(ar, z)``, ``reference(xp, z, relu_grad_at_zero)``."""

    name: str

    def forward(self, ar: Any, z: Any) -> Any:
        raise NotImplementedError

    def derivative(self, ar: Any, z: Any, a: Any = None) -> Any:
        """f'(z) in the arithmetic ``ar``; ``a`` is the layer's activation after its cast (the
        form that computes the derivative from the output uses it)."""
        raise NotImplementedError

    def reference(self, xp: Any, z: Any, relu_grad_at_zero: float) -> Any:
        """The same function in an autodiff library (``xp`` = autograd.numpy, jax.numpy or torch),
        written so that the library's derivative equals :meth:`derivative` everywhere, at 0 too."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ReLU(Activation):
    """max(z, 0); derivative 1 above 0, 0 below, and the datapath's choice (0, 1/2, 1) at 0."""

    name: str = "relu"

    def forward(self, ar, z):
        return ar.maximum(z, 0)

    def derivative(self, ar, z, a=None):
        c = ar.relu_grad_at_zero
        return ar.dyadic(np.where(z > 0, 1.0, np.where(z == 0, c, 0.0)), 1)

    def reference(self, xp, z, relu_grad_at_zero):
        # where() passes the gradient to the branch it takes: strict > gives 0 at 0, >= gives 1;
        # the blend gives c at 0 and the same value everywhere (both terms equal max(z, 0)).
        c = relu_grad_at_zero
        strict = xp.where(z > 0, z, z * 0.0)
        if c == 0:
            return strict
        closed = xp.where(z >= 0, z, z * 0.0)
        return closed if c == 1 else strict * (1 - c) + closed * c


@dataclass(frozen=True)
class LeakyReLU(Activation):
    """z above 0, z * 2**-shift at or below 0 (an exact shift in hardware); derivative 1 or 2**-shift."""

    name: str = "leaky_relu"
    shift: int = DEFAULT_LEAKY_SHIFT

    def forward(self, ar, z):
        return ar.where(z > 0, z, ar.pow2(z, -self.shift))

    def derivative(self, ar, z, a=None):
        return ar.dyadic(np.where(z > 0, 1.0, 2.0**-self.shift), self.shift)

    def reference(self, xp, z, relu_grad_at_zero):
        return xp.where(z > 0, z, z * 2.0**-self.shift)

    def __str__(self) -> str:
        return f"leaky_relu:{self.shift}"


@dataclass(frozen=True)
class Linear(Activation):
    """The identity; derivative 1."""

    name: str = "linear"

    def forward(self, ar, z):
        return z

    def derivative(self, ar, z, a=None):
        return ar.dyadic(np.ones(np.shape(z)), 0)

    def reference(self, xp, z, relu_grad_at_zero):
        return z


@dataclass(frozen=True)
class HardTanh(Activation):
    """clip(z, -1, 1); derivative 1 strictly inside (-1, 1), 0 at and beyond +-1 (as autograd's clip)."""

    name: str = "hard_tanh"

    def forward(self, ar, z):
        return ar.minimum(ar.maximum(z, -1), 1)

    def derivative(self, ar, z, a=None):
        return ar.dyadic(np.where((z > -1) & (z < 1), 1.0, 0.0), 0)

    def reference(self, xp, z, relu_grad_at_zero):
        inside = (z > -1) & (z < 1)
        return xp.where(inside, z, xp.where(z >= 1, z * 0.0 + 1.0, z * 0.0 - 1.0))


@dataclass(frozen=True)
class Segment:
    """One piece of a piecewise-linear activation: where ``z > start`` (``z >= start`` when
    ``closed``; the first piece has no start), ``f(z) = z * 2**-shift + offset``, or the constant
    ``offset`` when ``shift`` is None. ``start`` and ``offset`` are dyadic (exact in fixed point)."""

    start: Fraction | None
    closed: bool
    shift: int | None
    offset: Fraction
    derivative: Fraction | None = None  # a table's derivative (a lut); None: the slope


def _piece(start, closed, shift, offset, derivative=None) -> Segment:
    return Segment(None if start is None else Fraction(start), closed, shift, Fraction(offset),
                   None if derivative is None else Fraction(derivative))


def _slope(piece: Segment) -> Fraction:
    """The derivative on a piece: the table's, else the slope 2**-shift (0 for a constant)."""
    if piece.derivative is not None:
        return piece.derivative
    return Fraction(0) if piece.shift is None else Fraction(1, 2**piece.shift)


def _stop_gradient(xp: Any, z: Any) -> Any:
    """``z`` as a constant for the autodiff library ``xp`` (autograd.numpy, jax.numpy or torch)."""
    name = getattr(xp, "__name__", "")
    if name.startswith("torch"):
        return z.detach()
    if name.startswith("jax"):
        import jax

        return jax.lax.stop_gradient(z)
    if name.startswith("autograd"):
        from autograd.tracer import getval

        return getval(z)
    return z


@dataclass(frozen=True)
class PiecewiseLinear(Activation):
    """A piecewise-linear activation with power-of-two slopes, as hardware builds it: shifts,
    adds of dyadic constants and comparators, all exact. The pieces are listed from the lowest
    ``z`` up; a higher piece replaces a lower one where its condition holds. The derivative is
    the slope of the piece ``z`` falls in (at a breakpoint, the piece that owns it), the
    derivative autodiff gives of the same function."""

    pieces: tuple[Segment, ...] = ()

    def _condition(self, ar, z, piece: Segment):
        # z > p / 2**q as the integer comparison z * 2**q > p: exact in every arithmetic
        scaled = ar.pow2(z, _frac_bits(piece.start)) if piece.start.denominator > 1 else z
        bound = int(piece.start * piece.start.denominator)
        return scaled >= bound if piece.closed else scaled > bound

    @staticmethod
    def _constant(ar, value: Fraction, shape):
        """The dyadic ``value`` as an array of ``shape`` in the arithmetic."""
        frac = _frac_bits(value)
        magnitude = ar.dyadic(np.full(shape, float(abs(value))), frac)
        return magnitude if value >= 0 else ar.dyadic(np.zeros(shape), 0) - magnitude

    def _line(self, ar, z, piece: Segment):
        shape = np.shape(z)
        if piece.shift is None:
            return self._constant(ar, piece.offset, shape)
        slope = ar.pow2(z, -piece.shift) if piece.shift else z
        if piece.offset == 0:
            return slope
        frac = _frac_bits(piece.offset)
        magnitude = ar.dyadic(np.full(shape, float(abs(piece.offset))), frac)
        return slope + magnitude if piece.offset > 0 else slope - magnitude

    def forward(self, ar, z):
        value = self._line(ar, z, self.pieces[0])
        for piece in self.pieces[1:]:
            value = ar.where(self._condition(ar, z, piece), self._line(ar, z, piece), value)
        return value

    def derivative(self, ar, z, a=None):
        frac = max(_frac_bits(_slope(piece)) for piece in self.pieces)
        slopes = float(_slope(self.pieces[0]))
        for piece in self.pieces[1:]:
            slopes = np.where(self._condition(ar, z, piece), float(_slope(piece)), slopes)
        return ar.dyadic(slopes, frac)

    def reference(self, xp, z, relu_grad_at_zero):
        def line(piece: Segment):
            if piece.shift is None:
                value = z * 0.0 + float(piece.offset)
            else:
                value = z * 2.0 ** -piece.shift + float(piece.offset)
            if piece.derivative is not None:  # a table's derivative: autodiff sees d * (z - const z)
                value = value + (z - _stop_gradient(xp, z)) * float(piece.derivative)
            return value

        value = line(self.pieces[0])
        for piece in self.pieces[1:]:
            start = float(piece.start)
            value = xp.where(z >= start if piece.closed else z > start, line(piece), value)
        return value


def _frac_bits(value: Fraction) -> int:
    """The fraction bits of a dyadic number (its denominator is 2**bits)."""
    bits = value.denominator.bit_length() - 1
    if value.denominator != 1 << bits:
        raise ConfigError(f"{value} is not dyadic (k / 2**n): hardware constants must be")
    return bits


#: hard_sigmoid: clip(z / 4 + 1/2, 0, 1), slope 2**-2 on (-2, 2).
HARD_SIGMOID = (_piece(None, False, None, 0), _piece(-2, False, 2, "1/2"), _piece(2, True, None, 1))
#: pwl_sigmoid: PLAN (Amin, Curtis and Hayes-Gill, 1997): for |z| < 1, z/4 + 1/2; for
#: 1 <= |z| < 2.375, |z|/8 + 5/8; for 2.375 <= |z| < 5, |z|/32 + 27/32; 1 beyond; f(-z) = 1 - f(z).
PWL_SIGMOID = (_piece(None, False, None, 0), _piece(-5, False, 5, "5/32"), _piece("-19/8", False, 3, "3/8"),
               _piece(-1, False, 2, "1/2"), _piece(1, True, 3, "5/8"), _piece("19/8", True, 5, "27/32"),
               _piece(5, True, None, 1))
#: pwl_tanh: tanh(z) = 2 sigmoid(2z) - 1 with PLAN: z for |z| < 1/2, |z|/2 + 1/4 to 19/16,
#: |z|/8 + 11/16 to 5/2, 1 beyond; odd.
PWL_TANH = (_piece(None, False, None, -1), _piece("-5/2", False, 3, "-11/16"), _piece("-19/16", False, 1, "-1/4"),
            _piece("-1/2", False, 0, 0), _piece("1/2", True, 1, "1/4"), _piece("19/16", True, 3, "11/16"),
            _piece("5/2", True, None, 1))


#: The keys of a lookup-table activation's TOML file (docs/datapath.md, "Lookup tables").
LUT_KEYS = ("name", "z_min", "step", "index_bits", "values", "derivatives")
#: At most this many index bits (a table of 2**12 entries).
LUT_MAX_INDEX_BITS = 12


def load_lut(path: str | Path) -> PiecewiseLinear:
    """A lookup-table activation from a TOML file: ``2**index_bits`` entries, entry ``k`` for
    ``z_min + k * step <= z < z_min + (k + 1) * step`` (``step`` a power of two, so ``k`` is the
    top bits of ``z - z_min``), entry 0 below the table and the last entry above it (saturation);
    ``values[k]`` (in [-1, 1]) is f(z) and ``derivatives[k]`` (in [0, 1]) is f'(z) there. Every
    number must be dyadic with at most 32 fraction bits (exact in fixed point)."""
    from fixprop.datapath import decode_toml_bytes, tomllib

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read lookup table {path}: {error.strerror}") from None
    try:
        doc = tomllib.loads(decode_toml_bytes(data, str(path)))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    unknown = sorted(set(doc) - set(LUT_KEYS))
    missing = [key for key in LUT_KEYS if key not in doc and key != "name"]
    if unknown or missing:
        raise ConfigError(f"{path}: " + (f"unknown key(s) {unknown}; " if unknown else "")
                          + (f"missing key(s) {missing}; " if missing else "") + f"keys are: {', '.join(LUT_KEYS)}")
    bits = doc["index_bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= LUT_MAX_INDEX_BITS:
        raise ConfigError(f"{path}: index_bits must be an integer in 1..{LUT_MAX_INDEX_BITS}; got {bits!r}")

    def dyadic(value: Any, key: str, lo: float | None = None, hi: float | None = None) -> Fraction:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ConfigError(f"{path}: {key} must be a finite number; got {value!r}")
        exact = Fraction(value)
        if exact.denominator > 2**32:
            raise ConfigError(f"{path}: {key} = {value!r} needs more than 32 fraction bits; "
                              "round it to a multiple of 2**-32 (hardware constants are dyadic)")
        if (lo is not None and exact < lo) or (hi is not None and exact > hi):
            raise ConfigError(f"{path}: {key} = {value!r} must be in [{lo}, {hi}]")
        return exact

    z_min = dyadic(doc["z_min"], "z_min")
    step = dyadic(doc["step"], "step")
    if step <= 0 or (step.numerator & (step.numerator - 1)) or (step.denominator & (step.denominator - 1)):
        raise ConfigError(f"{path}: step must be a power of two (2**n), so that the index is the top bits "
                          f"of z - z_min; got {doc['step']!r}")
    if z_min % step:
        raise ConfigError(f"{path}: z_min must be a multiple of step; got z_min = {doc['z_min']!r}, step = {doc['step']!r}")
    entries = 1 << bits
    tables = {}
    for key, lo, hi in (("values", -1, 1), ("derivatives", 0, 1)):
        table = doc[key]
        if not isinstance(table, list) or len(table) != entries:
            raise ConfigError(f"{path}: {key} must be a list of 2**index_bits = {entries} numbers; "
                              f"got {len(table) if isinstance(table, list) else type(table).__name__}")
        tables[key] = [dyadic(v, f"{key}[{k}]", lo, hi) for k, v in enumerate(table)]
    pieces = tuple(Segment(None if k == 0 else z_min + k * step, True, None, tables["values"][k],
                           tables["derivatives"][k]) for k in range(entries))
    return PiecewiseLinear(f"lut:{path}", pieces)


def lut_toml(z_min: float, step: float, values: Sequence[float], derivatives: Sequence[float], name: str = "") -> str:
    """The TOML text of a lookup-table activation (``load_lut`` reads it); ``len(values)`` must be
    a power of two."""
    bits = len(values).bit_length() - 1
    if len(values) < 2 or len(values) != 1 << bits or len(derivatives) != len(values):
        raise ConfigError(f"a lookup table needs 2**k >= 2 values and as many derivatives; got {len(values)} "
                          f"and {len(derivatives)}")
    lines = [f'name = "{name}"'] if name else []
    lines += [f"z_min = {float(z_min)!r}", f"step = {float(step)!r}", f"index_bits = {bits}",
              "values = [" + ", ".join(repr(float(v)) for v in values) + "]",
              "derivatives = [" + ", ".join(repr(float(v)) for v in derivatives) + "]"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FromOutput(Activation):
    """A sigmoid-like activation whose derivative hardware computes from the stored activation
    ``a`` (after its cast), not from ``z``: ``a (1 - a)`` for sigmoids, ``1 - a**2`` for tanh;
    exact products. The forward pass is the base activation's. Autodiff references get the same
    derivative through a stop-gradient (the function's value is the base's)."""

    base: Activation = None  # type: ignore[assignment]
    tanh: bool = False

    def forward(self, ar, z):
        return self.base.forward(ar, z)

    def derivative(self, ar, z, a=None):
        if a is None:
            raise ValueError(f"{self.name}: the derivative is computed from the activation a; pass it")
        one = ar.dyadic(np.ones(np.shape(a)), 0)
        return one - a * a if self.tanh else a * (one - a)

    def reference(self, xp, z, relu_grad_at_zero):
        value = self.base.reference(xp, z, relu_grad_at_zero)
        a = _stop_gradient(xp, value)
        slope = 1.0 - a * a if self.tanh else a * (1.0 - a)
        return a + (z - _stop_gradient(xp, z)) * slope


#: The activations whose derivative can come from the output: name -> its tanh form.
FROM_OUTPUT = {"hard_sigmoid": False, "pwl_sigmoid": False, "pwl_tanh": True}

ACTIVATION_NAMES = ("relu", "leaky_relu", "leaky_relu:<k>", "linear", "hard_tanh", "hard_sigmoid", "pwl_sigmoid",
                    "pwl_tanh", "<hard_sigmoid|pwl_sigmoid|pwl_tanh>:output", "lut:<file.toml>")


def get_activation(spec: "str | Activation") -> Activation:
    """Parse an activation name (ACTIVATION_NAMES): relu, leaky_relu (slope 2**-7), leaky_relu:<k> (slope
    2**-k), linear, hard_tanh, hard_sigmoid, pwl_sigmoid, pwl_tanh, those three with :output (the
    derivative from the activation), lut:<file.toml>."""
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"activation must be a name; got {spec!r}; allowed: {', '.join(ACTIVATION_NAMES)}")
    name = spec.strip().lower().replace("-", "_")
    if name == "relu":
        return ReLU()
    if name in ("linear", "identity"):
        return Linear()
    if name in ("hard_tanh", "hardtanh"):
        return HardTanh()
    if name in ("hard_sigmoid", "hardsigmoid"):
        return PiecewiseLinear("hard_sigmoid", HARD_SIGMOID)
    if name == "pwl_sigmoid":
        return PiecewiseLinear("pwl_sigmoid", PWL_SIGMOID)
    if name == "pwl_tanh":
        return PiecewiseLinear("pwl_tanh", PWL_TANH)
    if spec.strip().startswith("lut:"):
        return load_lut(spec.strip()[4:])
    base, _, form = name.partition(":")
    if form == "output" and base in FROM_OUTPUT:
        return FromOutput(f"{base}:output", get_activation(base), FROM_OUTPUT[base])
    if name.startswith("leaky_relu"):
        _, _, k = name.partition(":")
        if not k:
            return LeakyReLU()
        if k.isdigit() and int(k) >= 1:
            return LeakyReLU(shift=int(k))
        raise ConfigError(f"leaky_relu slope must be leaky_relu:<k> with k >= 1 (slope 2**-k); got {spec!r}")
    raise ConfigError(f"unknown activation {spec!r}; allowed: {', '.join(ACTIVATION_NAMES)}")
