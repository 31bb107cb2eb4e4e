"""fixprop: the bit-exact fixed-point training golden model for neural-network hardware."""

from fixprop.errors import (
    ConfigError,
    FixpropError,
    FormatError,
    ModeError,
    NonFiniteError,
    RangeError,
    RawTypeError,
    ShapeError,
)
from fixprop.fixed import (
    DEFAULT_OVERFLOW,
    DEFAULT_ROUNDING,
    FixedArray,
    Overflow,
    QFormat,
    Rounding,
    matmul,
    maximum,
    minimum,
    where,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_OVERFLOW",
    "DEFAULT_ROUNDING",
    "ConfigError",
    "FixedArray",
    "FixpropError",
    "FormatError",
    "ModeError",
    "NonFiniteError",
    "Overflow",
    "QFormat",
    "RangeError",
    "RawTypeError",
    "Rounding",
    "ShapeError",
    "__version__",
    "matmul",
    "maximum",
    "minimum",
    "where",
]

from fixprop.datapath import ROLES, Datapath, FixedConstant, RoleCast  # noqa: E402
from fixprop.nn import MLP, FixedArithmetic, FloatArithmetic, Model  # noqa: E402
from fixprop.nn.jit import NumbaUnavailableWarning  # noqa: E402  (numba itself is imported lazily)
from fixprop.verify import verify  # noqa: E402

__all__ += ["Datapath", "FixedArithmetic", "FixedConstant", "FloatArithmetic", "MLP", "Model", "NumbaUnavailableWarning",
            "ROLES", "RoleCast", "verify"]
