"""The exploration commands' outputs and edge cases: plots, Dask processes, option checks,
template modes, divergence, saturation counted after rounding on float data."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from oracle import round_fraction

from fixprop import Datapath, FixedArray, QFormat
from fixprop.cli import main
from fixprop.datapath import RoleCast
from fixprop.explore import plots
from fixprop.explore.ranges import observe
from fixprop.explore.sweep import SweepSpec, grid, run_sweep
from fixprop.explore.train import TrainConfig, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 2000


@pytest.fixture(scope="module")
def small_sweep() -> list[dict]:
    """Two words x two fracs x two roundings, gradient and training, in this process."""
    spec = SweepSpec(words=(10, 12), fracs=(6, 8), roundings=("RND_CONV", "STOCH"), measures=("gradient", "train"),
                     seeds=(0, 1), train_config={"dataset": "ik", "epochs": 1, "hidden": [4]})
    return run_sweep(grid(spec), workers=1)


def test_every_plot_writes_a_png(tmp_path, small_sweep):
    """Each plot function writes a PNG file (the Agg backend, no display)."""
    result = train(TrainConfig(epochs=1, hidden=(4,)), Datapath.uniform(12, 8))
    digits_result = train(TrainConfig(dataset="digits", epochs=1, hidden=(8,)), Datapath.uniform(12, 8))
    from fixprop.explore.ranges import collect_verify
    from fixprop.verify.experiment import Experiment

    stats = collect_verify(Experiment(), [0, 1]).to_json()
    written = [
        plots.plot_training(result, tmp_path / "train.png"),
        plots.plot_training(digits_result, tmp_path / "digits.png"),
        plots.plot_ranges(stats, tmp_path / "ranges.png"),
        plots.plot_heatmaps(small_sweep, tmp_path / "heat.png"),
        plots.plot_sweep_curves(small_sweep, tmp_path / "final.png"),
        plots.plot_loss_curves(small_sweep, tmp_path / "curves.png"),
        plots.plot_seed_errors(small_sweep, tmp_path / "seeds.png"),
    ]
    assert all(is_png(Path(p)) for p in written), written


def test_plots_of_nothing_write_nothing(tmp_path):
    """A sweep whose every point failed has no figure to draw: None, no file."""
    failed = [{"index": 0, "template": "uniform", "word": 8, "frac": 4, "rounding": "RND", "status": "failed",
               "error": "x", "seconds": 0.0}]
    for function in (plots.plot_heatmaps, plots.plot_sweep_curves, plots.plot_loss_curves, plots.plot_seed_errors):
        assert function(failed, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_cli_sweep_on_a_local_dask_cluster_of_processes(tmp_path, capsys):
    """`--dask local` (a LocalCluster of worker processes) computes the same CSV as one process."""
    common = ["sweep", "--words", "12", "--fracs", "6,8", "--seeds", "0", "--no-plot", "--quiet"]
    assert main(common + ["--workers", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(common + ["--workers", "2", "--dask", "local", "--out", str(tmp_path / "dask")]) == 0
    capsys.readouterr()

    def numbers(directory: Path) -> list[list[str]]:
        rows = [line.split(",") for line in (directory / "sweep.csv").read_text().splitlines()]
        seconds = rows[0].index("seconds")
        return [row[:seconds] + row[seconds + 1:] for row in rows]

    assert numbers(tmp_path / "one") == numbers(tmp_path / "dask")
    assert len(numbers(tmp_path / "one")) == 3


def test_keep_rounding_keeps_a_file_templates_modes(tmp_path):
    """With rounding 'keep' a file template's per-role modes survive the move to another word; a
    named rounding replaces them."""
    dp = Datapath.uniform(16, 8).with_role("update", RoleCast.of("s16.12", "STOCH", "SAT"))
    path = tmp_path / "t.toml"
    dp.save(path)
    kept, = grid(SweepSpec(words=(12,), templates=(str(path),), roundings=("keep",)))
    replaced, = grid(SweepSpec(words=(12,), templates=(str(path),), roundings=("RND",)))
    kept_dp = Datapath.from_toml(kept["datapath_toml"])
    assert kept_dp["update"] == RoleCast.of("s12.8", "STOCH", "SAT")   # 4 integer bits kept
    assert kept_dp["weight"] == RoleCast.of("s12.4", "RND_CONV", "SAT")
    assert {c.rounding.name for c in Datapath.from_toml(replaced["datapath_toml"]).roles.values()} == {"RND"}


def test_a_diverged_float_network_gives_no_ratio():
    """A learning rate of 1 makes the float network blow up: its loss is inf and the ratio nan
    (not 0, which would look like a perfect fixed-point network)."""
    result = train(TrainConfig(epochs=2, hidden=(4,)), Datapath.uniform(16, 8, lr_shift=0))
    final = result["final"]
    assert final["float_test_loss"] == math.inf and final["float_diverged"] is True
    assert math.isnan(final["loss_ratio"]) and math.isfinite(final["fixed_test_loss"])


@pytest.mark.parametrize("rounding,overflow", [("RND_CONV", "SAT"), ("TRN", "SAT"), ("RND", "SAT_SYM")])
def test_saturation_of_float_data_is_counted_after_rounding(rounding, overflow):
    """Float data cast into s8.4 ([-8, 7.9375]): a value in (7.9375, 7.96875) rounds back into range
    under round-to-nearest (not saturated), above it it does not; TRN keeps everything below 8; with
    SAT_SYM -8 itself is out of range. Counted here with the oracle's rounding of each exact value."""
    xs = [7.9375, 7.95, 7.96875, 7.99, 8.0, -8.0, -8.01, -8.03125, -8.04, 0.01, 100.0]
    fmt = QFormat(8, 4)
    cast = RoleCast.of(fmt, rounding, overflow)
    result = FixedArray.from_float(np.array(xs), fmt, rounding, overflow)
    stats = observe("input", None, np.array(xs), result.raw, fmt, cast)
    lo, hi = (-127, 127) if overflow == "SAT_SYM" else (-128, 127)
    expected = sum(1 for v in xs if not lo <= round_fraction(Fraction(v) * 16, rounding) <= hi)
    assert stats.saturated == expected
    # and the counts differ from "exact value outside [min, max]", which the test would not notice otherwise
    outside = sum(1 for v in xs if not -8 <= v <= 7.9375)
    assert (rounding, expected) != ("RND_CONV", outside)


