"""Command-line interface: ``fixprop <command>``."""

from __future__ import annotations

import argparse
import sys

import fixprop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fixprop", description=fixprop.__doc__)
    parser.add_argument("--version", action="version", version=f"fixprop {fixprop.__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
