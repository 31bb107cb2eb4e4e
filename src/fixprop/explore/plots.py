"""PNG plots of training curves, range statistics and sweeps (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fixprop.errors import ConfigError
from fixprop.fixed.format import QFormat


def require() -> None:
    """Raise ConfigError now, before any work, when matplotlib is missing."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'fixprop[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_training(result: dict, path: str | Path) -> Path:
    """Held-out loss per epoch of the float and fixed networks (and accuracy for classification)."""
    plt = _pyplot()
    classes = result["dataset"]["classes"]
    fig, axes = plt.subplots(1, 2 if classes else 1, figsize=(10 if classes else 6, 4), squeeze=False)
    ax = axes[0][0]
    for name, style in (("float", "-"), ("fixed", "--")):
        ax.semilogy(result["epochs"], result[name]["test_loss"], style, label=name)
    ax.set(xlabel="epoch", ylabel="held-out loss (per-sample sse)",
           title=f"{result['dataset']['name']}: {result['datapath']}")
    ax.legend()
    if classes:
        ax = axes[0][1]
        for name, style in (("float", "-"), ("fixed", "--")):
            ax.plot(result["epochs"], 100 * np.array(result[name]["test_accuracy"]), style, label=name)
        ax.set(xlabel="epoch", ylabel="held-out accuracy (%)", ylim=(0, 100))
        ax.legend()
    return _save(fig, path)


def plot_ranges(stats: list[dict], path: str | Path) -> Path:
    """One row per (role, layer): the log2 |value| histogram as a heat strip, with the share
    saturated and underflowed in the label."""
    plt = _pyplot()
    rows = [s for s in stats if s["log2_histogram"]]
    if not rows:
        raise ConfigError("no nonzero values were observed: nothing to plot")
    exps = sorted({int(e) for s in rows for e in s["log2_histogram"]})
    windows = [QFormat.parse(t) for s in rows for t in s["formats"]]
    # the observed exponents and the formats' windows (at most 6 bits beyond the data)
    lo = max(min([exps[0]] + [-f.frac for f in windows]), exps[0] - 6)
    hi = min(max([exps[-1]] + [f.int_bits for f in windows]), exps[-1] + 6)
    image = np.zeros((len(rows), hi - lo + 1))
    for i, s in enumerate(rows):
        for e, n in s["log2_histogram"].items():
            image[i, int(e) - lo] = n / max(s["nonzero"], 1)
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.5))
    ax.imshow(image, aspect="auto", cmap="viridis", extent=(lo - 0.5, hi + 0.5, len(rows) - 0.5, -0.5))
    labels = [f"{s['role']} L{'-' if s['layer'] is None else s['layer']} "
              f"(sat {s['saturated_percent']:.1f}%, uf {s['underflowed_percent']:.1f}%)" for s in rows]
    for i, s in enumerate(rows):  # the cast format's window: its LSB and its top bit
        for text in s["formats"]:
            fmt = QFormat.parse(text)
            top = fmt.int_bits - (1 if fmt.signed else 0)
            ax.plot([-fmt.frac - 0.5] * 2, [i - 0.45, i + 0.45], color="white", lw=1.5)
            ax.plot([top - 0.5] * 2, [i - 0.45, i + 0.45], color="red", lw=1.5)
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("floor(log2 |value|) before the cast (colour: share of the row's nonzero values)\n"
                  "white: the cast format's LSB, red: its first overflowing bit")
    return _save(fig, path)


