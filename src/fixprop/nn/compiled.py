"""The network compiled to straight-line numpy code, for speed at small sizes.

``compile_step(net, datapath, batch)`` runs the network's own forward and backward code
(``mlp.py``, unchanged) once on symbolic values that carry a format and a shape. Every operation
they perform is written down as one line of Python on raw integers, with every format decision
(alignment shifts, bit growth, which casts can overflow, which storage is exact) taken at
compile time. The lines become one function; calling it runs the same integer arithmetic as
``FixedArithmetic`` with no per-operation bookkeeping. ``CompiledStep.source`` shows the code:
the datapath as straight-line code.

Storage: a value whose format has at most 52 bits is held as float64 holding its integer raw
value: every product, sum and shift of such values that the formats bound below 2**53 is exact
in float64, and the casts use ``quantize.round_float`` (exact below 2**51). Wider values are int64
(up to 62 bits); anything wider is not compiled (``NotCompilable``: use FixedArithmetic).
Every rounding still happens in ``fixed/quantize.py``: the generated code calls it.
With ``datapath=None`` the same tracing compiles the float64 reference path (casts vanish).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ModeError, NotCompilable, NotInRoleFormat
from fixprop.fixed import quantize as q
from fixprop.fixed.array import FixedArray, constant_raw
from fixprop.fixed.blas import FLOAT64_EXACT_LIMIT, exact_matmul, max_abs
from fixprop.fixed.format import (
    QFormat,
    add_format,
    matmul_format,
    mul_format,
    sub_format,
    sum_format,
    union_format,
)
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.nn.arithmetic import FIDELITY_IS_STEPWISE, OneCastPerSum
from fixprop.nn.mlp import MLP, LayerGrads, LayerParams

#: Formats up to this many bits are held as exact integers in float64.
FLOAT_STORAGE_BITS = 52
#: Formats up to this many bits are held in int64 (room for the rounding bias).
INT_STORAGE_BITS = 62


def _kind(fmt: QFormat | None) -> str:
    """Storage of a value: 'f' float64 (exact integers or a float path), 'i' int64."""
    if fmt is None or fmt.word <= FLOAT_STORAGE_BITS:
        return "f"
    if fmt.word <= INT_STORAGE_BITS:
        return "i"
    raise NotCompilable(f"a value of format {fmt} needs more than {INT_STORAGE_BITS} bits; "
                        "run this datapath with FixedArithmetic (exact at any width)")


def _exact_float_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact product of float64 arrays holding integers (< 2**53), as int64: one BLAS call when
    the data bound every partial sum by 2**53, else BLAS blocks or limbs (``fixed/blas.py``)."""
    a_max, b_max = max_abs(a), max_abs(b)
    if a_max * b_max * a.shape[-1] <= FLOAT64_EXACT_LIMIT:
        return np.matmul(a, b).astype(np.int64)
    return exact_matmul(a, b, a_max, b_max, a, b)  # float64 operands: int64 made only for limbs


