"""Dynamic fixed point: fraction lengths that move during training (docs/datapath.md, "Dynamic
fixed point"; Courbariaux, Bengio and David, 2014).

A :class:`DynamicFractions` watches the casts of the training steps (an observer on the
arithmetic), counts per dynamic cast site the values cast, the values that overflowed the
site's format, and the values that would have overflowed it with one more fraction bit; after
every ``interval`` steps it moves each site's fraction by at most one bit (``DynamicRule``) and
gives the next steps a datapath with the new fractions. Parameters and velocities whose format
changed are cast into it then, with their role's rounding and overflow.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fixprop.datapath import OPTIONAL_ROLES, Datapath
from fixprop.fixed import quantize as q
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat
from fixprop.fixed.modes import Rounding

Site = tuple[str, "int | None"]


def overflowing(exact: Any, fmt: QFormat) -> int:
    """How many of the exact values (a FixedArray, or float64 data) lie outside ``fmt``'s range
    [min, max] (before any rounding): the values a cast into ``fmt`` must saturate or wrap."""
    if isinstance(exact, FixedArray):
        floor = q.requantize(exact.raw, exact.fmt, fmt, Rounding.TRN, None)[0]
        ceiling = q.requantize(exact.raw, exact.fmt, fmt, Rounding.TRN_INF, None)[0]
    else:
        values = np.asarray(exact, dtype=np.float64)
        floor = q.quantize_float(values, fmt, Rounding.TRN, None)[0]
        ceiling = q.quantize_float(values, fmt, Rounding.TRN_INF, None)[0]
    return int(np.count_nonzero(np.asarray(floor < fmt.raw_min) | np.asarray(ceiling > fmt.raw_max)))


class DynamicFractions:
    """The current fractions of a datapath's dynamic cast sites, and the rule that moves them.

    Args:
        datapath: a datapath with dynamic casts (``Datapath.dynamic_sites``); its fractions are
            the initial ones.
        n_layers: the network's number of weight layers.
    """

    def __init__(self, datapath: Datapath, n_layers: int) -> None:
        self.rule = datapath.dynamic
        self.arithmetic: Any = None  # the arithmetic it moves (set by its owner)
        self.sites = datapath.dynamic_sites(n_layers)
        self.datapath = datapath
        self.steps = 0
        self.history: list[dict[str, int]] = []  # the fractions after each check
        self._reset()

    def _reset(self) -> None:
        self.counts = {site: [0, 0, 0] for site in self.sites}  # values, overflowed, would overflow at frac + 1

    def fractions(self) -> dict[str, int]:
        """The current fraction of every dynamic site, keyed ``role`` or ``role/layer``."""
        return {_key(role, layer): self._cast(role, layer).frac for role, layer in self.sites}

    def _cast(self, role: str, layer: int | None):
        if role in OPTIONAL_ROLES:
            return self.datapath.optional_cast(role, layer)
        return self.datapath.cast_for(role, layer)

    def observer(self, role: str, layer: int | None, exact: Any, result: FixedArray, cast: Any) -> None:
        """Count one cast of a training step (the arithmetic's observer signature)."""
        counts = self.counts.get((role, layer))
        if counts is None:
            return
        fmt = result.fmt
        counts[0] += int(np.size(result.raw))
        counts[1] += overflowing(exact, fmt)
        counts[2] += overflowing(exact, QFormat(fmt.word, fmt.frac + 1, fmt.signed))

    def watching(self, other: Callable | None) -> Callable:
        """An observer that counts for this controller and passes every cast on to ``other``."""
        if other is None:
            return self.observer

        def both(*args: Any) -> None:
            self.observer(*args)
            other(*args)

        return both

    def step_done(self, ar: Any, params: list, velocity: list | None) -> tuple[list, list | None]:
        """After a training step: every ``interval`` steps, move the fractions, give ``ar`` the
        new datapath and return the parameters and velocities cast into their new formats (that
        re-cast is not a training step's cast: ``ar``'s observer does not see it)."""
        self.steps += 1
        if self.steps % self.rule.interval:
            return params, velocity
        fracs = {}
        for site in self.sites:
            values, over, over_up = self.counts[site]
            cast = self._cast(*site)
            frac = cast.frac
            low, high = cast.dynamic
            if values and over > self.rule.overflow_rate * values and frac > low:
                frac -= 1
            elif values and over_up <= self.rule.overflow_rate * values and frac < high:
                frac += 1
            if frac != cast.frac:
                fracs[site] = frac
        self._reset()
        if fracs:
            self.datapath = self.datapath.with_fracs(fracs)
            ar.datapath = self.datapath
            observer, ar.observer = ar.observer, None
            try:
                params, velocity = _recast_state(ar, params, velocity, fracs)
            finally:
                ar.observer = observer
        self.history.append(self.fractions())
        return params, velocity


def _recast_state(ar: Any, params: list, velocity: list | None, fracs: dict) -> tuple[list, list | None]:
    """Parameters and velocities of sites whose fraction moved, cast into the new formats."""
    from fixprop.nn.mlp import LayerParams

    def moved(role: str, layer: int) -> bool:
        return (role, layer) in fracs

    new_params = [LayerParams(ar.cast(p.weight, "weight", i) if moved("weight", i) else p.weight,
                              ar.cast(p.bias, "bias", i) if moved("bias", i) else p.bias)
                  for i, p in enumerate(params)]
    if velocity is not None and any(role == "momentum" for role, _ in fracs):
        velocity = [LayerParams(ar.cast(v.weight, "momentum", i) if moved("momentum", i) else v.weight,
                                ar.cast(v.bias, "momentum", i) if moved("momentum", i) else v.bias)
                    for i, v in enumerate(velocity)]
    return new_params, velocity


def _key(role: str, layer: int | None) -> str:
    return role if layer is None else f"{role}/{layer}"
