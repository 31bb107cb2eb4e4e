"""Bundles that are tampered with, truncated or missing: every BundleError names the file or
tensor (and the key) and what is wrong, and the RTL runners refuse such bundles with one line
and exit status 2 before any simulation (no iverilog needed to refuse)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixprop import MLP, Datapath
from fixprop.hardware import BundleError, export, load
from fixprop.nn import LayerParams

RTL = Path(__file__).resolve().parents[1] / "examples" / "rtl"


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A one-layer bundle the example RTL is built for (s16.8, RND_CONV, SAT, full acc), 2 steps."""
    dp = Datapath.load(RTL / "datapath_rnd_conv.toml")
    net = MLP([3, 4], activation="relu", loss="sse")
    rng = np.random.default_rng(0)
    params = [LayerParams(rng.integers(-64, 64, (4, 3)) / 16, rng.integers(-256, 256, 4) / 256)]
    x, y = rng.integers(-64, 64, (4, 3)) / 32, rng.uniform(-1, 1, (4, 4))
    return export(net, dp, x, y, 2, tmp_path / "bundle", params=params)


def edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def entry(manifest: dict, name: str) -> dict:
    return next(t for t in manifest["tensors"] if t["name"] == name)


def rewrite_mem(path: Path, name: str, change) -> None:
    """Change a tensor's .mem text and store its new sha256 in the manifest (a consistent edit)."""
    import hashlib

    mem = path / (name.replace("/", "_") + ".mem")
    text = change(mem.read_text())
    mem.write_text(text)
    edit_manifest(path, lambda m: entry(m, name).update(sha256=hashlib.sha256(text.encode()).hexdigest()))


