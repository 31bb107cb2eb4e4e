"""Command-line interface: ``fixprop <command> [options]`` (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import numpy as np

import fixprop
from fixprop.datapath import Datapath
from fixprop.errors import ConfigError, FixpropError
from fixprop.fixed import DEFAULT_OVERFLOW, DEFAULT_ROUNDING, FixedArray, Overflow, QFormat, Rounding
from fixprop.verify.experiment import Experiment, format_report, run, to_json
from fixprop.verify.references import BACKENDS, available

DETERMINISTIC_ROUNDINGS = [r for r in Rounding if r is not Rounding.STOCH]


def _cmd_quantize(args: argparse.Namespace) -> int:
    """Round real numbers into a format under one or every rounding mode; print raw and value."""
    fmt = QFormat.parse(args.format)
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


def _parse_shape(text: str) -> list[int]:
    parts = text.replace("[", "").replace("]", "").split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise ConfigError(f"--shape must be comma-separated positive layer sizes such as 3,7,7,5; got {text!r}")
    return [int(part) for part in parts]


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
    """The datapath named by --datapath, or built from --preset/--word/--frac/--rounding/--overflow."""
    if args.datapath:
        chosen = [f"--{n}" for n in ("word", "frac", "rounding", "overflow") if getattr(args, n) is not None]
        if chosen:
            raise ConfigError(f"--datapath gives every role's format and modes; drop {', '.join(chosen)}")
        return Datapath.load(args.datapath)
    word = 24 if args.word is None else args.word
    frac = 12 if args.frac is None else args.frac
    if args.preset == "seed":
        dp = Datapath.seed(word, frac)
        return dp.with_modes(args.rounding, args.overflow)
    return Datapath.uniform(word, frac, args.rounding or DEFAULT_ROUNDING, args.overflow or DEFAULT_OVERFLOW)


def add_datapath_options(parser: argparse.ArgumentParser) -> None:
    """The network and datapath options shared by verify (and later export, train)."""
    parser.add_argument("--shape", default="3,7,7,5", help="layer sizes, comma-separated (default 3,7,7,5)")
    parser.add_argument("--preset", choices=["seed", "uniform"], default="seed",
                        help="datapath built from --word/--frac: 'seed' = the seed notebook's arithmetic "
                             "(default), 'uniform' = every role the same format")
    parser.add_argument("--word", type=int, help="word length of the preset (default 24)")
    parser.add_argument("--frac", type=int, help="fraction bits of the preset (default 12)")
    parser.add_argument("--rounding", help="rounding mode of every role (default: the preset's, RND_CONV)")
    parser.add_argument("--overflow", help="overflow mode of every role (default: the preset's, SAT)")
    parser.add_argument("--datapath", metavar="FILE.toml", help="read the datapath from a TOML file instead")
    parser.add_argument("--seed", type=_count(0), default=0, help="seed of the initial weights and data (default 0)")
    parser.add_argument("--batch", type=_count(1), default=1, help="samples per gradient (default 1)")
    parser.add_argument("--init", default="uniform", help="uniform (default), uniform_neg, ones, he, glorot")
    parser.add_argument("--activation", default="relu", help="relu (default), leaky_relu[:k], linear, hard_tanh")
    parser.add_argument("--output-activation", help="last layer's activation (default: --activation)")
    parser.add_argument("--loss", default="sse", help="sse (default), half_sse, mse")


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
        loss=args.loss, timing_repeats=args.repeats,
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
    result = bench.run(sections, quick=args.quick, progress=None if args.json else _progress)
    print(json.dumps(result, indent=1) if args.json else bench.format_table(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Every stage's integers of N training steps, as a test-vector bundle (docs/hardware.md)."""
    from fixprop.hardware import LfsrSource, export
    from fixprop.nn.mlp import MLP
    from fixprop.verify.experiment import make_data

    net = MLP(_parse_shape(args.shape), args.activation, args.output_activation, args.loss, args.init, args.seed)
    x, y = make_data(net, args.steps * args.batch, args.seed)
    rng = (LfsrSource(seed=args.lfsr_seed, bits=args.lfsr_bits) if args.lfsr_seed is not None
           else np.random.default_rng(args.seed))
    path = export(net, datapath_from_args(args), x, y, args.steps, args.out, rng=rng, overwrite=args.force)
    count = len(json.loads((path / "manifest.json").read_text())["tensors"])
    print(f"wrote {count} tensors of {args.steps} step(s) to {path} (manifest.json, .mem, .coe, tensors.npz, "
          "datapath.toml)")
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    verify.add_argument("--reference", default="autograd", choices=[*BACKENDS, "all"],
                        help="autodiff reference (default autograd; all = every installed one)")
    verify.add_argument("--repeats", type=_count(1), default=20, help="timed repetitions per gradient (default 20)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(run=_cmd_verify)

    export = commands.add_parser(
        "export", help="write every stage's integers of N training steps as test vectors for RTL",
        description="Run N SGD steps (step t on its own batch of the verify data) and write every stage's "
                    "integers as .mem ($readmemh), .coe, .npz and a manifest with hashes (docs/hardware.md).",
    )
    add_datapath_options(export)
    export.add_argument("--steps", type=_count(1), default=1, help="training steps (default 1)")
    export.add_argument("--out", required=True, metavar="DIR", help="bundle directory to write")
    export.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    export.add_argument("--lfsr-seed", type=_count(0), help="stochastic rounding from LFSR lanes with this seed "
                        "(docs/hardware.md; default: numpy's generator seeded by --seed)")
    export.add_argument("--lfsr-bits", type=_count(1), default=16, help="LFSR bits per rounding (default 16)")
    export.set_defaults(run=_cmd_export)

    bench = commands.add_parser(
        "bench", help="benchmarks: matmul, train step, seed network, memory (medians and ratios)",
        description="Measure fixprop side by side with numpy float64, APyTypes, autograd, JAX and PyTorch "
                    "(those installed), with warm-up and interleaved repeats; print medians and ratios.",
    )
    bench.add_argument("sections", nargs="*", metavar="SECTION",
                       help="matmul, train_step, seed, memory (default: all)")
    bench.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    bench.add_argument("--json", action="store_true", help="print one JSON object with every median and ratio")
    bench.set_defaults(run=_cmd_bench)

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
    quantize.set_defaults(run=_cmd_quantize)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fixprop`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        return run(args)
    except FixpropError as error:
        print(f"fixprop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (e.g. `head`) went away: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
