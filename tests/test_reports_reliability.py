"""What verify, train, ranges and the plots report: saturation counts checked against a Python-int
count, proposals that say which roles were never observed, range plots with both format windows,
readable heatmaps, and plot files written exactly where asked (or refused before any work)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from oracle import raw_range, round_fraction

from fixprop import Datapath, FixedArray
from fixprop.errors import ConfigError
from fixprop.explore import plots, ranges
from fixprop.explore.datasets import Dataset
from fixprop.explore.train import TrainConfig, train
from fixprop.explore.train import format_report as train_report
from fixprop.nn.arithmetic import FixedArithmetic
from fixprop.verify import experiment
from fixprop.verify.experiment import Experiment, format_report, run, to_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- saturation counts -------------------------------------------------------------------------------

def recording_arithmetic(record: list):
    """A FixedArithmetic whose observer (when it has one) also appends every cast it sees to ``record``."""
    class Recording(FixedArithmetic):
        def __init__(self, datapath, rng=None, observer=None):
            super().__init__(datapath, rng, None)
            self.observer = observer

        @property
        def observer(self):
            return self._observer

        @observer.setter
        def observer(self, observer):
            if observer is None:
                self._observer = None
                return

            def both(role, layer, exact, result, cast):
                record.append((role, exact, result.fmt, cast))
                observer(role, layer, exact, result, cast)
            self._observer = both
    return Recording


def count_by_hand(record: list) -> dict:
    """Values, saturated and underflowed of recorded casts, with the oracle's rounding of each exact
    value (Fractions) into the target format and its SAT bounds (the tests' datapaths use SAT)."""
    totals = {"values": 0, "nonzero": 0, "saturated": 0, "underflowed": 0}
    saturated_by_role: dict[str, int] = {}
    underflowed_by_role: dict[str, int] = {}
    for role, exact, fmt, cast in record:
        assert cast.overflow.name == "SAT" and cast.rounding.name != "STOCH"
        if isinstance(exact, FixedArray):
            values = [Fraction(int(r)) / Fraction(2) ** exact.fmt.frac for r in exact.raw.ravel()]
        else:
            values = [Fraction(float(v)) for v in np.ravel(exact)]
        lo, hi = raw_range(fmt.word, fmt.signed)
        for v in values:
            r = round_fraction(v * Fraction(2) ** fmt.frac, cast.rounding.name)
            totals["values"] += 1
            totals["nonzero"] += v != 0
            if not lo <= r <= hi:
                totals["saturated"] += 1
                saturated_by_role[role] = saturated_by_role.get(role, 0) + 1
            if v != 0 and min(max(r, lo), hi) == 0:
                totals["underflowed"] += 1
                underflowed_by_role[role] = underflowed_by_role.get(role, 0) + 1
    return {**totals, "saturated_by_role": saturated_by_role, "underflowed_by_role": underflowed_by_role}


@pytest.mark.parametrize("datapath,saturating", [
    (Datapath.uniform(16, 20), {"input", "target", "weight", "bias"}),  # range +-2**-5: data and weights
    (Datapath.uniform(8, 7), {"target"}),  # range [-1, 1): the targets (> 1) and some sums
    (Datapath.seed(24, 12), set()),  # the seed's: nothing saturates
])
def test_verify_saturation_equals_a_python_int_count(datapath, saturating, monkeypatch):
    """verify counts the saturated and underflowed values of every cast of the fixed gradient:
    the same counts, per role too, as the oracle's rounding of each recorded exact value."""
    record: list = []
    monkeypatch.setattr(experiment, "FixedArithmetic", recording_arithmetic(record))
    result = run(Experiment(shape=(3, 4, 2), batch=2, datapath=datapath, timing_repeats=1))
    counted = result["saturation"]
    by_hand = count_by_hand(record)
    assert counted == {role_key: by_hand[role_key] for role_key in counted}
    roles = {r[0] for r in record}
    assert {"input", "target", "weight", "bias", "pre", "out_err", "weight_grad", "bias_grad"} <= roles
    assert "update" not in roles  # the gradient only; the timings ran without the observer
    assert saturating <= set(counted["saturated_by_role"]) and (counted["saturated"] > 0) == bool(saturating)


def test_verify_report_states_saturation_with_a_warning():
    """--word 16 --frac 20: the text says how many values saturated, where, and warns; the seed's
    datapath reports 0 and no warning; the JSON holds the counts."""
    bad = run(Experiment(datapath=Datapath.uniform(16, 20), timing_repeats=1))
    text = format_report(bad)
    s = bad["saturation"]
    share = f"{100 * s['saturated'] / s['values']:.3g}%"
    assert f"saturated {s['saturated']} of {s['values']} cast values ({share}), in roles: " in text
    assert "in roles: input 3, target 5, weight " in text  # every input (in [0, 1)) and target (> 1) saturates
    assert sum(line.startswith("warning: ") for line in text.splitlines()) == 1
    assert text.splitlines()[-1] == "Fixed percentage difference: 100.00%"
    doc = json.loads(json.dumps(to_json(bad)))
    assert doc["saturation"]["saturated"] == s["saturated"] > 0
    good = format_report(run(Experiment(timing_repeats=1)))
    assert "saturated 0 of " in good and "warning" not in good


def test_the_observer_changes_no_gradient():
    """The fixed gradient with the counting observer attached is the one without it, bit for bit."""
    from fixprop.nn.mlp import MLP

    net = MLP((3, 5, 2), seed=1)
    x, y = experiment.make_data(net, 4, 1)
    grads = []
    for observer in (None, ranges.RangeCollector(ranges=False)):
        ar = FixedArithmetic(Datapath.uniform(10, 6, "STOCH"), np.random.default_rng(3), observer)
        params = net.params_in(ar, net.init_params())
        grads.append(net.backward(ar, params, net.forward(ar, params, x), y))
    for a, b in zip(*grads):
        assert np.array_equal(a.weight_grad.raw, b.weight_grad.raw) and a.weight_grad.fmt == b.weight_grad.fmt
        assert np.array_equal(a.bias_grad.raw, b.bias_grad.raw)


def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (24, 2))
    y = np.stack([x[:, 0] * x[:, 1], x[:, 0] - x[:, 1]], axis=1)
    return Dataset("tiny", x[:16], y[:16], x[16:], y[16:])