class _Code:
    """The program being written: lines, constants, the next variable number."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # variable -> array shape (for in-place reuse)
        self.constants: dict[str, Any] = {"np": np, "q": q, "Rounding": Rounding, "Overflow": Overflow,
                                          "exact_float_matmul": _exact_float_matmul, "exact_matmul": exact_matmul}
        self.count = 0

    def emit(self, expression: str) -> str:
        name = f"v{self.count}"
        self.count += 1
        self.lines.append(f"    {name} = {expression}")
        return name

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name


class Sym:
    """A symbolic value while tracing: a variable of the generated code, its format, its shape."""

    __array_ufunc__ = None

    def __init__(self, code: _Code, var: str, fmt: QFormat | None, shape: tuple[int, ...], kind: str,
                 literal: int | float | None = None) -> None:
        self.code, self.var, self.fmt, self.shape, self.kind = code, var, fmt, shape, kind
        self.literal = literal  # a scalar constant's value, folded into the code
        code.shapes.setdefault(var, tuple(shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _new(self, expression: str, fmt: QFormat | None, shape: tuple[int, ...], kind: str) -> "Sym":
        return Sym(self.code, self.code.emit(expression), fmt, shape, kind)

    # -- storage and alignment ---------------------------------------------------------------
    def stored_as(self, kind: str) -> str:
        """This value's variable converted to storage ``kind`` (a new line when it changes)."""
        if self.literal is not None:
            return repr(float(self.literal)) if kind == "f" else repr(int(self.literal))
        if kind == self.kind:
            return self.var
        dtype = "np.float64" if kind == "f" else "np.int64"
        return self.code.emit(f"{self.var}.astype({dtype})")

    def aligned(self, fmt: QFormat | None, kind: str) -> str:
        """An expression of this value's raw rescaled to ``fmt.frac`` in storage ``kind``."""
        shift = 0 if fmt is None else fmt.frac - self.fmt.frac
        if self.literal is not None:  # fold: the raw of the constant at the new fraction
            value = self.literal * 2**shift
            return repr(float(value)) if kind == "f" else repr(int(value))
        var = self.stored_as(kind)
        if shift == 0:
            return var
        return f"({var} * {float(2 ** shift)!r})" if kind == "f" else f"({var} << {shift})"

    # -- arithmetic ---------------------------------------------------------------------------
    def _binary(self, other: Any, symbol: str, rule: Callable | None) -> "Sym":
        other = _as_sym(self.code, other, self.fmt)
        fmt = None if self.fmt is None else rule(self.fmt, other.fmt)
        kind = _kind(fmt)
        shape = np.broadcast_shapes(self.shape, other.shape)
        return self._new(f"{self.aligned(fmt, kind)} {symbol} {other.aligned(fmt, kind)}", fmt, shape, kind)

    def __add__(self, other: Any) -> "Sym":
        return self._binary(other, "+", add_format)

    def __sub__(self, other: Any) -> "Sym":
        return self._binary(other, "-", sub_format)

    def __mul__(self, other: Any) -> "Sym":
        other = _as_sym(self.code, other, self.fmt)
        fmt = None if self.fmt is None else mul_format(self.fmt, other.fmt)
        kind = _kind(fmt)
        shape = np.broadcast_shapes(self.shape, other.shape)
        return self._new(f"{self.stored_as(kind)} * {other.stored_as(kind)}", fmt, shape, kind)

    __rmul__ = __mul__

    def __matmul__(self, other: "Sym") -> "Sym":
        k = self.shape[-1]
        shape = self.shape[:-1] + other.shape[1:]
        if self.fmt is None:
            return self._new(f"{self.var} @ {other.var}", None, shape, "f")
        fmt = matmul_format(self.fmt, other.fmt, k)
        if fmt.word <= FLOAT_STORAGE_BITS + 1 and self.kind == other.kind == "f":  # formats prove it exact
            product = self._new(f"{self.var} @ {other.var}", fmt, shape, "f")
            return product if fmt.word <= FLOAT_STORAGE_BITS else product._recast("i")
        kind = _kind(fmt)  # at most 62 bits: exact_matmul returns int64
        if self.kind == other.kind == "f":
            return self._new(f"exact_float_matmul({self.var}, {other.var})", fmt, shape, "i")._recast(kind)
        return self._new(f"exact_matmul({self.stored_as('i')}, {other.stored_as('i')})", fmt, shape, "i")._recast(kind)

    def _recast(self, kind: str) -> "Sym":
        """The same value in storage ``kind``."""
        return self if kind == self.kind else Sym(self.code, self.stored_as(kind), self.fmt, self.shape, kind)

    def _recast_to(self, dst: QFormat) -> "Sym":
        """The same values in a format that holds them all (same fraction): only storage may change."""
        return Sym(self.code, self.stored_as(_kind(dst)), dst, self.shape, _kind(dst))

    def sum(self, axis: int = 0) -> "Sym":
        n = self.shape[axis]
        shape = self.shape[:axis] + self.shape[axis + 1:]
        fmt = None if self.fmt is None else sum_format(self.fmt, n)
        kind = _kind(fmt)
        return self._new(f"{self.stored_as(kind)}.sum(axis={axis})", fmt, shape, kind)

    @property
    def T(self) -> "Sym":
        return self._new(f"{self.var}.T", self.fmt, self.shape[::-1], self.kind)

    def reshape(self, *shape: int) -> "Sym":
        new_shape = np.empty(self.shape, dtype=np.int8).reshape(*shape).shape
        return self._new(f"{self.var}.reshape({new_shape!r})", self.fmt, new_shape, self.kind)

    def __lshift__(self, n: int) -> "Sym":
        fmt = QFormat(self.fmt.word, self.fmt.frac - n, self.fmt.signed)
        return Sym(self.code, self.var, fmt, self.shape, self.kind)

    def __rshift__(self, n: int) -> "Sym":
        return self.__lshift__(-n)

    # -- comparisons (exact, by value) ----------------------------------------------------------
    def _compare(self, other: Any, symbol: str) -> "SymBool":
        other = _as_sym(self.code, other, self.fmt)
        fmt = None if self.fmt is None else union_format(self.fmt, other.fmt)
        kind = "f" if fmt is None or fmt.word <= FLOAT_STORAGE_BITS else "i"
        expr = f"{self.aligned(fmt, kind)} {symbol} {other.aligned(fmt, kind)}"
        return SymBool(self.code, self.code.emit(expr), np.broadcast_shapes(self.shape, other.shape))

    def __gt__(self, other: Any) -> "SymBool":
        return self._compare(other, ">")

    def __lt__(self, other: Any) -> "SymBool":
        return self._compare(other, "<")

    def __ge__(self, other: Any) -> "SymBool":
        return self._compare(other, ">=")

    def __le__(self, other: Any) -> "SymBool":
        return self._compare(other, "<=")

    def __eq__(self, other: Any) -> "SymBool":  # type: ignore[override]
        return self._compare(other, "==")

    __hash__ = None  # type: ignore[assignment]


