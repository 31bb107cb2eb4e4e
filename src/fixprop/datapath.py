"""The datapath: which format, rounding and overflow every role's cast uses.

A :class:`Datapath` is data. It saves to and loads from a TOML file a person can read, and
docs/datapath.md describes, stage by stage, where each role's cast happens. The network code
(``fixprop.nn``) calls ``FixedArithmetic.cast(x, role)``, which looks the role up here.

Roles (``ROLES``):

=============== ==================================================================
input           network input x, quantized from data
target          training target y, quantized from data
weight          weights W (the state: updated weights are cast back into it)
bias            biases b (the state)
acc             the dot product W a, cast before the bias is added
pre             pre-activation z = acc + b
act             activation a = f(z)
out_err         output error dL/da of the last layer
prop_err        error propagated to the previous layer, W^T e
bias_grad       local error e = dL/dz = delta * f'(z) per sample (the bias gradient)
weight_grad     weight gradient, sum over the batch of e a_prev^T
update          learning rate x gradient (or x velocity), subtracted from the state
momentum        velocity v = mu v + gradient (only when momentum is used)
=============== ==================================================================

Optional roles (``OPTIONAL_ROLES``; absent: exact products, no working copy):

=============== ==================================================================
product         each forward product a_i * w_ji, cast before it is summed into acc
prop_product    each product e_j * w_ji of the propagated error, before prop_err's sum
grad_product    each product e_j * a_i of the weight gradient, before weight_grad's sum
weight_fwd      the working copy of the weights that forward and backward use
bias_fwd        the working copy of the biases that the forward pass uses
=============== ==================================================================

A role whose value is a sum (``SUM_ROLES``) says how it is accumulated (``RoleCast.accumulate``):
"exact" (one cast of the exact sum), "sequential" (a register cast at every addition) or "tree"
(a balanced adder tree cast at every node). docs/datapath.md gives the equations.
"""

from __future__ import annotations

import functools

import math
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from fixprop.errors import ConfigError, FixpropError
from fixprop.fixed.format import QFormat
from fixprop.fixed.modes import DEFAULT_OVERFLOW, DEFAULT_ROUNDING, Overflow, Rounding

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROLES: tuple[str, ...] = (
    "input", "target", "weight", "bias", "acc", "pre", "act",
    "out_err", "prop_err", "bias_grad", "weight_grad", "update", "momentum",
)

#: Roles a datapath may leave out: product casts (absent: exact products) and working copies
#: of the parameters (absent: forward and backward use the state itself).
OPTIONAL_ROLES: tuple[str, ...] = ("product", "prop_product", "grad_product", "weight_fwd", "bias_fwd")
#: The product role whose casts feed each sum role's accumulation.
PRODUCT_ROLE_OF: dict[str, str] = {"acc": "product", "prop_err": "prop_product", "weight_grad": "grad_product"}
#: Roles whose value is a sum, and so take an ``accumulate`` mode (bias_grad: its batch sum).
SUM_ROLES: tuple[str, ...] = ("acc", "prop_err", "weight_grad", "bias_grad")
#: How a sum role adds its terms: one cast of the exact sum, a register cast after every
#: addition in index order, or a balanced binary adder tree cast at every node.
ACCUMULATE_MODES: tuple[str, ...] = ("exact", "sequential", "tree")

#: Values allowed for the ReLU derivative at exactly 0.
RELU_GRAD_AT_ZERO_CHOICES = (0.0, 0.5, 1.0)

FULL = "full"
#: ``frac = "dynamic"`` in a role's TOML table: dynamic fixed point (docs/datapath.md).
DYNAMIC = "dynamic"

#: Roles whose cast may differ per layer (every role but the data roles input and target).
LAYER_ROLES: tuple[str, ...] = tuple(r for r in ROLES if r not in ("input", "target")) + OPTIONAL_ROLES


