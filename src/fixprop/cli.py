"""Command-line interface: ``fixprop <command> [options]`` (docs/cli.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import fixprop
from fixprop.datapath import Datapath
from fixprop.errors import ConfigError, FixpropError, FormatError
from fixprop.explore.datasets import DATASETS
from fixprop.explore.train import TrainConfig
from fixprop.fixed import DEFAULT_OVERFLOW, DEFAULT_ROUNDING, FixedArray, Overflow, QFormat, Rounding
from fixprop.verify.experiment import Experiment, format_report, run, to_json
from fixprop.verify.references import BACKENDS, available

DETERMINISTIC_ROUNDINGS = [r for r in Rounding if r is not Rounding.STOCH]
#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 128 + int(signal.SIGINT)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are two lines: where to find the usage, then the error
    (``fixprop <command>: error: argument --x: ...``) last; exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"usage: see '{self.prog} --help'\n{self.prog}: error: {message}\n")


def _cmd_quantize(args: argparse.Namespace) -> int:
    """Round real numbers into a format under one or every rounding mode; print raw and value."""
    try:
        fmt = QFormat.parse(args.format)
    except FormatError as error:
        raise FormatError(f"--format {args.format}: {error}") from None
    modes = DETERMINISTIC_ROUNDINGS if args.rounding.lower() == "all" else [Rounding.parse(args.rounding)]
    rng = np.random.default_rng(args.seed)
    values = np.array(args.values, dtype=np.float64)
    rows = []
    for mode in modes:
        q = FixedArray.from_float(values, fmt, mode, args.overflow, rng=rng)
        rows.append({"rounding": mode.name, "raw": [int(r) for r in q.raw], "value": q.to_float().tolist()})
    if args.json:
        print(json.dumps({"format": fmt.to_dict(), "overflow": Overflow.parse(args.overflow).name,
                          "input": values.tolist(), "results": rows}))
        return 0
    print(f"format {fmt} ({fmt!r}), overflow {Overflow.parse(args.overflow).name}, "
          f"range [{fmt.min:g}, {fmt.max:g}], LSB {fmt.resolution:g}")
    header = ["rounding"] + [repr(float(v)) for v in values]
    table = [header] + [[r["rounding"]] + [f"{v:g} ({raw})" for v, raw in zip(r["value"], r["raw"])]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    print("cells: value (raw integer)")
    return 0


def _parse_shape(text: str, option: str = "--shape", minimum: int = 2) -> list[int]:
    """Comma-separated positive sizes, at least ``minimum`` of them (a network's inputs and outputs: 2)."""
    parts = text.replace("[", "").replace("]", "").split(",")
    if not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(f"{option} must be comma-separated positive layer sizes such as 3,7,7,5; got {text!r}")
    if len(parts) < minimum:
        raise ConfigError(f"{option} needs at least {minimum} layer sizes (inputs, ..., outputs) such as 3,7,7,5; "
                          f"got {text!r}")
    return [int(part) for part in parts]


def _parse_ints(text: str, option: str, minimum: int | None = None) -> list[int]:
    """Integers from "12,16,20" or ranges "4-12" (inclusive), or a mix: "8,10-12"; each >= minimum."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (None, None)
                lo, hi = int(lo), int(hi)
            else:
                lo = hi = int(part)
        except (TypeError, ValueError):
            raise ConfigError(f"{option} takes integers and ranges such as 12,16 or 4-12; got {text!r}") from None
        if lo > hi:
            raise ConfigError(f"{option} {part}: the range runs backwards; write {hi}-{lo}")
        values.extend(range(lo, hi + 1))
    if minimum is not None and min(values) < minimum:
        raise ConfigError(f"{option} values must be >= {minimum}; got {min(values)} in {text!r}")
    return values


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def datapath_from_args(args: argparse.Namespace) -> Datapath:
    """The datapath named by --datapath, or built from --preset/--word/--frac/--rounding/--overflow;
    --lr-shift replaces its learning rate."""
    if args.datapath:
        chosen = [f"--{n}" for n in ("word", "frac", "rounding", "overflow") if getattr(args, n) is not None]
        if chosen:
            raise ConfigError(f"--datapath gives every role's format and modes; drop {', '.join(chosen)}")
        dp = Datapath.load(args.datapath)
    else:
        word = 24 if args.word is None else args.word
        frac = 12 if args.frac is None else args.frac
        if args.preset == "seed":
            dp = Datapath.seed(word, frac).with_modes(args.rounding, args.overflow)
        else:
            dp = Datapath.uniform(word, frac, args.rounding or DEFAULT_ROUNDING, args.overflow or DEFAULT_OVERFLOW)
    if args.lr_shift is not None:
        dp = replace(dp, lr_shift=args.lr_shift, lr=None)
    return dp


def add_datapath_options(parser: argparse.ArgumentParser) -> None:
    """The datapath options shared by verify, export, train, ranges."""
    parser.add_argument("--preset", choices=["seed", "uniform"], default="seed",
                        help="datapath built from --word/--frac: 'seed' = the seed notebook's arithmetic "
                             "(default), 'uniform' = every role the same format")
    parser.add_argument("--word", type=int, help="word length of the preset (default 24)")
    parser.add_argument("--frac", type=int, help="fraction bits of the preset (default 12)")
    parser.add_argument("--rounding", help="rounding mode of every role (default: the preset's, RND_CONV)")
    parser.add_argument("--overflow", help="overflow mode of every role (default: the preset's, SAT)")
    parser.add_argument("--datapath", metavar="FILE.toml", help="read the datapath from a TOML file instead")
    parser.add_argument("--lr-shift", type=_count(0), help="learning rate 2**-N, replacing the datapath's")


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """The verify experiment's network options (verify, export)."""
    parser.add_argument("--shape", default="3,7,7,5", help="layer sizes, comma-separated (default 3,7,7,5)")
    parser.add_argument("--seed", type=_count(0), default=0, help="seed of the initial weights and data (default 0)")
    parser.add_argument("--batch", type=_count(1), default=1, help="samples per gradient (default 1)")
    parser.add_argument("--init", default="uniform", help="uniform (default), uniform_neg, ones, he, glorot")
    parser.add_argument("--activation", default="relu",
                        help="relu (default), leaky_relu[:k], linear, hard_tanh, hard_sigmoid, pwl_sigmoid, pwl_tanh "
                             "(each of these three also NAME:output: derivative a(1-a) from the output), "
                             "lut:FILE.toml")
    parser.add_argument("--output-activation", help="last layer's activation (default: --activation)")
    parser.add_argument("--loss", default="sse", help="sse (default), half_sse, mse")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The training options (train, sweep's train measure): data set, network, schedule."""
    d = TrainConfig()
    parser.add_argument("--dataset", default=d.dataset, choices=list(DATASETS),
                        help="ik (the seed's arm, default) or digits (scikit-learn's bundled 8x8 digits)")
    parser.add_argument("--hidden", default=",".join(map(str, d.hidden)),
                        help=f"hidden layer widths, comma-separated (default {d.hidden[0]})")
    parser.add_argument("--epochs", type=_count(1), default=d.epochs, help=f"passes over the train split ({d.epochs})")
    parser.add_argument("--batch", type=_count(1), default=d.batch, help=f"samples per SGD step (default {d.batch})")
    parser.add_argument("--seed", type=_count(0), default=d.seed,
                        help="seed of the initial weights, the batch order and STOCH (default 0)")
    parser.add_argument("--data-seed", type=_count(0), default=d.data_seed,
                        help="seed of the data set's draw (ik) or train/held-out split (digits) (default 0)")
    parser.add_argument("--init", default=d.init, help=f"initialisation (default {d.init})")
    parser.add_argument("--activation", default=d.activation, help=f"hidden activation (default {d.activation})")
    parser.add_argument("--output-activation", default=d.output_activation,
                        help=f"output activation (default {d.output_activation})")
    parser.add_argument("--loss", default=d.loss, help=f"loss (default {d.loss})")
    parser.add_argument("--backend", default=d.backend, choices=["auto", "numpy", "numba"],
                        help="compiled engine: numba (the kernel, for both networks; the float one sums in "
                             "the kernel's order, its last bits can differ from numpy's), numpy (BLAS), or auto "
                             "(numba for the fixed network, numpy for the float one); the same integers on "
                             "each (default auto)")


def add_report_options(parser: argparse.ArgumentParser, plot_help: str) -> None:
    """--plot FILE.png, --json and --quiet (train, ranges)."""
    parser.add_argument("--plot", metavar="FILE.png", help=plot_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config_from_args(args: argparse.Namespace, seed: int | None = None) -> TrainConfig:
    """The TrainConfig of the training options (``seed`` replaces --seed)."""
    return TrainConfig(dataset=args.dataset, hidden=tuple(_parse_shape(args.hidden, "--hidden", minimum=1)),
                       epochs=args.epochs, batch=args.batch, seed=args.seed if seed is None else seed,
                       data_seed=args.data_seed, init=args.init, activation=args.activation,
                       output_activation=args.output_activation, loss=args.loss,
                       backend=getattr(args, "backend", TrainConfig.backend))


#: ranges' options that apply to one kind of run only (the others apply to both, with the
#: defaults of verify or of train).
RANGES_VERIFY_ONLY = ("shape",)
RANGES_TRAINING_ONLY = ("hidden", "epochs", "data_seed")


def _ranges_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """ranges' network options resolved for its --dataset; an option that does not apply is an error."""
    training = args.dataset != "verify"
    wrong = [name for name in (RANGES_VERIFY_ONLY if training else RANGES_TRAINING_ONLY)
             if getattr(args, name) is not None]
    if wrong:
        options = ", ".join("--" + n.replace("_", "-") for n in wrong)
        raise ConfigError(f"{options} do(es) not apply to --dataset {args.dataset}")
    if training:
        d = TrainConfig()
        defaults = {"hidden": ",".join(map(str, d.hidden)), "epochs": d.epochs, "data_seed": d.data_seed,
                    "batch": d.batch, "init": d.init, "activation": d.activation,
                    "output_activation": d.output_activation, "loss": d.loss}
    else:
        e = Experiment()
        defaults = {"shape": ",".join(map(str, e.shape)), "batch": e.batch, "init": e.init,
                    "activation": e.activation, "output_activation": e.output_activation, "loss": e.loss}
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def _cmd_verify(args: argparse.Namespace) -> int:
    """Gradients of one network in float and fixed point against autodiff references."""
    if args.reference == "all":
        names = [name for name in BACKENDS if available(name)]
        skipped = [name for name in BACKENDS if name not in names]
        if skipped:
            print(f"fixprop verify: skipping {', '.join(skipped)} (not installed)", file=sys.stderr)
    else:
        names = [args.reference]
    experiment = Experiment(
        shape=_parse_shape(args.shape), datapath=datapath_from_args(args), references=names, batch=args.batch,
        seed=args.seed, init=args.init, activation=args.activation, output_activation=args.output_activation,
        loss=args.loss, timing_repeats=args.repeats, backend=args.backend,
    )
    result = run(experiment)
    if args.json:
        print(json.dumps(to_json(result), indent=1))
    else:
        print(format_report(result))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """fixprop against float64 numpy, APyTypes and autodiff, side by side in this process."""
    from fixprop import bench

    sections = tuple(args.sections) if args.sections else bench.SECTIONS
    unknown = [s for s in sections if s not in bench.SECTIONS]
    if unknown:
        raise ConfigError(f"unknown bench section(s) {unknown}; allowed: {', '.join(bench.SECTIONS)}")
    result = bench.run(sections, quick=args.quick, progress=None if args.json else _progress, backend=args.backend)
    print(json.dumps(result, indent=1) if args.json else bench.format_table(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Every stage's integers of N training steps, as a test-vector bundle (docs/hardware.md)."""
    from fixprop.hardware import LfsrSource, export
    from fixprop.nn.mlp import MLP
    from fixprop.verify.experiment import make_data

    if args.lfsr_bits is not None and args.lfsr_seed is None:
        raise ConfigError("--lfsr-bits needs --lfsr-seed (the LFSR lanes are used only with a seed)")
    net = MLP(_parse_shape(args.shape), args.activation, args.output_activation, args.loss, args.init, args.seed)
    datapath = datapath_from_args(args)
    if args.lfsr_seed is not None and not any(c.rounding is Rounding.STOCH for _, _, c in datapath.all_casts()):
        raise ConfigError("--lfsr-seed drives stochastic rounding, and no role of this datapath rounds STOCH: "
                          "drop it, or give a role rounding STOCH")
    _check_output_dir(args.out, "--out")
    _check_parent(Path(args.out), "--out")  # the bundle is written beside it, then renamed
    x, y = make_data(net, args.steps * args.batch, args.seed)
    if args.lfsr_seed is None:
        rng = np.random.default_rng(args.seed)
    else:  # LfsrSource's own default number of bits unless --lfsr-bits
        rng = LfsrSource(seed=args.lfsr_seed, **({} if args.lfsr_bits is None else {"bits": args.lfsr_bits}))
    path = export(net, datapath, x, y, args.steps, args.out, rng=rng, overwrite=args.force, check_backend=args.backend)
    count = len(json.loads((path / "manifest.json").read_text())["tensors"])
    if args.json:
        checked = {} if args.backend is None else {"checked_backend": args.backend}
        print(json.dumps({"path": str(path), "steps": args.steps, "tensors": count, **checked}))
    else:
        print(f"wrote {count} tensors of {args.steps} step(s) to {path} (manifest.json, .mem, .coe, tensors.npz, "
              "datapath.toml)")
        if args.backend is not None:
            print(f"checked: the {args.backend} engine's parameters after every step equal the bundle's")
    return 0


def _cmd_hls(args: argparse.Namespace) -> int:
    """The HLS C++ of one training step, or (--check) its C simulation against a bundle."""
    from fixprop.hardware import LfsrSource, hls
    from fixprop.hardware.state import load_state
    from fixprop.nn.mlp import MLP

    given = [f"--{name.replace('_', '-')}" for name in ("shape", "activation", "output_activation", "loss", "datapath",
                                                       "preset", "word", "frac", "rounding", "overflow", "lr_shift")
             if getattr(args, name) is not None]
    if args.check:
        extra = given + [option for option, value in (("--weights", args.weights), ("--batch", args.batch),
                                                      ("--lfsr-seed", args.lfsr_seed), ("--lfsr-bits", args.lfsr_bits),
                                                      ("--pragmas", args.pragmas or None))
                         if value is not None]
        if extra:
            raise ConfigError(f"--check BUNDLE takes the network, datapath, batch and LFSR from the bundle; drop "
                              f"{', '.join(extra)}")
        if args.out:
            _check_output_dir(args.out, "--out")
        result = hls.check(args.check, args.types, args.include, args.out, overwrite=args.force)
        if args.json:
            print(json.dumps({"passed": result.passed, "returncode": result.returncode, "output": result.output,
                              "types": args.types, "bundle": args.check}))
        else:
            print(result.output)
        return result.returncode
    if not args.out:
        raise ConfigError("give --out DIR (the directory to write), or --check BUNDLE")
    if args.lfsr_bits is not None and args.lfsr_seed is None:
        raise ConfigError("--lfsr-bits needs --lfsr-seed (the LFSR lanes are used only with a seed)")
    weights = None
    if args.weights:
        if given:
            raise ConfigError(f"--weights FILE carries the network and datapath it was trained with; drop "
                              f"{', '.join(given)}")
        net, datapath, weights = load_state(args.weights)
    else:
        for name, default in (("shape", "3,7,7,5"), ("activation", "relu"), ("loss", "sse"), ("preset", "seed")):
            if getattr(args, name) is None:
                setattr(args, name, default)
        net = MLP(_parse_shape(args.shape), args.activation, args.output_activation, args.loss)
        datapath = datapath_from_args(args)
    lfsr = None
    if args.lfsr_seed is not None:
        lfsr = LfsrSource(seed=args.lfsr_seed, **({} if args.lfsr_bits is None else {"bits": args.lfsr_bits}))
    if args.batch is None:
        args.batch = 1
    _check_output_dir(args.out, "--out")
    out = hls.generate(net, datapath, args.batch, args.out, args.types, lfsr, args.include, args.pragmas, weights,
                       overwrite=args.force)
    files = sorted(p.name for p in out.iterdir())
    if args.json:
        print(json.dumps({"path": str(out), "files": files, "types": args.types, "batch": args.batch}))
    else:
        print(f"wrote {out}: {', '.join(files)}\n"
              f"C simulation against a bundle of the same network, datapath and batch: "
              f"make -C {out} check BUNDLE=<bundle dir>")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train float and fixed-point networks from the same initial weights, side by side."""
    from fixprop.explore.train import format_report, train
    from fixprop.hardware.state import save_state
    from fixprop.progress import ProgressBar

    config = train_config_from_args(args)
    datapath = datapath_from_args(args)
    _check_plot_file(args.plot)
    if args.save_state:
        _check_parent(Path(args.save_state), "--save-state")
    bar = ProgressBar(config.epochs, "epochs", enabled=not args.quiet)

    def progress(epoch: int, summary: dict) -> None:
        bar.update(info=f"loss float {summary['float_test_loss']:.4g} fixed {summary['fixed_test_loss']:.4g}")

    def save(model) -> None:
        print(f"wrote {save_state(args.save_state, model.net, model.arithmetic.datapath, model.params)}",
              file=sys.stderr)

    result = train(config, datapath, progress, on_done=save if args.save_state else None)
    bar.close()
    if args.plot:
        from fixprop.explore.plots import plot_training

        print(f"wrote {plot_training(result, args.plot)}", file=sys.stderr)
    print(json.dumps(to_json(result), indent=1) if args.json else format_report(result))
    return 0


def _cmd_ranges(args: argparse.Namespace) -> int:
    """Range statistics of every cast, and per-role formats proposed for a word length."""
    from fixprop.explore import ranges

    args = _ranges_defaults(args)
    datapath = datapath_from_args(args)
    seeds = _parse_ints(args.seeds, "--seeds", minimum=0)
    words = dict(_parse_role_word(item) for item in args.role_word)
    if (args.out or words) and args.propose is None:
        raise ConfigError("--out and --role-word need --propose W (the word length to propose formats for)")
    _check_output_file(args.out, "--out")
    _check_plot_file(args.plot)
    if args.dataset == "verify":
        experiment = Experiment(shape=_parse_shape(args.shape), datapath=datapath, batch=args.batch,
                                init=args.init, activation=args.activation,
                                output_activation=args.output_activation, loss=args.loss)
        collector = ranges.collect_verify(experiment, seeds)
        source = f"verify experiment {list(experiment.shape)}, batch {args.batch}, seeds {args.seeds}"
    else:
        from fixprop.progress import ProgressBar

        configs = [train_config_from_args(args, seed) for seed in seeds]
        bar = ProgressBar(len(seeds) * args.epochs, "epochs", enabled=not (args.json or args.quiet))
        runs = [ranges.collect_training(config, datapath, lambda *_: bar.update())[0] for config in configs]
        bar.close()
        collector = ranges.merged(runs)
        source = (f"training on {args.dataset} (data seed {args.data_seed}), {args.epochs} epoch(s), "
                  f"seeds {args.seeds}")
    proposed = rows = None
    if args.propose is not None:
        proposed = ranges.propose_datapath(collector, datapath, args.propose, args.margin, words,
                                           not args.per_role)
        rows = ranges.proposal_rows(collector, proposed)
        if args.out:
            Path(args.out).write_text(proposed.to_toml())
    if args.plot:
        from fixprop.explore.plots import plot_ranges

        print(f"wrote {plot_ranges(collector.to_json(), args.plot, rows)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"source": source, "datapath": datapath.name, "stats": collector.to_json(),
                          "proposed": None if proposed is None else {"toml": proposed.to_toml(), "rows": rows}},
                         indent=1))
        return 0
    print(f"fixprop ranges: {source}, under datapath {datapath.name}")
    print("min/max: exact values arriving at the cast; sat: share whose rounded value was outside the role "
          "format's range; underflow: nonzero before the cast, zero after (share of nonzero values)\n")
    print(ranges.format_table(collector))
    if proposed is not None:
        print("\n" + proposed.describe())
        if args.out:
            print(f"\nwrote {args.out}")
    return 0


#: The --plot file types: what matplotlib writes without extra software.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def _check_output_file(path: str | None, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, or a path whose
    directory is missing, not a directory, or not writable."""
    if path is None:
        return
    if Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a directory; give a file name")
    _check_parent(Path(path), option)


def _check_output_dir(path: str | Path, option: str) -> None:
    """Refuse, before any work, an output directory that is a file, or that (or, when it does not
    exist yet, whose parent) cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a directory")
    if path.is_dir():
        _check_writable(path, f"{option} {path}")
    else:
        _check_parent(path, option)


def _check_parent(path: Path, option: str) -> None:
    """The directory ``path`` goes into exists, is a directory and is writable."""
    parent = path.parent
    if not parent.exists():
        raise ConfigError(f"{option} {path}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a directory")
    _check_writable(parent, f"{option} {path}")


def _check_writable(directory: Path, what: str) -> None:
    """Create a temporary file in ``directory`` (gone when closed): the only sure test of writing there."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ConfigError(f"{what}: cannot create files in {directory} ({error.strerror})") from None


def _check_plot_file(path: str | None) -> None:
    """Before any work: --plot names a writable file of a type in PLOT_SUFFIXES, and matplotlib is installed."""
    if path is not None:
        from fixprop.explore.plots import require

        _check_output_file(path, "--plot")
        if Path(path).suffix.lower() not in PLOT_SUFFIXES:
            raise ConfigError(f"--plot {path}: give a file name ending in {', '.join(PLOT_SUFFIXES)} "
                              "(the image type)")
        require()


def _parse_role_word(text: str) -> tuple[str, int]:
    role, _, word = text.partition("=")
    if not word.strip().isdigit():
        raise ConfigError(f"--role-word takes ROLE=BITS such as acc=32; got {text!r}")
    return role.strip(), int(word)


def _cmd_sweep(args: argparse.Namespace) -> int:
    """A grid of datapaths, each measured by gradient error and/or training, on processes or Dask."""
    from fixprop.explore import sweep
    from fixprop.progress import ProgressBar

    measures = tuple(m.strip() for m in args.measure.split(","))
    train_config = train_config_from_args(args)
    spec = sweep.SweepSpec(
        words=tuple(_parse_ints(args.words, "--words")), fracs=tuple(_parse_ints(args.fracs, "--fracs")),
        roundings=tuple(r.strip() for r in args.roundings.split(",")),
        templates=tuple(t.strip() for t in args.templates.split(",")), measures=measures,
        seeds=tuple(_parse_ints(args.seeds, "--seeds", minimum=0)), lr_shift=args.lr_shift,
        verify={"shape": _parse_shape(args.verify_shape, "--verify-shape"), "batch": args.verify_batch},
        train_config={**vars(train_config), "hidden": list(train_config.hidden)},
    )
    out = Path(args.out)
    _check_output_dir(out, "--out")
    if not args.no_plot:
        from fixprop.explore.plots import require

        try:
            require()
        except ConfigError as error:
            raise ConfigError(f"{error}, or pass --no-plot") from None
    points = sweep.grid(spec)
    sweep.check_points(points)
    bar = ProgressBar(len(points), "points", enabled=not args.quiet)
    failures: list[str] = []

    def on_result(result: dict) -> None:
        if result["status"] != "ok":
            failures.append(f"point {result['index']} ({result['template']} w{result['word']} f{result['frac']} "
                            f"{result['rounding']}): {result['error']}")
        bar.update(info=f"{len(failures)} failed" if failures else "")

    with _second_ctrl_c_exits():
        run = sweep.execute_sweep(points, workers=args.workers, dask=args.dask, on_result=on_result)
        bar.close()
        written: list[Path] = []
        if run.results:  # the directory is made, and a previous sweep's files replaced, only now
            try:
                out.mkdir(exist_ok=True)
            except OSError as error:
                raise ConfigError(f"--out {out}: cannot create the directory ({error.strerror})") from None
            sweep.clear_outputs(out)
            written = sweep.write_outputs(run.results, spec, out, run.executor, run.interrupted)
            if not args.no_plot:
                written += sweep.write_plots(run.results, out)
    where = sweep.describe_executor(run.executor)
    if run.interrupted:
        print(f"fixprop sweep: interrupted (Ctrl-C) after {len(run.results)} of {len(points)} point(s); "
              + (f"their results are in {out}" if written else "nothing written"), file=sys.stderr)
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json({
            "points": len(points), "done": len(run.results), "failed": len(failures), "interrupted": run.interrupted,
            "executor": run.executor, "files": [str(p) for p in written],
            "results": [sweep.summary_row(r) for r in run.results]}), indent=1))
    else:
        if run.results:
            print(sweep.format_table(run.results) + "\n")
        print(f"{len(run.results)} of {len(points)} point(s) done, {len(failures)} failed, {where}; "
              + ("wrote " + ", ".join(str(p) for p in written) if written else "nothing written"))
    if run.interrupted:
        return INTERRUPTED
    return 1 if failures else 0


@contextlib.contextmanager
def _second_ctrl_c_exits() -> Iterator[None]:
    """Inside: a first Ctrl-C raises KeyboardInterrupt as usual (the sweep stops and writes what is
    done); a second one kills this process's worker processes (its multiprocessing children) and
    exits at once, status 130, whatever it was doing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def second(signum: int, frame: object) -> None:
        for child in multiprocessing.active_children():
            child.kill()
        os.write(2, b"fixprop sweep: interrupted twice (Ctrl-C): stopped at once\n")  # no buffered stream here
        os._exit(INTERRUPTED)

    def first(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, second)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fixprop",
        description="fixprop: the bit-exact fixed-point training golden model for neural-network hardware.",
    )
    parser.add_argument("--version", action="version", version=f"fixprop {fixprop.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    verify = commands.add_parser(
        "verify", help="gradients in float and fixed point vs autograd/JAX/PyTorch (the main job)",
        description="Compute one network's gradients in float64 and in a fixed-point datapath and compare "
                    "them with autodiff references. With no options: the seed notebook's experiment, "
                    "[3,7,7,5], uniform init, relu, sse, seed 0, Datapath.seed(24, 12), against autograd.",
    )
    add_datapath_options(verify)
    add_network_options(verify)
    verify.add_argument("--reference", default="autograd", choices=[*BACKENDS, "all"],
                        help="autodiff reference (default autograd; all = every installed one)")
    verify.add_argument("--repeats", type=_count(1), default=20, help="timed repetitions per gradient (default 20)")
    verify.add_argument("--backend", default="auto", choices=["auto", "numpy", "numba"],
                        help="compiled engine of the timed fixed-point gradient (the compared gradients are "
                             "the stepwise path's, the same integers) (default auto)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(run=_cmd_verify, parser=verify)

    export = commands.add_parser(
        "export", help="write every stage's integers of N training steps as test vectors for RTL",
        description="Run N SGD steps (step t on its own batch of the verify data) and write every stage's "
                    "integers as .mem ($readmemh), .coe, .npz and a manifest with hashes (docs/hardware.md).",
    )
    add_datapath_options(export)
    add_network_options(export)
    export.add_argument("--steps", type=_count(1), default=1, help="training steps (default 1)")
    export.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    export.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    export.add_argument("--lfsr-seed", type=_count(0), help="stochastic rounding from LFSR lanes with this seed "
                        "(docs/hardware.md; default: numpy's generator seeded by --seed)")
    export.add_argument("--lfsr-bits", type=_count(1), help="with --lfsr-seed: LFSR bits per rounding (default 16)")
    export.add_argument("--backend", choices=("auto", "numpy", "numba"),
                        help="also run the steps on this compiled engine and check its parameters after every "
                             "step equal the bundle's (a difference is an error; nothing is written)")
    export.add_argument("--json", action="store_true", help="print one JSON object: path, steps, tensors")
    export.set_defaults(run=_cmd_export, parser=export)

    train = commands.add_parser(
        "train", help="train float and fixed-point networks side by side on ik or digits",
        description="Train a float64 network and a fixed-point one from the same initial weights on the same "
                    "mini-batches; print the held-out loss (and accuracy) after every epoch.",
    )
    add_datapath_options(train)
    add_training_options(train)
    add_report_options(train, "write the loss (and accuracy) curves")
    train.add_argument("--save-state", metavar="FILE.json",
                       help="write the trained fixed-point weights and biases, with the network and datapath "
                            "(for fixprop hls --weights)")
    train.set_defaults(run=_cmd_train, parser=train)

    hls_command = commands.add_parser(
        "hls", help="write one training step as HLS C++ (ap_fixed or ac_fixed) with a C-simulation testbench",
        description="Write train_step.h/.cpp (forward, backward, SGD update over the datapath's types), a "
                    "testbench that checks it against an export bundle, and a Makefile (docs/hardware.md, "
                    "'From a datapath to an HLS kernel'). --check BUNDLE generates, compiles (g++) and runs "
                    "it on a bundle in one go: exit 0 equal, 1 a mismatch, 2 an unreadable bundle.",
    )
    add_datapath_options(hls_command)
    add_network_options(hls_command)
    hls_command.set_defaults(shape=None, activation=None, loss=None, preset=None, batch=None)  # to tell what was given
    hls_command.add_argument("--out", metavar="DIR", help="directory to write (with --check: keep the C++ there)")
    hls_command.add_argument("--types", default="ap_fixed", choices=["ap_fixed", "ac_fixed"],
                             help="ap_fixed (Vitis HLS, default) or ac_fixed (Catapult, Intel HLS)")
    hls_command.add_argument("--include", metavar="DIR",
                             help="directory holding ap_fixed.h / ac_fixed.h (default: the copy in hls4ml's wheel)")
    hls_command.add_argument("--check", metavar="BUNDLE",
                             help="generate the kernel of this export bundle's network and datapath, compile and "
                                  "run its C simulation on it")
    hls_command.add_argument("--weights", metavar="STATE.json",
                             help="a state file of fixprop train --save-state: its network and datapath, and its "
                                  "weights and biases as initialised C++ arrays (weights.h)")
    hls_command.add_argument("--lfsr-seed", type=_count(0),
                             help="stochastic rounding from LFSR lanes with this seed (as fixprop export)")
    hls_command.add_argument("--lfsr-bits", type=_count(1), help="with --lfsr-seed: bits per rounding (default 16)")
    hls_command.add_argument("--pragmas", action="store_true",
                             help="add HLS PIPELINE and ARRAY_PARTITION pragmas (a starting point for synthesis)")
    hls_command.add_argument("--force", action="store_true", help="write into a non-empty --out directory")
    hls_command.add_argument("--json", action="store_true", help="print one JSON object")
    hls_command.set_defaults(run=_cmd_hls, parser=hls_command)

    ranges = commands.add_parser(
        "ranges", help="range statistics per layer and role; propose per-role formats for a word length",
        description="Record every cast of the fixed-point network (min, max, log2 histogram, saturated, "
                    "underflowed) on the verify experiment or while training; with --propose W, give each role "
                    "(and layer) the fewest integer bits that hold its range plus --margin, the rest fraction.",
    )
    add_datapath_options(ranges)
    ranges.add_argument("--dataset", default="verify", choices=["verify", *DATASETS],
                        help="verify: the verify experiment, one gradient and one SGD step per seed (default); "
                             "ik or digits: training, as fixprop train")
    ranges.add_argument("--seeds", default="0", help="seeds to observe, merged: 0-7 or 0,3,5 (default 0): "
                        "verify's --seed, or train's --seed")
    e, d = Experiment(), TrainConfig()  # the defaults ranges applies (_ranges_defaults)
    ranges.add_argument("--shape", help=f"verify only: layer sizes (default {','.join(map(str, e.shape))})")
    ranges.add_argument("--hidden", help=f"training only: hidden widths (default {','.join(map(str, d.hidden))})")
    ranges.add_argument("--epochs", type=_count(1), help=f"training only: epochs (default {d.epochs})")
    ranges.add_argument("--data-seed", type=_count(0),
                        help=f"training only: data draw/split seed (default {d.data_seed})")
    ranges.add_argument("--batch", type=_count(1),
                        help=f"samples per gradient (verify {e.batch}) or SGD step (train {d.batch})")
    ranges.add_argument("--init", help=f"initialisation (verify {e.init}, train {d.init})")
    ranges.add_argument("--activation", help=f"hidden activation (verify {e.activation}, train {d.activation})")
    ranges.add_argument("--output-activation", help="output activation (verify: = --activation, "
                        f"train: {d.output_activation})")
    ranges.add_argument("--loss", help=f"loss (verify {e.loss}, train {d.loss})")
    ranges.add_argument("--propose", type=_count(2), metavar="W", help="propose formats of W-bit words")
    ranges.add_argument("--margin", type=_count(0), default=1, help="extra integer bits (default 1)")
    ranges.add_argument("--per-role", action="store_true", help="one format per role (default: per-layer "
                        "overrides where a layer's range needs fewer integer bits)")
    ranges.add_argument("--role-word", action="append", default=[], metavar="ROLE=BITS",
                        help="another word length for one role, e.g. acc=32 (repeatable)")
    ranges.add_argument("--out", metavar="FILE.toml", help="write the proposed datapath")
    add_report_options(ranges, "write the log2 histograms")
    ranges.set_defaults(run=_cmd_ranges, parser=ranges)

    sweep = commands.add_parser(
        "sweep", help="measure a grid of datapaths (gradient error, training) on processes or Dask",
        description="For each (template, rounding, word, frac) of the grid: the gradient error against autograd "
                    "on the verify experiment (--seeds) and/or training against float (--dataset). Writes "
                    "sweep.csv, sweep.json and PNG plots to --out; a failing point is recorded, not fatal.",
    )
    sweep.add_argument("--words", default="16", help="word lengths: 12,16 or 8-16 (default 16)")
    sweep.add_argument("--fracs", default="8", help="fraction bits: 4-12 (default 8)")
    sweep.add_argument("--roundings", default="keep", help="rounding modes, comma-separated, or keep: each "
                       "template's own (default; RND_CONV for uniform and seed)")
    sweep.add_argument("--templates", default="uniform",
                       help="uniform, seed or FILE.toml (its integer bits kept at each word), comma-separated")
    sweep.add_argument("--measure", default="gradient", help="gradient, train or gradient,train (default gradient)")
    sweep.add_argument("--seeds", default="0-7", help="gradient measure: verify seeds (default 0-7)")
    sweep.add_argument("--verify-shape", default="3,7,7,5", help="gradient measure: verify's --shape (3,7,7,5)")
    sweep.add_argument("--verify-batch", type=_count(1), default=1, help="gradient measure: verify's --batch (1)")
    sweep.add_argument("--lr-shift", type=_count(0), help="learning rate 2**-N of every point (default: the template's)")
    add_training_options(sweep)
    sweep.add_argument("--out", default="sweep", metavar="DIR", help="output directory (default ./sweep)")
    sweep.add_argument("--workers", type=_count(1), default=2, help="local processes (default 2; 1 = in-process)")
    sweep.add_argument("--dask", metavar="ADDRESS", help="run on a Dask cluster: its scheduler address, or "
                       "'local' to start a LocalCluster of --workers processes")
    sweep.add_argument("--no-plot", action="store_true", help="write no PNG")
    sweep.add_argument("--json", action="store_true", help="print one JSON object: counts, executor, files "
                       "written and each point's figures")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(run=_cmd_sweep, parser=sweep)

    bench = commands.add_parser(
        "bench", help="benchmarks: matmul, train step, seed network, memory, engines, compile cost (medians and ratios)",
        description="Measure fixprop side by side with numpy float64, APyTypes, autograd, JAX and PyTorch "
                    "(those installed), with warm-up and interleaved repeats; print medians and ratios.",
    )
    bench.add_argument("sections", nargs="*", metavar="SECTION",
                       help="matmul, train_step, seed, memory, backends, compile, train (default: all)")
    bench.add_argument("--backend", choices=("auto", "numpy", "numba"), default="auto",
                       help="engine of the compiled fixed-point steps timed in train_step and seed "
                            "(default auto; the backends section times every engine)")
    bench.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    bench.add_argument("--json", action="store_true", help="print one JSON object with every median and ratio")
    bench.set_defaults(run=_cmd_bench, parser=bench)

    quantize = commands.add_parser(
        "quantize", help="round numbers into a fixed-point format (every rounding mode side by side)",
        description="Round real numbers into a fixed-point format and print raw integers and values.",
    )
    quantize.add_argument("values", nargs="+", type=float,
                          help="real numbers to quantize (each read as the nearest float64, then rounded exactly)")
    quantize.add_argument("--format", default="s8.1", help="format as s<word>.<frac> or u<word>.<frac> (default s8.1)")
    quantize.add_argument("--rounding", default="all",
                          help="rounding mode name (TRN, RND_CONV, Floor, ...), STOCH, or 'all' (default)")
    quantize.add_argument("--overflow", default="SAT", help="SAT (default), WRAP, SAT_SYM or SAT_ZERO")
    quantize.add_argument("--seed", type=_count(0), default=0, help="seed of the generator used by STOCH")
    quantize.add_argument("--json", action="store_true", help="print one JSON object")
    quantize.set_defaults(run=_cmd_quantize, parser=quantize)
    return parser


class _StderrNotes(logging.Handler):
    """fixprop's INFO log lines (a numba kernel compiling for the first time) as ``fixprop: ...``
    on the standard error the process has when the line is logged."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"fixprop: {record.getMessage()}", file=sys.stderr)


def _show_notes() -> None:
    """Install :class:`_StderrNotes` on the ``fixprop`` logger once, at INFO, unless the
    application has configured that logger itself."""
    logger = logging.getLogger("fixprop")
    if logger.handlers or logger.level != logging.NOTSET:
        return
    logger.addHandler(_StderrNotes())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fixprop`` console script; returns the exit status."""
    _show_notes()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, whose usage applies
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        return run(args)
    except FixpropError as error:
        print(f"fixprop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fixprop {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader (e.g. `head`) went away: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