class SymBool:
    """A traced boolean array (a comparison result); ``np.where`` on it is traced too."""

    def __init__(self, code: _Code, var: str, shape: tuple[int, ...]) -> None:
        self.code, self.var, self.shape = code, var, shape

    def __and__(self, other: "SymBool") -> "SymBool":
        return SymBool(self.code, self.code.emit(f"{self.var} & {other.var}"), self.shape)

    def __or__(self, other: "SymBool") -> "SymBool":
        return SymBool(self.code, self.code.emit(f"{self.var} | {other.var}"), self.shape)

    def __array_function__(self, func, types, args, kwargs):
        if func is np.where and len(args) == 3 and not kwargs:
            return _traced_where(self.code, *args)
        return NotImplemented


class SymNumbers:
    """Traced plain numbers (derivative values before ``ar.dyadic``)."""

    def __init__(self, code: _Code, var: str, shape: tuple[int, ...]) -> None:
        self.code, self.var, self.shape = code, var, shape

    def __array_function__(self, func, types, args, kwargs):
        if func is np.where and len(args) == 3 and not kwargs:
            return _traced_where(self.code, *args)
        return NotImplemented


def _operand_text(code: _Code, value: Any) -> str:
    if isinstance(value, (SymBool, SymNumbers)):
        return value.var
    if np.ndim(value) == 0:
        return repr(float(value))
    return code.constant(np.asarray(value, dtype=np.float64))


def _traced_where(code: _Code, cond: SymBool, a: Any, b: Any) -> SymNumbers:
    expr = f"np.where({cond.var}, {_operand_text(code, a)}, {_operand_text(code, b)})"
    return SymNumbers(code, code.emit(expr), cond.shape)


def _as_sym(code: _Code, value: Any, like: QFormat | None) -> Sym:
    """An operand as a Sym: Syms as they are, integer constants as exact constants."""
    if isinstance(value, Sym):
        return value
    if isinstance(value, FixedArray):
        return Sym(code, code.constant(_stored(value.raw, _kind(value.fmt))), value.fmt, value.shape,
                   _kind(value.fmt))
    if like is None:  # the float path: a plain number
        return Sym(code, repr(float(value)), None, (), "f", literal=float(value))
    v = int(value)
    fmt = QFormat(v.bit_length() + 1, 0, True)
    return Sym(code, repr(float(v)) if _kind(fmt) == "f" else repr(v), fmt, (), _kind(fmt), literal=v)


