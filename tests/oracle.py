"""Independent Python-int reference arithmetic for the tests.

Written from the mode definitions in docs/arithmetic.md with divmod and fractions, sharing
no code with fixprop, so the tests compare fixprop against an independent implementation.
"""

from __future__ import annotations

from fractions import Fraction

ROUNDINGS = ["TRN", "TRN_ZERO", "TRN_INF", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV"]
OVERFLOWS = ["SAT", "WRAP", "SAT_SYM", "SAT_ZERO"]


def raw_range(word: int, signed: bool) -> tuple[int, int]:
    """(min, max) raw integer of a word."""
    if signed:
        return -(2 ** (word - 1)), 2 ** (word - 1) - 1
    return 0, 2**word - 1


def round_fraction(value: Fraction, mode: str) -> int:
    """Round an exact rational to an integer under a deterministic mode."""
    floor, rem = divmod(value.numerator, value.denominator)  # value = floor + rem/den, 0 <= rem < den
    den = value.denominator
    if rem == 0:
        return floor
    up = {
        "TRN": False,
        "TRN_INF": True,
        "TRN_ZERO": value < 0,
        "RND": 2 * rem >= den,
        "RND_ZERO": 2 * rem > den or (2 * rem == den and value < 0),
        "RND_MIN_INF": 2 * rem > den,
        "RND_INF": 2 * rem > den or (2 * rem == den and value > 0),
        "RND_CONV": 2 * rem > den or (2 * rem == den and floor % 2 == 1),
    }[mode]
    return floor + 1 if up else floor


def overflow_int(v: int, word: int, signed: bool, mode: str) -> int:
    """Fit an integer into a word under an overflow mode."""
    lo, hi = raw_range(word, signed)
    if mode == "SAT_SYM" and signed:
        lo = -hi
    if lo <= v <= hi:
        return v
    if mode in ("SAT", "SAT_SYM"):
        return lo if v < lo else hi
    if mode == "SAT_ZERO":
        return 0
    if mode == "WRAP":
        full_lo = raw_range(word, signed)[0]
        return (v - full_lo) % (2**word) + full_lo
    raise ValueError(mode)


def cast_raw(raw: int, src_frac: int, word: int, frac: int, signed: bool, rounding: str, overflow: str) -> int:
    """Cast one raw integer of fraction ``src_frac`` into (word, frac, signed)."""
    value = Fraction(raw) * Fraction(2) ** (frac - src_frac)
    return overflow_int(round_fraction(value, rounding), word, signed, overflow)


def float_to_raw(x: float, word: int, frac: int, signed: bool, rounding: str, overflow: str) -> int:
    """Quantize one float (its exact value) into (word, frac, signed)."""
    value = Fraction(x) * Fraction(2) ** frac
    return overflow_int(round_fraction(value, rounding), word, signed, overflow)


def matmul_ints(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    """Exact matrix product of nested lists of Python ints."""
    k = len(b)
    return [[sum(row[t] * b[t][j] for t in range(k)) for j in range(len(b[0]))] for row in a]
