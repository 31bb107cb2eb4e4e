"""A FixedArray's state: pickle and copy keep its own raw integers and format, read-only, for
ordinary arrays, exact float64-held ones and a kernel step's results (whose views are made at
first use); pickles written before those results existed still load; and threads may read a
fresh result at the same time. Checked against arrays built from the same Python integers."""

from __future__ import annotations

import base64
import copy
import pickle
import sys
import threading

import numpy as np
import pytest

from fixprop import Datapath, FixedArray
from fixprop.fixed.format import QFormat
from fixprop.nn import MLP

#: ``pickle.dumps(FixedArray(np.array([[1, -2], [3, 4]]), "s16.8"))`` written by fixprop at
#: commit bf1f086 (the default state of a class with __slots__: (None, {slot: value})).
OLD_PICKLE = (
    "gASVYQEAAAAAAACME2ZpeHByb3AuZml4ZWQuYXJyYXmUjApGaXhlZEFycmF5lJOUKYGUTn2UKIwFX2ludHOUjBZudW1weS5f"
    "Y29yZS5tdWx0aWFycmF5lIwMX3JlY29uc3RydWN0lJOUjAVudW1weZSMB25kYXJyYXmUk5RLAIWUQwFilIeUUpQoSwFLAksC"
    "hpRoCYwFZHR5cGWUk5SMAmk4lImIh5RSlChLA4wBPJROTk5K/////0r/////SwB0lGKJQyABAAAAAAAAAP7/////////AwAA"
    "AAAAAAAEAAAAAAAAAJR0lGKMBF9mbXSUjBRmaXhwcm9wLmZpeGVkLmZvcm1hdJSMB1FGb3JtYXSUk5QpgZR9lCiMBHdvcmSU"
    "SxCMBGZyYWOUSwiMBnNpZ25lZJSIdWKMDF9mbG9hdF9jYWNoZZROjA5fbWF4X2Fic19jYWNoZZRLBIwJX3NxX2NhY2hllE51"
    "hpRiLg=="
)


def _kernel_results(network: list[int], calls: int = 1) -> list[FixedArray]:
    """Fresh results (views not made yet) of ``calls`` gradient calls on the numba kernel."""
    pytest.importorskip("numba")
    net = MLP(network, init="he", seed=3)
    model = net.fixed_model(Datapath.seed(16, 8), backend="numba")
    ar = model.arithmetic
    rng = np.random.default_rng(1)
    x = ar.data(rng.uniform(-1, 1, (2, network[0])), "input")
    y = ar.data(rng.uniform(-1, 1, (2, network[-1])), "target")
    out = []
    for _ in range(calls):
        out += [v for pair in model.weight_gradients(x, y) for v in pair]
    return out


def _same_as_ints(array: FixedArray, ints: list, fmt: QFormat) -> bool:
    """``array`` holds exactly these Python integers in ``fmt``, read-only."""
    expected = FixedArray(np.array(ints, dtype=object), fmt)
    return (array.fmt == fmt and array.shape == expected.shape and array.identical(expected)
            and np.array_equal(array.to_float(), expected.to_float()) and not array.raw.flags.writeable)


@pytest.mark.parametrize("kind", ["ordinary", "float_held", "wide", "kernel_result"])
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_pickle_and_copy_keep_the_raw_integers_and_format_read_only(kind, how):
    if kind == "kernel_result":
        array = _kernel_results([64, 64, 10])[-1]  # the last layer's bias gradient: 10 of 5,130 results
    elif kind == "float_held":
        array = FixedArray._trusted_float(np.array([[3.0, -5.0], [7.0, 0.0]]), QFormat(16, 8))
    elif kind == "wide":
        array = FixedArray(np.array([1 << 90, -(1 << 70), 5], dtype=object), "s100.40")
    else:
        array = FixedArray(np.array([[1, -2], [3, 4]]), "s16.8")
    ints = np.asarray(array.raw).tolist() if kind != "kernel_result" else None
    restored = {"pickle": lambda a: pickle.loads(pickle.dumps(a)), "deepcopy": copy.deepcopy,
                "copy": copy.copy}[how](array)
    ints = ints if ints is not None else np.asarray(array.raw).tolist()
    assert _same_as_ints(restored, ints, array.fmt)
    if how == "pickle":  # only this array's integers are kept, not its kernel call's other results
        plain = FixedArray(np.array(ints, dtype=object), array.fmt)
        assert len(pickle.dumps(array)) <= len(pickle.dumps(plain)) + 16


def test_an_array_pickled_by_an_earlier_fixprop_loads_and_works():
    old = pickle.loads(base64.b64decode(OLD_PICKLE))
    fmt = QFormat(16, 8)
    assert _same_as_ints(old, [[1, -2], [3, 4]], fmt)
    assert repr(old) == repr(FixedArray(np.array([[1, -2], [3, 4]]), fmt))
    assert (old + old).identical(FixedArray(np.array([[2, -4], [6, 8]]), QFormat(17, 8)))


def test_threads_reading_fresh_kernel_results_see_their_integers():
    """Four threads read the same fresh results (their views made at first use, racing);
    each sees the integers the same results give once made."""
    results = _kernel_results([3, 4, 2], calls=4000)
    expected = [np.asarray(a.raw).tolist() for a in _kernel_results([3, 4, 2], calls=1)]
    errors: list[str] = []

    def read() -> None:
        for k, a in enumerate(results):
            try:
                if k % 3 == 0:
                    got = np.asarray(a.raw).tolist()
                elif k % 3 == 1:
                    got = a.shape and (np.ldexp(a.to_float(), a.fmt.frac)).astype(np.int64).tolist()
                else:
                    got = a.T.T.raw.tolist()
                if got != expected[k % len(expected)]:
                    errors.append(f"result {k}: {got}")
            except Exception as error:  # noqa: BLE001 - collected and reported below
                errors.append(f"result {k}: {error!r}")

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-7)
    try:
        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == [], errors[:3]
