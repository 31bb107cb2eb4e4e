"""Bad input on the command line, table-driven: every row exits with status 2 and one clear line
(`fixprop <cmd>: error: ...` naming what was wrong), no traceback, and no file or directory left
behind in the working directory. Runs `fixprop.cli.main` in this process; every row fails before
any work, so the whole table takes seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fixprop import Datapath
from fixprop.cli import main
from fixprop.datapath import RoleCast

BASE_TOML = Datapath.uniform(16, 8).to_toml()
LR_SHIFT_LINE = next(line for line in BASE_TOML.splitlines() if line.startswith("lr_shift"))
WITHOUT_LR = BASE_TOML.replace(LR_SHIFT_LINE + "\n", "")

#: Files in the working directory before each row: name -> bytes (a directory for None).
FIXTURES: dict[str, bytes | None] = {
    "afile": b"not a directory\n",
    "adir": None,
    "latin1.toml": ("# caf\u00e9: written by a Latin-1 editor\n" + BASE_TOML).encode("latin-1"),
    "utf16.toml": BASE_TOML.encode("utf-16"),
    "lr_big.toml": (WITHOUT_LR + '\n[lr]\nvalue = 1000.0\nformat = "u8.4"\n').encode(),
    "lr_negative.toml": (WITHOUT_LR + '\n[lr]\nvalue = -0.01\nformat = "s8.8"\n').encode(),
    "shift_negative.toml": BASE_TOML.replace(LR_SHIFT_LINE, "lr_shift = -3").encode(),
    "momentum_big.toml": (BASE_TOML + '\n[momentum]\nvalue = 5.0\nformat = "u10.10"\n').encode(),
    "momentum_range.toml": (BASE_TOML + '\n[momentum]\nvalue = 5.0\nformat = "u8.4"\n').encode(),
    "layer5.toml": replace(Datapath.uniform(16, 8), layers={5: {"weight": RoleCast.of("s16.10")}}).to_toml().encode(),
}

#: Options that keep a row's run short if a check were ever missing (each row must fail before work).
BOUNDED = {"train": ["--epochs", "1", "--hidden", "2", "--quiet"], "verify": ["--repeats", "1"],
           "sweep": ["--workers", "1", "--quiet"], "ranges": ["--quiet"]}

UTF8 = "must be UTF-8"
ENCODINGS = [("latin1.toml", UTF8), ("utf16.toml", "UTF-16")]
DATAPATH_COMMANDS = [["verify"], ["train"], ["export", "--out", "bundle"], ["ranges"]]

#: (argv, a phrase the error line must hold): errors raised by fixprop (one line on stderr).
ERRORS = [
    # datapath files that are not UTF-8, in every command that reads one
    *[(cmd + ["--datapath", name], phrase) for name, phrase in ENCODINGS for cmd in DATAPATH_COMMANDS],
    *[(["sweep", "--templates", name], phrase) for name, phrase in ENCODINGS],
    # learning-rate and momentum constants out of their format or range
    (["verify", "--datapath", "lr_big.toml"], "1000.0 does not fit its format u8.4"),
    (["verify", "--datapath", "lr_negative.toml"], "lr must be > 0"),
    (["verify", "--datapath", "shift_negative.toml"], "lr_shift must be an int >= 0"),
    (["verify", "--datapath", "momentum_big.toml"], "5.0 does not fit its format u10.10"),
    (["verify", "--datapath", "momentum_range.toml"], "momentum must be in [0, 1)"),
    (["train", "--datapath", "momentum_range.toml"], "momentum must be in [0, 1)"),
    (["sweep", "--templates", "lr_big.toml"], "does not fit its format u8.4"),
    # formats
    (["quantize", "0.1", "--format", "s99999999999999999999.0"], "--format s99999999999999999999.0: QFormat word"),
    (["quantize", "0.1", "--format", "q15"], "--format q15: cannot parse format 'q15'"),
    # export's output directory
    (["export", "--out", "/proc/fixprop-x"], "--out /proc/fixprop-x: cannot create files in /proc"),
    (["export", "--out", "afile/sub"], "afile is a file, not a directory"),
    (["export", "--out", "afile"], "--out afile is a file, not a directory"),
    (["export", "--out", "missing/bundle"], "the directory missing does not exist"),
    (["export", "--out", "bundle", "--lfsr-bits", "8"], "--lfsr-bits needs --lfsr-seed"),
    (["export", "--out", "bundle", "--lfsr-seed", "5"], "no role of this datapath rounds STOCH"),
    # ranges' output files, all checked before the run (prop.toml must not appear)
    (["ranges", "--propose", "16", "--out", "/proc/x.toml"], "--out /proc/x.toml: cannot create files in /proc"),
    (["ranges", "--propose", "16", "--out", "adir"], "--out adir is a directory"),
    (["ranges", "--propose", "16", "--out", "prop.toml", "--plot", "/proc/r.png"], "--plot /proc/r.png"),
    (["ranges", "--propose", "16", "--out", "prop.toml", "--plot", "r.txt"], "ending in .png, .pdf, .svg"),
    (["ranges", "--seeds", "7-0"], "--seeds 7-0: the range runs backwards; write 0-7"),
    # train's plot file
    (["train", "--plot", "/proc/x.png"], "--plot /proc/x.png: cannot create files in /proc"),
    (["train", "--plot", "curves.txt"], "--plot curves.txt: give a file name ending in .png"),
    (["train", "--plot", "curves"], "--plot curves: give a file name ending in .png"),
    (["train", "--plot", "adir"], "--plot adir is a directory"),
    (["train", "--plot", "missing/c.png"], "the directory missing does not exist"),
    # sweep: ranges, output directory, networks and templates checked before the run
    (["sweep", "--fracs", "12-4"], "--fracs 12-4: the range runs backwards; write 4-12"),
    (["sweep", "--seeds", "12-4"], "--seeds 12-4: the range runs backwards; write 4-12"),
    (["sweep", "--out", "afile"], "--out afile is a file, not a directory"),
    (["sweep", "--out", "/proc/fixprop-s"], "cannot create files in /proc"),
    (["sweep", "--out", "missing/s"], "the directory missing does not exist"),
    (["sweep", "--verify-shape", "3"], "--verify-shape needs at least 2 layer sizes"),
    (["sweep", "--templates", "layer5.toml"], "overrides layer(s) [5] but the network has 3 layer(s)"),
    (["sweep", "--templates", "layer5.toml", "--measure", "train"], "overrides layer(s) [5]"),
    (["sweep", "--measure", "train", "--activation", "nope"], "unknown activation 'nope'"),
    (["sweep", "--dask", "nowhere"], "--dask nowhere: cannot reach a Dask scheduler"),
    # networks
    (["verify", "--shape", "3"], "--shape needs at least 2 layer sizes"),
]

#: (argv, a phrase of the last line): errors of the argument parser, which names the option.
PARSER_ERRORS = [
    (["sweep", "--workers", "0"], "argument --workers: expected an integer >= 1; got 0"),
    (["train", "--dataset", "nope"], "argument --dataset: invalid choice: 'nope'"),
    (["ranges", "--propose", "1"], "argument --propose"),
    (["verify", "--word", "x"], "argument --word: invalid int value: 'x'"),
    (["export"], "the following arguments are required: --out"),
    (["sweep", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["quantize"], "the following arguments are required: values"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    for name, content in FIXTURES.items():
        if content is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(argv: list[str]) -> int:
    """main(argv)'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def bounded(argv: list[str]) -> list[str]:
    return argv + BOUNDED.get(argv[0], [])


@pytest.mark.parametrize("argv,phrase", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(argv, phrase, workdir, capsys):
    before = listing(workdir)
    assert run_cli(bounded(argv)) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fixprop {argv[0]}: error: ") and phrase in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert listing(workdir) == before


@pytest.mark.parametrize("argv,phrase", PARSER_ERRORS, ids=[" ".join(a) for a, _ in PARSER_ERRORS])
def test_parser_errors_end_with_the_error_naming_the_option(argv, phrase, workdir, capsys):
    before = listing(workdir)
    assert run_cli(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    command = "fixprop" if argv[0] == "nope" else f"fixprop {argv[0]}"
    assert lines[-1].startswith(f"{command}: error: ") and phrase in lines[-1], err
    assert len(lines) <= 2 and "Traceback" not in err and out == ""
    assert listing(workdir) == before