def plot_heatmaps(results: list[dict], path: str | Path) -> Path | None:
    """Heatmaps over word x frac, one per (template, rounding), on one colour scale: the gradient
    error (worst seed's mean relative error) or, without gradients, the final held-out loss
    ratio fixed / float; each cell is labelled with its value."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and r["frac"] is not None]
    if not ok:
        return None
    if "gradient" in ok[0]:  # shown in percent
        section, key, scale, label = "gradient", "max_mean_relative_error", 100.0, "worst-seed mean rel. gradient error (%)"
    else:
        section, key, scale, label = "train", "loss_ratio", 1.0, "final held-out loss, fixed / float"

    def text(v: float) -> str:
        return f"{v:.0f}" if v >= 10 else f"{v:.2g}"
    groups = sorted({(r["template"], r["rounding"]) for r in ok})
    words = sorted({r["word"] for r in ok})
    fracs = sorted({r["frac"] for r in ok})
    if len(words) * len(fracs) < 2:  # one cell is not a map
        return None
    grids = {}
    for group in groups:
        grid = np.full((len(words), len(fracs)), np.nan)
        for r in ok:
            value = r[section][key]
            if (r["template"], r["rounding"]) == group and value is not None and math.isfinite(value) and value > 0:
                grid[words.index(r["word"]), fracs.index(r["frac"])] = value * scale
        grids[group] = grid
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    if finite.size == 0:
        return None
    vmin, vmax = math.log10(finite.min()), math.log10(finite.max())
    fig, axes = plt.subplots(1, len(groups), figsize=(0.55 * len(fracs) * len(groups) + 3, 0.45 * len(words) + 2.2),
                             squeeze=False, layout="constrained")
    for ax, group in zip(axes[0], groups):
        grid = grids[group]
        im = ax.imshow(np.log10(np.where(np.isfinite(grid), grid, np.nan)), origin="lower", aspect="auto",
                       cmap="magma_r", vmin=vmin, vmax=max(vmax, vmin + 1e-9))
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, text(value), ha="center", va="center", fontsize=7,
                        color="white" if math.log10(value) > (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(fracs)), [str(f) for f in fracs])
        ax.set_yticks(range(len(words)), [str(w) for w in words])
        ax.set(xlabel="frac bits", ylabel="word bits", title=f"{group[0]} {group[1]}")
    fig.colorbar(im, ax=list(axes[0]), label=f"log10 {label}")
    return _save(fig, path, tight=False)


def plot_sweep_curves(results: list[dict], path: str | Path) -> Path | None:
    """Final held-out loss against frac bits (or against word bits for file templates), one line
    per (template, rounding[, word]), float's loss dashed: where round-to-nearest stalls and
    stochastic rounding still trains."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and "train" in r]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    def key(r: dict) -> tuple:
        return (r["template"], r["rounding"], r["word"] if r["frac"] is not None else None)

    for k in sorted({key(r) for r in ok}, key=str):
        line = sorted((r for r in ok if key(r) == k), key=lambda r: (r["frac"] if k[2] else r["word"]))
        xs = [r["frac"] if k[2] else r["word"] for r in line]
        ax.semilogy(xs, [r["train"]["fixed_test_loss"] for r in line], "o-",
                    label=f"{k[0]} {k[1]}" + (f" w{k[2]}" if k[2] else ""))
    ax.axhline(ok[0]["train"]["float_test_loss"], color="k", ls="--", label="float")
    kinds = {r["frac"] is None for r in ok}
    xlabel = {frozenset({False}): "frac bits", frozenset({True}): "word bits (integer bits of the template kept)"}.get(
        frozenset(kinds), "frac bits (uniform, seed) / word bits (file templates)")
    ax.set(xlabel=xlabel, ylabel="final held-out loss", title="training outcome over the sweep")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_loss_curves(results: list[dict], path: str | Path) -> Path | None:
    """Held-out loss per epoch of every trained point, one panel per (template, rounding), one
    line per word/frac, float dashed."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and "train" in r]
    if not ok:
        return None
    groups = sorted({(r["template"], r["rounding"]) for r in ok})
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        members = sorted((r for r in ok if (r["template"], r["rounding"]) == group),
                         key=lambda r: (r["word"], -1 if r["frac"] is None else r["frac"]))
        colours = plt.cm.viridis(np.linspace(0, 1, max(len(members), 2)))
        for colour, r in zip(colours, members):
            curve = r["train"]["fixed_test_loss_curve"]
            ax.semilogy(range(len(curve)), curve, color=colour,
                        label=f"w{r['word']}" + ("" if r["frac"] is None else f" f{r['frac']}"))
        float_curve = members[0]["train"]["float_test_loss_curve"]
        ax.semilogy(range(len(float_curve)), float_curve, "k--", label="float")
        ax.set(xlabel="epoch", ylabel="held-out loss", title=f"{group[0]} {group[1]}")
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_seed_errors(results: list[dict], path: str | Path) -> Path | None:
    """Grouped bars: each point's mean relative gradient error on each verify seed (log scale)."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and "gradient" in r]
    if not ok or len(ok) > 12:
        return None
    seeds = ok[0]["gradient"]["seeds"]
    width = 0.8 / len(ok)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(seeds) + 2), 4))
    for k, r in enumerate(ok):
        name = Path(r["template"]).stem if r["template"].endswith(".toml") else r["template"]
        label = f"{name} w{r['word']}" + ("" if r["frac"] is None else f" f{r['frac']}")
        errors = [100 * e for e in r["gradient"]["mean_relative_error"]]
        ax.bar(np.arange(len(seeds)) + (k - (len(ok) - 1) / 2) * width, errors, width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
    ax.set(xlabel="verify seed", ylabel="mean relative gradient error (%)",
           title="gradient error against autograd, per seed")
    ax.legend(fontsize=8)
    return _save(fig, path)
