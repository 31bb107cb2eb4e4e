"""Test-vector bundles: round trips, the file encodings, tamper detection, atomic writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fixprop import Datapath, FixedArray, MLP, QFormat
from fixprop.datapath import FixedConstant
from fixprop.cli import main
from fixprop.hardware import STAGES, BundleError, export, load, training_tensors
from fixprop.hardware import bundle as bundle_module


def read_mem(path) -> list[int]:
    """An independent reader: hex words after the // comments, sign-extended by the header's word."""
    lines = path.read_text().splitlines()
    word = int(lines[1].split("(word ")[1].split(",")[0])
    signed = "unsigned" not in lines[1]
    values = []
    for line in lines[2:]:
        v = int(line, 16)
        values.append(v - (1 << word) if signed and v >= 1 << (word - 1) else v)
    return values


@pytest.fixture
def bundle(tmp_path):
    net = MLP([3, 4, 2], seed=1)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1, 1, (6, 3)), rng.uniform(-1, 1, (6, 2))
    dp = Datapath.seed(13, 6)  # 13-bit words: odd hex widths and negative values
    return net, dp, x, y, export(net, dp, x, y, 3, tmp_path / "bundle")


def test_round_trip_is_bit_identical_for_every_file_kind(bundle):
    net, dp, x, y, path = bundle
    expected = dict(training_tensors(net, dp, x, y, 3))
    loaded = load(path)
    per_step = 2 * (len(STAGES) - 2) + 1  # no momentum: no velocity stages; one target per step
    assert set(loaded.tensors) == set(expected) and len(expected) == 3 * per_step
    manifest = json.loads((path / "manifest.json").read_text())
    npz = np.load(path / "tensors.npz")
    for entry in manifest["tensors"]:
        want = expected[entry["name"]]
        assert loaded[entry["name"]].identical(want)
        assert (entry["word"], entry["frac"], entry["signed"]) == (want.fmt.word, want.fmt.frac, want.fmt.signed)
        assert read_mem(path / entry["files"]["mem"]) == want.raw.reshape(-1).tolist()
        coe = (path / entry["files"]["coe"]).read_text()
        assert coe.startswith("memory_initialization_radix=16;\nmemory_initialization_vector=\n")
        assert npz[entry["files"]["npz"].split(":")[1]].tolist() == want.raw.tolist()
    assert Datapath.load(path / "datapath.toml") == dp


def test_steps_chain(bundle):
    net, dp, x, y, path = bundle
    b = load(path)
    for t in range(2):
        for layer in range(2):
            assert b[f"step{t}/layer{layer}/weight_updated"].identical(b[f"step{t + 1}/layer{layer}/weight"])
    assert b["step0/layer1/input"].identical(b["step0/layer0/act"])


def test_mem_words_of_negative_values_at_an_odd_width(tmp_path):
    x = FixedArray([-1, -4096, 4095, 0, -2], QFormat(13, 0))
    text = bundle_module.mem_text("t", x.raw, x.fmt)
    assert bundle_module.parse_mem(text) == ["1fff", "1000", "0fff", "0000", "1ffe"]  # 13 bits: 4 hex digits
    assert bundle_module.from_hex_words(["1fff", "1000", "0fff", "0000", "1ffe"], x.fmt) == [-1, -4096, 4095, 0, -2]
    wide = FixedArray([-(2**69), 2**69 - 1], QFormat(70, 0))
    assert bundle_module.to_hex_words(wide.raw, wide.fmt) == ["200000000000000000", "1fffffffffffffffff"]


@pytest.mark.parametrize("tamper,message", [
    (lambda p: p.joinpath("step1_layer0_pre.mem").write_text(
        p.joinpath("step1_layer0_pre.mem").read_text().replace("\n0", "\n1", 1)), "does not match its sha256"),
    (lambda p: p.joinpath("step0_layer1_weight.coe").write_text(
        p.joinpath("step0_layer1_weight.coe").read_text().replace(",", ";", 1)), "differs from the .mem"),
    (lambda p: p.joinpath("step2_layer0_bias.mem").unlink(), "file missing"),
    (lambda p: p.joinpath("datapath.toml").write_text("relu_grad_at_zero = 1.0\n"), "differs from the manifest"),
    (lambda p: p.joinpath("manifest.json").unlink(), "no manifest.json"),
])
def test_tampering_is_detected(bundle, tamper, message):
    path = bundle[-1]
    tamper(path)
    with pytest.raises(BundleError, match=message):
        load(path)


def test_a_changed_npz_value_is_detected(bundle):
    path = bundle[-1]
    arrays = dict(np.load(path / "tensors.npz"))
    arrays["step0_layer0_act"] = arrays["step0_layer0_act"] + 1
    np.savez(path / "tensors.npz", **arrays)
    with pytest.raises(BundleError, match="tensors.npz differs"):
        load(path)


