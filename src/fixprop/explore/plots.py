"""PNG plots of training curves, range statistics and sweeps (matplotlib, the ``plot`` extra).

Every plot function writes exactly the path it is given, in the format its suffix names (PNG
when it has none), and returns that path; :func:`check_plot_path` refuses, before any work, a
path matplotlib cannot write.
"""

from __future__ import annotations

import io
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


def check_plot_path(path: str | Path) -> Path:
    """The path a plot will be written to, checked before any work: not a directory, and a
    suffix naming a format matplotlib can write here (``.png``, ``.pdf``, ``.svg``, ...; no
    suffix: PNG, written to exactly this path). Raises ConfigError (also when matplotlib is
    missing). Whether the directory exists is the caller's check."""
    path, fmt = _checked_format(path)
    plt = _pyplot()
    fig = plt.figure(figsize=(1, 1))
    try:  # some formats need more than matplotlib (pgf: LaTeX; avif: a Pillow plugin)
        fig.savefig(io.BytesIO(), format=fmt)
    except Exception as error:  # noqa: BLE001 - whatever the writer raises, the format is unusable
        raise ConfigError(f"plot file {path}: matplotlib cannot write {fmt} files here "
                          f"({type(error).__name__}: {error})") from None
    finally:
        plt.close(fig)
    return path


def _checked_format(path: str | Path) -> tuple[Path, str]:
    """(path, format): the format from the suffix (lower case; png without one), refused when
    matplotlib has no writer for it or the path is a directory."""
    plt = _pyplot()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"plot file {path} is a directory; give a file name such as {path / 'plot.png'}")
    fmt = path.suffix[1:].lower() or "png"
    fig = plt.figure(figsize=(1, 1))
    supported = fig.canvas.get_supported_filetypes()
    plt.close(fig)
    if fmt not in supported:
        raise ConfigError(f"plot file {path}: matplotlib cannot write {path.suffix!r} files; "
                          f"use one of {', '.join('.' + f for f in sorted(supported))}")
    return path, fmt


def _save(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write the figure to exactly ``path`` (format from its suffix, PNG without one); the path."""
    try:
        path, fmt = _checked_format(path)
        if tight:
            fig.tight_layout()
        fig.savefig(path, dpi=110, format=fmt)
    finally:
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


#: How plot_ranges draws a format's window: (the LSB's colour, the first overflowing bit's colour,
#: which half of the row: -1 upper, +1 lower) for the formats observed under and the proposed ones.
_WINDOW_STYLES = {"observed under": ("white", "red", -1), "proposed": ("cyan", "magenta", +1)}


def plot_ranges(stats: list[dict], path: str | Path, proposed: list[dict] | None = None) -> Path:
    """One row per (role, layer): the log2 |value| histogram as a heat strip, with the share
    saturated and underflowed in the label, and the window (LSB and first overflowing bit) of
    the format the values were cast into; with ``proposed`` (rows of
    ``ranges.proposal_rows``), also the proposed format's window, in the lower half of the row."""
    plt = _pyplot()
    rows = [s for s in stats if s["log2_histogram"]]
    if not rows:
        raise ConfigError("no nonzero values were observed: nothing to plot")
    windows = {"observed under": [[QFormat.parse(t) for t in s["formats"]] for s in rows]}
    if proposed is not None:
        windows["proposed"] = [_proposed_formats(proposed, s["role"], s["layer"]) for s in rows]
    exps = sorted({int(e) for s in rows for e in s["log2_histogram"]})
    every = [f for kind in windows.values() for row in kind for f in row]
    # the observed exponents and the formats' windows (at most 6 bits beyond the data)
    lo = max(min([exps[0]] + [-f.frac for f in every]), exps[0] - 6)
    hi = min(max([exps[-1]] + [f.int_bits for f in every]), exps[-1] + 6)
    image = np.zeros((len(rows), hi - lo + 1))
    for i, s in enumerate(rows):
        for e, n in s["log2_histogram"].items():
            image[i, int(e) - lo] = n / max(s["nonzero"], 1)
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 2.0))
    ax.imshow(image, aspect="auto", cmap="viridis", extent=(lo - 0.5, hi + 0.5, len(rows) - 0.5, -0.5))
    labels = [f"{s['role']} L{'-' if s['layer'] is None else s['layer']} "
              f"(sat {s['saturated_percent']:.1f}%, uf {s['underflowed_percent']:.1f}%)" for s in rows]
    split = proposed is not None  # both kinds: each in its half of the row
    for kind, formats in windows.items():
        lsb_colour, top_colour, half = _WINDOW_STYLES[kind]
        for i, row_formats in enumerate(formats):
            y = [i - 0.45, i + 0.45] if not split else sorted([i, i + 0.45 * half])
            for fmt in row_formats:
                top = fmt.int_bits - (1 if fmt.signed else 0)
                ax.plot([-fmt.frac - 0.5] * 2, y, color=lsb_colour, lw=2.5)
                ax.plot([top - 0.5] * 2, y, color=top_colour, lw=2.5)
        ax.plot([], [], color=lsb_colour, lw=2.5, label=f"{kind}: LSB")
        ax.plot([], [], color=top_colour, lw=2.5, label=f"{kind}: first overflowing bit")
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel("floor(log2 |value|) before the cast (colour: share of the row's nonzero values)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, fontsize=7, facecolor="0.55",
              title="format windows" + (" (observed: upper half, proposed: lower half)" if split else ""),
              title_fontsize=7)
    return _save(fig, path)


