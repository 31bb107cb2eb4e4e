"""The network, written once; float and fixed-point arithmetics; activations; losses."""

from fixprop.nn.activations import Activation, HardTanh, LeakyReLU, Linear, ReLU, get_activation
from fixprop.nn.arithmetic import FixedArithmetic, FloatArithmetic
from fixprop.nn.losses import Loss, get_loss
from fixprop.nn.mlp import MLP, ForwardTrace, LayerGrads, LayerParams, LayerTrace, Model

__all__ = [
    "Activation", "FixedArithmetic", "FloatArithmetic", "ForwardTrace", "HardTanh", "LayerGrads",
    "LayerParams", "LayerTrace", "LeakyReLU", "Linear", "Loss", "MLP", "Model", "ReLU",
    "get_activation", "get_loss",
]
