"""The seed's class against the seed arithmetic written independently here, and the notebook."""

from __future__ import annotations

import re
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fixprop.compat import mlp4autograd
from oracle import round_fraction

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "seed_notebook.ipynb"


def seed_arithmetic(weights, biases, x, y, d, q):
    """The issue's statement of the seed's quantized arithmetic, in Python ints."""
    lo, hi = -(2 ** (d - 1)), 2 ** (d - 1) - 1

    def sat(v):
        return max(lo, min(hi, v))

    def rne(v):  # v / 2**q rounded half to even
        return round_fraction(Fraction(v, 2**q), "RND_CONV")

    a, acts, zs = list(x), [list(x)], []
    for W, b in zip(weights, biases):
        z = [sat(rne(sum(W[j][i] * a[i] for i in range(len(a)))) + b[j]) for j in range(len(W))]
        a = [max(v, 0) for v in z]
        zs.append(z)
        acts.append(a)
    delta = [2 * (av - yv) for av, yv in zip(acts[-1], y)]
    wgrads, bgrads = [None] * len(weights), [None] * len(weights)
    for l in reversed(range(len(weights))):
        r = [2**q if v > 0 else (2 ** (q - 1) if v == 0 else 0) for v in zs[l]]
        bg = [sat(rne(r[j] * delta[j])) for j in range(len(delta))]
        wg = [[sat(rne(bg[j] * acts[l][i])) for i in range(len(acts[l]))] for j in range(len(bg))]
        delta = [sat(rne(sum(weights[l][j][i] * bg[j] for j in range(len(bg))))) for i in range(len(acts[l]))]
        wgrads[l], bgrads[l] = wg, bg
    return acts, wgrads, bgrads


@pytest.mark.parametrize("d,q", [(16, 10), (24, 12), (32, 16)])
@pytest.mark.parametrize("trial", range(6))
def test_quantized_class_equals_seed_arithmetic(d, q, trial):
    rng = np.random.default_rng(100 * d + trial)
    shape = [3, 7, 7, 5]
    scale = 2**q
    # weights in [-1, 1), inputs in [0, 1), targets near the outputs; one neuron pinned at z == 0
    weights = [np.round(rng.uniform(-1, 1, (o, i)) * scale) for i, o in zip(shape[:-1], shape[1:])]
    biases = [np.round(rng.uniform(-1, 1, (o, 1)) * scale) for o in shape[1:]]
    x = np.round(rng.random((3, 1)) * scale)
    net = mlp4autograd()
    net.set_quant(d, q, True)
    net.net_shape(shape)
    out = net.infer(x, [weights, biases])
    y = np.round(out + rng.uniform(-1, 1, (5, 1)) * scale)
    net.grad(y)
    W = [[[int(v) for v in row] for row in w] for w in weights]
    B = [[int(v) for v in b.ravel()] for b in biases]
    acts, wgrads, bgrads = seed_arithmetic(W, B, [int(v) for v in x.ravel()], [int(v) for v in y.ravel()], d, q)
    assert [a.ravel().tolist() for a in net._activation] == acts
    assert [w.tolist() for w in net._weight_dif] == wgrads
    assert [b.ravel().tolist() for b in net._bias_dif] == bgrads
    assert net.params_grad == [net._weight_dif, net._bias_dif]


def test_seed_arithmetic_at_32_bits_goes_beyond_float64():
    """At (32, 16) the products exceed 2**53: the seed's float64 stand-in would round them."""
    d, q = 32, 16
    w = [[float(2**31 - 1), float(2**31 - 3)]]
    net = mlp4autograd()
    net.set_quant(d, q, True)
    net.net_shape([2, 1])
    x = np.array([[2.0**31 - 5], [2.0**31 - 7]])
    net.infer(x, [[np.array(w)], [np.array([[0.0]])]])
    exact = round_fraction(Fraction((2**31 - 1) * (2**31 - 5) + (2**31 - 3) * (2**31 - 7), 2**q), "RND_CONV")
    assert int(net._activation[-1][0, 0]) == min(exact, 2**31 - 1)
    float64_product = float(np.float64(2**31 - 1) * np.float64(2**31 - 5))
    assert float64_product != (2**31 - 1) * (2**31 - 5)  # what the seed would have lost


def test_repeated_calls_do_not_grow_memory():
    net = mlp4autograd()
    net.set_quant(quant=False)
    net.net_shape([3, 7, 7, 5])
    np.random.seed(1)
    net.init_params("uniform")
    x = np.random.random((3, 1))
    for _ in range(20):
        net.infer(x, [net._weight, net._bias])
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(500):
        net.infer(x, [net._weight, net._bias])
        net.grad(np.ones((5, 1)))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(net._activation) == 4
    assert growth < 64_000, f"{growth} bytes retained after 500 calls"


def notebook_outputs() -> list[str]:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    try:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    except ImportError:
        pytest.skip("nbclient not installed")
    return ["".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in nb.cells
            if cell.cell_type == "code"]


def test_notebook_runs_top_to_bottom():
    printed = "".join(notebook_outputs())
    percentages = [float(v) for v in re.findall(r"Percentage difference: ([0-9.]+)%", printed)]
    assert "Percentage difference: 0.00%" in printed
    assert len(percentages) == 2 and percentages[0] == 0.0 and 0 < percentages[1] < 1.0


def test_notebook_changed_only_the_import_line():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = nb.cells[1].source
    assert "from fixprop.compat import mlp4autograd" in first
    assert "from mlp4autograd import" not in "".join(c.source for c in nb.cells)


def test_quantized_error_is_exact_beyond_int64_squares():
    """error() at d = 40: an output of 2**38 raw units against a truth of -2**38 is 2**39 apart;
    its square (2**78) wraps in int64. The sum must be the exact Python int."""
    from fixprop.compat import mlp4autograd

    model = mlp4autograd()
    model.set_quant(40, 20)
    model.net_shape([1, 2])
    params = [[np.array([[2.0**20], [2.0**19]])], [np.zeros((2, 1))]]  # weights 1.0 and 0.5
    out = model.infer(np.array([[2.0**38]]), params)
    assert out.ravel().tolist() == [2**38, 2**37]
    truth = np.array([[-(2**38)], [3]], dtype=np.int64)
    assert model.error(truth) == (2**39) ** 2 + (2**37 - 3) ** 2
