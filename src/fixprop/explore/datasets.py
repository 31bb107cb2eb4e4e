"""Data sets, generated here or shipped inside an installed package (never downloaded).

``ik``: the seed's hardware task, inverse kinematics of a 5-joint arm, x, y, z -> 5 joint angles.
``digits``: scikit-learn's bundled 8x8 handwritten digits (the ``digits`` extra), 10 classes.
``load_dataset(name)`` returns either as a :class:`Dataset` with a train and a held-out split.

The arm (a small desktop arm; lengths in metres):

====== ======================== ==================== ====================================
joint  motion                   limits (rad)         role in the data set
====== ======================== ==================== ====================================
1      base yaw about z         [-pi/2, pi/2]        sampled
2      shoulder pitch           [0.2, 1.4]           sampled
3      elbow pitch              [-2.2, -0.3]         sampled (elbow one way only)
4      wrist pitch              theta4 = -pi/2 - theta2 - theta3: the tool points straight down
5      wrist roll               theta5 = -theta1: the gripper keeps its heading in the world
====== ======================== ==================== ====================================

Link lengths: base height d1 = 0.100, upper arm a2 = 0.105, forearm a3 = 0.100, wrist to tool
tip a4 = 0.070. Forward kinematics, with the arm in the vertical plane at angle theta1::

    r = a2 cos(t2) + a3 cos(t2 + t3) + a4 cos(t2 + t3 + t4)
    z = d1 + a2 sin(t2) + a3 sin(t2 + t3) + a4 sin(t2 + t3 + t4)
    x = r cos(t1),  y = r sin(t1)

Why this variant: a position has 3 coordinates and the arm 5 joints, so x, y, z -> 5 angles has
infinitely many answers in general. Fixing the tool's pitch (pointing down) and its roll
(heading kept), and bending the elbow one way only (theta3 < 0), leaves exactly one set of angles
for each reachable point (inverse_kinematics computes it in closed form, and the tests check
that it inverts forward_kinematics), so the network learns a function. Inputs are x, y, z divided
by the reach a2 + a3 + a4 (in [-1, 1]); targets are the 5 angles divided by pi (in [-1, 1]):
ranges any fixed-point format with one integer bit holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fixprop.errors import ConfigError

TOOL_PITCH = -np.pi / 2  # the tool points straight down


@dataclass(frozen=True)
class ArmGeometry:
    """Link lengths (m) and joint limits (rad) of the sampled joints 1..3."""

    d1: float = 0.100
    a2: float = 0.105
    a3: float = 0.100
    a4: float = 0.070
    limits: tuple[tuple[float, float], ...] = ((-np.pi / 2, np.pi / 2), (0.2, 1.4), (-2.2, -0.3))

    @property
    def reach(self) -> float:
        """a2 + a3 + a4: the scale of the normalised inputs."""
        return self.a2 + self.a3 + self.a4


ARM = ArmGeometry()


def forward_kinematics(angles: np.ndarray, arm: ArmGeometry = ARM) -> np.ndarray:
    """Tool-tip positions (n, 3) in metres of joint angles (n, 5) in radians (any angles)."""
    t1, t2, t3, t4 = (np.asarray(angles, dtype=np.float64)[:, k] for k in range(4))
    r = arm.a2 * np.cos(t2) + arm.a3 * np.cos(t2 + t3) + arm.a4 * np.cos(t2 + t3 + t4)
    z = arm.d1 + arm.a2 * np.sin(t2) + arm.a3 * np.sin(t2 + t3) + arm.a4 * np.sin(t2 + t3 + t4)
    return np.stack([r * np.cos(t1), r * np.sin(t1), z], axis=1)


def dependent_joints(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray) -> np.ndarray:
    """The full 5 angles (n, 5) from the sampled joints: theta4 = pitch - t2 - t3, theta5 = -t1."""
    return np.stack([t1, t2, t3, TOOL_PITCH - t2 - t3, -t1], axis=1)


def inverse_kinematics(positions: np.ndarray, arm: ArmGeometry = ARM) -> np.ndarray:
    """The unique joint angles (n, 5) of this data set's arm reaching ``positions`` (n, 3), in
    closed form: the wrist sits a4 above the tip; a two-link arm reaches the wrist, elbow bent
    negative."""
    p = np.asarray(positions, dtype=np.float64)
    t1 = np.arctan2(p[:, 1], p[:, 0])
    r = np.hypot(p[:, 0], p[:, 1])
    wrist_r, wrist_z = r - arm.a4 * np.cos(TOOL_PITCH), p[:, 2] - arm.d1 - arm.a4 * np.sin(TOOL_PITCH)
    cos_t3 = (wrist_r**2 + wrist_z**2 - arm.a2**2 - arm.a3**2) / (2 * arm.a2 * arm.a3)
    t3 = -np.arccos(np.clip(cos_t3, -1.0, 1.0))
    t2 = np.arctan2(wrist_z, wrist_r) - np.arctan2(arm.a3 * np.sin(t3), arm.a2 + arm.a3 * np.cos(t3))
    return dependent_joints(t1, t2, t3)


def ik_dataset(n: int, seed: int = 0, arm: ArmGeometry = ARM) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: inputs (n, 3) = tip position / reach, targets (n, 5) = joint angles / pi.

    Joints 1..3 are uniform within their limits (numpy Generator seeded with ``seed``)."""
    rng = np.random.default_rng(seed)
    sampled = [rng.uniform(lo, hi, n) for lo, hi in arm.limits]
    angles = dependent_joints(*sampled)
    return forward_kinematics(angles, arm) / arm.reach, angles / np.pi


@dataclass(frozen=True)
class Dataset:
    """A train split and a held-out split; ``classes`` > 0 marks a classification task whose
    targets are one-hot (accuracy = argmax of the outputs against argmax of the targets)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int = 0
    description: str = ""

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.y_train.shape[1]


#: Samples of the ik data set: train and held-out.
IK_TRAIN, IK_TEST = 2048, 512


def ik(seed: int = 0, n_train: int = IK_TRAIN, n_test: int = IK_TEST) -> Dataset:
    """The ik task as a Dataset: one draw of n_train + n_test samples (``ik_dataset``), split in order."""
    x, y = ik_dataset(n_train + n_test, seed)
    return Dataset("ik", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 0,
                   "x,y,z / reach -> 5 joint angles / pi (explore/datasets.py)")


#: Share of the digits held out for testing.
DIGITS_TEST_FRACTION = 0.2


def digits(seed: int = 0, test_fraction: float = DIGITS_TEST_FRACTION) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, read from the installed package, no
    download): pixels 0..16 divided by 16 (inputs in [0, 1], 64 features); targets one-hot
    (10 outputs of 0 or 1). A permutation drawn from ``seed`` holds out ``test_fraction``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError("the digits data set needs scikit-learn: pip install 'fixprop[digits]'") from None
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1; got {test_fraction!r}")
    bunch = load_digits()
    x = bunch.data.astype(np.float64) / 16.0
    y = np.eye(10)[bunch.target]
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10,
                   "8x8 digits, pixels / 16 -> one-hot of 10 classes (scikit-learn's bundled copy)")


DATASETS = {"ik": ik, "digits": digits}


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """The data set ``name`` (ik or digits) drawn or split with ``seed``."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name](seed)