def _stored(raw: np.ndarray, kind: str) -> np.ndarray:
    return raw.astype(np.float64) if kind == "f" else np.asarray(raw, dtype=np.int64)


class _TracingArithmetic(OneCastPerSum):
    """The arithmetic interface of ``nn/arithmetic.py``, writing code instead of computing."""

    def __init__(self, code: _Code, datapath: Datapath | None, float_settings: Any = None) -> None:
        if datapath is not None and datapath.needs_stepwise:
            raise NotCompilable(FIDELITY_IS_STEPWISE)
        self.code, self.datapath = code, datapath
        if datapath is not None:
            self.relu_grad_at_zero = datapath.relu_grad_at_zero
        else:
            self.relu_grad_at_zero = float_settings.relu_grad_at_zero
        self.float_settings = float_settings
        self.rng_used = False

    def data(self, x: Sym, role: str, layer: int | None = None) -> Sym:
        return self.cast(x, role, layer)

    def cast(self, x: Sym, role: str, layer: int | None = None) -> Sym:
        if self.datapath is None:
            return x
        spec = self.datapath.cast_for(role, layer)
        dst = spec.target_format(x.fmt)
        plan = q.cast_plan(x.fmt, dst, spec.rounding, spec.overflow)
        if plan.shift == 0 and not plan.may_overflow:
            return Sym(self.code, x.var, dst, x.shape, x.kind) if dst == x.fmt else x._recast_to(dst)
        kind = _kind(dst)
        code = self.code
        if spec.rounding is Rounding.STOCH and plan.shift > 0:
            self.rng_used = True
            var = code.emit(f"q.round_shift_right({x.stored_as('i')}, {plan.shift}, Rounding.STOCH, rng)")
            work = "i"
        elif plan.shift > 0 and x.kind == "f":  # scale exactly, then round in place
            var = code.emit(f"{x.var} * {float(2.0 ** -plan.shift)!r}")
            kernel = "round_scaled_float" if plan.shift <= FLOAT_STORAGE_BITS else "round_float"
            code.lines.append(f"    q.{kernel}({var}, Rounding.{spec.rounding.name}, out={var})")
            work = "f"
        elif plan.shift > 0:
            var = code.emit(f"q.round_shift_right_int64({x.var}, {plan.shift}, Rounding.{spec.rounding.name})")
            work = "i"
        elif plan.shift < 0:
            grown = x.fmt.word - plan.shift
            work = "f" if x.kind == "f" and grown <= FLOAT_STORAGE_BITS else "i"
            var = code.emit(x.aligned(QFormat(grown, dst.frac, x.fmt.signed), work))
        else:
            var, work = x.var, x.kind
        if plan.may_overflow:
            lo, hi = q.overflow_bounds(dst, spec.overflow)
            if spec.overflow in (Overflow.SAT, Overflow.SAT_SYM) and var != x.var:  # fresh: clip in place
                code.lines.append(f"    np.clip({var}, {lo!r}, {hi!r}, out={var})")
            elif spec.overflow in (Overflow.SAT, Overflow.SAT_SYM):
                var = code.emit(f"np.clip({var}, {lo!r}, {hi!r})")
            else:
                int_var = var if work == "i" else code.emit(f"{var}.astype(np.int64)")
                var = code.emit(f"q.apply_overflow({int_var}, {code.constant(dst)}, "
                                f"Overflow.{spec.overflow.name})[0]")
                work = "i"
        result = Sym(code, var, dst, x.shape, work)
        return result._recast(kind)

    def dyadic(self, values: Any, frac: int) -> Sym:
        shape = values.shape if hasattr(values, "shape") else np.shape(values)
        text = _operand_text(self.code, values)
        if self.datapath is None:
            return Sym(self.code, self.code.emit(f"{text} * 1.0"), None, tuple(shape), "f")
        fmt = QFormat(frac + 1, frac, signed=False)
        return Sym(self.code, self.code.emit(f"{text} * {float(2 ** frac)!r}"), fmt, tuple(shape), "f")

    def pow2(self, x: Sym, n: int) -> Sym:
        if self.datapath is None:
            return x._new(f"{x.var} * {float(2.0 ** n)!r}", None, x.shape, "f")
        return x << n

    def times_lr(self, x: Sym) -> Sym:
        if self.datapath is None:
            return x._new(f"{x.var} * {self.float_settings.learning_rate!r}", None, x.shape, "f")
        if self.datapath.lr_shift is not None:
            return x >> self.datapath.lr_shift
        return x * FixedArray(np.asarray(self.datapath.lr.raw, dtype=object), self.datapath.lr.fmt)

    def times_momentum(self, x: Sym) -> Sym:
        if self.datapath is None:
            return x._new(f"{x.var} * {self.float_settings.momentum!r}", None, x.shape, "f")
        return x * FixedArray(np.asarray(self.datapath.momentum.raw, dtype=object), self.datapath.momentum.fmt)

    def mean_scale(self, n: int) -> Any:
        if self.datapath is None:
            return 1.0 / n
        from fixprop.nn.arithmetic import FixedArithmetic

        return FixedArithmetic(self.datapath).mean_scale(n)

    def maximum(self, x: Sym, k: Any) -> Sym:
        return self._select("np.maximum", x, k)

    def minimum(self, x: Sym, k: Any) -> Sym:
        return self._select("np.minimum", x, k)

    def _select(self, function: str, x: Sym, k: Any) -> Sym:
        other = _as_sym(self.code, k, x.fmt)
        fmt = None if x.fmt is None else _select_format(x.fmt, other.fmt, k)
        kind = _kind(fmt)
        return x._new(f"{function}({x.aligned(fmt, kind)}, {other.aligned(fmt, kind)})", fmt, x.shape, kind)

    def where(self, cond: SymBool, a: Sym, b: Sym) -> Sym:
        fmt = None if a.fmt is None else union_format(a.fmt, b.fmt)
        kind = _kind(fmt)
        return a._new(f"np.where({cond.var}, {a.aligned(fmt, kind)}, {b.aligned(fmt, kind)})", fmt, a.shape, kind)

    def zeros_like(self, x: Sym, role: str, layer: int | None = None) -> Sym:
        fmt = None if self.datapath is None else self.datapath.cast_for(role, layer).fmt
        return x._new(f"np.zeros({x.shape!r})", fmt, x.shape, _kind(fmt))


