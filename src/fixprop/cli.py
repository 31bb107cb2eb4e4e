"""Command-line interface: ``fixprop <command> [options]`` (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import numpy as np

import fixprop
from fixprop.errors import FixpropError
from fixprop.fixed import FixedArray, Overflow, QFormat, Rounding

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
    header = ["rounding"] + [f"{v:g}" for v in values]
    table = [header] + [[r["rounding"]] + [f"{v:g} ({raw})" for v, raw in zip(r["value"], r["raw"])]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    print("cells: value (raw integer)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fixprop",
        description="fixprop: the bit-exact fixed-point training golden model for neural-network hardware.",
    )
    parser.add_argument("--version", action="version", version=f"fixprop {fixprop.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    quantize = commands.add_parser(
        "quantize", help="round numbers into a fixed-point format (every rounding mode side by side)",
        description="Round real numbers into a fixed-point format and print raw integers and values.",
    )
    quantize.add_argument("values", nargs="+", type=float, help="real numbers to quantize")
    quantize.add_argument("--format", default="s8.1", help="format as s<word>.<frac> or u<word>.<frac> (default s8.1)")
    quantize.add_argument("--rounding", default="all",
                          help="rounding mode name (TRN, RND_CONV, Floor, ...), STOCH, or 'all' (default)")
    quantize.add_argument("--overflow", default="SAT", help="SAT (default), WRAP, SAT_SYM or SAT_ZERO")
    quantize.add_argument("--seed", type=int, default=0, help="seed of the generator used by STOCH")
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


if __name__ == "__main__":
    sys.exit(main())
