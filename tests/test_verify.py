"""Metrics on hand-made arrays, and `fixprop verify` against the notebook's own computation."""

from __future__ import annotations

import json
import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from fixprop.cli import main
from fixprop.compat import mlp4autograd
from fixprop.nn import MLP
from fixprop.verify import compare, make_data
from fixprop.verify.references import available


def test_metrics_by_hand():
    ref = np.array([2.0, -4.0, 0.0, 1.0])
    got = np.array([2.5, -4.0, 0.25, -1.0])
    m = compare(got, ref, lsb=0.25)
    # relative errors over nonzero refs: 0.25, 0, 2 -> mean 0.75; the zero ref is counted, not divided by
    assert m.mean_relative_error == pytest.approx(0.75)
    assert m.zero_reference_count == 1
    assert m.max_abs_error == 2.0 and m.max_abs_error_lsb == 8.0
    err_energy, ref_energy = 0.25 + 0 + 0.0625 + 4.0, 4 + 16 + 0 + 1
    assert m.relative_rms_error == pytest.approx(math.sqrt(err_energy / ref_energy))
    assert m.sqnr_db == pytest.approx(10 * math.log10(ref_energy / err_energy))
    assert m.cosine_similarity == pytest.approx((5 + 16 + 0 - 1) / math.sqrt(21 * (6.25 + 16 + 0.0625 + 1)))
    assert m.sign_agreement == 0.5  # (2.5, 2) and (-4, -4) agree; (0.25, 0) and (-1, 1) do not


def test_metrics_survive_all_zero_references():
    m = compare(np.zeros(3), np.zeros(3))
    assert math.isnan(m.mean_relative_error) and m.zero_reference_count == 3
    assert m.sqnr_db == math.inf and m.cosine_similarity == 1.0 and m.to_json()["sqnr_db"] is None


def notebook_percentage(d: int, q: int, seed: int) -> float:
    """The notebook's computation (compat class + autograd + its error formula) on verify's data."""
    net = MLP([3, 7, 7, 5], seed=seed)
    x, y = make_data(net, 1, seed)
    params = net.init_params()
    weights = [p.weight for p in params]
    biases = [p.bias.reshape(-1, 1) for p in params]
    ref = mlp4autograd()
    ref.set_quant(quant=False)
    ref.net_shape([3, 7, 7, 5])

    def error(ps):
        ref.infer(x.T, ps)
        return ref.error(y.T)

    grad_eval = autograd.grad(error)([weights, biases])
    ref_q = mlp4autograd()
    ref_q.set_quant(d, q, True)
    ref_q.net_shape([3, 7, 7, 5])
    ref_q.infer(np.round(x.T * 2**q), [[np.round(w * 2**q) for w in weights], [np.round(b * 2**q) for b in biases]])
    ref_q.grad(np.round(y.T * 2**q))
    got = [[w / 2**q for w in ref_q._weight_dif], [b / 2**q for b in ref_q._bias_dif]]
    dw = [anp.average(anp.abs((g - r) / r)) for g, r in zip(got[0], grad_eval[0])]
    db = [anp.average(anp.abs((g - r) / r)) for g, r in zip(got[1], grad_eval[1])]
    return float((np.average(dw) + np.average(db)) / 2)


@pytest.mark.parametrize("seed", [0, 3])
def test_verify_default_reproduces_the_notebook(seed, capsys):
    assert main(["verify", "--json", "--repeats", "1", "--seed", str(seed)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["float"]["mean_relative_error"] < 1e-12
    fixed = result["fixed"]["mean_relative_error"]
    assert fixed == pytest.approx(notebook_percentage(24, 12, seed), rel=1e-9)
    assert 0 < fixed < 0.01
    layers = result["fixed"]["layers"]
    assert len(layers) == 3 and set(layers[0]) == {"weight", "bias"}
    assert result["fixed"]["overall"]["max_abs_error_lsb"] > 0
    assert set(result["seconds_per_gradient"]) == {"fixprop_float", "fixprop_fixed", "autograd"}


def test_verify_text_report(capsys):
    assert main(["verify", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "Float percentage difference: 0.00%" in out
    assert "seed(24,12)" in out and "autograd / fixprop float" in out


def test_verify_all_references(capsys):
    if not (available("jax") and available("torch")):
        pytest.skip("jax and torch not installed (CI installs them)")
    assert main(["verify", "--json", "--repeats", "1", "--reference", "all", "--batch", "4",
                 "--shape", "3,16,5", "--preset", "uniform", "--word", "16", "--frac", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["references"]) == {"autograd", "jax", "torch"}
    for name, pair in result["references"].items():
        assert pair["float"]["mean_relative_error"] < 1e-12, name
    fixed = {name: pair["fixed"]["mean_relative_error"] for name, pair in result["references"].items()}
    assert max(fixed.values()) - min(fixed.values()) < 1e-9


def test_verify_with_a_datapath_file(tmp_path, capsys):
    from fixprop import Datapath

    path = tmp_path / "dp.toml"
    Datapath.uniform(20, 12, "RND").save(path)
    assert main(["verify", "--json", "--repeats", "1", "--datapath", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"]["datapath"] == str(path)
    assert main(["verify", "--datapath", str(path), "--word", "16"]) == 2
    assert "drop --word" in capsys.readouterr().err
    assert main(["verify", "--shape", "3,x,5"]) == 2
    assert "--shape must be" in capsys.readouterr().err