@dataclass(frozen=True)
class RoleCast:
    """How a value is cast into one role.

    Args:
        word: word length in bits, or ``None`` ("full"): as wide as needed, so the cast never
            overflows (the integer bits of the incoming value, plus one when rounding can carry).
        frac: fractional bits, or ``None`` ("full"): keep the incoming fraction (no rounding).
        signed: two's complement when True.
        rounding, overflow: the cast's modes (overflow is unused when ``word`` is full).
        accumulate: for a role whose value is a sum (``SUM_ROLES``): "exact" (the exact sum,
            cast once), "sequential" (a register of this cast's format, cast after every
            addition, terms in index order) or "tree" (a balanced binary adder tree, every node
            cast). Other roles keep "exact".
    """

    word: int | None
    frac: int | None
    signed: bool = True
    rounding: Rounding = DEFAULT_ROUNDING
    overflow: Overflow = DEFAULT_OVERFLOW
    accumulate: str = "exact"
    dynamic: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rounding", Rounding.parse(self.rounding))
        object.__setattr__(self, "overflow", Overflow.parse(self.overflow))
        if self.accumulate not in ACCUMULATE_MODES:
            raise ConfigError(f"accumulate must be one of {', '.join(ACCUMULATE_MODES)}; got {self.accumulate!r}")
        if self.dynamic is not None:
            bounds = tuple(self.dynamic)
            if (len(bounds) != 2 or any(isinstance(b, bool) or not isinstance(b, int) for b in bounds)
                    or self.word is None or self.frac is None or not bounds[0] <= self.frac <= bounds[1]):
                raise ConfigError(f"a dynamic frac needs a fixed word and integer bounds min_frac <= frac <= max_frac; "
                                  f"got word {self.word!r}, frac {self.frac!r}, bounds {self.dynamic!r}")
            object.__setattr__(self, "dynamic", bounds)
        if self.word is not None and self.frac is not None:
            QFormat(self.word, self.frac, self.signed)  # validates
        elif self.word is not None and (isinstance(self.word, bool) or not isinstance(self.word, int) or self.word < 1):
            raise ConfigError(f"word must be an int >= 1 or 'full'; got {self.word!r}")
        elif self.frac is not None and (isinstance(self.frac, bool) or not isinstance(self.frac, int)):
            raise ConfigError(f"frac must be an int or 'full'; got {self.frac!r}")

    @classmethod
    def of(cls, fmt: QFormat | str, rounding: Rounding | str = DEFAULT_ROUNDING,
           overflow: Overflow | str = DEFAULT_OVERFLOW) -> "RoleCast":
        """A cast into a fixed format."""
        fmt = QFormat.parse(fmt)
        return cls(fmt.word, fmt.frac, fmt.signed, Rounding.parse(rounding), Overflow.parse(overflow))

    @functools.cached_property
    def fmt(self) -> QFormat | None:
        """The target format, or None when word or frac is full (it then depends on the input)."""
        if self.word is None or self.frac is None:
            return None
        return QFormat(self.word, self.frac, self.signed)

    def target_format(self, src: QFormat) -> QFormat:
        """The format a value of format ``src`` is cast into."""
        return _target_format(self, src)

    def _compute_target_format(self, src: QFormat) -> QFormat:
        frac = src.frac if self.frac is None else self.frac
        if self.word is not None:
            return QFormat(self.word, frac, self.signed)
        # full width: keep every integer bit; one more when dropping bits can round up a carry
        int_bits = src.int_bits + (1 if frac < src.frac else 0)
        signed = src.signed
        return QFormat(max(int_bits + frac, 1), frac, signed)

    def at_word(self, word: int) -> "RoleCast":
        """The same cast at another word length, keeping its integer bits (frac moves with the
        word); a cast whose word or frac is full is returned as it is."""
        if self.word is None or self.frac is None:
            return self
        shift = word - self.word
        bounds = None if self.dynamic is None else (self.dynamic[0] + shift, self.dynamic[1] + shift)
        return replace(self, word=word, frac=self.frac + shift, dynamic=bounds)

    def describe(self) -> str:
        """Short text such as ``s16.8 RND_CONV SAT`` or ``full.12 RND_CONV``."""
        word = FULL if self.word is None else str(self.word)
        frac = FULL if self.frac is None else str(self.frac)
        prefix = "s" if self.signed else "u"
        text = f"{prefix}{word}.{frac}" if self.word is not None else f"{word}.{frac}"
        return (f"{text} {self.rounding.name}" + ("" if self.word is None else f" {self.overflow.name}")
                + ("" if self.accumulate == "exact" else f" {self.accumulate}")
                + ("" if self.dynamic is None else f" dynamic frac {self.dynamic[0]}..{self.dynamic[1]}"))

    def to_toml_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {}
        if self.dynamic is not None:
            table.update(word=self.word, frac=DYNAMIC, initial_frac=self.frac, min_frac=self.dynamic[0],
                         max_frac=self.dynamic[1], signed=self.signed)
        elif self.word is not None and self.frac is not None:
            table["format"] = str(QFormat(self.word, self.frac, self.signed))
        else:
            table["word"] = FULL if self.word is None else self.word
            table["frac"] = FULL if self.frac is None else self.frac
            if self.word is not None:  # a full-width cast keeps the incoming signedness
                table["signed"] = self.signed
        table["rounding"] = self.rounding.name
        if self.word is not None:  # a full-width cast never overflows
            table["overflow"] = self.overflow.name
        if self.accumulate != "exact":
            table["accumulate"] = self.accumulate
        return table


