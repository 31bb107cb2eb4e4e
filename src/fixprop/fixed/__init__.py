"""Exact fixed-point arithmetic: formats, modes, FixedArray."""

from fixprop.fixed.array import FixedArray, matmul, maximum, minimum, where
from fixprop.fixed.format import QFormat
from fixprop.fixed.modes import DEFAULT_OVERFLOW, DEFAULT_ROUNDING, Overflow, Rounding

__all__ = [
    "DEFAULT_OVERFLOW",
    "DEFAULT_ROUNDING",
    "FixedArray",
    "Overflow",
    "QFormat",
    "Rounding",
    "matmul",
    "maximum",
    "minimum",
    "where",
]
