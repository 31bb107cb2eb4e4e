"""Design-space exploration: data sets (and, to come, training, range statistics and sweeps)."""

from fixprop.explore.datasets import ARM, ArmGeometry, forward_kinematics, ik_dataset, inverse_kinematics

__all__ = ["ARM", "ArmGeometry", "forward_kinematics", "ik_dataset", "inverse_kinematics"]
