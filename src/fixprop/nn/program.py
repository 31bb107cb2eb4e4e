"""The datapath as a program: the network's own code traced once into a list of integer operations.

``trace_program(net, datapath, batch, update)`` runs ``mlp.py``'s forward, backward and SGD
update (unchanged) on symbolic values that carry a buffer, a format and a shape. Every operation
they perform becomes one :class:`Op` of a :class:`Program`: its operands (buffers, each read at a
stated left shift that aligns its binary point), its result buffer and format, and for a cast the
role, layer, rounding and overflow, decided from the formats at trace time. A program holds every
format decision; a renderer only loops. ``nn/kernels.py`` renders it as one numba interpreter
(generic over shapes and formats, so numba's on-disk cache serves every datapath).

Every value is a raw integer in int64: tracing raises :class:`NotCompilable` when a format needs
more than 62 bits (room for the sign and the rounding decision), or a cast would shift by more
than 61 bits; such a datapath runs on the exact path (``FixedArithmetic``). The formats bound
every product, K-term sum, batch sum and alignment shift (``fixed/format.py``'s rules), so a
program that traces never wraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import NotCompilable
from fixprop.fixed import quantize as q
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat, add_format, matmul_format, mul_format, sub_format, sum_format, union_format
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.nn.arithmetic import FIDELITY_IS_STEPWISE, OneCastPerSum
from fixprop.nn.mlp import MLP, LayerGrads, LayerParams

#: Widest format a program holds (int64 with room for the sign and a rounding decision).
PROGRAM_MAX_BITS = 62
#: Largest right shift of a cast in a program (the stochastic threshold must fit 64 bits).
PROGRAM_MAX_SHIFT = 61

# Operation codes (kernels.py switches on them).
ADD, SUB, MUL, MATMUL, SUM0, TRANSPOSE, CAST, GT, LT, GE, LE, EQ, AND, OR, WHERE, MAXIMUM, MINIMUM, \
    WHERE_NUMBERS, DYADIC, ZEROS = range(20)
OP_NAMES = ("add", "sub", "mul", "matmul", "sum0", "transpose", "cast", "gt", "lt", "ge", "le", "eq", "and",
            "or", "where", "maximum", "minimum", "where_numbers", "dyadic", "zeros")
COMPARE = {">": GT, "<": LT, ">=": GE, "<=": LE, "==": EQ}
ROUNDING_CODE = {mode: i for i, mode in enumerate(Rounding)}
OVERFLOW_CODE = {mode: i for i, mode in enumerate(Overflow)}


def _checked(fmt: QFormat) -> QFormat:
    if fmt.word > PROGRAM_MAX_BITS:
        raise NotCompilable(f"a value of format {fmt} needs more than {PROGRAM_MAX_BITS} bits; this datapath "
                            "runs on the exact path (FixedArithmetic)")
    return fmt


@dataclass
class Op:
    """One operation: ``out = code(a << shift_a, b << shift_b)``; ``params`` for casts and constants.

    Buffers are indices into :attr:`Program.shapes`; ``b`` is -1 for unary operations. A cast's
    params: (shift right (> 0) or left (< 0), rounding code, overflow code, lo, hi, word, signed),
    where [lo, hi] is the range the overflow mode keeps; MATMUL's: (1 when both operands' raw
    integers fit int32, which multiplies faster, else 0,); DYADIC's: (frac,); WHERE's and
    WHERE_NUMBERS': (condition buffer,). role and layer name a cast (for counting and reading).
    """

    code: int
    out: int
    a: int
    b: int = -1
    shift_a: int = 0
    shift_b: int = 0
    params: tuple[int, ...] = ()
    fmt: QFormat | None = None
    role: str = ""
    layer: int | None = None
    float_op: bool = False  # an operation of a float64 program (on float64 buffers)


@dataclass
class Program:
    """Buffers (2-D shapes; kind 'i' raw int64 or 'f' float64 numbers), constants, the operations in
    order, the named inputs and the outputs (buffer and format)."""

    shapes: list[tuple[int, int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    int_constants: dict[int, np.ndarray] = field(default_factory=dict)
    float_constants: dict[int, np.ndarray] = field(default_factory=dict)
    inputs: list[tuple[str, int, QFormat]] = field(default_factory=list)
    #: casts that change only the format's name (no bits dropped, no overflow possible): no
    #: operation, but counted as casts (role, layer, buffer, format), as FixedArithmetic counts them
    exact_casts: list[tuple[str, int | None, int, QFormat]] = field(default_factory=list)
    outputs: list[tuple[int, QFormat, tuple[int, ...]]] = field(default_factory=list)

    def buffer(self, shape: tuple[int, ...], kind: str = "i") -> int:
        self.shapes.append(_as_2d(shape))
        self.kinds.append(kind)
        return len(self.shapes) - 1

    def describe(self) -> str:
        """One line per operation (a readable listing of the datapath program)."""
        lines = []
        for op in self.ops:
            operands = f"b{op.a}<<{op.shift_a}" + (f", b{op.b}<<{op.shift_b}" if op.b >= 0 else "")
            cast = f"  [{op.role} layer {op.layer}]" if op.code == CAST else ""
            lines.append(f"b{op.out} {self.shapes[op.out]} = {OP_NAMES[op.code]}({operands}) "
                         f"{op.params or ''} {op.fmt or ''}{cast}".rstrip())
        return "\n".join(lines)


def _fits_int32(fmt: QFormat) -> bool:
    """True when every raw integer of ``fmt`` fits a signed 32-bit integer."""
    return fmt.word <= (32 if fmt.signed else 31)


def _as_2d(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, int(shape[0]))
    if len(shape) == 2:
        return (int(shape[0]), int(shape[1]))
    raise NotCompilable(f"programs hold values of at most 2 dimensions; got shape {shape}")


class _Comparisons:
    """The comparison operators of a traced value, each recorded by its ``_compare``."""

    def __gt__(self, other: Any) -> "PBool":
        return self._compare(other, ">")

    def __lt__(self, other: Any) -> "PBool":
        return self._compare(other, "<")

    def __ge__(self, other: Any) -> "PBool":
        return self._compare(other, ">=")

    def __le__(self, other: Any) -> "PBool":
        return self._compare(other, "<=")

    def __eq__(self, other: Any) -> "PBool":  # type: ignore[override]
        return self._compare(other, "==")

    __hash__ = None  # type: ignore[assignment]


class PSym(_Comparisons):
    """A traced value: a buffer of the program, the format its raw integers are in, its shape."""

    __array_ufunc__ = None

    def __init__(self, program: Program, buf: int, fmt: QFormat, shape: tuple[int, ...]) -> None:
        self.program, self.buf, self.fmt, self.shape = program, buf, fmt, tuple(shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _emit(self, code: int, fmt: QFormat, shape: tuple[int, ...], a: "PSym", b: "PSym | None" = None,
              aligned: bool = False) -> "PSym":
        fmt = _checked(fmt)
        if aligned:
            a, b = (None if v is None else _realigned(self.program, v, fmt.frac) for v in (a, b))
        out = self.program.buffer(shape)
        shift_a = fmt.frac - a.fmt.frac if aligned else 0
        shift_b = (fmt.frac - b.fmt.frac if aligned else 0) if b is not None else 0
        self.program.ops.append(Op(code, out, a.buf, -1 if b is None else b.buf, shift_a, shift_b, fmt=fmt))
        return PSym(self.program, out, fmt, shape)

    def _binary(self, other: Any, code: int, rule) -> "PSym":
        other = _as_psym(self.program, other)
        shape = np.broadcast_shapes(self.shape, other.shape)
        return self._emit(code, rule(self.fmt, other.fmt), shape, self, other, aligned=True)

    def __add__(self, other: Any) -> "PSym":
        return self._binary(other, ADD, add_format)

    def __sub__(self, other: Any) -> "PSym":
        return self._binary(other, SUB, sub_format)

    def __mul__(self, other: Any) -> "PSym":
        other = _as_psym(self.program, other)
        shape = np.broadcast_shapes(self.shape, other.shape)
        return self._emit(MUL, mul_format(self.fmt, other.fmt), shape, self, other)

    __rmul__ = __mul__

    def __matmul__(self, other: "PSym") -> "PSym":
        shape = self.shape[:-1] + other.shape[1:]
        result = self._emit(MATMUL, matmul_format(self.fmt, other.fmt, self.shape[-1]), shape, self, other)
        self.program.ops[-1].params = (int(_fits_int32(self.fmt) and _fits_int32(other.fmt)),)
        return result

    def sum(self, axis: int = 0) -> "PSym":
        if axis != 0 or self.ndim != 2:
            raise NotCompilable("programs sum 2-D values over axis 0 only")
        return self._emit(SUM0, sum_format(self.fmt, self.shape[0]), self.shape[1:], self)

    @property
    def T(self) -> "PSym":
        if self.ndim < 2:  # numpy's .T of a vector is the vector
            return self
        return self._emit(TRANSPOSE, self.fmt, self.shape[::-1], self)

    def __lshift__(self, n: int) -> "PSym":  # the binary point moves; the raw integers stay
        return PSym(self.program, self.buf, QFormat(self.fmt.word, self.fmt.frac - n, self.fmt.signed), self.shape)

    def __rshift__(self, n: int) -> "PSym":
        return self.__lshift__(-n)

    def _compare(self, other: Any, symbol: str) -> "PBool":
        other = _as_psym(self.program, other)
        shape = np.broadcast_shapes(self.shape, other.shape)
        result = self._emit(COMPARE[symbol], union_format(self.fmt, other.fmt), shape, self, other, aligned=True)
        return PBool(self.program, result.buf, shape)



class PBool:
    """A traced comparison result (0/1 in an int buffer); ``np.where`` on it is traced."""

    def __init__(self, program: Program, buf: int, shape: tuple[int, ...]) -> None:
        self.program, self.buf, self.shape = program, buf, tuple(shape)

    def _logic(self, other: "PBool", code: int) -> "PBool":
        out = self.program.buffer(self.shape)
        self.program.ops.append(Op(code, out, self.buf, other.buf))
        return PBool(self.program, out, self.shape)

    def __and__(self, other: "PBool") -> "PBool":
        return self._logic(other, AND)

    def __or__(self, other: "PBool") -> "PBool":
        return self._logic(other, OR)

    def __array_function__(self, func, types, args, kwargs):
        if func is np.where and len(args) == 3 and not kwargs:
            return _where_numbers(self.program, *args)
        return NotImplemented


class PNumbers:
    """Traced plain numbers in a float64 buffer (derivative values before ``ar.dyadic``)."""

    def __init__(self, program: Program, buf: int, shape: tuple[int, ...]) -> None:
        self.program, self.buf, self.shape = program, buf, tuple(shape)

    def __array_function__(self, func, types, args, kwargs):
        if func is np.where and len(args) == 3 and not kwargs:
            return _where_numbers(self.program, *args)
        return NotImplemented


def _numbers_buffer(program: Program, value: Any) -> int:
    if isinstance(value, PNumbers):
        return value.buf
    arr = np.asarray(value, dtype=np.float64)
    buf = program.buffer(arr.shape, "f")
    program.float_constants[buf] = arr.reshape(program.shapes[buf])
    return buf


def _where_numbers(program: Program, cond: PBool, a: Any, b: Any) -> PNumbers:
    out = program.buffer(cond.shape, "f")
    program.ops.append(Op(WHERE_NUMBERS, out, _numbers_buffer(program, a), _numbers_buffer(program, b),
                          params=(cond.buf,)))
    return PNumbers(program, out, cond.shape)


def _realigned(program: Program, value: PSym, frac: int) -> PSym:
    """``value`` itself when aligning it to ``frac`` is a left shift; a constant whose raw integers
    are exact at the coarser ``frac`` as a new constant there (``max(z, 0)`` in a format with
    negative frac); anything else cannot be aligned exactly."""
    drop = value.fmt.frac - frac
    if drop <= 0:
        return value
    raw = program.int_constants.get(value.buf)
    if raw is None or np.any(raw % (1 << drop)):
        raise NotCompilable(f"an alignment to frac {frac} would drop bits of {value.fmt}")
    buf = program.buffer(value.shape)
    program.int_constants[buf] = raw >> drop
    return PSym(program, buf, QFormat(max(value.fmt.word - drop, 1), frac, value.fmt.signed), value.shape)


def _as_psym(program: Program, value: Any) -> PSym:
    """An operand as a PSym: PSyms as they are, FixedArray and integer constants as constant buffers."""
    if isinstance(value, PSym):
        return value
    if isinstance(value, FixedArray):
        raw, fmt, shape = value.raw, value.fmt, value.shape
    else:
        v = int(value)
        if v != value:
            raise NotCompilable(f"a non-integer constant {value!r} in fixed point")
        raw, fmt, shape = np.asarray(v, dtype=object), QFormat(v.bit_length() + 1, 0, True), ()
    _checked(fmt)
    buf = program.buffer(shape)
    program.int_constants[buf] = np.asarray(raw, dtype=np.int64).reshape(program.shapes[buf])
    return PSym(program, buf, fmt, shape)


class _ProgramArithmetic(OneCastPerSum):
    """The arithmetic interface of ``nn/arithmetic.py``, recording operations instead of computing."""

    def __init__(self, program: Program, datapath: Datapath) -> None:
        if datapath.needs_stepwise:
            raise NotCompilable(FIDELITY_IS_STEPWISE)
        self.program, self.datapath = program, datapath
        self.relu_grad_at_zero = datapath.relu_grad_at_zero

    def data(self, x: PSym, role: str, layer: int | None = None) -> PSym:
        if x.fmt == self.datapath.cast_for(role, layer).fmt:  # already quantized into the role (as FixedArithmetic)
            return x
        return self.cast(x, role, layer)

    def cast(self, x: PSym, role: str, layer: int | None = None) -> PSym:
        spec = self.datapath.cast_for(role, layer)
        dst = _checked(spec.target_format(x.fmt))
        plan = q.cast_plan(x.fmt, dst, spec.rounding, spec.overflow)
        if plan.shift == 0 and not plan.may_overflow:  # exact: only the format's name changes
            self.program.exact_casts.append((role, layer, x.buf, dst))
            return PSym(self.program, x.buf, dst, x.shape)
        if plan.shift > PROGRAM_MAX_SHIFT:
            raise NotCompilable(f"a cast into {role} drops {plan.shift} bits (programs drop at most "
                                f"{PROGRAM_MAX_SHIFT})")
        if plan.shift < 0:
            _checked(QFormat(x.fmt.word - plan.shift, dst.frac, x.fmt.signed))  # the left-shifted value
        if spec.overflow is None:
            raise NotCompilable(f"a cast into {role} without an overflow mode raises on overflow: exact path")
        lo, hi = q.overflow_bounds(dst, spec.overflow)
        out = self.program.buffer(x.shape)
        params = (plan.shift, ROUNDING_CODE[spec.rounding], OVERFLOW_CODE[spec.overflow], lo, hi, dst.word,
                  int(dst.signed))
        self.program.ops.append(Op(CAST, out, x.buf, params=params, fmt=dst, role=role, layer=layer))
        return PSym(self.program, out, dst, x.shape)

    def dyadic(self, values: Any, frac: int) -> PSym:
        shape = tuple(values.shape if isinstance(values, PNumbers) else np.shape(values))
        fmt = QFormat(frac + 1, frac, signed=False)
        out = self.program.buffer(shape)
        self.program.ops.append(Op(DYADIC, out, _numbers_buffer(self.program, values), params=(frac,), fmt=fmt))
        return PSym(self.program, out, fmt, shape)

    def pow2(self, x: PSym, n: int) -> PSym:
        return x << n

    def times_lr(self, x: PSym) -> PSym:
        if self.datapath.lr_shift is not None:
            return x >> self.datapath.lr_shift
        lr = self.datapath.lr
        return x * FixedArray(np.asarray(lr.raw, dtype=object), lr.fmt)

    def times_momentum(self, x: PSym) -> PSym:
        mu = self.datapath.momentum
        return x * FixedArray(np.asarray(mu.raw, dtype=object), mu.fmt)

    def mean_scale(self, n: int) -> FixedArray:
        from fixprop.nn.arithmetic import FixedArithmetic

        return FixedArithmetic(self.datapath).mean_scale(n)

    def maximum(self, x: PSym, k: Any) -> PSym:
        return self._select(MAXIMUM, x, k)

    def minimum(self, x: PSym, k: Any) -> PSym:
        return self._select(MINIMUM, x, k)

    def _select(self, code: int, x: PSym, k: Any) -> PSym:
        from fixprop.nn.compiled import _select_format  # the rule of fixprop.maximum, in one place

        other = _as_psym(self.program, k)
        return x._emit(code, _select_format(x.fmt, other.fmt, k), x.shape, x, other, aligned=True)

    def where(self, cond: PBool, a: PSym, b: PSym) -> PSym:
        fmt = _checked(union_format(a.fmt, b.fmt))
        result = a._emit(WHERE, fmt, a.shape, a, b, aligned=True)
        result.program.ops[-1].params = (cond.buf,)
        return result

    def zeros_like(self, x: PSym, role: str, layer: int | None = None) -> PSym:
        fmt = self.datapath.cast_for(role, layer).fmt
        out = self.program.buffer(x.shape)
        self.program.ops.append(Op(ZEROS, out, -1, fmt=fmt))
        return PSym(self.program, out, fmt, x.shape)


class PFloat(_Comparisons):
    """A traced float64 value (the float network's programs): a float64 buffer and its shape."""

    __array_ufunc__ = None

    def __init__(self, program: Program, buf: int, shape: tuple[int, ...]) -> None:
        self.program, self.buf, self.shape = program, buf, tuple(shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _emit(self, code: int, shape: tuple[int, ...], a: "PFloat", b: "PFloat | None" = None,
              kind: str = "f", params: tuple[int, ...] = ()) -> int:
        out = self.program.buffer(shape, kind)
        self.program.ops.append(Op(code, out, a.buf, -1 if b is None else b.buf, params=params, float_op=True))
        return out

    def _binary(self, other: Any, code: int) -> "PFloat":
        other = _as_pfloat(self.program, other)
        shape = np.broadcast_shapes(self.shape, other.shape)
        return PFloat(self.program, self._emit(code, shape, self, other), shape)

    def __add__(self, other: Any) -> "PFloat":
        return self._binary(other, ADD)

    def __sub__(self, other: Any) -> "PFloat":
        return self._binary(other, SUB)

    def __mul__(self, other: Any) -> "PFloat":
        return self._binary(other, MUL)

    __rmul__ = __mul__

    def __matmul__(self, other: "PFloat") -> "PFloat":
        shape = self.shape[:-1] + other.shape[1:]
        return PFloat(self.program, self._emit(MATMUL, shape, self, other), shape)

    def sum(self, axis: int = 0) -> "PFloat":
        if axis != 0 or self.ndim != 2:
            raise NotCompilable("programs sum 2-D values over axis 0 only")
        return PFloat(self.program, self._emit(SUM0, self.shape[1:], self), self.shape[1:])

    @property
    def T(self) -> "PFloat":
        if self.ndim < 2:
            return self
        return PFloat(self.program, self._emit(TRANSPOSE, self.shape[::-1], self), self.shape[::-1])

    def _compare(self, other: Any, symbol: str) -> "PBool":
        other = _as_pfloat(self.program, other)
        shape = np.broadcast_shapes(self.shape, other.shape)
        return PBool(self.program, self._emit(COMPARE[symbol], shape, self, other, kind="i"), shape)



def _as_pfloat(program: Program, value: Any) -> PFloat:
    """An operand of a float program: traced values as they are, numbers as float64 constants."""
    if isinstance(value, PFloat):
        return value
    if isinstance(value, PNumbers):
        return PFloat(program, value.buf, value.shape)
    return PFloat(program, _numbers_buffer(program, value), np.shape(value))


class _FloatProgramArithmetic(OneCastPerSum):
    """FloatArithmetic's interface (``nn/arithmetic.py``), recording float64 operations."""

    def __init__(self, program: Program, settings: Any) -> None:
        self.program, self.settings = program, settings
        self.relu_grad_at_zero = settings.relu_grad_at_zero

    def data(self, x: PFloat, role: str, layer: int | None = None) -> PFloat:
        return x

    def cast(self, x: PFloat, role: str, layer: int | None = None) -> PFloat:
        return x

    def dyadic(self, values: Any, frac: int) -> PFloat:
        return _as_pfloat(self.program, values)

    def pow2(self, x: PFloat, n: int) -> PFloat:
        return x * 2.0**n

    def times_lr(self, x: PFloat) -> PFloat:
        return x * self.settings.learning_rate

    def times_momentum(self, x: PFloat) -> PFloat:
        return x * self.settings.momentum

    def mean_scale(self, n: int) -> float:
        return self.settings.mean_scale(n)

    def maximum(self, x: PFloat, k: Any) -> PFloat:
        return x._binary(k, MAXIMUM)

    def minimum(self, x: PFloat, k: Any) -> PFloat:
        return x._binary(k, MINIMUM)

    def where(self, cond: PBool, a: PFloat, b: PFloat) -> PFloat:
        shape = np.broadcast_shapes(a.shape, b.shape)
        return PFloat(self.program, a._emit(WHERE, shape, a, _as_pfloat(self.program, b), params=(cond.buf,)), shape)

    def zeros_like(self, x: PFloat, role: str, layer: int | None = None) -> PFloat:
        return PFloat(self.program, x._emit(ZEROS, x.shape, x), x.shape)


def trace_float_program(net: MLP, settings: Any, batch: int, update: bool = False,
                        forward_only: bool = False) -> TracedStep:
    """The float64 network (``settings``: a FloatArithmetic: relu'(0), learning rate, momentum)
    traced like :func:`trace_program` (or :func:`trace_forward`), every value a float64 buffer."""
    program = Program()
    ar = _FloatProgramArithmetic(program, settings)
    momentum = update and not forward_only and settings.momentum != 0
    sizes = net.layer_sizes

    def value(name: str, shape: tuple[int, ...]) -> PFloat:
        buf = program.buffer(shape, "f")
        program.inputs.append((name, buf, None))
        return PFloat(program, buf, shape)

    def layers(prefix: str) -> list[LayerParams]:
        return [LayerParams(value(f"{prefix}w{i}", (n_out, n_in)), value(f"{prefix}b{i}", (n_out,)))
                for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]

    params = layers("")
    velocity = layers("v") if momentum else None
    x = value("x", (batch, sizes[0]))
    if forward_only:
        trace = net.forward(ar, params, x)
        program.outputs = [(layer.act.buf, None, layer.act.shape) for layer in trace.layers]
        return TracedStep(program, net, None, batch, update=False, momentum=False, forward_only=True)
    y = value("y", (batch, sizes[-1]))
    program.outputs = [(r.buf, None, r.shape) for r in _step_results(net, ar, params, velocity, x, y, update)]
    return TracedStep(program, net, None, batch, update, momentum)


@dataclass
class TracedStep:
    """A traced training step: the program and where its results are.

    ``outputs`` order: per layer (weight_grad, bias_grad); with ``update`` also the new
    (weight, bias) per layer and, with momentum, the new velocities; last the network output.
    A forward-only program (``forward_only``, from :func:`trace_forward`) has the inputs
    (w0, b0, ..., x) and outputs each layer's activation ``act``, first layer first.
    """

    program: Program
    net: MLP
    datapath: Datapath
    batch: int
    update: bool
    momentum: bool
    forward_only: bool = False


class _Placeholders:
    """The named inputs of a program being traced, each in its role's format."""

    def __init__(self, program: Program, datapath: Datapath, sizes: Sequence[int]) -> None:
        self.program, self.datapath, self.sizes = program, datapath, sizes

    def value(self, name: str, role: str, shape: tuple[int, ...], layer: int | None = None) -> PSym:
        fmt = _checked(self.datapath.cast_for(role, layer).fmt)
        buf = self.program.buffer(shape)
        self.program.inputs.append((name, buf, fmt))
        return PSym(self.program, buf, fmt, shape)

    def layers(self, prefix: str, role_w: str, role_b: str) -> list[LayerParams]:
        return [LayerParams(self.value(f"{prefix}w{i}", role_w, (n_out, n_in), i),
                            self.value(f"{prefix}b{i}", role_b, (n_out,), i))
                for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))]