def _proposed_formats(proposed: list[dict], role: str, layer: int | None) -> list[QFormat]:
    """The proposed format of a role at a layer (its layer override, else the role's), from
    ``ranges.proposal_rows``; none for a full-width cast."""
    by_key = {(r["role"], r["layer"]): r for r in proposed}
    row = by_key.get((role, layer)) or by_key.get((role, None))
    return [] if row is None or row.get("format") is None else [QFormat.parse(row["format"])]


def plot_heatmaps(results: list[dict], path: str | Path) -> Path | None:
    """Heatmaps over word x frac, one per (template, rounding), on one colour scale: the gradient
    error (worst seed's mean relative error) or, without gradients, the final held-out loss
    ratio fixed / float; each cell is labelled with its value."""
    plt = _pyplot()
    ok = [r for r in results if r["status"] == "ok" and r["frac"] is not None]
    if not ok:
        return None
    if "gradient" in ok[0]:  # shown in percent
        section, key, scale, label = ("gradient", "max_mean_relative_error", 100.0,
                                      "log10 worst-seed mean relative\ngradient error (%)")
    else:
        section, key, scale, label = "train", "loss_ratio", 1.0, "log10 final held-out loss,\nfixed / float"
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
    vmin, vmax = colour_limits(np.log10(finite))
    fig, axes = plt.subplots(1, len(groups), squeeze=False, layout="constrained",
                             figsize=(0.55 * len(fracs) * len(groups) + 3.5, max(0.45 * len(words) + 2.2, 3.2)))
    for ax, group in zip(axes[0], groups):
        grid = grids[group]
        im = ax.imshow(np.log10(np.where(np.isfinite(grid), grid, np.nan)), origin="lower", aspect="auto",
                       cmap="magma_r", vmin=vmin, vmax=vmax)
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, cell_text(value), ha="center", va="center", fontsize=7,
                        color="white" if math.log10(value) > (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(fracs)), [str(f) for f in fracs])
        ax.set_yticks(range(len(words)), [str(w) for w in words])
        ax.set(xlabel="frac bits", ylabel="word bits", title=f"{group[0]} {group[1]}")
    bar = fig.colorbar(im, ax=list(axes[0]))
    bar.set_label(label, fontsize=9)
    bar.formatter.set_useOffset(False)  # plain tick labels, never "1e-9+4.4e-1"
    return _save(fig, path, tight=False)


def cell_text(value: float) -> str:
    """A heatmap cell's label: three significant digits (1.05, 0.997, 12.3), whole numbers from 100."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def colour_limits(values: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of a colour scale over ``values``; equal values get one unit around them."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)


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