def _select_format(fmt: QFormat, other: QFormat, constant: Any) -> QFormat:
    """max/min with an integer constant keeps fmt when fmt holds the constant: the rule of
    ``fixprop.maximum`` (fixed/array.py), which the tests check this path against."""
    if isinstance(constant, (int, np.integer)) and not isinstance(constant, bool):
        if constant_raw(fmt, int(constant)) is not None:
            return fmt
    return union_format(fmt, other)


@dataclass
class CompiledStep:
    """One network, datapath and batch size as one generated function; ``source`` is its code.

    ``gradients(params, x, y)`` returns per-layer (weight_grad, bias_grad); a step compiled with
    ``update=True`` also gives ``train_step(params, x, y, velocity)`` -> (new params, new velocity).
    Parameters and data are FixedArrays in their role formats (float64 arrays for the float path).
    """

    net: MLP
    datapath: Datapath | None
    batch: int
    update: bool
    momentum: bool
    function: Callable
    source: str
    formats: list[QFormat | None]
    uses_rng: bool
    input_formats: list[QFormat | None]

    def accepts(self, params: Sequence[LayerParams], velocity: Any = None) -> bool:
        """True when the parameters (and velocities) are in the formats the step was compiled for
        (their roles'); values in other formats are computed on the step-by-step path."""
        if self.datapath is None:
            return True
        values = [v for p in params for v in (p.weight, p.bias)]
        if self.momentum:
            values += [v for p in velocity for v in (p.weight, p.bias)]
        return all(getattr(v, "fmt", None) == fmt for v, fmt in zip(values, self.input_formats))

    def _run(self, params: Sequence[LayerParams], x: Any, y: Any, velocity: Any, rng: Any) -> list:
        values = [v for p in params for v in (p.weight, p.bias)]
        if self.momentum:
            values += [v for p in velocity for v in (p.weight, p.bias)]
        values += [x, y]
        if self.datapath is not None:
            for v, fmt in zip(values, self.input_formats):
                if getattr(v, "fmt", None) != fmt:
                    raise NotInRoleFormat(f"a value in format {getattr(v, 'fmt', type(v).__name__)} where this step was "
                                    f"compiled for {fmt} (its role's format): cast it, or use the step-by-step path")
        args = [_raw_input(v, self.datapath) for v in values]
        if self.uses_rng and not q.is_random_source(rng):
            raise ModeError("this datapath rounds stochastically: pass rng=numpy.random.Generator "
                            "(or a fixprop.hardware.LfsrSource)")
        outputs = self.function(rng, *args)
        if self.datapath is None:
            return list(outputs)
        return [_fixed_output(raw, fmt) for raw, fmt in zip(outputs, self.formats)]

    def gradients(self, params: Sequence[LayerParams], x: Any, y: Any, velocity: Any = None,
                  rng: np.random.Generator | None = None) -> list[tuple[Any, Any]]:
        """[(weight_grad, bias_grad), ...] per layer (FixedArrays; float64 arrays in float)."""
        out = self._run(params, x, y, velocity, rng)
        return [(out[2 * i], out[2 * i + 1]) for i in range(self.net.n_layers)]

    def train_step(self, params: Sequence[LayerParams], x: Any, y: Any, velocity: Any = None,
                   rng: np.random.Generator | None = None) -> tuple[list[LayerParams], list[LayerParams] | None, Any]:
        """One SGD step: (new params, new velocity or None, the network output before the step),
        as ``MLP.sgd_step`` computes them."""
        if not self.update:
            raise ValueError("this step was compiled without update=True")
        out = self._run(params, x, y, velocity, rng)
        n = self.net.n_layers
        new = [LayerParams(out[2 * n + 2 * i], out[2 * n + 2 * i + 1]) for i in range(n)]
        vel = [LayerParams(out[4 * n + 2 * i], out[4 * n + 2 * i + 1]) for i in range(n)] if self.momentum else None
        return new, vel, out[-1]


