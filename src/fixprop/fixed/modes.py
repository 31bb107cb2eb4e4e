"""Rounding and overflow modes, named as HLS ap_fixed / SystemC / APyTypes name them.

Both enums accept their names as strings, case-insensitively, with an optional ``AP_`` or
``SC_`` prefix (``"ap_rnd_conv"``), and MATLAB ``fi`` aliases (``"Convergent"``, ``"Floor"``).
docs/arithmetic.md defines every mode with a worked table.
"""

from __future__ import annotations

import enum

from fixprop.errors import ModeError


class _NamedMode(enum.Enum):
    """An enum that parses names and aliases, case-insensitively."""

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {}

    @classmethod
    def _missing_(cls, value: object):
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_").replace(" ", "_")
            for prefix in ("AP_", "SC_"):
                if key.startswith(prefix):
                    key = key[len(prefix):]
            key = cls._aliases().get(key, key)
            if key in cls.__members__:
                return cls.__members__[key]
        allowed = ", ".join(cls.__members__)
        aliases = ", ".join(sorted(a.title() for a in cls._aliases()))
        raise ModeError(
            f"unknown {cls.__name__.lower()} mode {value!r}; allowed: {allowed} "
            f"(case-insensitive; also {aliases})"
        )

    @classmethod
    def parse(cls, value: "str | _NamedMode"):
        """Return the mode named by ``value`` (a member, or a name/alias string)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise ModeError(
                f"{cls.__name__} must be a {cls.__name__} or a string; got {value!r}; "
                f"allowed: {', '.join(cls.__members__)}"
            )
        return cls(value)

    def __str__(self) -> str:
        return self.name


class Rounding(_NamedMode):
    """How a cast drops fractional bits (the quantization mode).

    ======== ================================== =====================
    name     rule                               MATLAB fi alias
    ======== ================================== =====================
    TRN      floor (toward -inf)                Floor
    TRN_ZERO toward zero                        Zero, Fix
    TRN_INF  ceiling (toward +inf)              Ceiling
    RND      nearest, ties toward +inf          Nearest
    RND_ZERO nearest, ties toward zero
    RND_MIN_INF nearest, ties toward -inf
    RND_INF  nearest, ties away from zero       Round
    RND_CONV nearest, ties to even (np.round)   Convergent
    STOCH    up with probability = dropped fraction (needs a numpy Generator)
    ======== ================================== =====================
    """

    TRN = "TRN"
    TRN_ZERO = "TRN_ZERO"
    TRN_INF = "TRN_INF"
    RND = "RND"
    RND_ZERO = "RND_ZERO"
    RND_MIN_INF = "RND_MIN_INF"
    RND_INF = "RND_INF"
    RND_CONV = "RND_CONV"
    STOCH = "STOCH"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {
            "FLOOR": "TRN",
            "ZERO": "TRN_ZERO",
            "FIX": "TRN_ZERO",
            "CEILING": "TRN_INF",
            "CEIL": "TRN_INF",
            "NEAREST": "RND",
            "ROUND": "RND_INF",
            "CONVERGENT": "RND_CONV",
            "STOCHASTIC": "STOCH",
        }


class Overflow(_NamedMode):
    """What a cast does with a value outside the target format's range.

    ======== =========================================== ===============
    name     rule                                        MATLAB fi alias
    ======== =========================================== ===============
    SAT      clamp to [min, max]                         Saturate
    WRAP     keep the low ``word`` bits (two's complement) Wrap
    SAT_SYM  clamp to [-max, max] (signed; = SAT unsigned)
    SAT_ZERO out of range becomes 0
    ======== =========================================== ===============
    """

    SAT = "SAT"
    WRAP = "WRAP"
    SAT_SYM = "SAT_SYM"
    SAT_ZERO = "SAT_ZERO"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {"SATURATE": "SAT", "SATURATION": "SAT"}


#: Default rounding of every cast: round half to even, what the seed notebook's np.round did.
DEFAULT_ROUNDING = Rounding.RND_CONV
#: Default overflow of every cast: saturate, as the seed notebook's clamp did.
DEFAULT_OVERFLOW = Overflow.SAT