def test_train_saturation_equals_a_python_int_count_and_changes_nothing():
    """train counts every cast of the fixed network's training (2 epochs, both counted): the same
    as the oracle's count of the casts an observer saw; the curves equal those of the compiled,
    uncounted run; the report and the JSON state the counts."""
    config = TrainConfig(epochs=2, hidden=(3,), batch=4)
    dp = Datapath.uniform(8, 5)  # range [-4, 4): products and gradients saturate
    record: list = []

    def recorder(role, layer, exact, result, cast):
        record.append((role, exact, result.fmt, cast))

    counted = train(config, dp, data=tiny_dataset(), observer=recorder)
    by_hand = count_by_hand(record)
    assert counted["saturation"] == by_hand and by_hand["saturated"] > 0
    assert sum(1 for r in record if r[0] == "update") == 2 * 4 * 2 * 2  # epochs x steps x layers x (w, b)
    plain = train(config, dp, data=tiny_dataset(), count_casts=False)
    assert plain["saturation"] is None
    assert plain["fixed"] == counted["fixed"] and plain["float"] == counted["float"]
    text = train_report(counted)
    assert f"saturated {by_hand['saturated']} of {by_hand['values']} cast values" in text
    assert "warning: " in text and "warning" not in train_report(plain)
    assert json.loads(json.dumps(to_json(counted)))["saturation"]["underflowed"] == by_hand["underflowed"]


def test_counting_keeps_stochastic_training_bit_identical():
    """Counting runs the steps stepwise instead of compiled: the same integers, STOCH included."""
    config = TrainConfig(epochs=1, hidden=(4,), batch=4, seed=2)
    dp = Datapath.uniform(10, 6, "STOCH")
    counted, plain = train(config, dp, data=tiny_dataset()), train(config, dp, data=tiny_dataset(), count_casts=False)
    assert counted["fixed"] == plain["fixed"] and counted["saturation"]["values"] > 0