@lru_cache(maxsize=4096)
def _target_format(cast: RoleCast, src: QFormat) -> QFormat:
    return cast._compute_target_format(src)


@dataclass(frozen=True)
class FixedConstant:
    """A constant held in its own fixed-point format (learning rate, momentum coefficient).

    ``value`` is a finite real number that must fit ``fmt`` (it is rounded by ``rounding``, a
    deterministic mode or its name, never saturated): a constant the hardware cannot hold is a
    :class:`ConfigError`, not a silently different constant.
    """

    value: float
    fmt: QFormat
    rounding: Rounding = Rounding.RND_CONV

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"FixedConstant value must be a finite real number; got {value!r}")
        object.__setattr__(self, "value", float(value))
        if isinstance(self.fmt, str):
            object.__setattr__(self, "fmt", QFormat.parse(self.fmt))
        elif not isinstance(self.fmt, QFormat):
            raise ConfigError(f"FixedConstant fmt must be a QFormat or a string like 'u16.16'; got {self.fmt!r}")
        rounding = Rounding.parse(self.rounding)
        if rounding is Rounding.STOCH:
            raise ConfigError("a FixedConstant is rounded once, deterministically: STOCH is not allowed")
        object.__setattr__(self, "rounding", rounding)
        from fixprop.fixed.array import FixedArray

        unbounded = QFormat(max(self.fmt.frac + 1026, 2), self.fmt.frac)  # holds any finite float64
        rounded = int(FixedArray.from_float([self.value], unbounded, self.rounding, None).raw[0])
        if not self.fmt.raw_min <= rounded <= self.fmt.raw_max:
            raise ConfigError(f"constant {self.value!r} does not fit its format {self.fmt} "
                              f"(range [{self.fmt.min:g}, {self.fmt.max:g}]): give it more integer bits")

    @property
    def raw(self) -> int:
        """The constant's raw integer (``value`` rounded into ``fmt``)."""
        from fixprop.fixed.array import FixedArray

        return int(FixedArray.from_float([self.value], self.fmt, self.rounding, None).raw[0])

    @property
    def quantized(self) -> float:
        """The value the hardware uses: ``raw * 2**-frac``."""
        return math.ldexp(self.raw, -self.fmt.frac)


@dataclass(frozen=True)
class DynamicRule:
    """How dynamic fractions move (Courbariaux, Bengio and David, 2014): after every ``interval``
    training steps, each dynamic cast site loses a fraction bit when more than ``overflow_rate``
    of the values it cast over the interval overflowed its format, else gains one when no more
    than ``overflow_rate`` of them would have overflowed with one more fraction bit; within the
    role's bounds, one bit per check. docs/datapath.md, "Dynamic fixed point"."""

    interval: int = 100
    overflow_rate: float = 1e-4

    def __post_init__(self) -> None:
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval < 1:
            raise ConfigError(f"dynamic interval must be an integer >= 1 (training steps); got {self.interval!r}")
        rate = self.overflow_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ConfigError(f"dynamic overflow_rate must be a number in [0, 1); got {rate!r}")
        object.__setattr__(self, "overflow_rate", float(rate))


