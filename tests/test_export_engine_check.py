"""export(check_backend=...) / `fixprop export --backend`: the compiled engine reruns the
bundle's steps from the same random stream and must end every step with the bundle's
parameters; a difference is an error and nothing is written."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fixprop import Datapath, RoleCast
from fixprop.cli import main
from fixprop.errors import ConfigError, FixpropError
from fixprop.hardware import LfsrSource, export
from fixprop.nn import MLP, Model
from fixprop.verify.experiment import make_data

STOCH_INSIDE = replace(Datapath.uniform(14, 7), roles={
    **Datapath.uniform(14, 7).roles, "acc": RoleCast(16, 6, True, "STOCH", "SAT"),
    "weight_grad": RoleCast(12, 8, True, "STOCH", "WRAP")})


@pytest.mark.parametrize("backend", ["numpy", "numba", "auto"])
@pytest.mark.parametrize("source", ["generator", "lfsr"])
def test_the_engines_replay_the_bundle(tmp_path, backend, source):
    net = MLP([3, 5, 4], "relu", seed=2)
    x, y = make_data(net, 12, 0)
    rng = np.random.default_rng(4) if source == "generator" else LfsrSource(seed=9)
    path = export(net, STOCH_INSIDE, x, y, 3, tmp_path / "b", rng=rng, check_backend=backend)
    assert (path / "manifest.json").is_file()


def test_a_difference_is_an_error_and_nothing_is_written(tmp_path, monkeypatch):
    net = MLP([3, 5, 4], "relu", seed=2)
    x, y = make_data(net, 8, 0)
    original = Model.train_step

    def off_by_one(self, xs, ys):  # an engine that gets one integer wrong in the second step
        loss = original(self, xs, ys)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            p = self.params[1]
            raw = np.array(p.bias.raw)
            raw[0] += 1
            self.params[1] = type(p)(p.weight, type(p.bias)(raw, p.bias.fmt))
        return loss

    monkeypatch.setattr(Model, "train_step", off_by_one)
    with pytest.raises(FixpropError, match="step 1, layer 1, bias_updated"):
        export(net, Datapath.seed(16, 10), x, y, 2, tmp_path / "b", check_backend="numba")
    assert not (tmp_path / "b").exists()


def test_stochastic_data_roles_cannot_be_checked(tmp_path, capsys):
    net = MLP([3, 5, 4], seed=2)
    x, y = make_data(net, 4, 0)
    with pytest.raises(ConfigError, match="input and target roles round STOCH"):
        export(net, Datapath.uniform(12, 6, rounding="STOCH"), x, y, 1, tmp_path / "b",
               rng=np.random.default_rng(0), check_backend="numba")
    assert main(["export", "--out", str(tmp_path / "c"), "--backend", "numba"]) == 0
    assert "checked: the numba engine's parameters after every step equal the bundle's" in capsys.readouterr().out