def test_ranges_counts_only_mode_counts_like_the_full_one():
    """RangeCollector(ranges=False) keeps the same counts as the full collector, without ranges."""
    full, counts = ranges.RangeCollector(), ranges.RangeCollector(ranges=False)
    values = FixedArray([-2047, -3, -1, 0, 1, 5, 600, 2047], "s12.4")
    for collector in (full, counts):
        ar = FixedArithmetic(Datapath.uniform(8, 2), observer=collector)
        ar.cast(values, "acc", layer=0)
        ar.data(np.array([0.1, -100.0, 0.0, 3.0]), "input")
    for key, s in full.stats.items():
        c = counts.stats[key]
        assert (c.count, c.nonzero, c.saturated, c.underflowed) == (s.count, s.nonzero, s.saturated, s.underflowed)
        assert c.min is None and c.log2_histogram == {} and s.min is not None
    # by hand: s12.4 -> s8.2 drops 2 bits (RND_CONV): -2047 -> -512 (sat), -3 -> -1, -1 -> 0 (underflow),
    # 1 -> 0 (underflow), 5 -> 1, 600 -> 150 (sat), 2047 -> 512 (sat); data: 0.1 -> 0 (underflow), -100 (sat)
    assert ranges.saturation_summary(counts) == {
        "values": 12, "nonzero": 10, "saturated": 4, "underflowed": 3,
        "saturated_by_role": {"input": 1, "acc": 3}, "underflowed_by_role": {"input": 1, "acc": 2}}


# -- proposals ----------------------------------------------------------------------------------------

def test_unobserved_roles_are_marked_in_the_proposal():
    """momentum (no momentum in the datapath) is never cast: the proposal keeps the template's
    integer bits for it and says so in its name, its rows (and JSON) and its table; observed
    roles carry no note. Tiny values get more fraction bits than the word (legal)."""
    collector = ranges.collect_verify(Experiment(), [0])
    proposed = ranges.propose_datapath(collector, Datapath.seed(24, 12), 16)
    assert proposed["momentum"].fmt == Datapath.seed(24, 12)["momentum"].at_word(16).fmt  # s16.4
    assert proposed.name.endswith("; not observed (the template's integer bits kept): momentum")
    rows = ranges.proposal_rows(collector, proposed)
    marked = [(r["role"], r["layer"]) for r in rows if not r["observed"]]
    assert marked == [("momentum", None)]
    assert all(r["note"] is None for r in rows if r["observed"])
    assert next(r for r in rows if r["role"] == "momentum")["note"] == ranges.NOT_OBSERVED
    assert json.loads(json.dumps(rows)) == rows
    table = ranges.format_proposal(collector, proposed).splitlines()
    momentum = next(line for line in table if line.startswith("momentum"))
    assert momentum.split()[:5] == ["momentum", "all", "-", "-", "s16.4"] and momentum.endswith(ranges.NOT_OBSERVED)
    assert sum(ranges.NOT_OBSERVED in line for line in table) == 2  # the header line and the momentum row
    update = [r["format"] for r in rows if r["role"] == "update"]
    assert any(int(f.split(".")[1]) > 16 for f in update)  # e.g. s16.17: frac > word for tiny updates
    assert all(r["format"] == r["proposed"].split()[0] for r in rows)


def test_a_fully_observed_proposal_has_no_note():
    """A template without a momentum role: every role is observed, nothing is marked."""
    seed = Datapath.seed(24, 12)
    base = Datapath({role: cast for role, cast in seed.roles.items() if role != "momentum"}, lr_shift=7)
    collector = ranges.collect_verify(Experiment(datapath=base), [0])
    proposed = ranges.propose_datapath(collector, base, 16)
    assert "not observed" not in proposed.name
    assert all(r["observed"] and r["note"] is None for r in ranges.proposal_rows(collector, proposed))


# -- plots --------------------------------------------------------------------------------------------

def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_plot_ranges_draws_the_observed_and_the_proposed_windows(tmp_path, monkeypatch):
    """With ``proposed``, each row gets the proposed format's LSB and first overflowing bit too,
    at the proposed positions, in their own colours, with a legend naming both."""
    collector = ranges.collect_verify(Experiment(shape=(3, 4, 2)), [0])
    proposed = ranges.propose_datapath(collector, Datapath.seed(24, 12), 12)
    rows = ranges.proposal_rows(collector, proposed)
    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, tight=True: (figures.append(fig), real_save(fig, path))[1])
    written = plots.plot_ranges(collector.to_json(), tmp_path / "r.png", proposed=rows)
    assert written == tmp_path / "r.png" and is_png(written)
    ax = figures[0].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["observed under: LSB", "observed under: first overflowing bit", "proposed: LSB",
                      "proposed: first overflowing bit"]
    stats = [s for s in collector.to_json() if s["log2_histogram"]]
    lsb_x = {line.get_xdata()[0] for line in ax.get_lines() if line.get_color() == "cyan" and len(line.get_xdata())}
    # the proposed LSB of weight at layer 1 (its override, or the role's cast): -frac - 0.5
    weight1 = proposed.cast_for("weight", 1).fmt
    assert -weight1.frac - 0.5 in lsb_x
    assert len([line for line in ax.get_lines() if line.get_color() == "cyan"]) == len(stats) + 1  # + legend
    plots.plot_ranges(collector.to_json(), tmp_path / "plain.png")  # without proposals: as before
    assert is_png(tmp_path / "plain.png")