@dataclass(frozen=True)
class Datapath:
    """Per-role casts plus the arithmetic settings that are not formats.

    Args:
        roles: a :class:`RoleCast` for every name in :data:`ROLES` (``momentum`` may be absent
            when no momentum is used), and for any of :data:`OPTIONAL_ROLES` the datapath uses.
        relu_grad_at_zero: ReLU's derivative at exactly 0: 0, 0.5 (autograd's and the seed's) or 1.
        lr_shift: learning rate ``2**-lr_shift`` applied as an exact right shift; or
        lr: a learning-rate constant in its own format (exactly one of the two).
        momentum: the momentum coefficient as a constant in its own format, or None.
        layers: per-layer overrides, ``{layer: {role: RoleCast}}`` (layer 0 = the first weight
            layer): layer ``l``'s casts into a role use the override when there is one, as an FPGA
            with one format per layer instance. The data roles input and target have no layer.
        dynamic: the rule that moves dynamic fractions (casts with ``RoleCast.dynamic``); None
            when no cast is dynamic (a default rule is filled in when one is).
    """

    roles: dict[str, RoleCast]
    relu_grad_at_zero: float = 0.5
    lr_shift: int | None = 7
    lr: FixedConstant | None = None
    momentum: FixedConstant | None = None
    name: str = field(default="", compare=False)
    layers: dict[int, dict[str, RoleCast]] = field(default_factory=dict)
    dynamic: DynamicRule | None = None

    def __post_init__(self) -> None:
        missing = [r for r in ROLES if r not in self.roles and not (r == "momentum" and self.momentum is None)]
        unknown = [r for r in self.roles if r not in ROLES and r not in OPTIONAL_ROLES]
        if unknown:
            raise ConfigError(f"unknown datapath role(s) {unknown}; roles are: {', '.join(ROLES)}; "
                              f"optional roles: {', '.join(OPTIONAL_ROLES)}")
        if missing:
            required = ", ".join(r for r in ROLES if r != "momentum")
            raise ConfigError(f"datapath has no cast for role(s) {missing}; every one of {required} needs one "
                              "(and momentum when a momentum coefficient is given)")
        self._check_learning_settings()
        state_roles = [r for r in ("input", "target", "weight", "bias", "momentum") if r in self.roles]
        open_ended = [r for r in state_roles if self.roles[r].fmt is None]
        if open_ended:
            raise ConfigError(f"role(s) {open_ended} hold data or state and need a fixed word and frac, not 'full'")
        if self.relu_grad_at_zero not in RELU_GRAD_AT_ZERO_CHOICES:
            raise ConfigError(f"relu_grad_at_zero must be 0, 0.5 or 1; got {self.relu_grad_at_zero!r}")
        for layer, overrides in self.layers.items():
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise ConfigError(f"layer overrides are keyed by layer index (an int >= 0); got {layer!r}")
            wrong = sorted(set(overrides) - set(LAYER_ROLES))
            if wrong:
                raise ConfigError(f"layer {layer}: role(s) {wrong} cannot differ per layer; "
                                  f"per-layer roles are: {', '.join(LAYER_ROLES)}")
            if "momentum" in overrides and self.momentum is None:
                raise ConfigError(f"layer {layer}: a momentum override needs a momentum coefficient")
            open_ended = [r for r in ("weight", "bias", "momentum") if r in overrides and overrides[r].fmt is None]
            if open_ended:
                raise ConfigError(f"layer {layer}: role(s) {open_ended} hold state and need a fixed word and frac")
        has_dynamic = any(cast.dynamic is not None for _, _, cast in self.all_casts())
        if has_dynamic and self.dynamic is None:
            object.__setattr__(self, "dynamic", DynamicRule())
        elif self.dynamic is not None and not has_dynamic:
            raise ConfigError("a [dynamic] rule is given but no role has frac = \"dynamic\"")
        if self.dynamic is not None and not isinstance(self.dynamic, DynamicRule):
            raise ConfigError(f"dynamic must be a DynamicRule; got {self.dynamic!r}")
        for role, layer, cast in self.all_casts():
            if cast.accumulate == "sequential" and cast.word is None:
                where = f"layer {layer}: " if layer is not None else ""
                raise ConfigError(f"{where}role {role}: a sequential register needs a fixed word (word = \"full\" "
                                  "would grow by one bit per addition); give word = <bits>, or accumulate = \"tree\"")
            if cast.accumulate != "exact" and role not in SUM_ROLES:
                where = f"layer {layer}: " if layer is not None else ""
                raise ConfigError(f"{where}role {role} is not a sum: accumulate = {cast.accumulate!r} applies only "
                                  f"to {', '.join(SUM_ROLES)}")

    def _check_learning_settings(self) -> None:
        """The one rule for learning settings (TOML, API and CLI all come here): exactly one of
        lr_shift (an int >= 0: lr = 2**-lr_shift, a right shift) and lr (a constant > 0 that fits
        its format and is not 0 there); momentum, when given, in [0, 1) as given and as quantized."""
        if (self.lr_shift is None) == (self.lr is None):
            raise ConfigError("give exactly one learning rate: lr_shift (an int, lr = 2**-shift) or lr (a constant)")
        for name, const in (("lr", self.lr), ("momentum", self.momentum)):
            if const is not None and not isinstance(const, FixedConstant):
                raise ConfigError(f"{name} must be a FixedConstant(value, format) or None; got {const!r}")
        if self.lr_shift is not None:
            if isinstance(self.lr_shift, bool) or not isinstance(self.lr_shift, int) or self.lr_shift < 0:
                raise ConfigError(f"lr_shift must be an int >= 0 (learning rate 2**-lr_shift, a right shift; "
                                  f"a learning rate above 1 needs an [lr] constant); got {self.lr_shift!r}")
        elif self.lr.value <= 0:
            raise ConfigError(f"lr must be > 0; got {self.lr.value!r}")
        elif self.lr.raw == 0:
            raise ConfigError(f"lr = {self.lr.value!r} is 0 in its format {self.lr.fmt}; "
                              "give the constant more fraction bits")
        if self.momentum is not None:
            mu = self.momentum
            if not 0 <= mu.value < 1 or not 0 <= mu.quantized < 1:
                shown = f"{mu.value!r}" + (f" (quantized {mu.quantized!r} in {mu.fmt})" if 0 <= mu.value < 1 else "")
                raise ConfigError(f"momentum must be in [0, 1); got {shown}")
            if mu.value != 0 and mu.raw == 0:
                raise ConfigError(f"momentum = {mu.value!r} is 0 in its format {mu.fmt}; "
                                  "give the constant more fraction bits")

    def __getitem__(self, role: str) -> RoleCast:
        try:
            return self.roles[role]
        except KeyError:
            if role in OPTIONAL_ROLES:
                raise ConfigError(f"this datapath has no {role} role (an optional role: "
                                  "optional_cast() gives None for it)") from None
            raise ConfigError(f"unknown datapath role {role!r}; roles are: {', '.join(ROLES)}") from None

    def optional_cast(self, role: str, layer: int | None) -> RoleCast | None:
        """The cast of an optional role (``OPTIONAL_ROLES``) at ``layer``: the layer's override,
        else the role's cast, else None (the datapath does not use it there)."""
        override = self.layers.get(layer) if layer is not None else None
        if override is not None and role in override:
            return override[role]
        return self.roles.get(role)

    def dynamic_sites(self, n_layers: int) -> list[tuple[str, int | None]]:
        """The cast sites (role, layer) whose frac is dynamic, for a network of ``n_layers``:
        data roles once (layer None), every other role once per layer."""
        sites = []
        for role in ROLES + OPTIONAL_ROLES:
            layers: list[int | None] = [None] if role in ("input", "target") else list(range(n_layers))
            if role == "out_err":  # cast only at the last layer
                layers = [n_layers - 1]
            elif role in ("prop_err", "prop_product"):  # not at the first layer (no error goes below it)
                layers = list(range(1, n_layers))
            for layer in layers:
                cast = self.optional_cast(role, layer) if role in OPTIONAL_ROLES else (
                    self.cast_for(role, layer) if role in self.roles else None)
                if cast is not None and cast.dynamic is not None:
                    sites.append((role, layer))
        return sites

    def with_fracs(self, fracs: dict[tuple[str, int | None], int]) -> "Datapath":
        """A copy whose dynamic sites take the given fractions: data roles in their role table,
        the others as layer overrides (a site's cast keeps everything but its frac)."""
        roles = dict(self.roles)
        layers = {layer: dict(o) for layer, o in self.layers.items()}
        for (role, layer), frac in fracs.items():
            if layer is None:
                roles[role] = replace(roles[role], frac=frac)
            else:
                cast = self.optional_cast(role, layer) if role in OPTIONAL_ROLES else self.cast_for(role, layer)
                layers.setdefault(layer, {})[role] = replace(cast, frac=frac)
        return replace(self, roles=roles, layers=layers)

    @property
    def uses_fidelity(self) -> bool:
        """True when any cast models hardware beyond one cast per stage: a product cast, a
        working copy of the parameters, or a sum accumulated as a register or a tree."""
        return any(role in OPTIONAL_ROLES or cast.accumulate != "exact" for role, _, cast in self.all_casts())

    @property
    def needs_stepwise(self) -> bool:
        """True when training must run on the exact step-by-step path: a product cast or a
        register or tree accumulator (single products and partial sums, which the compiled
        engines do not form), or dynamic fractions (every cast's values are counted)."""
        return self.dynamic is not None or any(
            role in PRODUCT_ROLE_OF.values() or cast.accumulate != "exact" for role, _, cast in self.all_casts())

    def cast_for(self, role: str, layer: int | None) -> RoleCast:
        """The cast of ``role`` at ``layer``: the layer's override, else the role's cast."""
        override = self.layers.get(layer) if layer is not None else None
        if override is not None and role in override:
            return override[role]
        return self[role]

    def check_layers(self, n_layers: int) -> None:
        """Raise ConfigError when an override names a layer a network of ``n_layers`` lacks."""
        extra = sorted(layer for layer in self.layers if layer >= n_layers)
        if extra:
            raise ConfigError(f"datapath {self.name!r} overrides layer(s) {extra} but the network has "
                              f"{n_layers} layer(s), 0..{n_layers - 1}")

    @property
    def learning_rate(self) -> float:
        """The learning rate the hardware applies, as a float (``2**-lr_shift`` or the quantized constant)."""
        return 2.0 ** -self.lr_shift if self.lr_shift is not None else self.lr.quantized

    @property
    def momentum_coefficient(self) -> float:
        """The quantized momentum coefficient, 0.0 without momentum."""
        return 0.0 if self.momentum is None else self.momentum.quantized

    def with_role(self, role: str, cast: RoleCast) -> "Datapath":
        """A copy with one role's cast replaced (or an optional role's added)."""
        if role not in OPTIONAL_ROLES:
            self[role]
        return replace(self, roles={**self.roles, role: cast})

    def with_modes(self, rounding: Rounding | str | None = None, overflow: Overflow | str | None = None) -> "Datapath":
        """A copy whose every role (and layer override) uses ``rounding`` and/or ``overflow``
        (None keeps each cast's own)."""
        def modes(cast: RoleCast) -> RoleCast:
            return replace(cast, rounding=cast.rounding if rounding is None else Rounding.parse(rounding),
                           overflow=cast.overflow if overflow is None else Overflow.parse(overflow))

        roles = {role: modes(cast) for role, cast in self.roles.items()}
        layers = {layer: {role: modes(cast) for role, cast in o.items()} for layer, o in self.layers.items()}
        suffix = " ".join(str(m) for m in (rounding, overflow) if m is not None)
        return replace(self, roles=roles, layers=layers, name=f"{self.name} {suffix}".strip())

    def all_casts(self) -> list[tuple[str, int | None, RoleCast]]:
        """Every cast as (role, layer, cast): the roles (layer None), then the layer overrides."""
        casts = [(role, None, cast) for role, cast in self.roles.items()]
        casts += [(role, layer, cast) for layer in sorted(self.layers) for role, cast in self.layers[layer].items()]
        return casts

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def uniform(cls, word: int, frac: int, rounding: Rounding | str = DEFAULT_ROUNDING,
                overflow: Overflow | str = DEFAULT_OVERFLOW, *, lr_shift: int = 7) -> "Datapath":
        """Every role cast into the same signed format ``(word, frac)`` with the same modes."""
        cast = RoleCast.of(QFormat(word, frac), rounding, overflow)
        return cls({role: cast for role in ROLES}, lr_shift=lr_shift, name=f"uniform s{word}.{frac}")

    @classmethod
    def seed(cls, d_bits: int = 16, q_bits: int = 10) -> "Datapath":
        """The seed notebook's arithmetic: values in units of 2**-q, words of d bits.

        Round half to even everywhere; the dot product W a is rounded to q fraction bits at
        full width (no saturation), the bias added, then saturated to d bits; the output error
        2 (a - y) is not saturated; local error, weight gradient and propagated error are
        rounded and saturated to (d, q).
        """
        d = RoleCast.of(QFormat(d_bits, q_bits), Rounding.RND_CONV, Overflow.SAT)
        full_q = RoleCast(None, q_bits, True, Rounding.RND_CONV, Overflow.SAT)
        roles = {role: d for role in ROLES}
        roles.update(acc=full_q, out_err=full_q)
        return cls(roles, relu_grad_at_zero=0.5, lr_shift=7, name=f"seed({d_bits},{q_bits})")

    # -- TOML ------------------------------------------------------------------------------
    def to_toml(self) -> str:
        """The datapath as TOML text (``Datapath.from_toml`` reads it back)."""
        lines = ["# fixprop datapath: one cast (format, rounding, overflow) per role; docs/datapath.md",
                 f"relu_grad_at_zero = {self.relu_grad_at_zero}"]
        if self.lr_shift is not None:
            lines.append(f"lr_shift = {self.lr_shift}  # learning rate 2**-{self.lr_shift}")
        for key, const in (("lr", self.lr), ("momentum", self.momentum)):
            if const is not None:
                lines += ["", f"[{key}]", f"value = {const.value!r}", f'format = "{const.fmt}"',
                          f'rounding = "{const.rounding.name}"']
        if self.dynamic is not None:
            lines += ["", "[dynamic]", f"interval = {self.dynamic.interval}",
                      f"overflow_rate = {self.dynamic.overflow_rate!r}"]
        for role in ROLES + OPTIONAL_ROLES:
            if role in self.roles:
                lines += ["", f"[roles.{role}]"]
                lines += [f"{key} = {_toml_value(value)}" for key, value in self.roles[role].to_toml_table().items()]
        for layer in sorted(self.layers):
            for role in ROLES + OPTIONAL_ROLES:
                if role in self.layers[layer]:
                    lines += ["", f"[layers.{layer}.{role}]"]
                    lines += [f"{key} = {_toml_value(value)}"
                              for key, value in self.layers[layer][role].to_toml_table().items()]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the datapath to a TOML file."""
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> "Datapath":
        """Parse TOML text; unknown keys and bad values raise :class:`ConfigError` naming them."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{source}: not valid TOML: {error}") from None
        allowed = {"relu_grad_at_zero", "lr_shift", "lr", "momentum", "roles", "layers", "dynamic"}
        _no_unknown(doc, allowed, source, "top level")
        roles_doc = doc.get("roles")
        if not isinstance(roles_doc, dict):
            required = ", ".join(r for r in ROLES if r != "momentum")
            raise ConfigError(f"{source}: needs a [roles.<name>] table for each of: {required} "
                              "(and momentum when [momentum] is given)")
        roles = {}
        for name, table in roles_doc.items():
            where = f"{source} [roles.{name}]"
            try:
                roles[name] = _role_from_table(table, where)
            except ConfigError:
                raise
            except FixpropError as error:
                raise ConfigError(f"{where}: {error}") from None
        layers: dict[int, dict[str, RoleCast]] = {}
        layers_doc = doc.get("layers", {})
        if not isinstance(layers_doc, dict):
            raise ConfigError(f"{source}: layers must be tables [layers.<index>.<role>]")
        for key, overrides in layers_doc.items():
            if not (key.isascii() and key.isdigit()) or not isinstance(overrides, dict):
                raise ConfigError(f"{source}: [layers.{key}] must be [layers.<index>.<role>] with index 0, 1, ...")
            if int(key) in layers:
                raise ConfigError(f"{source}: layer {int(key)} is given twice ([layers.{key}] and another "
                                  "spelling of the same index)")
            layers[int(key)] = {}
            for name, table in overrides.items():
                where = f"{source} [layers.{key}.{name}]"
                try:
                    layers[int(key)][name] = _role_from_table(table, where)
                except ConfigError:
                    raise
                except FixpropError as error:
                    raise ConfigError(f"{where}: {error}") from None
        try:
            lr = _constant_from_table(doc["lr"], f"{source} [lr]") if "lr" in doc else None
            momentum = _constant_from_table(doc["momentum"], f"{source} [momentum]") if "momentum" in doc else None
            dynamic = _dynamic_from_table(doc["dynamic"], f"{source} [dynamic]") if "dynamic" in doc else None
            return cls(
                roles,
                relu_grad_at_zero=doc.get("relu_grad_at_zero", 0.5),
                lr_shift=doc.get("lr_shift", None if lr is not None else 7),
                lr=lr,
                momentum=momentum,
                name=source,
                layers=layers,
                dynamic=dynamic,
            )
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}" if not str(error).startswith(source) else str(error)) from None
        except FixpropError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Datapath":
        """Read a datapath TOML file."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read datapath file {path}: {error.strerror}") from None
        return cls.from_toml(decode_toml_bytes(data, str(path)), source=str(path))

    def describe(self) -> str:
        """A table of role -> cast, one per line."""
        lines = [f"datapath {self.name}".rstrip()]
        lines += [f"  {role:<12} {self.roles[role].describe()}" for role in ROLES + OPTIONAL_ROLES
                  if role in self.roles]
        for layer in sorted(self.layers):
            lines += [f"  {role:<12} {self.layers[layer][role].describe()}  (layer {layer})"
                      for role in ROLES + OPTIONAL_ROLES if role in self.layers[layer]]
        lr = f"2**-{self.lr_shift}" if self.lr_shift is not None else f"{self.lr.quantized!r} ({self.lr.fmt})"
        lines.append(f"  relu'(0) = {self.relu_grad_at_zero}, learning rate {lr}"
                     + (f", momentum {self.momentum.quantized!r} ({self.momentum.fmt})" if self.momentum else ""))
        return "\n".join(lines)


def decode_toml_bytes(data: bytes, source: str) -> str:
    """A TOML file's text: UTF-8 as TOML requires (a leading UTF-8 byte-order mark, as some editors
    write, is dropped); anything else is a ConfigError that says which encoding it looks like."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{source}: the file is UTF-16 text; TOML files must be UTF-8 (save it as UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(f"{source}: not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); TOML files "
                          "must be UTF-8 (e.g. Latin-1 text: save it as UTF-8)") from None


