"""fixprop sweep under Ctrl-C, on processes and on Dask, and what it leaves behind: run as a
real command in a process group of its own and interrupted as a terminal does (SIGINT to the
whole group, worker processes included). Also: the output directory is made only when there is
something to write, a re-run replaces every file of the previous one, sweep.json and --json say
which executor ran, and a grid is checked before any point runs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fixprop import Datapath
from fixprop.cli import main
from fixprop.datapath import RoleCast
from fixprop.errors import ConfigError
from fixprop.explore import sweep

#: Guards against a hang (never reached by a working sweep); not a measure of speed.
HANG_GUARD_SECONDS = 120
#: 40 points of about a second each (a 3-300-300-300-5 network, a batch of 64, 8 seeds): the first
#: results come within seconds, the whole grid would take far longer.
SLOW_GRID = ["sweep", "--words", "16", "--fracs", "1-20", "--roundings", "RND_CONV,TRN", "--seeds", "0-7",
             "--verify-shape", "3,300,300,300,5", "--verify-batch", "64", "--no-plot"]
PROGRESS = re.compile(r"\] (\d+)/(\d+) ")


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    """fixprop sweep in a new session (its own process group, as a shell job), output to files."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "fixprop.cli", *SLOW_GRID, "--out", "out", *extra],
                            cwd=tmp_path, stdout=(tmp_path / "stdout.txt").open("w"),
                            stderr=(tmp_path / "stderr.txt").open("w"), start_new_session=True, env=env)


def wait_for_points(process: subprocess.Popen, tmp_path: Path, count: int = 1) -> int:
    """Wait until the progress bar shows ``count`` points done; returns the number it shows."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        done = [int(m.group(1)) for m in PROGRESS.finditer((tmp_path / "stderr.txt").read_text())]
        if done and done[-1] >= count:
            return done[-1]
        assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
        time.sleep(0.05)
    pytest.fail("no progress from fixprop sweep")


def ctrl_c(process: subprocess.Popen) -> None:
    """SIGINT to the process group, as a terminal's Ctrl-C."""
    os.killpg(process.pid, signal.SIGINT)


