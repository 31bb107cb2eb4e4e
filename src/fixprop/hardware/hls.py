"""HLS hand-off: one training step as C++ over ``ap_fixed`` (Vitis HLS) or ``ac_fixed`` (Catapult,
Intel HLS) types, and a C-simulation testbench that checks it against an export bundle.

``generate(net, datapath, batch, out)`` writes into ``out``:

- ``train_step.h``: the sizes, one typedef per role and layer (the datapath's formats, rounding
  and overflow modes), a typedef for every exact intermediate (fixprop's format rules), the
  training state and the step's stage memories;
- ``train_step.cpp``: ``train_step(x, y, state[, stages])``: forward, output error, backward
  and SGD update as plain loops, in the order of docs/datapath.md. Every cast is one assignment
  of a conversion into the cast's type; everything else is exact;
- ``tb_train_step.cpp``: reads a bundle's ``.mem`` files, runs its steps from its initial state
  and compares every stage, printing the first mismatch (step, layer, stage, index);
- ``Makefile``, and the support headers ``fixprop_hls.h``, ``fixprop_ap.h`` or ``fixprop_ac.h``,
  ``fixprop_tb.h`` (explicit integer casts, LFSR lanes, .mem reading).

The formats are fixprop's own: the generator runs one step of the step-by-step path on zeros and
records every cast's source and target format, so the C++ types cannot disagree with the
integers fixprop computes. Modes ap_fixed/ac_fixed lack (``TRN_INF``; ``STOCH`` from the LFSR
lanes of docs/hardware.md; ``SAT_SYM`` into a 1-bit signed word, where the libraries give -1 and
fixprop 0) are explicit integer code (``fixprop_hls.h``). What the generator refuses, it refuses
with :class:`HlsError` naming the feature: dynamic fixed point (formats that change at run
time), stochastic rounding from numpy's generator (use the LFSR source), stochastic rounding
of the input or target data (the kernel receives data already in those formats).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat, add_format, mul_format, promote_signed, union_format
from fixprop.fixed.modes import Overflow, Rounding
from fixprop.hardware.lfsr import LfsrSource
from fixprop.nn.activations import FromOutput, HardTanh, LeakyReLU, Linear, PiecewiseLinear, ReLU, _slope
from fixprop.nn.arithmetic import FixedArithmetic
from fixprop.nn.mlp import MLP, LayerParams

#: The type libraries the generator writes for.
FLAVOURS = ("ap_fixed", "ac_fixed")
#: Where hls4ml's wheel keeps each library's headers (the directory holding ap_fixed.h / ac_fixed.h).
HLS4ML_HEADERS = {"ap_fixed": "hls4ml/templates/vivado/ap_types",
                  "ac_fixed": "hls4ml/templates/catapult/ac_types/include"}
HEADER_FILE = {"ap_fixed": "ap_fixed.h", "ac_fixed": "ac_fixed.h"}
#: Widest type the generated code declares (ap_fixed's default AP_INT_MAX_W).
MAX_TYPE_BITS = 1024
#: The support headers copied next to the generated code (src/fixprop/hardware/hls_cpp/).
SUPPORT_DIR = Path(__file__).with_name("hls_cpp")

_AP_ROUNDING = {Rounding.TRN: "AP_TRN", Rounding.TRN_ZERO: "AP_TRN_ZERO", Rounding.RND: "AP_RND",
                Rounding.RND_ZERO: "AP_RND_ZERO", Rounding.RND_MIN_INF: "AP_RND_MIN_INF",
                Rounding.RND_INF: "AP_RND_INF", Rounding.RND_CONV: "AP_RND_CONV"}
_AP_OVERFLOW = {Overflow.SAT: "AP_SAT", Overflow.WRAP: "AP_WRAP", Overflow.SAT_SYM: "AP_SAT_SYM",
                Overflow.SAT_ZERO: "AP_SAT_ZERO"}


class HlsError(ConfigError):
    """The HLS generator cannot write this network or datapath (the message names the feature and
    what to do), or the type headers or compiler are missing."""


# -- headers ------------------------------------------------------------------------------------
def find_headers(types: str = "ap_fixed", include: str | Path | None = None) -> Path:
    """The directory holding ``ap_fixed.h`` (or ``ac_fixed.h``): ``include`` when given (a Vitis
    or Catapult install's include directory), else the copy in hls4ml's wheel (``pip install
    "fixprop[hls]"``), found without importing hls4ml. HlsError names both when neither has it."""
    _check_flavour(types)
    header = HEADER_FILE[types]
    if include is not None:
        path = Path(include)
        if not (path / header).is_file():
            raise HlsError(f"--include {path}: no {header} there (give the directory that holds {header})")
        return path
    try:
        located = Path(str(importlib.metadata.distribution("hls4ml").locate_file(HLS4ML_HEADERS[types])))
    except importlib.metadata.PackageNotFoundError:
        located = None
    if located is None or not (located / header).is_file():
        raise HlsError(f"no {types} headers: install hls4ml, whose wheel ships them (pip install \"fixprop[hls]\"), "
                       f"or give --include DIR, the directory of your Vitis HLS or Catapult install holding {header}")
    return located


def _check_flavour(types: str) -> None:
    if types not in FLAVOURS:
        raise HlsError(f"types must be one of {', '.join(FLAVOURS)}; got {types!r}")


# -- formats: one step of fixprop's own path, observed ------------------------------------------
@dataclass
class _Cast:
    """One cast the step makes: role, layer, the exact value's format, the result's format."""

    role: str
    layer: int | None
    src: QFormat | None
    dst: QFormat


def _observe(net: MLP, datapath: Datapath, batch: int) -> dict[tuple[str, int | None], list[_Cast]]:
    """Every cast of one training step of ``net`` under ``datapath`` at ``batch``, in order, per
    (role, layer): the formats fixprop's step-by-step path uses (the values are zeros)."""
    casts: dict[tuple[str, int | None], list[_Cast]] = defaultdict(list)

    def observer(role, layer, exact, result, cast):
        src = exact.fmt if isinstance(exact, FixedArray) else None
        casts[(role, layer)].append(_Cast(role, layer, src, result.fmt))

    rng = LfsrSource(1) if _uses_stoch(datapath) else None
    ar = FixedArithmetic(datapath, rng)
    zeros = [LayerParams(np.zeros((n_out, n_in)), np.zeros(n_out))
             for n_in, n_out in zip(net.layer_sizes[:-1], net.layer_sizes[1:])]
    state = net.params_in(ar, zeros)
    velocity = net.zero_velocity(ar, state) if datapath.momentum is not None else None
    ar.observer = observer
    trace = net.forward(ar, state, np.zeros((batch, net.layer_sizes[0])))
    grads = net.backward(ar, state, trace, np.zeros((batch, net.layer_sizes[-1])))
    net.sgd_step(ar, state, grads, velocity)
    return casts


def _uses_stoch(datapath: Datapath) -> bool:
    return any(cast.rounding is Rounding.STOCH for _, _, cast in datapath.all_casts())


def stochastic_sites(casts: dict[tuple[str, int | None], list[_Cast]], datapath: Datapath) -> list[tuple[str, int | None]]:
    """The (role, layer) sites among the step's ``casts`` (:func:`_observe`) that round STOCH (a
    STOCH role the network never casts, such as momentum without a coefficient, draws nothing)."""
    return [site for site in casts if datapath.cast_for(*site).rounding is Rounding.STOCH]


def check_supported(net: MLP, datapath: Datapath, lfsr: LfsrSource | None,
                    casts: dict[tuple[str, int | None], list[_Cast]]) -> None:
    """Raise HlsError for what the generator does not write (docs/hardware.md, "From a datapath to
    an HLS kernel"), feature by feature; ``casts`` are the step's (:func:`_observe`)."""
    if datapath.dynamic is not None or any(cast.dynamic is not None for _, _, cast in datapath.all_casts()):
        raise HlsError("dynamic fixed point (frac = \"dynamic\") moves formats at run time; ap_fixed and ac_fixed "
                       "types are fixed when the kernel is compiled: give every role a fixed frac for HLS")
    for role in ("input", "target"):
        if datapath.cast_for(role, None).rounding is Rounding.STOCH:
            raise HlsError(f"the {role} role rounds STOCH: the kernel receives {role} data already in its format, "
                           f"so its rounding happens before the kernel; give {role} a deterministic rounding")
    if lfsr is None and stochastic_sites(casts, datapath):
        raise HlsError("this datapath rounds STOCH: numpy's generator cannot be written as C++; the kernel "
                       "implements the LFSR source of docs/hardware.md: generate with --lfsr-seed N (and export "
                       "the bundle with the same --lfsr-seed)")
    for role, layer, cast in datapath.all_casts():
        if cast.accumulate != "exact" and (cast.word is None or cast.frac is None):
            where = "" if layer is None else f" at layer {layer}"
            raise HlsError(f"{role}{where} accumulates '{cast.accumulate}' with word or frac 'full': its register "
                           "format would change with every addition; give the register a fixed word and frac")
    for name, const in (("lr", datapath.lr), ("momentum", datapath.momentum)):
        if const is None:
            continue
        significant = abs(int(const.raw)) >> _trailing_zeros(int(const.raw))
        if significant.bit_length() > 53:
            raise HlsError(f"the {name} constant has more than 53 significant bits ({const.fmt}); the generated "
                           "C++ writes constants as exact double literals: give it a format of at most 53 bits")
    for i in range(net.n_layers):
        activation = net.activation_of(i)
        if not isinstance(activation, (ReLU, LeakyReLU, Linear, HardTanh, PiecewiseLinear, FromOutput)):
            raise HlsError(f"layer {i}: activation {activation} has no HLS form")


def _trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1 if value else 0


# -- C++ types ------------------------------------------------------------------------------------
def _type(fmt: QFormat, types: str, rounding: Rounding | None = None, overflow: Overflow | None = None) -> str:
    """The C++ type of ``fmt``: ``ap_fixed<W, I, Q, O>`` (``ap_ufixed`` when unsigned), or
    ``ac_fixed<W, I, S, Q, O>``; without modes, exact storage (truncate, wrap: the defaults)."""
    if fmt.word > MAX_TYPE_BITS:
        raise HlsError(f"a value of format {fmt} needs more than {MAX_TYPE_BITS} bits (ap_fixed's limit); "
                       "narrow the datapath's widest roles (and any with word or frac 'full')")
    integer_bits = fmt.word - fmt.frac
    if types == "ap_fixed":
        base = "ap_fixed" if fmt.signed else "ap_ufixed"
        modes = "" if rounding is None else f", {_AP_ROUNDING[rounding]}, {_AP_OVERFLOW[overflow]}"
        return f"{base}<{fmt.word}, {integer_bits}{modes}>"
    signed = "true" if fmt.signed else "false"
    modes = "" if rounding is None else f", {_AP_ROUNDING[rounding].replace('AP_', 'AC_')}, " \
                                        f"{_AP_OVERFLOW[overflow].replace('AP_', 'AC_')}"
    return f"ac_fixed<{fmt.word}, {integer_bits}, {signed}{modes}>"


def _literal(value: Fraction) -> str:
    """A dyadic number as an exact C++ double literal."""
    as_float = float(value)
    if Fraction(as_float) != value:
        raise HlsError(f"the constant {value} is not exact as a double")
    text = repr(as_float)
    return text if ("e" in text or "." in text) else text + ".0"


def _constant_format(value: Fraction) -> QFormat:
    """The narrowest signed format holding the dyadic ``value`` exactly."""
    frac = value.denominator.bit_length() - 1
    raw = int(value * (1 << frac))
    return QFormat(max(abs(raw).bit_length() + 1, 2), frac, True)


@dataclass
class _Site:
    """A cast site of the kernel: the typedef it writes into and how it casts."""

    name: str  # the typedef, e.g. "l0_acc_t"
    role: str
    layer: int | None
    dst: QFormat
    rounding: Rounding
    overflow: Overflow

    @property
    def explicit(self) -> bool:
        """True when the cast is explicit integer code: a mode the type libraries lack, or SAT_SYM
        into a 1-bit signed word (the libraries give -1 there, fixprop 0: docs/arithmetic.md)."""
        return (self.rounding not in _AP_ROUNDING
                or (self.overflow is Overflow.SAT_SYM and self.dst.signed and self.dst.word == 1))


@dataclass
class _Writer:
    """Collects the typedefs, the explicit cast functions and the kernel's lines."""

    types: str
    lfsr: LfsrSource | None
    typedefs: list[str] = field(default_factory=list)
    typedef_names: set[str] = field(default_factory=set)
    functions: list[str] = field(default_factory=list)
    function_names: set[str] = field(default_factory=set)
    lanes: int = 0  # LFSR lanes the stochastic casts use

    def typedef(self, name: str, fmt: QFormat, comment: str, rounding: Rounding | None = None,
                overflow: Overflow | None = None) -> str:
        if name not in self.typedef_names:
            self.typedef_names.add(name)
            self.typedefs.append(f"typedef {_type(fmt, self.types, rounding, overflow)} {name};  // {comment}")
        return name

    def site(self, name: str, cast: _Cast, datapath: Datapath, what: str) -> _Site:
        """The typedef of a cast site (its role's modes, or plain storage when the cast is explicit)."""
        spec = datapath.cast_for(cast.role, cast.layer)
        site = _Site(name, cast.role, cast.layer, cast.dst, spec.rounding, spec.overflow)
        layer = "" if cast.layer is None else f" layer {cast.layer}"
        comment = f"{what}: role {cast.role}{layer}, {cast.dst} {spec.rounding.name} {spec.overflow.name}"
        if site.explicit:
            self.typedef(name, cast.dst, comment + " (explicit integer cast)")
        else:
            self.typedef(name, cast.dst, comment, spec.rounding, spec.overflow)
        return site

    def exact(self, name: str, fmt: QFormat, what: str) -> str:
        return self.typedef(name, fmt, f"{what}: {fmt}, exact")

    def cast(self, site: _Site, src: QFormat, expr: str, lane: str, elements: int) -> str:
        """The C++ expression casting ``expr`` (exact, of format ``src``) into ``site``'s type.
        ``lane``: the element's index in the cast's array (row-major), for STOCH's LFSR lane;
        ``elements``: the array's size."""
        if not site.explicit:
            return f"{site.name}({expr})"
        shift = src.frac - site.dst.frac
        draws = site.rounding is Rounding.STOCH and shift > 0
        function = f"cast_{site.name[:-2]}_from_{'s' if src.signed else 'u'}{src.word}_{src.frac}".replace("-", "m")
        if function not in self.function_names:
            self.function_names.add(function)
            self.functions.append(self._explicit_function(function, site, src, shift, draws))
        if draws:
            self.lanes = max(self.lanes, elements)
            return f"{function}({expr}, state.lfsr[{lane}])"
        return f"{function}({expr})"

    def _explicit_function(self, function: str, site: _Site, src: QFormat, shift: int, draws: bool) -> str:
        dst = site.dst
        src_type = self.exact(f"{function[5:]}_src_t", src, f"the exact input of {function}")
        width = max(src.word + 2 + max(0, -shift), dst.word + 2)
        signed = "true" if src.signed else "false"
        lines = [f"// {site.role}{'' if site.layer is None else f' (layer {site.layer})'}: {src} -> {dst}, "
                 f"{site.rounding.name} then {site.overflow.name}, as explicit integer code",
                 f"static {site.name} {function}(const {src_type} &v{', uint64_t &lane' if draws else ''}) {{",
                 f"    typedef int_of<{width}>::type int_t;",
                 f"    const int_t raw = raw_of<{src.word}, {signed}>(v);  // v in units of 2**-{src.frac}"]
        if shift > 0:
            if draws:
                assert self.lfsr is not None
                decision = f"stochastic_up<{shift}, LFSR_BITS, {width}>(raw, lfsr_draw(lane, LFSR_BITS, LFSR_TAPS))"
            else:
                decision = f"rounds_up<{site.rounding.name}, {shift}, {width}>(raw)"
            lines.append(f"    const int_t rounded = (raw >> {shift}) + int_t({decision} ? 1 : 0);"
                         f"  // drop {shift} bits")
        else:
            lines.append(f"    const int_t rounded = raw << {-shift};  // no bits dropped")
        lines += [f"    return overflow_into<{site.name}, {dst.word}, {'true' if dst.signed else 'false'}, "
                  f"{site.overflow.name}, {width}>(rounded);", "}"]
        return "\n".join(lines)


# -- the kernel ------------------------------------------------------------------------------------
@dataclass
class _Tensor:
    """A value the testbench compares with (or loads from) the bundle."""

    stage: str  # the bundle's stage name
    layer: int  # -1 for step-level tensors (target)
    cxx: str  # the C++ array, e.g. "s.l0.pre"
    fmt: QFormat
    count: int
    columns: int
    ndim: int = 2  # the C++ array's dimensions (biases are 1-D)

    @property
    def first(self) -> str:
        """The C++ of the array's first element."""
        return f"{self.cxx}{'[0]' * self.ndim}"


class _Kernel:
    """Writes train_step.h / train_step.cpp for one network, datapath and batch."""

    def __init__(self, net: MLP, datapath: Datapath, batch: int, types: str, lfsr: LfsrSource | None,
                 pragmas: bool, casts: dict[tuple[str, int | None], list[_Cast]]) -> None:
        self.net, self.dp, self.batch, self.types, self.pragmas = net, datapath, batch, types, pragmas
        self.casts = casts
        self.w = _Writer(types, lfsr)
        self.sizes = net.layer_sizes
        self.L = net.n_layers
        self.body: list[str] = []
        self.layer_fields: list[list[str]] = [[] for _ in range(self.L)]
        self.state_fields: list[list[str]] = [[] for _ in range(self.L)]
        self.forward_tensors: list[list[_Tensor]] = [[] for _ in range(self.L)]
        self.backward_tensors: list[list[_Tensor]] = [[] for _ in range(self.L)]
        self.update_tensors: list[list[_Tensor]] = [[] for _ in range(self.L)]
        self.state_tensors: list[list[_Tensor]] = [[] for _ in range(self.L)]
        self.activation_functions: list[str] = []
        self.weight_site: dict[int, _Site] = {}  # the state's types, written by the update's casts
        self.bias_site: dict[int, _Site] = {}
        self.working: dict[int, str] = {}  # the weights forward and backward read (C++), and their format
        self.working_fmt: dict[int, QFormat] = {}
        self.error_fmt: dict[int, QFormat] = {}  # the format of the error arriving at each layer's output
        self._write()
        if lfsr is not None:  # lanes the initial quantization of STOCH parameters used (the bundle's step 0 holds them)
            for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
                for role, size in (("weight", n_in * n_out), ("bias", n_out)):
                    if datapath.cast_for(role, i).rounding is Rounding.STOCH:
                        self.w.lanes = max(self.w.lanes, size)

    # helpers
    def cast_of(self, role: str, layer: int | None, index: int = 0) -> _Cast:
        return self.casts[(role, layer)][index]

    def emit(self, line: str = "") -> None:
        self.body.append(line)

    def field(self, layer: int, type_name: str, name: str, dims: Sequence[str]) -> str:
        self.layer_fields[layer].append(f"    {type_name} {name}{''.join(f'[{d}]' for d in dims)};")
        return f"s.l{layer}.{name}"

    def tensor(self, group: list, stage: str, layer: int, cxx: str, fmt: QFormat, rows: int, columns: int,
               ndim: int = 2) -> None:
        group.append(_Tensor(stage, layer, cxx, fmt, rows * columns, columns, ndim))

    def partition(self, array: str, pad: str) -> None:
        """With pragmas: a local array of terms or tree nodes becomes registers (all read at once)."""
        if self.pragmas:
            self.emit(f"{pad}#pragma HLS ARRAY_PARTITION variable={array} type=complete")

    def loops(self, *bounds: tuple[str, str]) -> tuple[str, str]:
        """Nested for-loop openers and closers over (variable, bound) pairs, indented from 4."""
        opens, closes = [], []
        for depth, (var, bound) in enumerate(bounds):
            pad = "    " * (depth + 1)
            opens.append(f"{pad}for (int {var} = 0; {var} < {bound}; {var}++) {{")
            closes.insert(0, f"{pad}}}")
        if self.pragmas and bounds:
            opens.append("    " * (len(bounds) + 1) + "#pragma HLS PIPELINE II=1")
        return "\n".join(opens), "\n".join(closes)

    # the network
    def _write(self) -> None:
        L, w = self.L, self.w
        w.site("input_t", self.cast_of("input", None), self.dp, "input data")
        w.site("target_t", self.cast_of("target", None), self.dp, "targets")
        for i in range(L):
            self._layer_types(i)
        self._forward()
        self._output_error()
        for i in reversed(range(L)):
            self._backward(i)
        for i in range(L):
            self._update(i)

    def _layer_types(self, i: int) -> None:
        w, dp = self.w, self.dp
        # the state: the update's weight and bias casts write these types (the state's formats)
        self.weight_site[i] = w.site(f"l{i}_weight_t", self.cast_of("weight", i), dp, "weight (state)")
        self.bias_site[i] = w.site(f"l{i}_bias_t", self.cast_of("bias", i), dp, "bias (state)")
        self.state_fields[i] += [f"    l{i}_weight_t weight[N{i + 1}][N{i}];", f"    l{i}_bias_t bias[N{i + 1}];"]
        if dp.momentum is not None:
            self.state_fields[i] += [f"    l{i}_weight_velocity_t weight_velocity[N{i + 1}][N{i}];",
                                     f"    l{i}_bias_velocity_t bias_velocity[N{i + 1}];"]

    # -- forward -----------------------------------------------------------------------------
    def _forward(self) -> None:
        dp, w, B = self.dp, self.w, self.batch
        for i in range(self.L):
            n_in, n_out = self.sizes[i], self.sizes[i + 1]
            Ni, No = f"N{i}", f"N{i + 1}"
            a_prev = "x" if i == 0 else f"s.l{i - 1}.act"
            a_fmt = self.cast_of("input", None).dst if i == 0 else self.cast_of("act", i - 1).dst
            self.tensor(self.forward_tensors[i], "input", i, a_prev, a_fmt, B, n_in)
            self.emit(f"    // ---- layer {i} forward: {n_in} -> {n_out} ({self.net.activation_of(i)}) "
                      "----------------------------")
            weight, bias = f"state.l{i}.weight", f"state.l{i}.bias"
            weight_fmt = self.weight_site[i].dst
            if ("weight_fwd", i) in self.casts:  # working copy of the master weights
                site = w.site(f"l{i}_weight_fwd_t", self.cast_of("weight_fwd", i), dp, "working weights")
                cxx = self.field(i, site.name, "weight_fwd", [No, Ni])
                opens, closes = self.loops(("j", No), ("k", Ni))
                lane = f"j * {Ni} + k"
                self.emit("    // working copy: Wf = cast_weight_fwd(W)")
                self.emit(opens)
                self.emit(f"            {cxx}[j][k] = "
                          f"{w.cast(site, self.cast_of('weight_fwd', i).src, f'{weight}[j][k]', lane, n_in * n_out)};"
                          "  // cast_weight_fwd")
                self.emit(closes)
                self.tensor(self.forward_tensors[i], "weight_fwd", i, cxx, site.dst, n_out, n_in)
                weight, weight_fmt = cxx, site.dst
            if ("bias_fwd", i) in self.casts:
                site = w.site(f"l{i}_bias_fwd_t", self.cast_of("bias_fwd", i), dp, "working biases")
                cxx = self.field(i, site.name, "bias_fwd", [No])
                opens, closes = self.loops(("j", No))
                self.emit("    // working copy: bf = cast_bias_fwd(b)")
                self.emit(opens)
                self.emit(f"        {cxx}[j] = {w.cast(site, self.cast_of('bias_fwd', i).src, f'{bias}[j]', 'j', n_out)};"
                          "  // cast_bias_fwd")
                self.emit(closes)
                self.tensor(self.forward_tensors[i], "bias_fwd", i, cxx, site.dst, 1, n_out, ndim=1)
                bias = cxx
            self.working[i], self.working_fmt[i] = weight, weight_fmt
            acc_site = w.site(f"l{i}_acc_t", self.cast_of("acc", i, -1), dp, "accumulator")
            acc = self.field(i, acc_site.name, "acc", ["B", No])
            opens, closes = self.loops(("b", "B"), ("j", No))
            self.emit(opens)
            product_fmt = self._sum(
                i, "acc", "product", acc_site, f"{acc}[b][j]", K=n_in, k_bound=Ni,
                term=lambda k: f"{a_prev}[b][{k}] * {weight}[j][{k}]", term_fmt=mul_format(a_fmt, weight_fmt),
                lane="b * " + No + " + j",
                elements=B * n_out, indent=3, exact_out=("product", [ "B", No]))
            if product_fmt is not None:
                self.tensor(self.forward_tensors[i], "product", i, f"s.l{i}.product", product_fmt, B, n_out)
            pre_cast = self.cast_of("pre", i)
            pre_full_t = w.exact(f"l{i}_pre_full_t", pre_cast.src, "acc + bias (the bundle's acc)")
            pre_full = self.field(i, pre_full_t, "pre_full", ["B", No])
            pre_site = w.site(f"l{i}_pre_t", pre_cast, dp, "pre-activation")
            pre = self.field(i, pre_site.name, "pre", ["B", No])
            act_cast = self.cast_of("act", i)
            w.exact(f"l{i}_f_t", act_cast.src, "f(z)")
            act_site = w.site(f"l{i}_act_t", act_cast, dp, "activation")
            act = self.field(i, act_site.name, "act", ["B", No])
            lane = f"b * {No} + j"
            self.emit(f"            {pre_full}[b][j] = {acc}[b][j] + {bias}[j];  // exact (binary points aligned)")
            self.emit(f"            {pre}[b][j] = {w.cast(pre_site, pre_cast.src, f'{pre_full}[b][j]', lane, B * n_out)};"
                      "  // cast_pre")
            self.emit(f"            {act}[b][j] = "
                      f"{w.cast(act_site, act_cast.src, f'l{i}_activation({pre}[b][j])', lane, B * n_out)};"
                      "  // f exact, then cast_act")
            self.emit(closes)
            self.emit()
            self._activation_function(i)
            self.tensor(self.forward_tensors[i], "acc", i, pre_full, pre_cast.src, B, n_out)
            self.tensor(self.forward_tensors[i], "pre", i, pre, pre_site.dst, B, n_out)
            self.tensor(self.forward_tensors[i], "act", i, act, act_site.dst, B, n_out)

    def _sum(self, i: int, role: str, product_role: str | None, site: _Site, dest: str, K: int, k_bound: str,
             term, term_fmt: QFormat, lane: str, elements: int, indent: int,
             exact_out: tuple[str, list[str]] | None = None, first_term_role_casts: int = 0) -> QFormat | None:
        """One element of a sum role (acc, prop_err, weight_grad, the bias_grad batch sum): its K
        terms (each cast into ``product_role`` when the datapath has it), added as the role's
        ``accumulate`` says, into ``dest``. ``term(k)`` is the C++ of term k, exact in
        ``term_fmt``. Returns the exact sum's format when one exists (accumulate exact), for the
        bundle's ``product``."""
        w, dp = self.w, self.dp
        pad = "    " * indent
        spec = dp.cast_for(role, i)
        casts = self.casts[(role, i)][first_term_role_casts:]
        product_casts = self.casts.get((product_role, i), []) if product_role else []
        tag = {"acc": "mac", "prop_err": "prop_sum", "weight_grad": "grad_sum", "bias_grad": "bias_sum"}[role]
        if product_casts:
            psite = w.site(f"l{i}_{product_role}_t", product_casts[0], dp, f"{role}'s products")
            term_type, term_fmt = psite.name, psite.dst
        elif spec.accumulate != "exact":
            term_type = w.exact(f"l{i}_{tag}_term_t", term_fmt, f"one term of {role}'s sum")
        addend = term("k")  # exact terms summed exactly need no array of terms
        if product_casts or spec.accumulate != "exact":
            self.emit(f"{pad}{term_type} t[{k_bound}];  // the terms")
            self.partition("t", pad)
            if product_casts:
                self.emit(f"{pad}for (int k = 0; k < {k_bound}; k++) t[k] = "
                          f"{w.cast(psite, product_casts[0].src, term('k'), lane, elements)};  // cast_{product_role}")
            else:
                self.emit(f"{pad}for (int k = 0; k < {k_bound}; k++) t[k] = {term('k')};  // exact")
            addend = "t[k]"
        if spec.accumulate == "exact":
            sum_fmt = casts[0].src
            what = f"{role}'s exact {K}-term sum" + (" of cast products" if product_casts else "")
            sum_type = w.exact(f"l{i}_{tag}_t", sum_fmt, what)
            self.emit(f"{pad}{sum_type} sum = 0;")
            self.emit(f"{pad}for (int k = 0; k < {k_bound}; k++) sum += {addend};  // exact")
            self._store_exact(i, exact_out, sum_type, pad)
            self.emit(f"{pad}{dest} = {w.cast(site, sum_fmt, 'sum', lane, elements)};  // cast_{role}")
            return sum_fmt
        if spec.accumulate == "sequential":
            first, rest = casts[0], casts[1] if len(casts) > 1 else None
            self.emit(f"{pad}{site.name} r = {w.cast(site, first.src, 't[0]', lane, elements)};"
                      f"  // the register: r = cast_{role}(t_0)")
            if rest is not None:
                self.emit(f"{pad}for (int k = 1; k < {k_bound}; k++) "
                          f"r = {w.cast(site, rest.src, 'r + t[k]', lane, elements)};  // r = cast_{role}(r + t_k)")
            self.emit(f"{pad}{dest} = r;")
            return None
        # a balanced adder tree, level by level; an odd last node passes up uncast
        node_fmt = union_format(term_fmt, site.dst)
        node_type = w.exact(f"l{i}_{tag}_node_t", node_fmt, f"a node of {role}'s adder tree (a term or a register)")
        self.emit(f"{pad}{node_type} n[{k_bound}];  // the tree's nodes, level by level")
        self.partition("n", pad)
        self.emit(f"{pad}for (int k = 0; k < {k_bound}; k++) n[k] = t[k];")
        nodes = [term_fmt] * K
        if K == 1:
            self.emit(f"{pad}{dest} = {w.cast(site, term_fmt, 'n[0]', lane, elements)};  // one term: cast once")
            return None
        level = 0
        while len(nodes) > 1:
            pairs = len(nodes) // 2
            sources = [add_format(nodes[2 * p], nodes[2 * p + 1]) for p in range(pairs)]
            self.emit(f"{pad}// level {level}: {len(nodes)} nodes -> {pairs + len(nodes) % 2}")
            start = 0
            while start < pairs:  # runs of pairs whose inputs have the same formats
                end = start
                while end + 1 < pairs and sources[end + 1] == sources[start]:
                    end += 1
                if start == end:
                    cast = w.cast(site, sources[start], f"n[{2 * start}] + n[{2 * start + 1}]", lane, elements)
                    self.emit(f"{pad}n[{start}] = {cast};")
                else:
                    cast = w.cast(site, sources[start], "n[2 * p] + n[2 * p + 1]", lane, elements)
                    self.emit(f"{pad}for (int p = {start}; p <= {end}; p++) n[p] = {cast};")
                start = end + 1
            if len(nodes) % 2:
                self.emit(f"{pad}n[{pairs}] = n[{len(nodes) - 1}];  // the odd node passes up uncast")
            nodes = [site.dst] * pairs + ([nodes[-1]] if len(nodes) % 2 else [])
            level += 1
        self.emit(f"{pad}{dest} = {site.name}(n[0]);  // the root (already in the register format)")
        return None

    def _store_exact(self, i: int, exact_out, sum_type: str, pad: str) -> None:
        if exact_out is not None:
            name, dims = exact_out
            cxx = self.field(i, sum_type, name, dims)
            self.emit(f"{pad}{cxx}[b][j] = sum;")

    def _activation_function(self, i: int) -> None:
        """f(z) exact in l{i}_f_t, and f'(z) (from z, or from the cast activation a)."""
        activation = self.net.activation_of(i)
        z, f_t, pre_t, act_t = "z", f"l{i}_f_t", f"l{i}_pre_t", f"l{i}_act_t"
        lines = [f"// layer {i}: {activation} (docs/datapath.md, \"Forward pass\"): f(z) exact"]
        base = activation.base if isinstance(activation, FromOutput) else activation
        pre_fmt = self.cast_of("pre", i).dst
        signed_copy = []  # comparisons on a signed copy: ap_fixed compares a wide ap_ufixed with a negative wrongly
        if not pre_fmt.signed:
            signed_t = self.w.exact(f"l{i}_pre_signed_t", promote_signed(pre_fmt), "z as a signed value")
            signed_copy = [f"    const {signed_t} z = z_in;  // signed, for exact comparisons"]
        argument = "z_in" if signed_copy else z
        lines.append(f"static {f_t} l{i}_activation(const {pre_t} &{argument}) {{")
        lines += signed_copy
        if isinstance(base, ReLU):
            lines.append(f"    return {z} > 0 ? {f_t}({z}) : {f_t}(0);")
        elif isinstance(base, LeakyReLU):
            slope = self._const(Fraction(1, 2**base.shift))
            lines.append(f"    return {z} > 0 ? {f_t}({z}) : {f_t}({z} * {slope});  // z * 2**-{base.shift}, exact")
        elif isinstance(base, Linear):
            lines.append(f"    return {f_t}({z});")
        elif isinstance(base, HardTanh):
            lines.append(f"    if ({z} < -1) return {f_t}(-1);")
            lines.append(f"    if ({z} > 1) return {f_t}(1);")
            lines.append(f"    return {f_t}({z});")
        else:  # piecewise linear (hard_sigmoid, pwl_sigmoid, pwl_tanh, a table): later pieces win
            lines.append(f"    {f_t} f = {self._line(base.pieces[0], z)};")
            for piece in base.pieces[1:]:
                lines.append(f"    if ({self._condition(piece, z)}) f = {self._line(piece, z)};")
            lines.append("    return f;")
        lines.append("}")
        slope_fmt = self._slope_format(i)
        slope_t = self.w.exact(f"l{i}_slope_t", slope_fmt, "f'(z)")
        lines.append(f"// f'(z) in {slope_fmt}")
        lines.append(f"static {slope_t} l{i}_derivative(const {pre_t} &{argument}, const {act_t} &a) {{")
        if not isinstance(activation, (FromOutput, Linear)):
            lines += signed_copy
        if isinstance(activation, FromOutput):
            one = "ap_ufixed<1, 1>(1)" if self.types == "ap_fixed" else "ac_fixed<1, 1, false>(1)"
            expr = f"{one} - a * a" if activation.tanh else f"a * ({one} - a)"
            lines.append(f"    return {slope_t}({expr});  // from the cast activation a, exact")
        elif isinstance(activation, ReLU):
            c = _literal(Fraction(self.dp.relu_grad_at_zero).limit_denominator(2))
            lines.append(f"    if ({z} > 0) return {slope_t}(1);")
            lines.append(f"    if ({z} == 0) return {slope_t}({c});  // relu_grad_at_zero")
            lines.append(f"    return {slope_t}(0);")
        elif isinstance(activation, LeakyReLU):
            lines.append(f"    return {z} > 0 ? {slope_t}(1) : {slope_t}({_literal(Fraction(1, 2**activation.shift))});")
        elif isinstance(activation, Linear):
            lines.append(f"    return {slope_t}(1);")
        elif isinstance(activation, HardTanh):
            lines.append(f"    return ({z} > -1 && {z} < 1) ? {slope_t}(1) : {slope_t}(0);")
        else:
            lines.append(f"    {slope_t} d = {slope_t}({_literal(_slope(activation.pieces[0]))});")
            for piece in activation.pieces[1:]:
                lines.append(f"    if ({self._condition(piece, z)}) d = {slope_t}({_literal(_slope(piece))});")
            lines.append("    return d;")
        lines.append("}")
        self.activation_functions.append("\n".join(lines))

    def _slope_format(self, i: int) -> QFormat:
        """The format fixprop's derivative has at layer i (its own code, on zeros)."""
        ar = FixedArithmetic(self.dp)
        z = FixedArray.zeros((1, 1), self.cast_of("pre", i).dst)
        a = FixedArray.zeros((1, 1), self.cast_of("act", i).dst)
        return self.net.activation_of(i).derivative(ar, z, a).fmt

    def _const(self, value: Fraction) -> str:
        fmt = _constant_format(value)
        return f"{_type(fmt, self.types)}({_literal(value)})"

    def _condition(self, piece, z: str) -> str:
        return f"{z} {'>=' if piece.closed else '>'} {self._const(piece.start)}"

    def _line(self, piece, z: str) -> str:
        if piece.shift is None:
            return self._const(piece.offset)
        line = z if piece.shift == 0 else f"{z} * {self._const(Fraction(1, 2**piece.shift))}"
        if piece.offset == 0:
            return f"({line})"
        return f"({line} + {self._const(piece.offset)})"

    # -- output error and backward --------------------------------------------------------------
    def _output_error(self) -> None:
        w, dp, B, L = self.w, self.dp, self.batch, self.L
        last = L - 1
        n_out = self.sizes[-1]
        cast = self.cast_of("out_err", last)
        src_t = w.exact("loss_grad_t", cast.src, f"dLoss/da ({self.net.loss.name})")
        site = w.site(f"l{last}_error_t", cast, dp, "output error")
        error = self.field(last, site.name, "error", ["B", f"N{L}"])
        loss = self.net.loss.name
        diff = f"(s.l{last}.act[b][j] - y[b][j])"
        if loss == "half_sse":
            expr = diff
        elif loss == "sse":
            expr = f"{diff} * 2"
        else:
            ar = FixedArithmetic(dp)
            scale = ar.mean_scale(B * n_out)
            value = Fraction(int(scale.raw), 1 << scale.fmt.frac)
            w.typedef("mean_scale_t", scale.fmt, f"1/N, N = {B * n_out} (mse), {scale.fmt}")
            expr = f"{diff} * 2 * mean_scale_t({_literal(value)})"
        opens, closes = self.loops(("b", "B"), ("j", f"N{L}"))
        self.emit("    // ---- output error: delta_L = cast_out_err(dLoss/da_L) ----------------------------------")
        self.emit(opens)
        self.emit(f"            const {src_t} g = {expr};  // exact")
        self.emit(f"            {error}[b][j] = {w.cast(site, cast.src, 'g', f'b * N{L} + j', B * n_out)};"
                  "  // cast_out_err")
        self.emit(closes)
        self.emit()
        self.error_fmt[last] = site.dst

    def _backward(self, i: int) -> None:
        w, dp, B = self.w, self.dp, self.batch
        n_in, n_out = self.sizes[i], self.sizes[i + 1]
        Ni, No = f"N{i}", f"N{i + 1}"
        a_prev = "x" if i == 0 else f"s.l{i - 1}.act"
        a_fmt = self.cast_of("input", None).dst if i == 0 else self.cast_of("act", i - 1).dst
        error = f"s.l{i}.error"
        self.tensor(self.backward_tensors[i], "error", i, error, self.error_fmt[i], B, n_out)
        self.emit(f"    // ---- layer {i} backward ------------------------------------------------------------")
        local_cast = self.cast_of("bias_grad", i, 0)
        w.exact(f"l{i}_local_full_t", local_cast.src, "delta * f'(z)")
        local_site = w.site(f"l{i}_local_t", local_cast, dp, "local error")
        local = self.field(i, local_site.name, "local", ["B", No])
        opens, closes = self.loops(("b", "B"), ("j", No))
        self.emit("    // 1. local error e = cast_bias_grad(delta * f'(z))")
        self.emit(opens)
        self.emit(f"            const l{i}_local_full_t e = {error}[b][j] * "
                  f"l{i}_derivative(s.l{i}.pre[b][j], s.l{i}.act[b][j]);  // exact")
        self.emit(f"            {local}[b][j] = {w.cast(local_site, local_cast.src, 'e', f'b * {No} + j', B * n_out)};"
                  "  // cast_bias_grad")
        self.emit(closes)
        self.tensor(self.backward_tensors[i], "local", i, local, local_site.dst, B, n_out)
        # 2. bias gradient: the batch sum
        bias_casts = self.casts[("bias_grad", i)][1:]
        bias_site = w.site(f"l{i}_bias_grad_t", bias_casts[-1], dp, "bias gradient")
        bias_grad = self.field(i, bias_site.name, "bias_grad", [No])
        opens, closes = self.loops(("j", No))
        self.emit("    // 2. bias gradient db = cast_bias_grad(sum over the batch of e)")
        self.emit(opens)
        self._sum(i, "bias_grad", None, bias_site, f"{bias_grad}[j]", K=B, k_bound="B",
                  term=lambda k: f"{local}[{k}][j]", term_fmt=local_site.dst, lane="j", elements=n_out, indent=2,
                  first_term_role_casts=1)
        self.emit(closes)
        self.tensor(self.backward_tensors[i], "bias_grad", i, bias_grad, bias_site.dst, 1, n_out,
                    ndim=1)
        # 3. weight gradient
        grad_site = w.site(f"l{i}_weight_grad_t", self.cast_of("weight_grad", i, -1), dp, "weight gradient")
        weight_grad = self.field(i, grad_site.name, "weight_grad", [No, Ni])
        opens, closes = self.loops(("j", No), ("i", Ni))
        self.emit("    // 3. weight gradient dW = cast_weight_grad(e^T a_prev), summed over the batch")
        self.emit(opens)
        self._sum(i, "weight_grad", "grad_product", grad_site, f"{weight_grad}[j][i]", K=B, k_bound="B",
                  term=lambda k: f"{local}[{k}][j] * {a_prev}[{k}][i]", lane=f"j * {Ni} + i", elements=n_in * n_out,
                  term_fmt=mul_format(local_site.dst, a_fmt),
                  indent=3)
        self.emit(closes)
        self.tensor(self.backward_tensors[i], "weight_grad", i, weight_grad, grad_site.dst, n_out, n_in)
        # 4. propagated error (before the update, with the forward pass's weights)
        if i > 0:
            prop_site = w.site(f"l{i - 1}_error_t", self.cast_of("prop_err", i, -1), dp, "propagated error")
            prop = self.field(i - 1, prop_site.name, "error", ["B", Ni])
            opens, closes = self.loops(("b", "B"), ("i", Ni))
            self.emit("    // 4. propagated error delta_prev = cast_prop_err(e Wf)")
            self.emit(opens)
            weight = self.working[i]
            self._sum(i, "prop_err", "prop_product", prop_site, f"{prop}[b][i]", K=n_out, k_bound=No,
                      term=lambda k: f"{local}[b][{k}] * {weight}[{k}][i]", lane=f"b * {Ni} + i",
                      term_fmt=mul_format(local_site.dst, self.working_fmt[i]),
                      elements=B * n_in, indent=3)
            self.emit(closes)
            self.error_fmt[i - 1] = prop_site.dst
        self.emit()

    # -- update ------------------------------------------------------------------------------
    def _update(self, i: int) -> None:
        w, dp = self.w, self.dp
        n_in, n_out = self.sizes[i], self.sizes[i + 1]
        Ni, No = f"N{i}", f"N{i + 1}"
        self.emit(f"    // ---- layer {i} update (SGD{' with momentum' if dp.momentum is not None else ''}) "
                  "-------------------------------------------")
        for index, (kind, dims, grad) in enumerate((("weight", [No, Ni], f"s.l{i}.weight_grad"),
                                                     ("bias", [No], f"s.l{i}.bias_grad"))):
            rows, cols = (n_out, n_in) if kind == "weight" else (1, n_out)
            ndim = len(dims)
            idx = "[j][k]" if kind == "weight" else "[j]"
            lane = f"j * {Ni} + k" if kind == "weight" else "j"
            bounds = (("j", No), ("k", Ni)) if kind == "weight" else (("j", No),)
            pad = "    " * (len(bounds) + 1)
            opens, closes = self.loops(*bounds)
            self.emit(opens)
            step = f"{grad}{idx}"
            if dp.momentum is not None:
                cast = self.cast_of("momentum", i, index)
                src_t = w.exact(f"l{i}_{kind}_velocity_full_t", cast.src, "mu v + g")
                site = w.site(f"l{i}_{kind}_velocity_t", cast, dp, f"{kind} velocity (state)")
                mu = Fraction(int(dp.momentum.raw)) / Fraction(2) ** dp.momentum.fmt.frac
                mu_t = w.typedef("momentum_coefficient_t", dp.momentum.fmt, f"mu = {float(mu)!r}")
                velocity = f"state.l{i}.{kind}_velocity{idx}"
                self.emit(f"{pad}const {src_t} v = {velocity} * {mu_t}({_literal(mu)}) + {step};  // exact")
                self.emit(f"{pad}{velocity} = {w.cast(site, cast.src, 'v', lane, rows * cols)};  // cast_momentum")
                self.update_tensors[i].append(_Tensor(f"{kind}_velocity", i, f"state.l{i}.{kind}_velocity",
                                                      site.dst, rows * cols, cols, ndim))
                step = velocity
            cast = self.cast_of("update", i, index)
            src_t = w.exact(f"l{i}_{kind}_lr_step_t", cast.src, "lr * step")
            site = w.site(f"l{i}_{kind}_update_t", cast, dp, f"{kind} update")
            update = self.field(i, site.name, f"{kind}_update", dims)
            if dp.lr_shift is not None:
                lr = Fraction(1, 1 << dp.lr_shift)
                lr_t = w.typedef("learning_rate_t", QFormat(dp.lr_shift + 1, dp.lr_shift, False),
                                 f"lr = 2**-{dp.lr_shift} (a shift)")
            else:
                lr = Fraction(int(dp.lr.raw), 1) / (Fraction(2) ** dp.lr.fmt.frac)
                lr_t = w.typedef("learning_rate_t", dp.lr.fmt, f"lr = {float(lr)!r}")
            self.emit(f"{pad}const {src_t} u = {step} * {lr_t}({_literal(lr)});  // exact")
            self.emit(f"{pad}{update}{idx} = {w.cast(site, cast.src, 'u', lane, rows * cols)};  // cast_update")
            self.update_tensors[i].append(_Tensor(f"{kind}_update", i, update, site.dst, rows * cols, cols,
                                                  ndim))
            cast = self.cast_of(kind, i)
            src_t = w.exact(f"l{i}_{kind}_diff_t", cast.src, f"{kind} - u")
            site = self.weight_site[i] if kind == "weight" else self.bias_site[i]
            param = f"state.l{i}.{kind}{idx}"
            self.emit(f"{pad}const {src_t} p = {param} - {update}{idx};  // exact")
            self.emit(f"{pad}{param} = {w.cast(site, cast.src, 'p', lane, rows * cols)};  // cast_{kind}")
            self.emit(closes)
            self.update_tensors[i].append(_Tensor(f"{kind}_updated", i, f"state.l{i}.{kind}", site.dst,
                                                  rows * cols, cols, ndim))
            self.state_tensors[i].append(_Tensor(kind, i, f"state.l{i}.{kind}", site.dst, rows * cols,
                                                 cols, ndim))
        self.emit()

    # -- files -------------------------------------------------------------------------------
    def header(self) -> str:
        dp, B, L = self.dp, self.batch, self.L
        support = "fixprop_ap.h" if self.types == "ap_fixed" else "fixprop_ac.h"
        lines = ["// Generated by fixprop (fixprop hls): one training step of the network below, in the",
                 "// datapath's formats. docs/datapath.md gives every stage and cast; docs/hardware.md the flow.",
                 f"// network: {self.net.layer_sizes}, activation {self.net.activation}, output activation "
                 f"{self.net.output_activation}, loss {self.net.loss.name}; batch {B}",
                 f"// datapath: {dp.name or 'from TOML'}; learning rate "
                 f"{'2**-' + str(dp.lr_shift) if dp.lr_shift is not None else dp.lr.value}"
                 f"{'; momentum ' + repr(dp.momentum.value) if dp.momentum is not None else ''}",
                 "#ifndef FIXPROP_TRAIN_STEP_H", "#define FIXPROP_TRAIN_STEP_H", "",
                 f"#include \"{support}\"", "#include \"fixprop_hls.h\"", "",
                 "namespace fixprop {", "",
                 f"static const int B = {B};  // samples per step",
                 *[f"static const int N{i} = {n};" for i, n in enumerate(self.sizes)],
                 f"static const int LAYERS = {L};"]
        if self.w.lanes:
            lf = self.w.lfsr
            lines += [f"static const int LFSR_LANES = {self.w.lanes};  // one per element of the largest stochastic cast",
                      f"static const int LFSR_BITS = {lf.bits};  // random bits per rounding",
                      f"static const int LFSR_WIDTH = {lf.width};",
                      f"static const uint64_t LFSR_TAPS = {lf.taps:#x}ULL;"]
        lines += ["", "// -- types: one per cast (role and layer), and the exact intermediates --", *self.w.typedefs, ""]
        for i in range(L):
            lines += [f"struct layer{i}_state_t {{", *self.state_fields[i], "};"]
        lines += ["struct state_t {  // what persists from step to step",
                  *[f"    layer{i}_state_t l{i};" for i in range(L)]]
        if self.w.lanes:
            lines.append("    uint64_t lfsr[LFSR_LANES];  // the LFSR lanes of stochastic rounding")
        lines += ["};", ""]
        for i in range(L):
            lines += [f"struct layer{i}_stages_t {{  // layer {i}'s values of one step", *self.layer_fields[i], "};"]
        lines += ["struct stages_t {", *[f"    layer{i}_stages_t l{i};" for i in range(L)], "};", "",
                  "#ifdef FIXPROP_TRACE  // the C simulation reads every stage",
                  f"void train_step(const input_t x[B][N0], const target_t y[B][N{L}], state_t &state, stages_t &s);",
                  "#else",
                  f"void train_step(const input_t x[B][N0], const target_t y[B][N{L}], state_t &state);",
                  "#endif", "", "}  // namespace fixprop", "", "#endif", ""]
        return "\n".join(lines)

    def source(self) -> str:
        L = self.L
        lines = ["// Generated by fixprop (fixprop hls): train_step, forward, backward and SGD update.",
                 "#include \"train_step.h\"", "", "namespace fixprop {", ""]
        lines += [*self.w.functions, ""] if self.w.functions else []
        lines += [*self.activation_functions, ""]
        lines += ["#ifdef FIXPROP_TRACE",
                  f"void train_step(const input_t x[B][N0], const target_t y[B][N{L}], state_t &state, stages_t &s) {{",
                  "#else",
                  f"void train_step(const input_t x[B][N0], const target_t y[B][N{L}], state_t &state) {{",
                  "    stages_t s;  // the step's stage memories",
                  "#endif"]
        lines += [*self.body, "}", "", "}  // namespace fixprop", ""]
        return "\n".join(lines)

    def checked_order(self) -> list[_Tensor]:
        """The tensors a step checks, in the order the step computes them."""
        order: list[_Tensor] = []
        for i in range(self.L):
            order += self.forward_tensors[i]
        for i in reversed(range(self.L)):
            order += self.backward_tensors[i]
        for i in range(self.L):
            order += self.update_tensors[i]
        return order


def _testbench(kernel: _Kernel) -> str:
    L = kernel.L
    lines = ["// Generated by fixprop (fixprop hls): C simulation of train_step against an export bundle.",
             "// Usage: ./tb BUNDLE_DIR. Exit 0: every value equal; 1: a mismatch (printed); 2: unreadable bundle.",
             "#include \"train_step.h\"", "#include \"fixprop_tb.h\"", "", "using namespace fixprop;", "",
             "static state_t state;", "static stages_t s;", "static input_t x[B][N0];",
             f"static target_t y[B][N{L}];", ""]

    def load(t: _Tensor, name: str, pad: str = "    ") -> str:
        return f"{pad}fixprop_tb::load<{t.fmt.word}>(bundle, {name}, \"{t.fmt}\", &{t.first}, {t.count});"

    def check(t: _Tensor) -> str:
        return (f"        fixprop_tb::check<{t.fmt.word}, {'true' if t.fmt.signed else 'false'}>(bundle, t, "
                f"{t.layer}, \"{t.stage}\", \"{t.fmt}\", &{t.first}, {t.count}, {t.columns});")

    lines += ["int main(int argc, char **argv) {",
              "    if (argc != 2) {",
              "        std::fprintf(stderr, \"usage: %s BUNDLE_DIR\\n\", argv[0]);",
              "        return fixprop_tb::BAD_BUNDLE;", "    }",
              "    fixprop_tb::Bundle bundle(argv[1]);",
              "    // the initial state: step 0's weights and biases (velocity at rest)"]
    for i in range(L):
        for t in kernel.state_tensors[i]:
            lines.append(load(t, f"\"step0/layer{i}/{t.stage}\""))
    if kernel.dp.momentum is not None:
        lines += [f"    for (int j = 0; j < N{i + 1}; j++) {{ state.l{i}.bias_velocity[j] = 0; "
                  f"for (int k = 0; k < N{i}; k++) state.l{i}.weight_velocity[j][k] = 0; }}" for i in range(L)]
    if kernel.w.lanes:
        lf = kernel.w.lfsr
        lines += ["    for (int k = 0; k < LFSR_LANES; k++) {  // lane k starts at seed + k * 0x9E3779B9 (1, not 0)",
                  f"        uint64_t v = ({lf.seed}ULL + (uint64_t)k * 0x9E3779B9ULL) & ((1ULL << LFSR_WIDTH) - 1);",
                  "        state.lfsr[k] = v ? v : 1;", "    }",
                  "    if (bundle.has(\"step0/lfsr_state\")) {  // lanes the initial quantization used",
                  "        fixprop_tb::Tensor t = bundle.read(\"step0/lfsr_state\");",
                  "        for (size_t k = 0; k < t.words.size() && (int)k < LFSR_LANES; k++)",
                  "            state.lfsr[k] = std::strtoull(t.words[k].c_str(), 0, 16);", "    }"]
    input_tensor = kernel.forward_tensors[0][0]
    target_fmt = kernel.cast_of("target", None).dst
    lines += ["    int t = 0;",
              "    for (; bundle.has(\"step\" + std::to_string(t) + \"/target\"); t++) {",
              "        const std::string step = \"step\" + std::to_string(t);",
              "        // the state the step starts from"]
    for i in range(L):
        lines += [check(st) for st in kernel.state_tensors[i]]
    if kernel.w.lanes:
        lines.append("        fixprop_tb::check_lanes(bundle, t, state.lfsr, LFSR_LANES);")
    target = _Tensor("target", -1, "y", target_fmt, kernel.batch * kernel.sizes[-1], kernel.sizes[-1])
    lines += ["        // the step's data",
              load(input_tensor, "step + \"/layer0/input\"", "        "),
              load(target, "step + \"/target\"", "        "),
              "        train_step(x, y, state, s);"]
    for t in kernel.checked_order():
        lines.append(check(t))
    lines += ["    }",
              "    if (t == 0) fixprop_tb::bad_bundle(bundle.dir + \" has no step0/target: not a bundle of format 2?\");",
              "    std::printf(\"PASS: %d steps, %ld values equal to the bundle %s (\" FIXPROP_TYPES \")\\n\", t, "
              "bundle.checked, bundle.dir.c_str());",
              "    return fixprop_tb::PASS;", "}", ""]
    return "\n".join(lines)


def _makefile(include: Path) -> str:
    return "\n".join([
        "# Generated by fixprop (fixprop hls). make check BUNDLE=dir: compile the C simulation and run it.",
        f"TYPES_INCLUDE ?= {include}",
        "CXX ?= g++",
        "# NDEBUG: ap_fixed's debug assertion on a cast that drops more bits than its source has fires",
        "# falsely (it reads a bit it then does not use)",
        "CXXFLAGS ?= -std=c++14 -O1 -DNDEBUG",
        "BUNDLE ?= bundle",
        "",
        "tb: tb_train_step.cpp train_step.cpp train_step.h fixprop_hls.h fixprop_tb.h",
        "\t$(CXX) $(CXXFLAGS) -DFIXPROP_TRACE -I$(TYPES_INCLUDE) -I. -o $@ tb_train_step.cpp train_step.cpp",
        "",
        "check: tb",
        "\t./tb $(BUNDLE)",
        "",
        "clean:",
        "\trm -f tb *.o",
        "",
        ".PHONY: check clean",
        ""])


# -- the public functions -------------------------------------------------------------------------
def generate(net: MLP, datapath: Datapath, batch: int, out: str | Path, types: str = "ap_fixed",
             lfsr: LfsrSource | None = None, include: str | Path | None = None, pragmas: bool = False,
             weights: Sequence[LayerParams] | None = None, overwrite: bool = False) -> Path:
    """Write the HLS C++ of one training step of ``net`` under ``datapath`` at ``batch`` samples
    into the directory ``out`` (module docstring); returns ``out``. ``types``: "ap_fixed" or
    "ac_fixed"; ``lfsr``: the LFSR source of stochastic casts (its bits and taps are compiled in,
    its seed starts the testbench's lanes); ``include``: the type headers' directory (default:
    hls4ml's copy); ``pragmas``: HLS PIPELINE / ARRAY_PARTITION pragmas; ``weights``: fixed-point
    parameters (FixedArrays in the weight and bias formats) written as initialised C++ arrays in
    ``weights.h``. Everything is checked before anything is written."""
    _check_flavour(types)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise HlsError(f"batch must be an int >= 1; got {batch!r}")
    casts = _observe(net, datapath, batch)  # every cast's formats, once
    check_supported(net, datapath, lfsr, casts)
    headers = find_headers(types, include)
    kernel = _Kernel(net, datapath, batch, types, lfsr, pragmas, casts)
    files = {"train_step.h": kernel.header(), "train_step.cpp": kernel.source(),
             "tb_train_step.cpp": _testbench(kernel), "Makefile": _makefile(headers)}
    if weights is not None:
        files["weights.h"] = weights_header(kernel, weights)
    support = ["fixprop_hls.h", "fixprop_tb.h", "fixprop_ap.h" if types == "ap_fixed" else "fixprop_ac.h"]
    out = Path(out)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise HlsError(f"{out} exists and is not empty; choose another directory, or replace it (--force)")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    for name in support:
        shutil.copyfile(SUPPORT_DIR / name, out / name)
    return out


def weights_header(kernel: _Kernel, weights: Sequence[LayerParams]) -> str:
    """``weights.h``: the parameters as initialised arrays of the state's types, and
    ``load_weights(state)`` copying them into a state_t."""
    lines = ["// Generated by fixprop (fixprop hls --weights): trained fixed-point parameters.",
             "#ifndef FIXPROP_WEIGHTS_H", "#define FIXPROP_WEIGHTS_H", "", "#include \"train_step.h\"", "",
             "namespace fixprop {", ""]
    if len(weights) != kernel.L:
        raise HlsError(f"the weights have {len(weights)} layers, the network {kernel.L}")
    for i, p in enumerate(weights):
        for kind, value in (("weight", p.weight), ("bias", p.bias)):
            site = kernel.weight_site[i] if kind == "weight" else kernel.bias_site[i]
            if not isinstance(value, FixedArray) or value.fmt != site.dst:
                got = value.fmt if isinstance(value, FixedArray) else type(value).__name__
                raise HlsError(f"layer {i} {kind}: the kernel holds {site.dst}, the weights are {got}")
            if value.fmt.word > 53:
                raise HlsError(f"layer {i} {kind}: {value.fmt} values are written as exact double literals, which hold "
                               "at most 53 bits: --weights needs weight and bias words of at most 53 bits")
            dims = "".join(f"[{d}]" for d in value.shape)
            values = np.asarray(value.raw, dtype=object).reshape(value.shape)
            scale = Fraction(1, 1 << value.fmt.frac) if value.fmt.frac >= 0 else Fraction(1 << -value.fmt.frac)
            rows = values if values.ndim == 2 else values[None, :]
            body = ",\n".join("    {" + ", ".join(_literal(int(v) * scale) for v in row) + "}" for row in rows)
            if values.ndim == 1:
                body = body.strip()[1:-1]
                lines.append(f"static const {site.name} l{i}_{kind}_trained{dims} = {{{body}}};")
            else:
                lines.append(f"static const {site.name} l{i}_{kind}_trained{dims} = {{\n{body}}};")
    lines += ["", "inline void load_weights(state_t &state) {"]
    for i in range(kernel.L):
        lines += [f"    for (int j = 0; j < N{i + 1}; j++) {{",
                  f"        state.l{i}.bias[j] = l{i}_bias_trained[j];",
                  f"        for (int k = 0; k < N{i}; k++) state.l{i}.weight[j][k] = l{i}_weight_trained[j][k];",
                  "    }"]
    lines += ["}", "", "}  // namespace fixprop", "", "#endif", ""]
    return "\n".join(lines)


@dataclass
class CheckResult:
    """What ``fixprop hls --check`` found: passed (every value equal), the testbench's exit
    status (0 pass, 1 mismatch, 2 unreadable bundle) and its output."""

    passed: bool
    returncode: int
    output: str
    directory: Path


def compile_testbench(directory: str | Path, include: str | Path, cxx: str = "g++") -> Path:
    """Compile the generated C simulation in ``directory`` with ``cxx``; returns the binary."""
    directory = Path(directory)
    if shutil.which(cxx) is None:
        raise HlsError(f"no C++ compiler {cxx!r} on PATH (Debian: apt-get install g++)")
    binary = directory / "tb"
    flags = ["-std=c++14", "-O1", "-DNDEBUG", "-DFIXPROP_TRACE", f"-I{include}", f"-I{directory}"]
    units = ("tb_train_step", "train_step")
    compiles = [subprocess.Popen([cxx, *flags, "-c", "-o", str(directory / f"{unit}.o"), str(directory / f"{unit}.cpp")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for unit in units]  # the two units at once: the type headers make each take seconds
    errors = [process.communicate()[1] for process in compiles]
    for process, unit, error in zip(compiles, units, errors):
        if process.returncode != 0:
            raise HlsError(f"{cxx} failed to compile {directory / unit}.cpp:\n{error[-4000:]}")
    result = subprocess.run([cxx, "-o", str(binary), *(str(directory / f"{unit}.o") for unit in units)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise HlsError(f"{cxx} failed to link {binary}:\n{result.stderr[-4000:]}")
    return binary


def run_testbench(binary: str | Path, bundle: str | Path) -> tuple[int, str]:
    """Run a compiled C simulation on a bundle: (exit status, stdout and stderr)."""
    result = subprocess.run([str(binary), str(bundle)], capture_output=True, text=True)
    return result.returncode, (result.stdout + result.stderr).strip()


def check(bundle: str | Path, types: str = "ap_fixed", include: str | Path | None = None,
          out: str | Path | None = None, cxx: str = "g++", overwrite: bool = False) -> CheckResult:
    """Generate the kernel of an export bundle's network and datapath (its manifest), compile its
    C simulation with ``cxx`` and run it on the bundle. ``out``: where the C++ goes (default: a
    temporary directory, removed after the run; a non-empty ``out`` only with ``overwrite``).
    The result's returncode is the testbench's (0 equal, 1 a mismatch, 2 an unreadable bundle),
    or 3 when the simulation stopped on a signal (its output says which)."""
    from fixprop.hardware.bundle import load

    loaded = load(bundle)  # every file checked against the manifest first
    network = loaded.manifest.get("network") or {}
    missing = [key for key in ("layer_sizes", "activation", "output_activation", "loss", "batch") if key not in network]
    if missing:
        raise HlsError(f"{bundle}: the manifest's network has no {', '.join(missing)} (write bundles with "
                       "fixprop export or fixprop.hardware.export)")
    net = MLP(network["layer_sizes"], network["activation"], network["output_activation"], network["loss"])
    lfsr_table = loaded.manifest.get("lfsr")
    lfsr = None
    if lfsr_table is not None:
        lfsr = LfsrSource(lfsr_table["seed"], lfsr_table["bits"], lfsr_table["width"], lfsr_table["taps"])
    elif _uses_stoch(loaded.datapath) and stochastic_sites(_observe(net, loaded.datapath, 1), loaded.datapath):
        raise HlsError(f"{bundle}: its STOCH casts drew from numpy's generator, which C++ cannot replay; the kernel "
                       "implements the LFSR source: export the bundle with --lfsr-seed N")
    temporary = out is None
    directory = Path(tempfile.mkdtemp(prefix="fixprop-hls-")) if temporary else Path(out)
    try:
        generate(net, loaded.datapath, int(network["batch"]), directory, types, lfsr, include,
                 overwrite=temporary or overwrite)
        binary = compile_testbench(directory, find_headers(types, include), cxx)
        code, output = run_testbench(binary, loaded.path)
        if code not in (0, 1, 2):  # a crash: never reported as a pass, a mismatch or a bad bundle
            output, code = f"{output}\ntestbench: stopped by signal {-code} (exit status {code})".strip(), 3
        return CheckResult(code == 0, code, output, directory)
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