def sweep_results(values: list[float], words: list[int], fracs: list[int]) -> list[dict]:
    it = iter(values)
    return [{"status": "ok", "template": "uniform", "rounding": "RND_CONV", "word": w, "frac": f,
             "train": {"loss_ratio": next(it)}} for w in words for f in fracs]


def test_heatmap_cells_have_three_significant_digits():
    assert [plots.cell_text(v) for v in (1.047, 0.997, 1.0, 12.34, 0.012345, 250.4, 1234.0)] == \
        ["1.05", "0.997", "1", "12.3", "0.0123", "250", "1234"]


def test_heatmap_of_equal_values_has_a_plain_colour_scale(tmp_path, monkeypatch):
    """All cells equal: the colour scale spans one unit around the value (not 1e-9), the colour
    bar shows no offset text, its label is inside the figure, and the cells read 0.445."""
    assert plots.colour_limits(np.array([math.log10(0.44468437)] * 2)) == pytest.approx(
        (math.log10(0.44468437) - 0.5, math.log10(0.44468437) + 0.5))
    figures = []
    real_save = plots._save

    def keep(fig, path, tight=True):
        figures.append(fig)
        fig.canvas.draw()  # lay it out as saving does, then inspect before it is closed
        bar = fig.axes[-1]
        assert bar.yaxis.get_offset_text().get_text() == ""
        label = bar.yaxis.label.get_window_extent()
        figure = fig.bbox
        assert figure.y0 <= label.y0 and label.y1 <= figure.y1 and label.x1 <= figure.x1
        return real_save(fig, path, tight)

    monkeypatch.setattr(plots, "_save", keep)
    written = plots.plot_heatmaps(sweep_results([0.44468437] * 2, [16], [6, 8]), tmp_path / "heat.png")
    assert written == tmp_path / "heat.png" and is_png(written)
    texts = [t.get_text() for t in figures[0].axes[0].texts]
    assert texts == ["0.445", "0.445"]
    ticks = figures[0].axes[-1].get_yticks()
    assert ticks.max() - ticks.min() >= 0.5  # readable ticks over the unit span


def test_plot_paths_are_written_exactly_and_bad_ones_refused(tmp_path):
    """A name without a suffix is written as PNG to exactly that name (no .png appended); a pdf
    suffix gives a PDF; a directory or a suffix matplotlib cannot write is a ConfigError from
    check_plot_path (before any work) and from the plot functions, and nothing is written."""
    result = sweep_results([1.0, 2.0], [16], [6, 8])
    assert plots.check_plot_path(tmp_path / "curves") == tmp_path / "curves"
    assert plots.plot_heatmaps(result, tmp_path / "curves") == tmp_path / "curves"
    assert is_png(tmp_path / "curves") and not (tmp_path / "curves.png").exists()
    assert plots.plot_heatmaps(result, tmp_path / "h.PDF") == tmp_path / "h.PDF"
    assert (tmp_path / "h.PDF").read_bytes()[:5] == b"%PDF-"
    before = sorted(p.name for p in tmp_path.iterdir())
    for bad, message in ((tmp_path, "is a directory"), (tmp_path / "c.txt", r"cannot write '\.txt' files; use one of"),
                         (tmp_path / "c.png.bak", r"cannot write '\.bak' files")):
        with pytest.raises(ConfigError, match=message):
            plots.check_plot_path(bad)
        with pytest.raises(ConfigError, match=message):
            plots.plot_heatmaps(result, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_check_plot_path_refuses_a_format_that_needs_a_missing_tool(tmp_path, monkeypatch):
    """A suffix matplotlib lists but cannot write here (its writer fails) is refused too."""
    import matplotlib.figure

    def fail(self, *args, **kwargs):
        raise RuntimeError("'xelatex' not found")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    with pytest.raises(ConfigError, match=r"matplotlib cannot write pgf files here \(RuntimeError: 'xelatex'"):
        plots.check_plot_path(tmp_path / "x.pgf")