def trace_forward(net: MLP, datapath: Datapath, batch: int) -> TracedStep:
    """Trace the forward pass of ``net`` under ``datapath`` for ``batch`` samples (what
    ``predict`` needs): inputs w0, b0, ..., x; outputs every layer's activation."""
    program = Program()
    placeholders = _Placeholders(program, datapath, net.layer_sizes)
    params = placeholders.layers("", "weight", "bias")
    x = placeholders.value("x", "input", (batch, net.layer_sizes[0]))
    trace = net.forward(_ProgramArithmetic(program, datapath), params, x)
    program.outputs = [(layer.act.buf, layer.act.fmt, layer.act.shape) for layer in trace.layers]
    return TracedStep(program, net, datapath, batch, update=False, momentum=False, forward_only=True)


def trace_program(net: MLP, datapath: Datapath, batch: int, update: bool = False) -> TracedStep:
    """Trace forward + backward (+ the SGD update) of ``net`` under ``datapath`` for ``batch``
    samples into a :class:`Program`; raises :class:`NotCompilable` when it needs wider values."""
    program = Program()
    ar = _ProgramArithmetic(program, datapath)
    momentum = update and datapath.momentum is not None
    sizes = net.layer_sizes
    placeholders = _Placeholders(program, datapath, sizes)
    params = placeholders.layers("", "weight", "bias")
    velocity = placeholders.layers("v", "momentum", "momentum") if momentum else None
    x = placeholders.value("x", "input", (batch, sizes[0]))
    y = placeholders.value("y", "target", (batch, sizes[-1]))
    program.outputs = [(r.buf, r.fmt, r.shape) for r in _step_results(net, ar, params, velocity, x, y, update)]
    return TracedStep(program, net, datapath, batch, update, momentum)


def _step_results(net: MLP, ar: Any, params: list[LayerParams], velocity: list[LayerParams] | None, x: Any, y: Any,
                  update: bool) -> list:
    """Run mlp.py's forward, backward (and SGD update) on traced values; the results in
    ``TracedStep`` order: per layer (weight_grad, bias_grad); with ``update`` the new (weight,
    bias) per layer and, with a velocity, the new velocities; last the network output."""
    trace = net.forward(ar, params, x)
    grads: list[LayerGrads] = net.backward(ar, params, trace, y)
    results = [v for g in grads for v in (g.weight_grad, g.bias_grad)]
    if update:
        new_params, new_velocity = net.sgd_step(ar, params, grads, velocity)
        results += [v for p in new_params for v in (p.weight, p.bias)]
        if velocity is not None:
            results += [v for p in new_velocity for v in (p.weight, p.bias)]
    results.append(trace.output)
    return results


__all__ = ["NotCompilable", "Op", "Program", "TracedStep", "trace_float_program", "trace_forward", "trace_program"]
