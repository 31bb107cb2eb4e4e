"""Range statistics of every cast, and per-role format proposals from them.

A :class:`RangeCollector` is the ``observer`` of a :class:`~fixprop.nn.arithmetic.FixedArithmetic`:
each cast reports its role, its layer, the exact value before the cast and the result. Per
(role, layer) it keeps, exactly:

- ``count``, ``min``, ``max`` of the exact values arriving at the cast (``Fraction``);
- ``saturated``: values the overflow mode acted on: rounded by the cast's rounding mode, outside
  the range the overflow mode keeps (for SAT_SYM, [-max, max]). Under STOCH the rounding cannot
  be replayed, so there it counts the exact values outside [fmt.min, fmt.max];
- ``underflowed``: values that are nonzero before the cast and zero after it;
- ``log2_histogram``: for nonzero values, how many have floor(log2 |v|) = e, for each e.

:func:`propose_datapath` turns the ranges into per-role formats for a word length, as MATLAB's
"propose fraction lengths": the fewest integer bits (sign included) that hold the observed
[min, max] of the role over all layers, plus ``margin`` bits, and the rest of the word as
fraction bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from fixprop.datapath import LAYER_ROLES, OPTIONAL_ROLES, ROLES, Datapath, RoleCast
from fixprop.errors import ConfigError
from fixprop.fixed.array import FixedArray
from fixprop.fixed import quantize as q
from fixprop.fixed.format import QFormat
from fixprop.fixed.modes import Overflow, Rounding

if TYPE_CHECKING:
    from fixprop.explore.train import TrainConfig
    from fixprop.verify.experiment import Experiment


@dataclass
class RoleStats:
    """Statistics of the values cast into one role at one layer (layer None: data, no layer)."""

    role: str
    layer: int | None
    formats: set[str] = field(default_factory=set)
    count: int = 0
    nonzero: int = 0
    min: Fraction | None = None
    max: Fraction | None = None
    saturated: int = 0
    underflowed: int = 0
    log2_histogram: dict[int, int] = field(default_factory=dict)

    @property
    def saturated_percent(self) -> float:
        return 100.0 * self.saturated / self.count if self.count else 0.0

    @property
    def underflowed_percent(self) -> float:
        """Underflows as a share of the values that were nonzero before the cast."""
        return 100.0 * self.underflowed / self.nonzero if self.nonzero else 0.0

    def merge(self, other: "RoleStats") -> None:
        """Add another set of observations of the same role into this one."""
        self.formats |= other.formats
        self.count += other.count
        self.nonzero += other.nonzero
        self.saturated += other.saturated
        self.underflowed += other.underflowed
        self.min = _fmin(self.min, other.min)
        self.max = _fmax(self.max, other.max)
        for e, n in other.log2_histogram.items():
            self.log2_histogram[e] = self.log2_histogram.get(e, 0) + n

    def to_json(self) -> dict:
        return {
            "role": self.role, "layer": self.layer, "formats": sorted(self.formats), "count": self.count,
            "nonzero": self.nonzero,
            "min": None if self.min is None else float(self.min),
            "max": None if self.max is None else float(self.max),
            "saturated": self.saturated, "saturated_percent": self.saturated_percent,
            "underflowed": self.underflowed, "underflowed_percent": self.underflowed_percent,
            "log2_histogram": {str(e): n for e, n in sorted(self.log2_histogram.items())},
        }


def _fmin(a: Fraction | None, b: Fraction | None) -> Fraction | None:
    return b if a is None else a if b is None else min(a, b)


def _fmax(a: Fraction | None, b: Fraction | None) -> Fraction | None:
    return b if a is None else a if b is None else max(a, b)


class RangeCollector:
    """Observer of fixed-point casts (``FixedArithmetic(..., observer=collector)``).

    ``ranges=False`` keeps only the counts (count, nonzero, saturated, underflowed), not min, max
    and the histogram: cheaper, for the saturation summaries of ``verify`` and ``train``.
    """

    def __init__(self, ranges: bool = True) -> None:
        self.stats: dict[tuple[str, int | None], RoleStats] = {}
        self.ranges = ranges

    @property
    def counts_only(self) -> bool:
        """True when only counts are kept (``ranges=False``)."""
        return not self.ranges

    #: The numba kernel can serve this observer: it counts every cast (:meth:`add_counts`) and,
    #: when ``ranges`` is set, keeps each cast's range and histogram (:meth:`add_ranges`).
    kernel_served = True

    def add_counts(self, role: str, layer: int | None, fmt: QFormat, count: int, nonzero: int, saturated: int,
                   underflowed: int) -> None:
        """Counts of one cast computed elsewhere (the numba kernel), with the meaning of :func:`observe`."""
        self.add(RoleStats(role, layer, {str(fmt)}, count, nonzero, saturated=saturated, underflowed=underflowed))

    def add_ranges(self, role: str, layer: int | None, fmt: QFormat, count: int, nonzero: int, saturated: int,
                   underflowed: int, minimum: Fraction, maximum: Fraction, log2_histogram: dict[int, int]) -> None:
        """Counts and range of one cast computed elsewhere (the numba kernel), with the meaning of
        :func:`observe`: the least and greatest exact value before the cast, and how many nonzero
        values have floor(log2 |v|) = e, for each e."""
        self.add(RoleStats(role, layer, {str(fmt)}, count, nonzero, minimum, maximum, saturated, underflowed,
                           dict(log2_histogram)))

    def __call__(self, role: str, layer: int | None, exact: Any, result: FixedArray,
                 cast: RoleCast | None = None) -> None:
        self.add(observe(role, layer, exact, result.raw, result.fmt, cast, self.ranges))

    def add(self, stats: RoleStats) -> None:
        """Merge observations of one (role, layer) into this collector (``stats`` is not kept)."""
        self.stats.setdefault((stats.role, stats.layer), RoleStats(stats.role, stats.layer)).merge(stats)

    def table(self) -> list[RoleStats]:
        """The statistics in datapath role order, then by layer (data first)."""
        return sorted(self.stats.values(),
                      key=lambda s: ((ROLES + OPTIONAL_ROLES).index(s.role), -1 if s.layer is None else s.layer))

    def by_role(self) -> dict[str, RoleStats]:
        """Statistics of each role merged over its layers."""
        merged: dict[str, RoleStats] = {}
        for s in self.table():
            merged.setdefault(s.role, RoleStats(s.role, None)).merge(s)
        return merged

    def to_json(self) -> list[dict]:
        return [s.to_json() for s in self.table()]


def observe(role: str, layer: int | None, exact: Any, result_raw: np.ndarray, fmt: QFormat,
            cast: RoleCast | None = None, ranges: bool = True) -> RoleStats:
    """Statistics of one cast: ``exact`` (a FixedArray, or float64 data) cast to raw ``result_raw``
    in ``fmt`` by ``cast`` (its rounding and overflow; None or STOCH: saturation is counted on
    the exact values). ``ranges=False``: the counts only (no min, max, histogram)."""
    stats = RoleStats(role, layer, {str(fmt)})
    after_zero = np.asarray(result_raw) == 0
    values = exact.raw if isinstance(exact, FixedArray) else np.asarray(exact, dtype=np.float64)
    nonzero = values != 0
    stats.count = int(np.size(nonzero))
    stats.nonzero = int(np.count_nonzero(nonzero))
    if ranges and isinstance(exact, FixedArray):
        frac = exact.fmt.frac
        scale = Fraction(1, 2**frac) if frac >= 0 else Fraction(2 ** -frac)
        if values.size:
            stats.min, stats.max = Fraction(int(values.min())) * scale, Fraction(int(values.max())) * scale
        exponents = _floor_log2_int(values[nonzero]) - frac
    elif ranges:
        if values.size:
            stats.min, stats.max = Fraction(float(values.min())), Fraction(float(values.max()))
        exponents = np.frexp(values[nonzero])[1].astype(np.int64) - 1
    if cast is not None and cast.overflow in (Overflow.SAT, Overflow.SAT_SYM):
        # a value these modes acted on ends at a bound: only those results can be saturated ones
        lo, hi = q.overflow_bounds(fmt, cast.overflow)
        at_bound = np.asarray(result_raw)
        at_bound = (at_bound == lo) | (at_bound == hi)
        if np.count_nonzero(at_bound) < at_bound.size:
            exact = exact[at_bound] if isinstance(exact, FixedArray) else np.asarray(exact, np.float64)[at_bound]
    if cast is not None and cast.rounding is not Rounding.STOCH:
        stats.saturated = _count_outside(_rounded(exact, fmt, cast.rounding), *q.overflow_bounds(fmt, cast.overflow))
    else:  # exact value outside [min, max]: its ceiling above raw_max, or its floor below raw_min
        stats.saturated = (_count_outside(_rounded(exact, fmt, Rounding.TRN_INF), None, fmt.raw_max)
                           + _count_outside(_rounded(exact, fmt, Rounding.TRN), fmt.raw_min, None))
    stats.underflowed = int(np.count_nonzero(nonzero & after_zero))
    if ranges:
        exps, counts = np.unique(np.asarray(exponents, dtype=np.int64), return_counts=True)
        stats.log2_histogram = {int(e): int(n) for e, n in zip(exps, counts)}
    return stats


def _rounded(exact: Any, fmt: QFormat, rounding: Rounding) -> np.ndarray:
    """Raw integers of ``exact`` rounded into ``fmt``'s fraction by ``rounding``, with no word
    limit (the casts' own code, quantize.py)."""
    if isinstance(exact, FixedArray):
        return q.requantize(exact.raw, exact.fmt, fmt, rounding, None)[0]
    return q.quantize_float(np.asarray(exact, dtype=np.float64), fmt, rounding, None)[0]


def _count_outside(raw: np.ndarray, lo: int | None, hi: int | None) -> int:
    """How many integers lie below ``lo`` or above ``hi`` (None: no bound on that side)."""
    outside = np.zeros(np.shape(raw), dtype=bool)
    if lo is not None and (raw.dtype == object or lo > -(2**63)):  # int64 raw cannot pass int64 bounds
        outside |= raw < lo
    if hi is not None and (raw.dtype == object or hi < 2**63 - 1):
        outside |= raw > hi
    return int(np.count_nonzero(outside))


def _floor_log2_int(raw: np.ndarray) -> np.ndarray:
    """floor(log2 |r|) of nonzero integers, exactly (int64 or Python-int object arrays)."""
    if raw.dtype == object:
        return np.array([abs(int(r)).bit_length() - 1 for r in raw.ravel()], dtype=np.int64)
    unsigned = raw.astype(np.uint64)
    magnitude = np.where(raw < 0, ~unsigned + np.uint64(1), unsigned)  # |int64 min| = 2**63 fits
    estimate = np.frexp(magnitude.astype(np.float64))[1].astype(np.int64) - 1
    # float64 rounding can carry |r| >= 2**53 up to the next power of two: step back there
    too_high = (magnitude >> np.minimum(estimate, 63).astype(np.uint64)) == 0
    return estimate - too_high.astype(np.int64)


# -- saturation summaries (verify, train) ------------------------------------------------------------

def saturation_summary(collector: RangeCollector) -> dict:
    """Totals over every cast a collector saw: ``values`` cast, ``nonzero`` among them,
    ``saturated`` and ``underflowed`` (as counted by :func:`observe`), and per role the
    saturated and the underflowed counts of the roles where there were any (datapath order)."""
    by_role = collector.by_role()
    return {
        "values": sum(s.count for s in by_role.values()),
        "nonzero": sum(s.nonzero for s in by_role.values()),
        "saturated": sum(s.saturated for s in by_role.values()),
        "underflowed": sum(s.underflowed for s in by_role.values()),
        "saturated_by_role": {role: s.saturated for role, s in by_role.items() if s.saturated},
        "underflowed_by_role": {role: s.underflowed for role, s in by_role.items() if s.underflowed},
    }


def format_saturation(summary: dict, scope: str) -> list[str]:
    """Report lines of a :func:`saturation_summary` (``scope`` says which casts were counted),
    with a warning line when any value saturated."""
    def share(n: int, total: int) -> str:
        return f"{100 * n / total:.3g}%" if total else "0%"

    def roles(counts: dict[str, int]) -> str:
        return ", in roles: " + ", ".join(f"{role} {n}" for role, n in counts.items()) if counts else ""

    sat, under = summary["saturated"], summary["underflowed"]
    lines = [f"fixed-point casts ({scope}):",
             f"  saturated {sat} of {summary['values']} cast values "
             f"({share(sat, summary['values'])}){roles(summary['saturated_by_role'])}",
             f"  underflowed to 0: {under} of {summary['nonzero']} nonzero values "
             f"({share(under, summary['nonzero'])}){roles(summary['underflowed_by_role'])}"]
    if sat:
        lines.append(f"warning: {sat} value(s) saturated, so the fixed-point results are clipped; give the roles "
                     f"{', '.join(summary['saturated_by_role'])} more integer bits (fixprop ranges shows their ranges)")
    return lines


# -- proposals -------------------------------------------------------------------------------------

def integer_bits(lo: Fraction, hi: Fraction, word: int, signed: bool = True) -> int:
    """The fewest integer bits I (sign bit included when signed; may be negative or exceed
    ``word``) such that the format of ``word`` bits with ``word - I`` fraction bits holds every
    value in [lo, hi]. All-zero ranges give I = 1 (signed) or 0 (unsigned)."""
    lo, hi = Fraction(lo), Fraction(hi)
    if lo > hi:
        raise ConfigError(f"empty range [{lo}, {hi}]")
    if not signed and lo < 0:
        raise ConfigError(f"an unsigned format cannot hold the negative minimum {float(lo)!r}")

    def holds(bits: int) -> bool:
        fmt = QFormat(word, word - bits, signed)
        scale = Fraction(2) ** fmt.frac
        return fmt.raw_min <= lo * scale and hi * scale <= fmt.raw_max

    magnitude = max(-lo, hi)
    if magnitude == 0:
        return 1 if signed else 0
    # an estimate of floor(log2 magnitude) + sign bit from the bit lengths (exact at any size),
    # corrected by the loops below
    bits = magnitude.numerator.bit_length() - magnitude.denominator.bit_length() + (1 if signed else 0)
    while holds(bits - 1):
        bits -= 1
    while not holds(bits):
        bits += 1
    return bits


def propose_datapath(
    collector: RangeCollector,
    base: Datapath,
    word: int,
    margin: int = 1,
    words: dict[str, int] | None = None,
    per_layer: bool = True,
) -> Datapath:
    """Formats of ``word`` bits (or ``words[role]``) for the observed ranges.

    Each observed role gets ``integer_bits(min, max) + margin`` integer bits over all its layers
    and the rest of the word as fraction (more fraction bits than the word is legal, for roles
    whose values are all tiny). With ``per_layer``, a layer whose own range needs
    fewer integer bits gets an override with more fraction bits (``Datapath.layers``). Roles
    never observed (momentum without momentum) keep ``base``'s integer bits at the new word,
    and the proposal's name lists them (:data:`NOT_OBSERVED`; :func:`proposal_rows` marks them);
    every mode and setting stays ``base``'s.
    """
    words = dict(words or {})
    unknown = sorted(set(words) - set(ROLES) - set(OPTIONAL_ROLES))
    if unknown:
        raise ConfigError(f"unknown role(s) {unknown} in the per-role word lengths; roles are: {', '.join(ROLES)}; "
                          f"optional roles: {', '.join(OPTIONAL_ROLES)}")
    for role, w in {"word": word, **words}.items():
        if isinstance(w, bool) or not isinstance(w, int) or w < 2:
            raise ConfigError(f"word length for {role} must be an integer >= 2; got {w!r}")
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise ConfigError(f"margin must be an integer >= 0 (bits); got {margin!r}")

    def fitted(cast: RoleCast, s: RoleStats, w: int) -> RoleCast:
        try:
            bits = integer_bits(s.min, s.max, w, cast.signed) + margin
        except ConfigError as error:
            where = s.role + ("" if s.layer is None else f" (layer {s.layer})")
            raise ConfigError(f"role {where}: {error}; make the role signed in the datapath") from None
        if cast.dynamic is not None:  # a dynamic role starts at the proposal, its bounds moved with it
            moved = w - bits - cast.frac
            return replace(cast, word=w, frac=w - bits, dynamic=(cast.dynamic[0] + moved, cast.dynamic[1] + moved))
        return replace(cast, word=w, frac=w - bits)

    roles = dict(base.roles)
    layers: dict[int, dict[str, RoleCast]] = {}
    by_role = collector.by_role()
    unobserved = []
    for role, cast in base.roles.items():
        s = by_role.get(role)
        w = words.get(role, word)
        if s is None or s.min is None:  # never cast: same integer bits, the new word
            roles[role] = cast.at_word(w)
            unobserved.append(role)
            continue
        roles[role] = fitted(cast, s, w)
        if not per_layer or role not in LAYER_ROLES:
            continue
        for (r, layer), layer_stats in collector.stats.items():
            if r != role or layer is None or layer_stats.min is None:
                continue
            own = fitted(base.cast_for(role, layer), layer_stats, w)
            if own != roles[role]:
                layers.setdefault(layer, {})[role] = own
    # overrides that model hardware (an optional role given per layer, a per-layer accumulate
    # mode) are kept in every proposal, refitted where their casts were observed
    for layer, overrides in base.layers.items():
        for role, cast in overrides.items():
            if role in layers.get(layer, {}) or (role not in OPTIONAL_ROLES and cast.accumulate == "exact"):
                continue
            w = words.get(role, word)
            layer_stats = collector.stats.get((role, layer))
            if role in roles and not per_layer:
                kept = replace(roles[role], accumulate=cast.accumulate)
            elif layer_stats is not None and layer_stats.min is not None:
                kept = fitted(cast, layer_stats, w)
            else:
                kept = cast.at_word(w)
            layers.setdefault(layer, {})[role] = kept
    label = (f"proposed w{word} margin {margin}" + (" per layer" if per_layer else "")
             + "".join(f" {r}={w}" for r, w in sorted(words.items()))
             + (f"; {NOT_OBSERVED}: {', '.join(unobserved)}" if unobserved else ""))
    return replace(base, roles=roles, layers=layers, name=label)


#: How a proposal marks a role that no cast reached: its format is not a proposal from data.
NOT_OBSERVED = "not observed (the template's integer bits kept)"


def proposal_rows(collector: RangeCollector, proposed: Datapath) -> list[dict]:
    """For the report: each cast's observed range (role over all layers, then per layer), the
    proposed cast (``proposed``: its text; ``format``: e.g. ``s16.12``, None for a full-width
    cast), ``observed`` (False: no value reached the role) and ``note`` (:data:`NOT_OBSERVED`
    for those, else None)."""
    by_role = collector.by_role()
    rows = []
    for role, layer, cast in proposed.all_casts():
        s = by_role.get(role) if layer is None else collector.stats.get((role, layer))
        observed = s is not None and s.min is not None
        rows.append({"role": role, "layer": layer,
                     "min": float(s.min) if observed else None, "max": float(s.max) if observed else None,
                     "proposed": cast.describe(),
                     "format": None if cast.fmt is None else str(cast.fmt),
                     "observed": observed,
                     "note": None if observed else NOT_OBSERVED})
    return rows


def format_proposal(collector: RangeCollector, proposed: Datapath) -> str:
    """The proposal as a text table: role, layer, observed [min, max], proposed cast, and the
    note of roles never observed (the rows of :func:`proposal_rows`)."""
    header = ("role", "layer", "observed min", "observed max", "proposed", "")
    rows = [header]
    for r in proposal_rows(collector, proposed):
        rows.append((r["role"], "all" if r["layer"] is None else str(r["layer"]),
                     "-" if r["min"] is None else f"{r['min']:.4g}", "-" if r["max"] is None else f"{r['max']:.4g}",
                     r["proposed"], r["note"] or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    table = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([f"datapath {proposed.name}"] + table)


def merged(collectors: Iterable[RangeCollector]) -> RangeCollector:
    """One collector holding the observations of several (e.g. one per seed)."""
    total = RangeCollector()
    for c in collectors:
        for s in c.stats.values():
            total.add(s)
    return total


def format_table(collector: RangeCollector) -> str:
    """The statistics as a text table, one row per (role, layer)."""
    header = ("role", "layer", "format", "count", "min", "max", "log2|v| range", "sat %", "underflow %")
    rows = [header]
    for s in collector.table():
        exps = sorted(s.log2_histogram)
        rows.append((
            s.role, "-" if s.layer is None else str(s.layer), ",".join(sorted(s.formats)), str(s.count),
            "-" if s.min is None else f"{float(s.min):.4g}", "-" if s.max is None else f"{float(s.max):.4g}",
            f"[{exps[0]}, {exps[-1]}]" if exps else "-",
            f"{s.saturated_percent:.2f}", f"{s.underflowed_percent:.2f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# -- collection runs ---------------------------------------------------------------------------------

def collect_verify(experiment: "Experiment", seeds: Iterable[int]) -> RangeCollector:
    """Ranges of the verify experiment (forward, backward and one SGD step) for each seed,
    under ``experiment.datapath``."""
    from fixprop.nn.arithmetic import FixedArithmetic
    from fixprop.nn.mlp import MLP
    from fixprop.verify.experiment import make_data

    collector = RangeCollector()
    e = experiment
    for seed in seeds:
        net = MLP(e.shape, e.activation, e.output_activation, e.loss, e.init, seed)
        x, y = make_data(net, e.batch, seed)
        ar = FixedArithmetic(e.datapath, np.random.default_rng(seed), observer=collector)
        params = net.params_in(ar, net.init_params())
        grads = net.backward(ar, params, net.forward(ar, params, x), y)
        velocity = net.zero_velocity(ar, params) if e.datapath.momentum is not None else None
        net.sgd_step(ar, params, grads, velocity)
    return collector


def collect_training(config: "TrainConfig", datapath: Datapath,
                     progress: Callable[[int, dict], None] | None = None) -> tuple[RangeCollector, dict]:
    """Ranges of every cast of the fixed-point network's training (not of its evaluations);
    returns the collector and the training result. ``progress`` as in ``train``."""
    from fixprop.explore.train import train

    collector = RangeCollector()
    result = train(config, datapath, progress, observer=collector)
    return collector, result