@pytest.mark.parametrize("argv,needle", [
    (["ranges", "--seeds", "-1"], "--seeds"),
    (["ranges", "--dataset", "ik", "--shape", "3,4,5"], "--shape"),
    (["ranges", "--hidden", "8"], "--hidden"),
    (["ranges", "--propose", "16", "--out", "/nonexistent-dir/x.toml"], "--out"),
    (["ranges", "--out", "x.toml"], "--propose"),
    (["train", "--epochs", "1", "--plot", "/nonexistent-dir/c.png"], "--plot"),
    (["sweep", "--seeds", "-2", "--no-plot"], "--seeds"),
    (["sweep", "--words", "1", "--fracs", "0", "--no-plot"], "word lengths"),
    (["sweep", "--out", "/proc/fixprop-cannot", "--seeds", "0", "--no-plot"], "--out"),
])
def test_bad_exploration_options_are_one_line_errors(argv, needle, capsys, tmp_path, monkeypatch):
    """Each bad option gives exit status 2 and one line naming it, before any work or any file."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]
    assert not any(tmp_path.iterdir())


def test_proposal_error_names_the_unsigned_role(capsys, tmp_path):
    """An unsigned role that sees negative values cannot be proposed: the error names the role."""
    path = tmp_path / "unsigned.toml"
    Datapath.seed(24, 12).with_role("prop_err", RoleCast.of("u24.12")).save(path)
    assert main(["ranges", "--datapath", str(path), "--propose", "16"]) == 2
    err = capsys.readouterr().err
    assert "prop_err" in err and "signed" in err


def test_train_json_is_strict_json(capsys):
    """--json output parses with a strict parser (no NaN or Infinity tokens)."""
    assert main(["train", "--epochs", "1", "--hidden", "4", "--json", "--quiet"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert doc["final"]["loss_ratio"] > 0 and len(doc["fixed"]["test_loss"]) == 2
