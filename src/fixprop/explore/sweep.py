"""Sweeps over datapaths: a grid of (template, word, frac, rounding) points, each measured by
gradient error against autograd (the ``verify`` metrics) and/or by training against float.

A point is a plain dict holding its datapath as TOML text, so any worker (a local process, a
Dask worker on another machine) can run it with :func:`run_point` and nothing else. A point
that raises is recorded with ``status = "failed"`` and its error; the others still run.

Templates (how a grid point's word and frac become a datapath):

- ``uniform``: every role ``s<word>.<frac>`` (``Datapath.uniform``);
- ``seed``: the seed notebook's arithmetic at (word, frac) (``Datapath.seed``);
- a TOML file: that datapath with every fixed cast moved to ``word`` bits keeping its integer
  bits (so frac = word - integer bits, per role and layer); the frac axis does not apply.

Every (word, frac) that ``QFormat`` accepts is a point, frac >= word included (all fraction
bits: a format for tiny values, as ``ranges --propose`` may give for the update).

Roundings: a mode name sets every cast's rounding; ``keep`` keeps the template's own modes
(a file's per-role modes; RND_CONV for uniform and seed).

Executors: in this process, a pool of local processes, or a Dask cluster. On Ctrl-C
(KeyboardInterrupt) no further point starts, the pending ones are cancelled, the running ones
are stopped (the pool's processes terminated, a LocalCluster started for the sweep closed; on
another Dask cluster they are cancelled) and the points done so far are returned. The processes
started here ignore SIGINT, so that only the calling process decides what a Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fixprop.datapath import Datapath
from fixprop.errors import ConfigError
from fixprop.fixed.modes import Rounding
from fixprop.verify.experiment import Experiment, run, to_json

MEASURES = ("gradient", "train")
KEEP = "keep"  # the rounding "mode" that keeps each template's own modes
BUILTIN_TEMPLATES = ("uniform", "seed")


@dataclass(frozen=True)
class SweepSpec:
    """The grid and what to measure at each point.

    measures: "gradient" (verify experiment against autograd, for each of ``seeds``) and/or
    "train" (``train`` on ``train_config``, fixed against float from the same init).
    """

    words: tuple[int, ...] = (16,)
    fracs: tuple[int, ...] = (8,)
    roundings: tuple[str, ...] = ("keep",)
    templates: tuple[str, ...] = ("uniform",)
    measures: tuple[str, ...] = ("gradient",)
    seeds: tuple[int, ...] = tuple(range(8))
    lr_shift: int | None = None
    verify: dict = field(default_factory=dict)        # Experiment keyword arguments (shape, batch, ...)
    train_config: dict = field(default_factory=dict)  # TrainConfig keyword arguments

    def __post_init__(self) -> None:
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown or not self.measures:
            raise ConfigError(f"unknown measure(s) {unknown}; allowed: {', '.join(MEASURES)}")
        for name in ("words", "fracs", "roundings", "templates"):
            if not getattr(self, name):
                raise ConfigError(f"the sweep needs at least one value in {name}")
        for r in self.roundings:
            if r != KEEP:
                Rounding.parse(r)
        bad = [w for w in self.words if isinstance(w, bool) or not isinstance(w, int) or w < 2]
        if bad:
            raise ConfigError(f"word lengths must be integers >= 2; got {bad}")
        for t in self.templates:
            if t not in BUILTIN_TEMPLATES and not t.endswith(".toml"):
                raise ConfigError(f"unknown template {t!r}; allowed: uniform, seed or a datapath FILE.toml")


def rescaled(datapath: Datapath, word: int) -> Datapath:
    """``datapath`` with every fixed cast moved to ``word`` bits, keeping its integer bits."""
    return replace(datapath, roles={r: c.at_word(word) for r, c in datapath.roles.items()},
                   layers={layer: {r: c.at_word(word) for r, c in o.items()} for layer, o in datapath.layers.items()},
                   name=f"{datapath.name} at {word} bits")


def grid(spec: SweepSpec) -> list[dict]:
    """The sweep's points, in order (template, rounding, word, frac); a file template has one
    point per (rounding, word) (frac does not apply)."""
    points = []
    files = {t: Datapath.load(t) for t in spec.templates if t not in BUILTIN_TEMPLATES}
    for template in spec.templates:
        for rounding in spec.roundings:
            for word in spec.words:
                for frac in (spec.fracs if template in BUILTIN_TEMPLATES else (None,)):
                    modes = None if rounding == KEEP else rounding
                    if template == "uniform":
                        dp = Datapath.uniform(word, frac).with_modes(modes)
                    elif template == "seed":
                        dp = Datapath.seed(word, frac).with_modes(modes)
                    else:
                        dp = rescaled(files[template], word).with_modes(modes)
                    if spec.lr_shift is not None:
                        dp = replace(dp, lr_shift=spec.lr_shift, lr=None)
                    points.append({"index": len(points), "template": template, "word": word, "frac": frac,
                                   "rounding": KEEP if rounding == KEEP else Rounding.parse(rounding).name,
                                   "datapath_toml": dp.to_toml(),
                                   "measures": list(spec.measures), "seeds": list(spec.seeds),
                                   "verify": dict(spec.verify), "train_config": dict(spec.train_config)})
    return points


def _coordinates(point: dict) -> dict:
    """What names a point in its result: index, template, word, frac, rounding."""
    return {k: point[k] for k in ("index", "template", "word", "frac", "rounding")}


def run_point(point: dict) -> dict:
    """Measure one point (in any process); never raises: a failure is recorded in the result."""
    start = time.perf_counter()
    result = _coordinates(point)
    try:
        dp = Datapath.from_toml(point["datapath_toml"], source=f"sweep point {point['index']}")
        if "gradient" in point["measures"]:
            result["gradient"] = _gradient(dp, point)
        if "train" in point["measures"]:
            result["train"] = _train(dp, point)
        result["status"] = "ok"
    except Exception as error:  # recorded, so that the rest of the sweep goes on
        result["status"] = "failed"
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc(limit=8)
    result["seconds"] = time.perf_counter() - start
    return result


def _gradient(dp: Datapath, point: dict) -> dict:
    errors, sqnr = [], []
    for seed in point["seeds"]:
        r = run(Experiment(datapath=dp, seed=seed, timing_repeats=0, **point["verify"]))
        errors.append(r["fixed"]["mean_relative_error"])
        sqnr.append(r["fixed"]["overall"].sqnr_db)
    return {"seeds": point["seeds"], "mean_relative_error": errors,
            "max_mean_relative_error": max(errors), "mean_mean_relative_error": float(np.mean(errors)),
            "min_sqnr_db": min(sqnr)}


def _train(dp: Datapath, point: dict) -> dict:
    from fixprop.explore.train import TrainConfig, train

    config = dict(point["train_config"])
    if "hidden" in config:
        config["hidden"] = tuple(config["hidden"])
    r = train(TrainConfig(**config), dp, count_casts=False)  # compiled: counting casts would run stepwise
    return {**r["final"], "fixed_test_loss_curve": r["fixed"]["test_loss"],
            "float_test_loss_curve": r["float"]["test_loss"],
            "fixed_test_accuracy_curve": r["fixed"]["test_accuracy"]}


def check_points(points: Sequence[dict]) -> None:
    """Raise ConfigError, before any point runs, when a point cannot run: a network its measures
    cannot build (too few layer sizes, an unknown activation, ...) or a datapath that overrides a
    layer the network lacks. Builds networks and datapaths only; measures nothing."""
    checked: set[str] = set()
    for point in points:
        layers = _network_depths(point)
        if point["datapath_toml"] in checked:
            continue
        checked.add(point["datapath_toml"])
        dp = Datapath.from_toml(point["datapath_toml"], source=f"{point['template']} at {point['word']} bits")
        for measure, n_layers in layers.items():
            try:
                dp.check_layers(n_layers)
            except ConfigError as error:
                raise ConfigError(f"template {point['template']} (the {measure} measure's network): {error}") from None


def _network_depths(point: dict) -> dict[str, int]:
    """{measure: the number of layers of the network it measures}, building each network."""
    from fixprop.explore.train import TrainConfig
    from fixprop.nn.mlp import MLP

    layers = {}
    for measure in point["measures"]:
        try:
            if measure == "gradient":
                e = Experiment(**point["verify"])
                if isinstance(e.batch, bool) or not isinstance(e.batch, int) or e.batch < 1:
                    raise ConfigError(f"batch must be an integer >= 1; got {e.batch!r}")
                layers[measure] = MLP(e.shape, e.activation, e.output_activation, e.loss, e.init).n_layers
            else:
                config = dict(point["train_config"])
                if "hidden" in config:
                    config["hidden"] = tuple(config["hidden"])
                c = TrainConfig(**config)
                # the data set gives the input and output sizes; 1 stands in for them here
                layers[measure] = MLP([1, *c.hidden, 1], c.activation, c.output_activation, c.loss, c.init).n_layers
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"{measure} measure: {error}") from None
    return layers


@dataclass
class SweepRun:
    """What a sweep did: the results in point order, the executor that ran them (a JSON-ready
    dict, see :func:`describe_executor`) and whether Ctrl-C stopped it early."""

    results: list[dict]
    executor: dict
    interrupted: bool = False


def execute_sweep(points: Sequence[dict], workers: int = 1, dask: Any = None,
                  on_result: Callable[[dict], None] | None = None) -> SweepRun:
    """Run every point; see :func:`run_sweep`. Also says which executor ran them and whether
    Ctrl-C stopped the sweep (the results then hold the points done before it)."""
    results: dict[int, dict] = {}
    executor: dict = {}

    def done(result: dict) -> None:
        results[result["index"]] = result
        if on_result is not None:
            on_result(result)

    interrupted = False
    try:
        if (dask is not None or workers > 1) and any("train" in p["measures"] for p in points):
            from fixprop.nn.kernels import warm_cache

            warm_cache()  # compile the numba kernel once here, so that the workers load it from the cache
        if dask is not None:
            _run_dask(points, workers, dask, done, executor)
        elif workers <= 1:
            executor.update(kind="in-process")
            for p in points:
                done(run_point(p))
        else:
            executor.update(kind="process pool", workers=workers)
            _run_pool(points, workers, done)
    except KeyboardInterrupt:
        interrupted = True
    return SweepRun([results[i] for i in sorted(results)], executor, interrupted)


def run_sweep(points: Sequence[dict], workers: int = 1, dask: Any = None,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every point; results in point order.

    workers: local processes (1 = in this process). dask: None, "local" (start a LocalCluster of
    ``workers`` processes), a scheduler address ("tcp://host:8786") or a ``distributed.Client``.
    ``on_result`` sees each result as it arrives (progress). A point whose worker died is
    recorded as failed; on Ctrl-C the points done so far are returned (:func:`execute_sweep`
    also says whether that happened).
    """
    return execute_sweep(points, workers, dask, on_result).results


