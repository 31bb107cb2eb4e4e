"""Fixed-point formats: word length, fractional bits, signedness.

A value in format ``QFormat(word, frac, signed)`` is ``raw * 2**-frac`` where ``raw`` is an
integer of ``word`` bits: two's complement when signed, plain binary when unsigned.
This is ``ap_fixed<word, word - frac>`` / ``ap_ufixed<word, word - frac>`` in HLS, and
``fi(x, signed, word, frac)`` in MATLAB.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from fractions import Fraction

from fixprop.errors import FormatError

#: The widest words stored in int64 (signed) without widening to Python integers.
INT64_SIGNED_MAX_WORD = 64
INT64_UNSIGNED_MAX_WORD = 63

#: The largest word length, and the largest |frac|, of any format (a bound on memory and time:
#: exact results grow a few bits per operation, so real datapaths stay far below it).
MAX_BITS = 1 << 16

_SHORT_STR = re.compile(r"^\s*([su])\s*(\d+)\s*\.\s*(-?\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class QFormat:
    """A fixed-point format.

    Args:
        word: total number of bits, including the sign bit when signed (>= 1).
        frac: number of fractional bits; may be negative (the LSB weighs more than 1)
            or larger than ``word`` (all fraction, the MSB weighs less than 1/2).
        signed: two's complement when True, unsigned when False.
    """

    word: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        for name in ("word", "frac"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise FormatError(
                    f"QFormat {name} must be an integer; got {value!r} ({type(value).__name__})"
                )
            object.__setattr__(self, name, int(value))  # numpy integers become Python ints
        if isinstance(self.signed, np.bool_):
            object.__setattr__(self, "signed", bool(self.signed))
        if not isinstance(self.signed, bool):
            raise FormatError(f"QFormat signed must be True or False; got {self.signed!r}")
        if self.word < 1:
            raise FormatError(f"QFormat word must be >= 1 bit (it counts the sign bit); got {self.word}")
        if self.word > MAX_BITS or abs(self.frac) > MAX_BITS:
            raise FormatError(f"QFormat word and |frac| must be at most {MAX_BITS} bits; "
                              f"got word {self.word}, frac {self.frac}")

    # -- construction --------------------------------------------------------------------
    @classmethod
    def parse(cls, text: "str | QFormat") -> "QFormat":
        """Parse a short format string such as ``"s24.12"`` (signed) or ``"u8.8"`` (unsigned)."""
        if isinstance(text, QFormat):
            return text
        if not isinstance(text, str):
            raise FormatError(f"a format must be a QFormat or a string like 's24.12'; got {text!r}")
        match = _SHORT_STR.match(text)
        if match is None:
            raise FormatError(
                f"cannot parse format {text!r}: expected 's<word>.<frac>' or 'u<word>.<frac>', e.g. 's24.12'"
            )
        sign, word, frac = match.groups()
        return cls(int(word), int(frac), sign.lower() == "s")

    # -- raw integer range -----------------------------------------------------------------
    @property
    def int_bits(self) -> int:
        """Integer bits, counting the sign bit (``word - frac``), as in ``ap_fixed<W, I>``."""
        return self.word - self.frac

    @property
    def raw_min(self) -> int:
        """Smallest raw integer: ``-2**(word-1)`` when signed, 0 when unsigned."""
        return -(1 << (self.word - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        """Largest raw integer: ``2**(word-1) - 1`` when signed, ``2**word - 1`` when unsigned."""
        return (1 << (self.word - 1)) - 1 if self.signed else (1 << self.word) - 1

    @property
    def fits_int64(self) -> bool:
        """True when every raw value of this format fits an int64 (fixprop then stores int64)."""
        limit = INT64_SIGNED_MAX_WORD if self.signed else INT64_UNSIGNED_MAX_WORD
        return self.word <= limit

    # -- real-valued range ------------------------------------------------------------------
    @property
    def resolution(self) -> float:
        """Weight of one LSB, ``2**-frac`` (a float; exact for -1074 <= -frac <= 1023)."""
        return 2.0 ** -self.frac

    @property
    def min(self) -> float:
        """Smallest representable value as a float (``raw_min * 2**-frac``; -inf beyond float64)."""
        return _to_float(Fraction(self.raw_min) / Fraction(2) ** self.frac)

    @property
    def max(self) -> float:
        """Largest representable value as a float (``raw_max * 2**-frac`` rounded; inf beyond float64)."""
        return _to_float(Fraction(self.raw_max) / Fraction(2) ** self.frac)

    @property
    def range(self) -> tuple[float, float]:
        """``(min, max)`` as floats."""
        return (self.min, self.max)

    def contains_raw(self, raw: int) -> bool:
        """True when the Python integer ``raw`` is representable in this format."""
        return self.raw_min <= raw <= self.raw_max

    # -- text --------------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.word}.{self.frac}"

    def __repr__(self) -> str:
        return f"QFormat(word={self.word}, frac={self.frac}, signed={self.signed})"

    def to_dict(self) -> dict:
        """``{"word": ..., "frac": ..., "signed": ...}`` for TOML/JSON."""
        return {"word": self.word, "frac": self.frac, "signed": self.signed}


def _to_float(value: Fraction) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def as_format(fmt: "QFormat | str") -> QFormat:
    """Accept a :class:`QFormat` or its short string (``"s24.12"``)."""
    return QFormat.parse(fmt)


def bits_for(n: int) -> int:
    """Bits of growth needed to hold a sum of ``n`` terms: ``ceil(log2(n))`` (0 for n <= 1)."""
    return max(n - 1, 0).bit_length()


# -- bit-growth rules of full-precision arithmetic (docs/arithmetic.md, "Bit growth") -------
# (Cached: a network asks for the same few formats at every step.)
# I = word - frac counts integer bits including the sign bit. An unsigned operand meeting a
# signed one is first promoted to signed with one more integer bit, which holds every value.


@lru_cache(maxsize=4096)
def promote_signed(fmt: QFormat) -> QFormat:
    """The signed format holding every value of ``fmt`` (unsigned gains one bit)."""
    return fmt if fmt.signed else QFormat(fmt.word + 1, fmt.frac, True)


@lru_cache(maxsize=4096)
def union_format(a: QFormat, b: QFormat) -> QFormat:
    """Smallest format of this family holding every value of ``a`` and of ``b``.

    frac = max(frac); integer bits = max(I) after promoting an unsigned operand to signed
    when the other is signed.
    """
    if a.signed != b.signed:
        a, b = promote_signed(a), promote_signed(b)
    frac = max(a.frac, b.frac)
    int_bits = max(a.int_bits, b.int_bits)
    return QFormat(int_bits + frac, frac, a.signed)


@lru_cache(maxsize=4096)
def add_format(a: QFormat, b: QFormat) -> QFormat:
    """Format of ``a + b``: the union format with one more integer bit (never overflows)."""
    u = union_format(a, b)
    return QFormat(u.word + 1, u.frac, u.signed)


@lru_cache(maxsize=4096)
def sub_format(a: QFormat, b: QFormat) -> QFormat:
    """Format of ``a - b``: always signed; union of the signed promotions plus one integer bit.
    Both unsigned: their union plus a sign bit (``(-2**I, 2**I)`` fits signed ``I + 1`` integer
    bits), which is ap_fixed's rule for ``ap_ufixed - ap_ufixed``."""
    if not a.signed and not b.signed:
        u = union_format(a, b)
        return QFormat(u.word + 1, u.frac, True)
    u = union_format(promote_signed(a), promote_signed(b))
    return QFormat(u.word + 1, u.frac, True)


@lru_cache(maxsize=4096)
def neg_format(a: QFormat) -> QFormat:
    """Format of ``-a``: signed, one more bit (``-raw_min`` of a signed word needs it)."""
    return QFormat(a.word + 1, a.frac, True)


@lru_cache(maxsize=4096)
def mul_format(a: QFormat, b: QFormat) -> QFormat:
    """Format of ``a * b``: word = wa + wb, frac = fa + fb, signed if either is signed."""
    return QFormat(a.word + b.word, a.frac + b.frac, a.signed or b.signed)


@lru_cache(maxsize=4096)
def matmul_format(a: QFormat, b: QFormat, k: int) -> QFormat:
    """Format of a K-term dot product: the product format grown by ``ceil(log2 K)`` bits."""
    p = mul_format(a, b)
    return QFormat(p.word + bits_for(k), p.frac, p.signed)


@lru_cache(maxsize=4096)
def sum_format(a: QFormat, n: int) -> QFormat:
    """Format of a sum of ``n`` values of format ``a``: grown by ``ceil(log2 n)`` bits."""
    return QFormat(a.word + bits_for(n), a.frac, a.signed)
