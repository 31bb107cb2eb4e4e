"""PNG plots of training curves, range statistics and sweeps (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fixprop.errors import ConfigError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'fixprop[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    lo, hi = exps[0], exps[-1]
    image = np.zeros((len(rows), hi - lo + 1))
    for i, s in enumerate(rows):
        for e, n in s["log2_histogram"].items():
            image[i, int(e) - lo] = n / max(s["nonzero"], 1)
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.5))
    ax.imshow(image, aspect="auto", cmap="viridis", extent=(lo - 0.5, hi + 0.5, len(rows) - 0.5, -0.5))
    labels = [f"{s['role']} L{'-' if s['layer'] is None else s['layer']} "
              f"(sat {s['saturated_percent']:.1f}%, uf {s['underflowed_percent']:.1f}%)" for s in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("floor(log2 |value|) before the cast (share of nonzero values)")
    return _save(fig, path)


def plot_heatmaps(results: list[dict], path: str | Path) -> Path | None:
    """Heatmaps over word x frac, one per (template, rounding): the gradient error (worst seed's
    mean relative error, log scale) or, without gradients, the final loss ratio fixed / float."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and r["frac"] is not None]
    if not ok:
        return None
    metric = ("gradient", "max_mean_relative_error", "worst-seed mean rel. gradient error (log10)")
    if "gradient" not in ok[0]:
        metric = ("train", "loss_ratio", "final held-out loss fixed / float (log10)")
    groups = sorted({(r["template"], r["rounding"]) for r in ok})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4), squeeze=False)
    words = sorted({r["word"] for r in ok})
    fracs = sorted({r["frac"] for r in ok})
    for ax, (template, rounding) in zip(axes[0], groups):
        grid = np.full((len(words), len(fracs)), np.nan)
        for r in ok:
            if (r["template"], r["rounding"]) == (template, rounding):
                value = r[metric[0]][metric[1]]
                if value is not None and math.isfinite(value) and value > 0:
                    grid[words.index(r["word"]), fracs.index(r["frac"])] = math.log10(value)
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="magma_r")
        ax.set_xticks(range(len(fracs)), [str(f) for f in fracs])
        ax.set_yticks(range(len(words)), [str(w) for w in words])
        ax.set(xlabel="frac bits", ylabel="word bits", title=f"{template} {rounding}")
        fig.colorbar(im, ax=ax, label=metric[2])
    return _save(fig, path)


def plot_sweep_curves(results: list[dict], path: str | Path) -> Path | None:
    """Final held-out loss against frac bits, one line per (template, rounding, word), with
    float's loss dashed; the view that shows round-to-nearest stalling where STOCH trains."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and "train" in r and r["frac"] is not None]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in sorted({(r["template"], r["rounding"], r["word"]) for r in ok}):
        line = sorted((r for r in ok if (r["template"], r["rounding"], r["word"]) == key), key=lambda r: r["frac"])
        ax.semilogy([r["frac"] for r in line], [r["train"]["fixed_test_loss"] for r in line], "o-",
                    label=f"{key[0]} {key[1]} w{key[2]}")
    ax.axhline(ok[0]["train"]["float_test_loss"], color="k", ls="--", label="float")
    ax.set(xlabel="frac bits", ylabel="final held-out loss", title="training outcome over the sweep")
    ax.legend(fontsize=8)
    return _save(fig, path)