def running_in_group(group: int) -> list[int]:
    """Processes of a process group that are still running (zombies, which only wait for their
    parent to collect them, not counted); Linux's /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def finish(process: subprocess.Popen, tmp_path: Path) -> tuple[int, str, str]:
    """Wait for the exit; then every process of the group (the workers) must be gone as well."""
    try:
        status = process.wait(timeout=HANG_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("fixprop sweep hung after Ctrl-C")
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while running_in_group(process.pid):
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("worker processes outlived fixprop sweep")
        time.sleep(0.05)
    return status, (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()


def csv_rows(directory: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((directory / "sweep.csv").read_text())))


def check_interrupted_run(tmp_path: Path, seen: int, status: int, out: str, err: str, executor: str) -> None:
    """Status 130, no traceback, the stderr line saying how many points were done, and sweep.csv
    and sweep.json holding exactly those points (all ok, fewer than the 40 of the grid)."""
    assert status == 130 and "Traceback" not in err, err
    match = re.search(r"fixprop sweep: interrupted \(Ctrl-C\) after (\d+) of 40 point\(s\); their results are in out",
                      err)
    assert match, err
    done = int(match.group(1))
    assert seen <= done < 40
    rows = csv_rows(tmp_path / "out")
    assert len(rows) == done and all(row["status"] == "ok" for row in rows)
    assert len({row["index"] for row in rows}) == done
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert doc["interrupted"] is True and doc["executor"]["kind"] == executor and len(doc["results"]) == done
    assert f"{done} of 40 point(s) done, 0 failed" in out
    others = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert others == [match.group(0)], err  # nothing else: no log line of a worker


def test_ctrl_c_on_a_process_pool_writes_the_points_done(tmp_path):
    process = start(tmp_path, "--workers", "2")
    seen = wait_for_points(process, tmp_path)
    ctrl_c(process)
    status, out, err = finish(process, tmp_path)
    check_interrupted_run(tmp_path, seen, status, out, err, "process pool")
    assert "on 2 local processes" in out


def test_ctrl_c_on_a_local_dask_cluster_is_quiet(tmp_path):
    pytest.importorskip("distributed")
    process = start(tmp_path, "--workers", "2", "--dask", "local")
    seen = wait_for_points(process, tmp_path)
    ctrl_c(process)
    status, out, err = finish(process, tmp_path)
    check_interrupted_run(tmp_path, seen, status, out, err, "dask")
    assert re.search(r"on Dask at tcp://127\.0\.0\.1:\d+ \(a LocalCluster of 2 worker processes\)", out)


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    process = start(tmp_path, "--workers", "2")
    wait_for_points(process, tmp_path)
    ctrl_c(process)
    ctrl_c(process)
    status, _, err = finish(process, tmp_path)
    assert status == 130 and "Traceback" not in err, err


# -- what a sweep leaves behind -----------------------------------------------------------------------

QUICK = ["sweep", "--words", "8", "--fracs", "4", "--seeds", "0", "--workers", "1", "--quiet"]


@pytest.mark.parametrize("interrupted_at", [0, 2])
def test_ctrl_c_in_this_process_writes_what_is_done(interrupted_at, tmp_path, monkeypatch, capsys):
    """In this process (--workers 1), Ctrl-C during point ``interrupted_at`` of 4: status 130, the
    points before it written, and no directory at all when none was done."""
    run_point = sweep.run_point

    def interrupting(point: dict) -> dict:
        if point["index"] == interrupted_at:
            raise KeyboardInterrupt
        return run_point(point)

    monkeypatch.setattr(sweep, "run_point", interrupting)
    out = tmp_path / "out"
    assert main(QUICK + ["--fracs", "3-6", "--out", str(out), "--no-plot"]) == 130
    stdout, err = capsys.readouterr()
    if interrupted_at == 0:
        assert err.splitlines() == ["fixprop sweep: interrupted (Ctrl-C) after 0 of 4 point(s); nothing written"]
        assert not out.exists() and "0 of 4 point(s) done, 0 failed, in this process; nothing written" in stdout
    else:
        expected = f"fixprop sweep: interrupted (Ctrl-C) after 2 of 4 point(s); their results are in {out}"
        assert err.splitlines() == [expected]
        assert [row["frac"] for row in csv_rows(out)] == ["3", "4"]
        assert json.loads((out / "sweep.json").read_text())["interrupted"] is True


def test_a_rerun_replaces_every_file_of_the_previous_run(tmp_path, capsys):
    """A run with plots, then one without into the same directory: no PNG of the first run is left
    beside the second's CSV and JSON; a file that is not a sweep's stays."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert main(QUICK + ["--fracs", "4,6", "--out", str(out)]) == 0
    assert {"heatmap.png", "seed_errors.png"} <= {p.name for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")
    assert main(QUICK + ["--fracs", "5", "--out", str(out), "--no-plot"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sweep.csv", "sweep.json"]
    assert [row["frac"] for row in csv_rows(out)] == ["5"]
    capsys.readouterr()


def test_clear_outputs_deletes_only_the_files_a_sweep_writes(tmp_path):
    for name in (*sweep.OUTPUT_FILES, "other.png", "sweep.csv.bak"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    deleted = sweep.clear_outputs(tmp_path)
    assert sorted(p.name for p in deleted) == sorted(["sweep.csv", "sweep.json", "heatmap.png", "final_loss.png",
                                                      "loss_curves.png", "seed_errors.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.png", "sub", "sweep.csv.bak"]


def test_an_unreachable_dask_scheduler_leaves_no_directory(tmp_path, capsys, monkeypatch):
    """The scheduler is found unreachable after the checks: exit 2, one line, no --out directory.
    (distributed.Client is replaced by one that fails at once, as a real one does after 30 s.)"""
    distributed = pytest.importorskip("distributed")

    class Unreachable:
        def __init__(self, *args, **kwargs) -> None:
            raise OSError("Timed out trying to connect to tcp://127.0.0.1:1 after 30 s")

    monkeypatch.setattr(distributed, "Client", Unreachable)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--seeds", "0", "--dask", "tcp://127.0.0.1:1", "--no-plot", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("fixprop sweep: error: --dask tcp://127.0.0.1:1: cannot reach a Dask scheduler there "
                    "(Timed out trying to connect to tcp://127.0.0.1:1 after 30 s)")]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_survives_a_failed_run(tmp_path, capsys):
    """A bad template stops the run before any point: the user's directory and its files stay."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.csv").write_text("an older run")
    assert main(QUICK + ["--templates", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2
    assert (out / "sweep.csv").read_text() == "an older run"
    assert "missing.toml" in capsys.readouterr().err


# -- which executor ran ---------------------------------------------------------------------------------

def test_sweep_json_output_and_the_executor(tmp_path, capsys):
    """--json: one object with the counts, the executor, the files written and one row per point,
    whose figures are those of sweep.csv; sweep.json records the executor too."""
    out = tmp_path / "out"
    assert main(["sweep", "--words", "10", "--fracs", "4,6", "--seeds", "0-1", "--workers", "1", "--out", str(out),
                 "--no-plot", "--quiet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc[k] for k in ("points", "done", "failed", "interrupted")} == {
        "points": 2, "done": 2, "failed": 0, "interrupted": False}
    assert doc["executor"] == {"kind": "in-process"}
    assert doc["files"] == [str(out / "sweep.csv"), str(out / "sweep.json")]
    rows = csv_rows(out)
    assert [r["frac"] for r in doc["results"]] == [4, 6] == [int(row["frac"]) for row in rows]
    for r, row in zip(doc["results"], rows):
        assert r["grad_max_mean_rel_err"] == float(row["grad_max_mean_rel_err"])
        assert r["train_loss_ratio"] is None and row["train_loss_ratio"] == ""
    assert json.loads((out / "sweep.json").read_text())["executor"] == {"kind": "in-process"}


def test_the_pool_is_recorded_with_its_workers(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(QUICK[:-3] + ["--workers", "2", "--quiet", "--no-plot", "--out", str(out)]) == 0
    assert "1 of 1 point(s) done, 0 failed, on 2 local processes; wrote" in capsys.readouterr().out
    assert json.loads((out / "sweep.json").read_text())["executor"] == {"kind": "process pool", "workers": 2}


def test_describe_executor():
    assert sweep.describe_executor({"kind": "in-process"}) == "in this process"
    assert sweep.describe_executor({"kind": "process pool", "workers": 3}) == "on 3 local processes"
    assert (sweep.describe_executor({"kind": "dask", "address": "tcp://10.0.0.1:8786", "local": False})
            == "on Dask at tcp://10.0.0.1:8786")
    assert (sweep.describe_executor({"kind": "dask", "address": "tcp://127.0.0.1:5", "local": True, "workers": 2})
            == "on Dask at tcp://127.0.0.1:5 (a LocalCluster of 2 worker processes)")


# -- the grid is checked before any point runs ---------------------------------------------------------

def test_check_points_refuses_what_would_fail_at_every_point(tmp_path):
    """A network with one size, an unknown activation, and a template overriding layer 5 of a
    3-layer network (gradient) or a 2-layer one (train, one hidden layer) are refused; a template
    overriding layer 2 fits the 3-layer network but not the 2-layer one."""
    def points(template: str = "uniform", **spec) -> list[dict]:
        return sweep.grid(sweep.SweepSpec(templates=(template,), seeds=(0,), **spec))

    with pytest.raises(ConfigError, match=r"gradient measure: layer_sizes must be >= 2"):
        sweep.check_points(points(verify={"shape": [3]}))
    with pytest.raises(ConfigError, match=r"train measure: unknown activation 'nope'"):
        sweep.check_points(points(measures=("train",), train_config={"activation": "nope"}))
    layer2 = tmp_path / "layer2.toml"
    replace(Datapath.uniform(16, 8), layers={2: {"weight": RoleCast.of("s16.10")}}).save(layer2)
    sweep.check_points(points(str(layer2)))  # [3, 7, 7, 5] has layers 0..2
    with pytest.raises(ConfigError, match=r"template .*layer2.toml \(the train measure's network\): .*"
                                          r"overrides layer\(s\) \[2\] but the network has 2 layer\(s\)"):
        sweep.check_points(points(str(layer2), measures=("gradient", "train"), train_config={"hidden": [4]}))


def test_the_distributed_cancel_bug_record_is_dropped_and_no_other():
    """distributed can log a NameError from sync()'s cancel callback on Ctrl-C (seen once in a
    fresh-clone run): that record, and only that one, is filtered from tornado's logger."""
    import logging
    import sys

    from fixprop.explore.sweep import _DistributedCancelBug

    def record(error):
        try:
            raise error
        except type(error):
            return logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, "Exception in callback",
                                     None, sys.exc_info())

    bug = NameError("cannot access free variable 'future' where it is not associated with a value in enclosing scope")
    quiet = _DistributedCancelBug()
    assert not quiet.filter(record(bug))
    assert quiet.filter(record(NameError("name 'x' is not defined")))
    assert quiet.filter(record(ValueError("free variable 'future'")))
    assert quiet.filter(logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, "plain", None, None))