_ASSIGNMENT = re.compile(r"^    (v\d+) = (.*)$")
_SCALE = re.compile(r"^(v\d+) \* (-?[0-9.e+-]+)$")
_CLIP = re.compile(r"^np\.clip\((v\d+), (-?\d+), (-?\d+)\)$")
_BINARY = re.compile(r"^(\w+) ([-+*]) (\w+)$")
_UFUNC = {"+": "np.add", "-": "np.subtract", "*": "np.multiply"}
_VARIABLE = re.compile(r"\bv\d+\b")


def _reuse_dead_temporaries(lines: list[str], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Rewrite ``vB = vA * c``, ``vB = np.clip(vA, lo, hi)`` and ``vB = x op y`` (op in + - *) to
    write into an operand that is a fresh temporary of this function, has the result's shape and
    is read by no later line (saves allocating large arrays; the values are the same)."""
    last_use: dict[str, int] = {}
    fresh: set[str] = set()
    for i, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        for name in _VARIABLE.findall(match.group(2) if match else line):
            last_use[name] = i
        aliasing = re.fullmatch(r"v\d+(\.T|\.reshape\(.*\))?", match.group(2)) if match else True
        if not aliasing and "q.apply_overflow" not in match.group(2):  # apply_overflow may return its input
            fresh.add(match.group(1))  # a new array (not a view or an alias of another variable)

    def reusable(name: str, i: int, target: str) -> bool:
        return name in fresh and last_use.get(name) == i and shapes.get(name) == shapes.get(target)

    out = []
    for i, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        rewritten = None
        if match:
            target, expression = match.groups()
            scale, clip, binary = _SCALE.match(expression), _CLIP.match(expression), _BINARY.match(expression)
            if scale and reusable(scale.group(1), i, target):
                rewritten = f"np.multiply({scale.group(1)}, {scale.group(2)}, out={scale.group(1)})"
            elif clip and reusable(clip.group(1), i, target):
                rewritten = f"np.clip({clip.group(1)}, {clip.group(2)}, {clip.group(3)}, out={clip.group(1)})"
            elif binary:
                left, op, right = binary.groups()
                for operand in (left, right):
                    if rewritten is None and reusable(operand, i, target):
                        rewritten = f"{_UFUNC[op]}({left}, {right}, out={operand})"
            if rewritten is not None:
                out.append(f"    {target} = {rewritten}")
                fresh.add(target)
                continue
        out.append(line)
    return out


def _raw_input(value: Any, datapath: Datapath | None) -> np.ndarray:
    if datapath is None:
        return np.asarray(value, dtype=np.float64)
    return value._float64() if value.fmt.word <= FLOAT_STORAGE_BITS else value.raw


def _fixed_output(raw: np.ndarray, fmt: QFormat) -> FixedArray:
    if raw.dtype == np.float64:  # exact integers: the int64 copy is made only if asked for
        return FixedArray._trusted_float(raw, fmt)
    return FixedArray._trusted(raw, fmt)


def compile_step(net: MLP, datapath: Datapath | None, batch: int, update: bool = False,
                 float_settings: Any = None) -> CompiledStep:
    """Compile forward + backward (+ the SGD update) of ``net`` for ``batch`` samples.

    ``datapath=None`` compiles the float64 path, with ``float_settings`` (a FloatArithmetic:
    relu'(0), learning rate, momentum). Raises :class:`NotCompilable` when a value would need
    more than 62 bits.
    """
    from fixprop.nn.arithmetic import FloatArithmetic

    code = _Code()
    settings = float_settings if float_settings is not None else FloatArithmetic()
    ar = _TracingArithmetic(code, datapath, settings)
    momentum = update and (datapath.momentum is not None if datapath is not None else settings.momentum != 0)
    sizes = net.layer_sizes
    names: list[str] = []
    input_formats: list[QFormat | None] = []

    def placeholder(name: str, role: str, shape: tuple[int, ...], layer: int | None = None) -> Sym:
        fmt = None if datapath is None else datapath.cast_for(role, layer).fmt
        names.append(name)
        input_formats.append(fmt)
        return Sym(code, name, fmt, shape, _kind(fmt))

    def layer_placeholders(prefix: str, role_w: str, role_b: str) -> list[LayerParams]:
        return [LayerParams(placeholder(f"{prefix}w{i}", role_w, (n_out, n_in), i),
                            placeholder(f"{prefix}b{i}", role_b, (n_out,), i))
                for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]

    params = layer_placeholders("", "weight", "bias")
    velocity = layer_placeholders("v", "momentum", "momentum") if momentum else None
    x = placeholder("x", "input", (batch, sizes[0]))
    y = placeholder("y", "target", (batch, sizes[-1]))
    trace = net.forward(ar, params, x)
    grads: list[LayerGrads] = net.backward(ar, params, trace, y)
    outputs = [v for g in grads for v in (g.weight_grad, g.bias_grad)]
    if update:
        new_params, new_velocity = net.sgd_step(ar, params, grads, velocity)
        outputs += [v for p in new_params for v in (p.weight, p.bias)]
        if momentum:
            outputs += [v for p in new_velocity for v in (p.weight, p.bias)]
    outputs.append(trace.output)  # the network's output, last (for the loss)
    code.lines.append("    return (" + ", ".join(v.var for v in outputs) + ",)")
    source = (f"def step(rng, {', '.join(names)}):\n"
              + "\n".join(_reuse_dead_temporaries(code.lines, code.shapes)) + "\n")
    namespace = dict(code.constants)
    exec(compile(source, f"<fixprop compiled {net.layer_sizes} batch {batch}>", "exec"), namespace)
    return CompiledStep(net, datapath, batch, update, momentum, namespace["step"], source,
                        [v.fmt for v in outputs], ar.rng_used, input_formats)
