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

Roundings: a mode name sets every cast's rounding; ``keep`` keeps the template's own modes
(a file's per-role modes; RND_CONV for uniform and seed).
"""

from __future__ import annotations

import csv
import math
import multiprocessing
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
    """The sweep's points, in order (template, rounding, word, frac); points with frac >= word
    are left out, as are repeated frac values of file templates (frac does not apply)."""
    points = []
    files = {t: Datapath.load(t) for t in spec.templates if t not in BUILTIN_TEMPLATES}
    for template in spec.templates:
        for rounding in spec.roundings:
            for word in spec.words:
                for frac in (spec.fracs if template in BUILTIN_TEMPLATES else (None,)):
                    if frac is not None and frac >= word:
                        continue
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
    r = train(TrainConfig(**config), dp)
    return {**r["final"], "fixed_test_loss_curve": r["fixed"]["test_loss"],
            "float_test_loss_curve": r["float"]["test_loss"],
            "fixed_test_accuracy_curve": r["fixed"]["test_accuracy"]}


def run_sweep(points: Sequence[dict], workers: int = 1, dask: Any = None,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every point; results in point order.

    workers: local processes (1 = in this process). dask: None, "local" (start a LocalCluster of
    ``workers`` processes), a scheduler address ("tcp://host:8786") or a ``distributed.Client``.
    ``on_result`` sees each result as it arrives (progress). A point whose worker died is
    recorded as failed; on Ctrl-C the points done so far are returned.
    """
    results: dict[int, dict] = {}

    def done(result: dict) -> None:
        results[result["index"]] = result
        if on_result is not None:
            on_result(result)

    try:
        if dask is not None:
            _run_dask(points, workers, dask, done)
        elif workers <= 1:
            for p in points:
                done(run_point(p))
        else:
            # spawn, not fork: the caller may hold threads (JAX, PyTorch, BLAS) that fork would copy mid-flight
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(run_point, p): p for p in points}
                for future in as_completed(futures):
                    done(_result_of(future, futures[future]))
    except KeyboardInterrupt:
        pass
    return [results[i] for i in sorted(results)]


def _result_of(future: Any, point: dict) -> dict:
    """The future's result, or a failed record when the worker itself died."""
    try:
        return future.result()
    except Exception as error:
        return {**_coordinates(point), "status": "failed", "error": f"worker failed: {type(error).__name__}: {error}", "seconds": math.nan}


def _run_dask(points: Sequence[dict], workers: int, dask: Any, done: Callable[[dict], None]) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed as dask_as_completed
    except ImportError:
        raise ConfigError("--dask needs Dask: pip install 'fixprop[dask]'") from None
    cluster = client = None
    if isinstance(dask, Client):
        client = dask
    elif dask == "local":
        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(str(dask), timeout=30)
        except (OSError, TimeoutError) as error:
            raise ConfigError(f"--dask {dask}: cannot reach a Dask scheduler there ({error})") from None
    try:
        futures = {client.submit(run_point, p, pure=False): p for p in points}
        for future in dask_as_completed(futures):
            done(_result_of(future, futures[future]))
    finally:
        if client is not dask:
            client.close()
        if cluster is not None:
            cluster.close()


# -- outputs ------------------------------------------------------------------------------------------

CSV_COLUMNS = ("index", "template", "word", "frac", "rounding", "status", "error", "seconds",
               "grad_max_mean_rel_err", "grad_mean_mean_rel_err", "grad_min_sqnr_db",
               "train_loss_ratio", "train_fixed_test_loss", "train_float_test_loss",
               "train_fixed_test_accuracy", "train_float_test_accuracy")


def csv_row(result: dict) -> dict:
    """One CSV row of a point's result (empty cells for what was not measured)."""
    g, t = result.get("gradient", {}), result.get("train", {})
    return {
        "index": result["index"], "template": result["template"], "word": result["word"],
        "frac": "" if result["frac"] is None else result["frac"], "rounding": result["rounding"],
        "status": result["status"], "error": result.get("error", ""), "seconds": f"{result['seconds']:.3f}",
        "grad_max_mean_rel_err": g.get("max_mean_relative_error", ""),
        "grad_mean_mean_rel_err": g.get("mean_mean_relative_error", ""),
        "grad_min_sqnr_db": g.get("min_sqnr_db", ""),
        "train_loss_ratio": t.get("loss_ratio", ""), "train_fixed_test_loss": t.get("fixed_test_loss", ""),
        "train_float_test_loss": t.get("float_test_loss", ""),
        "train_fixed_test_accuracy": t.get("fixed_test_accuracy", ""),
        "train_float_test_accuracy": t.get("float_test_accuracy", ""),
    }


def write_outputs(results: list[dict], spec: SweepSpec, out: Path) -> list[Path]:
    """sweep.csv and sweep.json in ``out`` (created); returns the paths written."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "sweep.csv", out / "sweep.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(csv_row(r))
    json_path.write_text(json.dumps({"spec": asdict(spec), "results": to_json(results)}, indent=1))
    return [csv_path, json_path]


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
