"""Typed errors raised by fixprop.

Every error fixprop raises on bad input derives from :class:`FixpropError` and from the
built-in class a Python user would expect (``ValueError`` or ``TypeError``), so both
``except fixprop.FixpropError`` and ``except ValueError`` catch it.
"""

from __future__ import annotations


class FixpropError(Exception):
    """Base class of every error fixprop raises on purpose."""


class FormatError(FixpropError, ValueError):
    """A fixed-point format (word, frac, signed) is not valid."""


class ModeError(FixpropError, ValueError):
    """An unknown rounding or overflow mode name, or a mode used without what it needs."""


class NotCompilable(FixpropError, ValueError):
    """A network and datapath need values wider than a compiled engine holds (int64): they run
    on the exact step-by-step path (FixedArithmetic) instead."""


class NotInRoleFormat(FixpropError, ValueError):
    """A compiled step was given a value in a format other than its role's (the one it was
    compiled for); the step-by-step path computes such values exactly as given."""


class RangeError(FixpropError, ValueError):
    """A raw integer does not fit its format and no overflow mode was asked for."""


class NonFiniteError(FixpropError, ValueError):
    """A NaN or an infinity was given where a real number is needed."""


class ShapeError(FixpropError, ValueError):
    """Array shapes do not agree (for example the inner dimensions of ``@``)."""


class RawTypeError(FixpropError, TypeError):
    """A value of the wrong type: non-integer raw values, or an operand fixprop cannot combine exactly."""


class ConfigError(FixpropError, ValueError):
    """A configuration (datapath, network, command-line option) is malformed."""