def _toml_value(value: Any) -> str:
    """A TOML literal for a string, bool or int."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _no_unknown(table: dict, allowed: set[str], source: str, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in {where}; allowed: {', '.join(sorted(allowed))}")


def _role_from_table(table: Any, source: str) -> RoleCast:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: must be a table with format/rounding/overflow")
    _no_unknown(table, {"format", "word", "frac", "signed", "rounding", "overflow", "accumulate", "initial_frac",
                        "min_frac", "max_frac"}, source, "the role")
    rounding = Rounding.parse(table.get("rounding", DEFAULT_ROUNDING))
    overflow = Overflow.parse(table.get("overflow", DEFAULT_OVERFLOW))
    accumulate = table.get("accumulate", "exact")
    if accumulate not in ACCUMULATE_MODES:
        raise ConfigError(f"{source}: accumulate must be one of {', '.join(repr(m) for m in ACCUMULATE_MODES)}; "
                          f"got {accumulate!r}")
    dynamic_keys = {"initial_frac", "min_frac", "max_frac"} & set(table)
    if table.get("frac") == DYNAMIC:
        return _dynamic_role(table, source, rounding, overflow, accumulate)
    if dynamic_keys:
        raise ConfigError(f"{source}: {', '.join(sorted(dynamic_keys))} apply only with frac = \"dynamic\"")
    if "format" in table:
        if {"word", "frac", "signed"} & set(table):
            raise ConfigError(f"{source}: give either format = \"s16.8\" or word/frac/signed, not both")
        return replace(RoleCast.of(QFormat.parse(table["format"]), rounding, overflow), accumulate=accumulate)
    if "word" not in table or "frac" not in table:
        raise ConfigError(f"{source}: needs format = \"s16.8\" (or word and frac; either may be \"full\")")

    def size(key: str) -> int | None:
        value = table[key]
        if value == FULL:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer or \"full\"; got {value!r}")
        return value

    signed = table.get("signed", True)
    if not isinstance(signed, bool):
        raise ConfigError(f"{source}: signed must be true or false; got {signed!r}")
    word = size("word")
    if word is None and "signed" in table:
        raise ConfigError(f"{source}: signed applies to a fixed word; a full-width cast keeps the input's sign")
    return RoleCast(word, size("frac"), signed, rounding, overflow, accumulate)


def _dynamic_role(table: dict, source: str, rounding: Rounding, overflow: Overflow, accumulate: str) -> RoleCast:
    """A role table with frac = "dynamic": word, initial_frac, and bounds min_frac / max_frac
    (default: initial_frac -+ word)."""
    word = table.get("word")
    if "format" in table or isinstance(word, bool) or not isinstance(word, int):
        raise ConfigError(f"{source}: frac = \"dynamic\" needs word = <bits> (not format, not \"full\") "
                          "and initial_frac = <bits>")
    values = {}
    for key in ("initial_frac", "min_frac", "max_frac"):
        value = table.get(key, None)
        if value is None and key == "initial_frac":
            raise ConfigError(f"{source}: frac = \"dynamic\" needs initial_frac = <bits>")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{source}: {key} must be an integer; got {value!r}")
        values[key] = value
    initial = values["initial_frac"]
    low = initial - word if values["min_frac"] is None else values["min_frac"]
    high = initial + word if values["max_frac"] is None else values["max_frac"]
    if not low <= initial <= high:
        raise ConfigError(f"{source}: needs min_frac <= initial_frac <= max_frac; got {low}, {initial}, {high}")
    signed = table.get("signed", True)
    if not isinstance(signed, bool):
        raise ConfigError(f"{source}: signed must be true or false; got {signed!r}")
    return RoleCast(word, initial, signed, rounding, overflow, accumulate, (low, high))


def _dynamic_from_table(table: Any, source: str) -> DynamicRule:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: must be a table with interval and overflow_rate")
    _no_unknown(table, {"interval", "overflow_rate"}, source, "the dynamic rule")
    defaults = DynamicRule()
    try:
        return DynamicRule(table.get("interval", defaults.interval), table.get("overflow_rate", defaults.overflow_rate))
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _constant_from_table(table: Any, source: str) -> FixedConstant:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: must be a table with value and format")
    _no_unknown(table, {"value", "format", "rounding"}, source, "the constant")
    if "value" not in table or "format" not in table:
        raise ConfigError(f"{source}: needs value = <number> and format = \"u16.16\"")
    try:
        return FixedConstant(table["value"], QFormat.parse(table["format"]), table.get("rounding", "RND_CONV"))
    except FixpropError as error:
        raise ConfigError(f"{source}: {error}") from None