def set_header(text: str, old: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[1] = lines[1].replace(old, new)
    return "".join(lines)


# Each tampering, and what the error must say (a regular expression): the file or tensor, the
# key, and the problem.
TAMPERINGS = [
    ("word as a string", lambda p: edit_manifest(p, lambda m: entry(m, "step0/layer0/acc").update(word="24")),
     r"tensor step0/layer0/acc: word must be int; got '24'"),
    ("frac as a float", lambda p: edit_manifest(p, lambda m: entry(m, "step1/layer0/pre").update(frac=8.0)),
     r"tensor step1/layer0/pre: frac must be int; got 8\.0"),
    ("signed as a number", lambda p: edit_manifest(p, lambda m: entry(m, "step0/layer0/bias").update(signed=1)),
     r"tensor step0/layer0/bias: signed must be bool; got 1"),
    ("word zero", lambda p: edit_manifest(p, lambda m: entry(m, "step0/layer0/act").update(word=0)),
     r"tensor step0/layer0/act: QFormat word must be >= 1"),
    ("sha256 missing", lambda p: edit_manifest(p, lambda m: entry(m, "step0/layer0/input").pop("sha256")),
     r"tensor step0/layer0/input has no key 'sha256'"),
    ("files.mem missing", lambda p: edit_manifest(p, lambda m: entry(m, "step1/layer0/act")["files"].pop("mem")),
     r"tensor step1/layer0/act files has no key 'mem'"),
    ("shape with a string", lambda p: edit_manifest(p, lambda m: entry(m, "step0/layer0/weight").update(
        shape=[4, "3"])), r"tensor step0/layer0/weight: shape must be a list of integers >= 0"),
    ("name missing", lambda p: edit_manifest(p, lambda m: m["tensors"][7].pop("name")),
     r"tensor #7 has no key 'name'"),
    ("tensors not a list", lambda p: edit_manifest(p, lambda m: m.update(tensors={})),
     r"manifest.json: tensors must be list; got \{\}"),
    ("datapath missing", lambda p: edit_manifest(p, lambda m: m.pop("datapath")),
     r"manifest.json has no key 'datapath'"),
    ("steps as a string", lambda p: edit_manifest(p, lambda m: m["network"].update(steps="2")),
     r"manifest.json network: steps must be int; got '2'"),
    ("a .mem outside the bundle", lambda p: edit_manifest(
        p, lambda m: entry(m, "step0/layer0/acc")["files"].update(mem="../elsewhere.mem")),
     r"the \.mem file of step0/layer0/acc must be a file name inside the bundle; got '\.\./elsewhere\.mem'"),
    ("a non-UTF-8 .mem", lambda p: p.joinpath("step0_layer0_pre.mem").write_bytes(
        p.joinpath("step0_layer0_pre.mem").read_bytes().replace(b"//", b"\xff\xfe", 1)),
     r"step0_layer0_pre\.mem: the \.mem file of step0/layer0/pre is not UTF-8 text \(byte 0xff at offset 0\)"),
    ("a non-UTF-8 manifest", lambda p: p.joinpath("manifest.json").write_bytes(
        p.joinpath("manifest.json").read_text().encode("utf-16")),
     r"manifest\.json: the manifest is not UTF-8 text"),
    ("a .mem header changed", lambda p: p.joinpath("step0_layer0_act.mem").write_text(set_header(
        p.joinpath("step0_layer0_act.mem").read_text(), "s16.8", "s16.7")),
     r"tensor step0/layer0/act: step0_layer0_act\.mem does not match its sha256"),
    ("a .mem header changed, hash too", lambda p: rewrite_mem(
        p, "step1/layer0/act", lambda t: set_header(t, "s16.8", "s16.7")),
     r"tensor step1/layer0/act: the manifest says \[2, 4\] s16\.8, the \.mem header \[2, 4\] s16\.7"),
    ("a .mem header removed, hash too", lambda p: rewrite_mem(
        p, "step1/layer0/bias", lambda t: "".join(t.splitlines(keepends=True)[2:])),
     r"tensor step1/layer0/bias: a \.mem file of a bundle starts with"),
    ("a non-hex word, hash too", lambda p: rewrite_mem(p, "step0/layer0/local", lambda t: t.replace("\n0", "\nz", 1)),
     r"tensor step0/layer0/local: 'z[0-9a-f]{3}' is not a hexadecimal word"),
    ("a .mem missing", lambda p: p.joinpath("step1_layer0_weight_grad.mem").unlink(),
     r"file missing: step1_layer0_weight_grad\.mem \(the \.mem file of step1/layer0/weight_grad\)"),
    ("an npz array missing", lambda p: np.savez(p / "tensors.npz", **{
        k: v for k, v in np.load(p / "tensors.npz").items() if k != "step1_layer0_input"}),
     r"tensor step1/layer0/input: tensors\.npz has no array 'step1_layer0_input'"),
    ("npz not a zip file", lambda p: p.joinpath("tensors.npz").write_bytes(b"PK\x03\x04 not a zip"),
     r"tensors\.npz is not a readable \.npz file"),
    ("npz truncated", lambda p: p.joinpath("tensors.npz").write_bytes(p.joinpath("tensors.npz").read_bytes()[:3000]),
     r"tensors\.npz is not a readable \.npz file"),
    ("manifest truncated", lambda p: p.joinpath("manifest.json").write_text(
        p.joinpath("manifest.json").read_text()[:300]), r"manifest\.json is not valid JSON"),
    ("manifest deleted", lambda p: p.joinpath("manifest.json").unlink(), r"is not a bundle: no manifest\.json"),
]


@pytest.mark.parametrize("tamper,message", [t[1:] for t in TAMPERINGS], ids=[t[0] for t in TAMPERINGS])
def test_every_bundle_error_names_the_file_or_tensor(bundle, tamper, message):
    load(bundle)  # the untouched bundle loads
    tamper(bundle)
    with pytest.raises(BundleError, match=message) as caught:
        load(bundle)
    text = str(caught.value)
    assert "\n" not in text and str(bundle) in text and "Traceback" not in text


def test_missing_and_wrong_kinds_of_path(tmp_path):
    with pytest.raises(BundleError, match=rf"{tmp_path / 'nowhere'} does not exist"):
        load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is not a bundle: a bundle is a directory"):
        load(tmp_path / "file")


# -- the runners ------------------------------------------------------------------------------------

def load_module(name: str):
    sys.path.insert(0, str(RTL))
    try:
        spec = importlib.util.spec_from_file_location(name, RTL / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(RTL))
    return module


RUNNER_REFUSALS = [
    ("a .mem header changed", lambda p: p.joinpath("step0_layer0_act.mem").write_text(set_header(
        p.joinpath("step0_layer0_act.mem").read_text(), "s16.8", "s16.7")),
     r"tensor step0/layer0/act: step0_layer0_act\.mem does not match its sha256"),
    ("a .mem header changed, hash too", lambda p: rewrite_mem(
        p, "step1/layer0/act", lambda t: set_header(t, "s16.8", "s16.7")), r"the \.mem header \[2, 4\] s16\.7"),
    ("a .mem missing", lambda p: p.joinpath("step0_layer0_acc.mem").unlink(),
     r"file missing: step0_layer0_acc\.mem"),
    ("manifest truncated", lambda p: p.joinpath("manifest.json").write_text(
        p.joinpath("manifest.json").read_text()[:300]), r"manifest\.json is not valid JSON"),
    ("the bundle path missing", lambda p: p.rename(p.with_name("moved")), r"bundle does not exist"),
    ("no network section", lambda p: edit_manifest(p, lambda m: m.update(network={})),
     r"network section needs steps"),
    ("a datapath the RTL does not build", lambda p: export(
        MLP([3, 4]), Datapath.uniform(16, 10), np.zeros((1, 3)), np.zeros((1, 4)), 1, p, overwrite=True),
     r"the example RTL is built for every role s16\.8"),
]


@pytest.mark.parametrize("tamper,message", [t[1:] for t in RUNNER_REFUSALS], ids=[t[0] for t in RUNNER_REFUSALS])
def test_readmemh_runner_refuses_bad_bundles_before_simulating(bundle, tamper, message, monkeypatch, capsys):
    """run_readmemh.py: one line 'run_readmemh.py: error: ...', exit 2, and no simulation: iverilog
    is made absent, so reaching the simulator would give another message."""
    runner = load_module("run_readmemh")
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["run_readmemh.py", str(bundle)])
    assert runner.main() == 2  # the untouched bundle gets as far as the simulator
    assert capsys.readouterr().err == "run_readmemh.py: error: iverilog is not installed (Debian/Ubuntu: " \
                                      "apt-get install iverilog)\n"
    tamper(bundle)
    assert runner.main() == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_readmemh.py: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert captured.out == ""


