"""The command line's behaviour around its edges: Ctrl-C, output files checked and named as
written, --json on export, --lfsr-bits only with --lfsr-seed, the proposed formats passed to the
ranges plot, a UTF-8 BOM in a datapath file. (Bad input: tests/test_bad_input_cli.py; sweep's
Ctrl-C and outputs: tests/test_sweep_reliability.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixprop import Datapath
from fixprop.cli import main
from fixprop.hardware import load

VERIFY_QUICK = ["--repeats", "1"]


def test_ctrl_c_in_a_command_is_status_130_and_one_line(monkeypatch, capsys):
    """A KeyboardInterrupt inside a command (here: during training) ends it with status 130 and the
    line "fixprop train: interrupted (Ctrl-C)", no traceback."""
    import fixprop.explore.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fixprop.explore.train, "train", interrupted)
    assert main(["train", "--epochs", "1", "--quiet"]) == 130
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == ["fixprop train: interrupted (Ctrl-C)"] and out == ""


@pytest.mark.parametrize("name,magic", [("curves.pdf", b"%PDF"), ("curves.svg", b"<?xml"), ("Curves.PNG", b"\x89PNG")])
def test_train_plot_writes_the_file_it_names(name, magic, tmp_path, monkeypatch, capsys):
    """--plot writes exactly the file named (a type matplotlib writes by its extension) and says so."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", "--hidden", "2", "--quiet", "--plot", name]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert f"wrote {name}" in capsys.readouterr().err.splitlines()


def test_export_json_and_default_lfsr_bits(tmp_path, capsys):
    """export --json prints one object: the bundle's path, steps and tensor count (those of its
    manifest). --lfsr-seed alone draws 16 bits per rounding (the documented default): the same
    bundle as --lfsr-bits 16."""
    common = ["export", "--steps", "2", "--preset", "uniform", "--word", "12", "--frac", "8", "--rounding", "STOCH",
              "--lfsr-seed", "5"]
    assert main(common + ["--out", str(tmp_path / "a"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert doc == {"path": str(tmp_path / "a"), "steps": 2, "tensors": len(manifest["tensors"])}
    assert doc["tensors"] > 0
    assert main(common + ["--out", str(tmp_path / "b"), "--lfsr-bits", "16", "--json"]) == 0
    assert main(common + ["--out", str(tmp_path / "c"), "--lfsr-bits", "3", "--json"]) == 0
    capsys.readouterr()
    a, b, c = (load(tmp_path / name) for name in "abc")
    hashes = [[t["sha256"] for t in bundle.manifest["tensors"]] for bundle in (a, b, c)]
    assert hashes[0] == hashes[1] and hashes[0] != hashes[2]


def test_ranges_plot_shows_the_proposed_formats(tmp_path, monkeypatch, capsys):
    """With --propose, ranges.png is drawn with the proposal rows (those of --json) as well as
    the observed statistics; without it, with none."""
    from fixprop.explore import plots

    calls = []

    def record(stats, path, proposed=None):
        calls.append(proposed)
        Path(path).write_bytes(b"")
        return Path(path)

    monkeypatch.setattr(plots, "require", lambda: None)
    monkeypatch.setattr(plots, "plot_ranges", record)
    plot = str(tmp_path / "r.png")
    assert main(["ranges", "--propose", "16", "--plot", plot, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["proposed"]["rows"]
    assert calls == [rows] and any(row["role"] == "weight" for row in rows)
    assert main(["ranges", "--plot", plot, "--json"]) == 0
    assert calls[-1] is None


def test_a_utf8_bom_datapath_file_is_read_as_without_it(tmp_path, capsys):
    """Some editors start UTF-8 files with a byte-order mark: verify and sweep read such a file as
    the same datapath (the same gradient error)."""
    text = Datapath.uniform(12, 6).to_toml()
    plain, bom = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_text(text)
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    errors = []
    for path in (plain, bom):
        assert main(["verify", "--datapath", str(path), "--json"] + VERIFY_QUICK) == 0
        errors.append(json.loads(capsys.readouterr().out)["fixed"]["mean_relative_error"])
    assert errors[0] == errors[1] > 0
    assert main(["sweep", "--templates", str(bom), "--words", "12", "--seeds", "0", "--workers", "1",
                 "--out", str(tmp_path / "s"), "--no-plot", "--quiet"]) == 0
    capsys.readouterr()


def test_the_console_command_reports_bad_output_paths_in_one_line(tmp_path):
    """As a real process: `export --out afile/sub` (afile a file) is status 2 and one line."""
    (tmp_path / "afile").write_text("x")
    done = subprocess.run([sys.executable, "-m", "fixprop.cli", "export", "--out", "afile/sub"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["fixprop export: error: --out afile/sub: afile is a file, not a directory"]
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]