def describe_executor(executor: dict) -> str:
    """The executor of :class:`SweepRun` in words: "in this process", "on 2 local processes", "on Dask at ..."."""
    if executor.get("kind") == "process pool":
        return f"on {executor['workers']} local processes"
    if executor.get("kind") == "dask" and executor.get("address") is None:
        return "on Dask (not connected)"
    if executor.get("kind") == "dask":
        local = f" (a LocalCluster of {executor['workers']} worker processes)" if executor.get("local") else ""
        return f"on Dask at {executor['address']}{local}"
    return "in this process"


def _ignore_sigint() -> None:
    """A worker process's initializer: Ctrl-C is for the parent to handle, not for the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _ctrl_c_kept_from_children() -> Any:
    """Ignore SIGINT while processes start here: they inherit "ignore" (Python leaves an ignored
    SIGINT ignored, and so do the processes they start), so the terminal's Ctrl-C never reaches
    them and only this process decides. A Ctrl-C meanwhile is lost. Only in the main thread
    (the only one that may set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_pool(points: Sequence[dict], workers: int, done: Callable[[dict], None]) -> None:
    """The points on a pool of ``workers`` local processes; on any exception (Ctrl-C) the pending
    points are cancelled and the workers terminated before it propagates."""
    # forkserver, not fork: the caller may hold threads (JAX, PyTorch, BLAS) that fork would copy
    # mid-flight; the server is a fresh process that imports the sweep's modules once (numba
    # included), and each worker forks from it instead of starting an interpreter and importing
    # (numba only when this process imported it: FIXPROP_DISABLE_NUMBA=1 must not import it)
    context = multiprocessing.get_context("forkserver")
    numba_loaded = "numba" in sys.modules
    context.set_forkserver_preload(["fixprop.explore.sweep"] + (["fixprop.nn.kernels", "numba"] if numba_loaded else []))
    with _ctrl_c_kept_from_children():  # the pool starts its processes as points are submitted
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_sigint)
        futures = {pool.submit(run_point, p): p for p in points}
    try:
        for future in as_completed(futures):
            done(_result_of(future, futures[future]))
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown()


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's pending points and terminate its processes (those running a point too),
    without waiting for them to finish. (Python 3.14's ``terminate_workers`` does the same.)"""
    processes = list((pool._processes or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()


def _result_of(future: Any, point: dict) -> dict:
    """The future's result, or a failed record when the worker itself died."""
    try:
        return future.result()
    except Exception as error:
        return {**_coordinates(point), "status": "failed", "error": f"worker failed: {type(error).__name__}: {error}",
                "seconds": math.nan}


class _DistributedCancelBug(logging.Filter):
    """Drops one log record: on Ctrl-C during a Dask call, distributed (2026.8) can log
    "NameError: cannot access free variable 'future'" from its ``sync()``'s cancel callback
    through tornado's logger, a traceback about nothing the user did (the sweep stops cleanly)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NameError) and "free variable 'future'" in str(error))


def _run_dask(points: Sequence[dict], workers: int, dask: Any, done: Callable[[dict], None],
              executor: dict) -> None:
    """The points on a Dask cluster (``dask`` as in :func:`run_sweep`); ``executor`` is filled in
    once connected. On Ctrl-C a LocalCluster started here is closed, its running points with it;
    on another cluster the points are cancelled."""
    try:
        from distributed import Client, LocalCluster, as_completed as dask_as_completed
    except ImportError:
        raise ConfigError("--dask needs Dask: pip install 'fixprop[dask]'") from None
    cluster = client = None
    futures: dict = {}
    finished = False
    tornado_log = logging.getLogger("tornado.application")  # it may log the bug late: the filter stays
    if not any(isinstance(f, _DistributedCancelBug) for f in tornado_log.filters):
        tornado_log.addFilter(_DistributedCancelBug())
    executor.update(kind="dask", address=None, local=dask == "local")
    try:
        if isinstance(dask, Client):
            client = dask
        elif dask == "local":
            with _ctrl_c_kept_from_children():  # the nanny and worker processes start here
                # silence_logs: its processes log errors only (a point's failure is in its result)
                cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            try:
                client = Client(str(dask), timeout=30)
            except (OSError, TimeoutError, ValueError) as error:  # ValueError: a malformed address
                raise ConfigError(f"--dask {dask}: cannot reach a Dask scheduler there ({error})") from None
        executor["address"] = client.scheduler.address
        if cluster is not None:
            executor["workers"] = len(cluster.workers)
        futures = {client.submit(run_point, p, pure=False): p for p in points}
        for future in dask_as_completed(futures):
            done(_result_of(future, futures[future]))
        finished = True
    finally:
        if cluster is not None:
            cluster.close()  # first: its workers stop, mid-point too, with nothing to cancel or log
        elif not finished and futures:
            client.cancel(list(futures))  # someone else's cluster: stop our points there
        if client is not None and client is not dask:
            client.close()


# -- outputs ------------------------------------------------------------------------------------------

CSV_COLUMNS = ("index", "template", "word", "frac", "rounding", "status", "error", "seconds",
               "grad_max_mean_rel_err", "grad_mean_mean_rel_err", "grad_min_sqnr_db",
               "train_loss_ratio", "train_fixed_test_loss", "train_float_test_loss",
               "train_fixed_test_accuracy", "train_float_test_accuracy")


#: The plots of a sweep, by file name (fixprop.explore.plots draws them).
PLOT_FILES = ("heatmap.png", "final_loss.png", "loss_curves.png", "seed_errors.png")
#: Every file a sweep writes into its directory; a new run replaces all of them (:func:`clear_outputs`).
OUTPUT_FILES = ("sweep.csv", "sweep.json", *PLOT_FILES)


def summary_row(result: dict) -> dict:
    """A point's coordinates, status and headline figures, keyed as CSV_COLUMNS (None where not
    measured); the CSV row and ``fixprop sweep --json``'s results."""
    g, t = result.get("gradient", {}), result.get("train", {})
    return {
        "index": result["index"], "template": result["template"], "word": result["word"],
        "frac": result["frac"], "rounding": result["rounding"],
        "status": result["status"], "error": result.get("error"), "seconds": result["seconds"],
        "grad_max_mean_rel_err": g.get("max_mean_relative_error"),
        "grad_mean_mean_rel_err": g.get("mean_mean_relative_error"),
        "grad_min_sqnr_db": g.get("min_sqnr_db"),
        "train_loss_ratio": t.get("loss_ratio"), "train_fixed_test_loss": t.get("fixed_test_loss"),
        "train_float_test_loss": t.get("float_test_loss"),
        "train_fixed_test_accuracy": t.get("fixed_test_accuracy"),
        "train_float_test_accuracy": t.get("float_test_accuracy"),
    }


def csv_row(result: dict) -> dict:
    """One CSV row of a point's result (empty cells for what was not measured)."""
    row = {key: "" if value is None else value for key, value in summary_row(result).items()}
    row["seconds"] = f"{result['seconds']:.3f}"
    return row


def clear_outputs(out: Path) -> list[Path]:
    """Delete the files of a previous sweep in ``out`` (OUTPUT_FILES, nothing else), so that a new
    run's files are never mixed with an older run's; returns the paths deleted."""
    deleted = [out / name for name in OUTPUT_FILES if (out / name).is_file()]
    for path in deleted:
        path.unlink()
    return deleted


def write_outputs(results: list[dict], spec: SweepSpec, out: Path, executor: dict | None = None,
                  interrupted: bool = False) -> list[Path]:
    """sweep.csv and sweep.json in ``out`` (created); returns the paths written. sweep.json holds
    the spec, the executor (:class:`SweepRun`), whether Ctrl-C stopped the run, and the results."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "sweep.csv", out / "sweep.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(csv_row(r))
    doc = {"spec": asdict(spec), "executor": executor or {}, "interrupted": interrupted, "results": to_json(results)}
    json_path.write_text(json.dumps(doc, indent=1))
    return [csv_path, json_path]


def write_plots(results: list[dict], out: Path) -> list[Path]:
    """The PLOT_FILES in ``out`` that the results give a figure for; returns the paths written."""
    from fixprop.explore import plots

    drawers = (plots.plot_heatmaps, plots.plot_sweep_curves, plots.plot_loss_curves, plots.plot_seed_errors)
    written = [draw(results, out / name) for name, draw in zip(PLOT_FILES, drawers)]
    return [Path(path) for path in written if path is not None]


def comparable(results: list[dict]) -> list[dict]:
    """Results without timings and tracebacks, NaN and infinities as None (NaN != NaN): what
    must compare equal between two runs of one sweep."""
    return to_json([{k: v for k, v in r.items() if k not in ("seconds", "traceback")} for r in results])


def format_table(results: list[dict]) -> str:
    """One line per point: its coordinates and what was measured."""
    lines = []
    for r in results:
        head = f"{r['index']:4d}  {r['template']:<10} {r['rounding']:<9} w{r['word']:<3} " + \
               (f"f{r['frac']:<3}" if r["frac"] is not None else "f-  ")
        if r["status"] != "ok":
            lines.append(f"{head}  FAILED {r['error']}")
            continue
        cells = []
        if "gradient" in r:
            g = r["gradient"]
            cells.append(f"grad err worst {g['max_mean_relative_error']:.4%} mean {g['mean_mean_relative_error']:.4%} "
                         "(seeds " + " ".join(f"{s}:{e:.4%}" for s, e in zip(g["seeds"], g["mean_relative_error"]))
                         + ")")
        if "train" in r:
            t = r["train"]
            cells.append(f"loss fixed {t['fixed_test_loss']:.4g} float {t['float_test_loss']:.4g} "
                         f"ratio {t['loss_ratio']:.3f}")
            if "fixed_test_accuracy" in t:
                cells.append(f"acc {t['fixed_test_accuracy']:.2%}")
        lines.append(f"{head}  " + ", ".join(cells))
    return "\n".join(lines)
