"""The ik data set: forward kinematics at hand-computed poses, its inverse, its ranges."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop.explore import ARM, forward_kinematics, ik_dataset, inverse_kinematics

HALF_PI = np.pi / 2


@pytest.mark.parametrize("angles,expected", [
    # stretched out, tool down: r = a2 + a3, z = d1 - a4
    ([0, 0, 0, -HALF_PI, 0], [0.205, 0.0, 0.030]),
    # upper arm straight up, forearm horizontal, tool down: r = a3, z = d1 + a2 - a4
    ([0, HALF_PI, -HALF_PI, -HALF_PI, 0], [0.100, 0.0, 0.135]),
    # the same turned a quarter about the base: along y
    ([HALF_PI, HALF_PI, -HALF_PI, -HALF_PI, 0], [0.0, 0.100, 0.135]),
    # everything straight up: z = d1 + a2 + a3 + a4
    ([0, HALF_PI, 0, 0, 0], [0.0, 0.0, 0.375]),
    # wrist roll does not move the tip
    ([0, 0, 0, -HALF_PI, 1.0], [0.205, 0.0, 0.030]),
])
def test_forward_kinematics_at_hand_computed_poses(angles, expected):
    assert forward_kinematics(np.array([angles])) == pytest.approx(np.array([expected]), abs=1e-12)


def test_inverse_kinematics_inverts_and_the_task_is_a_function():
    x, y = ik_dataset(2000, seed=3)
    angles = y * np.pi
    recovered = inverse_kinematics(x * ARM.reach)
    assert recovered == pytest.approx(angles, abs=1e-9)  # one set of angles per point


def test_ranges_and_determinism():
    x, y = ik_dataset(5000, seed=1)
    assert x.shape == (5000, 3) and y.shape == (5000, 5)
    assert np.abs(x).max() <= 1 and np.abs(y).max() <= 1
    lo, hi = np.array([lim[0] for lim in ARM.limits]), np.array([lim[1] for lim in ARM.limits])
    assert (y[:, :3] * np.pi >= lo - 1e-12).all() and (y[:, :3] * np.pi <= hi + 1e-12).all()
    assert np.array_equal(ik_dataset(10, seed=4)[0], ik_dataset(10, seed=4)[0])
    assert not np.array_equal(ik_dataset(10, seed=4)[0], ik_dataset(10, seed=5)[0])