def test_cocotb_runner_loads_the_bundle_first(bundle):
    """run_cocotb.run checks the bundle before it imports cocotb or builds anything."""
    runner = load_module("run_cocotb")
    (bundle / "step1_layer0_pre.mem").unlink()
    with pytest.raises(BundleError, match=r"file missing: step1_layer0_pre\.mem"):
        runner.run(bundle, "RND_CONV")


def test_readmemh_runner_command_line_has_no_traceback(tmp_path):
    """The script itself, run as a user runs it, on a path that does not exist."""
    done = subprocess.run([sys.executable, str(RTL / "run_readmemh.py"), str(tmp_path / "missing")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"run_readmemh.py: error: {tmp_path / 'missing'} does not exist\n"


@pytest.mark.parametrize("existing", ["bundle", "other"])
def test_export_refuses_its_output_before_running_the_steps(bundle, tmp_path, monkeypatch, existing):
    """An existing directory without overwrite, or a directory that is not a bundle, is refused
    before any step runs (it used to be refused after the whole run)."""
    import fixprop.hardware as hardware

    def no_steps(*args, **kwargs):
        raise AssertionError("the steps ran before the output was checked")

    monkeypatch.setattr(hardware, "training_tensors", no_steps)
    out = bundle if existing == "bundle" else tmp_path / "notes"
    out.mkdir(exist_ok=True)
    net = MLP([3, 4])
    with pytest.raises(BundleError, match="exists"):
        hardware.export(net, Datapath.uniform(16, 8), np.zeros((1, 3)), np.zeros((1, 4)), 1, out,
                        overwrite=existing == "other")
