"""Design-space exploration: data sets, training side by side, range statistics and format
proposals, sweeps (docs/cli.md: fixprop train, ranges, sweep; docs/results.md)."""

from fixprop.explore.datasets import (
    ARM,
    ArmGeometry,
    Dataset,
    digits,
    forward_kinematics,
    ik,
    ik_dataset,
    inverse_kinematics,
    load_dataset,
)
from fixprop.explore.ranges import RangeCollector, RoleStats, integer_bits, propose_datapath
from fixprop.explore.sweep import SweepSpec, grid, run_point, run_sweep
from fixprop.explore.train import TrainConfig  # the train() function: fixprop.explore.train.train

__all__ = ["ARM", "ArmGeometry", "Dataset", "RangeCollector", "RoleStats", "SweepSpec", "TrainConfig", "digits",
           "forward_kinematics", "grid", "ik", "ik_dataset", "integer_bits", "inverse_kinematics", "load_dataset",
           "propose_datapath", "run_point", "run_sweep"]