def test_writing_is_atomic(tmp_path, monkeypatch):
    net, dp = MLP([2, 2]), Datapath.seed(16, 8)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module.np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        export(net, dp, np.zeros((1, 2)), np.zeros((1, 2)), 1, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its staging directory


def test_existing_bundles_are_kept_unless_replaced(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "b"), "--steps", "2", "--batch", "3", "--word", "16",
                 "--frac", "8"]) == 0
    assert "wrote 92 tensors of 2 step(s)" in capsys.readouterr().out  # 2 x (3 layers x 15 stages + target)
    assert main(["export", "--out", str(tmp_path / "b")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "b"), "--force", "--shape", "3,5"]) == 0
    assert load(tmp_path / "b").manifest["network"]["layer_sizes"] == [3, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["tensors"][3].update(frac=4), "the manifest says"),
    (lambda m: m["tensors"][3].update(signed=False), "the manifest says"),
    (lambda m: m["tensors"][3].update(word=20), "the manifest says"),
    (lambda m: m["tensors"].pop(5), "lists no tensor"),
    (lambda m: m.update(bundle_format=99), "not a fixprop bundle of format 2"),
    (lambda m: m.pop("datapath_file"), "manifest.json has no key 'datapath_file'"),
    (lambda m: m["network"].update(steps=4), "lists no tensor step3"),
])
def test_manifest_edits_are_detected(bundle, edit, message):
    path = bundle[-1]
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load(path)


def test_malformed_bundles_raise_bundle_errors(bundle, tmp_path):
    path = bundle[-1]
    (path / "datapath.toml").unlink()
    with pytest.raises(BundleError):
        load(path)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "manifest.json").write_text("[]")
    with pytest.raises(BundleError, match="not a fixprop bundle"):
        load(tmp_path / "list")


def test_force_replaces_only_bundles_and_bundles_are_readable(tmp_path):
    import os
    import stat

    user_dir = tmp_path / "notes"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    assert main(["export", "--out", str(user_dir), "--force"]) == 2
    assert (user_dir / "notes.txt").read_text() == "keep me"
    assert main(["export", "--out", str(tmp_path / "b")]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) & 0o055 == 0o055  # group and others can read


@pytest.mark.parametrize("momentum", [False, True])
def test_targets_updates_and_velocities_equal_the_int_oracle(tmp_path, momentum):
    """The tensors a C simulation needs besides the stages (format 2): each step's quantized
    targets, u = cast_update(lr * step) and, with momentum, v = cast_momentum(mu v + g), equal the
    independent Python-int network's (tests/int_mlp_oracle.py) over 3 steps."""
    from int_mlp_oracle import Val, train_step

    net = MLP([3, 4, 2], seed=1)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-1, 1, (6, 3)), rng.uniform(-1, 1, (6, 2))
    dp = Datapath.seed(13, 6)
    if momentum:
        dp = dataclasses.replace(dp, momentum=FixedConstant(0.75, QFormat(4, 4, False)))
    path = export(net, dp, x, y, 3, tmp_path / "bundle")
    b = load(path)
    assert (dp.momentum is not None) == momentum
    params = net.init_params()
    weights = [p.weight.tolist() for p in params]
    biases = [p.bias.tolist() for p in params]
    velocity = None
    if momentum:
        velocity = [([[Val(0, 0)] * 3 for _ in range(4)], [Val(0, 0)] * 4), ([[Val(0, 0)] * 4 for _ in range(2)], [Val(0, 0)] * 2)]
    for t in range(3):
        want = train_step(dp, ["relu", "relu"], "sse", weights, biases, x[2 * t:2 * t + 2].tolist(),
                          y[2 * t:2 * t + 2].tolist(), velocity)
        got_target = b[f"step{t}/target"]
        assert got_target.raw.tolist() == [[v.at(got_target.fmt.frac) for v in row] for row in want["targets"]]
        for layer in range(2):
            for kind, index in (("weight", 0), ("bias", 1)):
                got = b[f"step{t}/layer{layer}/{kind}_update"]
                assert got.raw.reshape(-1).tolist() == [v.at(got.fmt.frac) for v in want["updates"][layer][index]]
                if momentum:
                    got_v = b[f"step{t}/layer{layer}/{kind}_velocity"]
                    flat = want["velocity"][layer][index]
                    flat = [v for row in flat for v in row] if kind == "weight" else flat
                    assert got_v.raw.reshape(-1).tolist() == [v.at(got_v.fmt.frac) for v in flat]
                elif f"step{t}/layer{layer}/{kind}_velocity" in b.tensors:
                    raise AssertionError("velocity tensors without momentum")
        weights, biases, velocity = want["weights"], want["biases"], want["velocity"] if momentum else None
