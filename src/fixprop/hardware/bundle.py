"""Test-vector bundles: every stage's integers of N training steps, for an RTL testbench.

A bundle is a directory:

- ``manifest.json``: the network, the datapath, and one entry per tensor (name, shape, format,
  files, sha256);
- one ``.mem`` file per tensor for ``$readmemh``: a ``//`` header (name, shape, format), then one
  value per line, row-major, two's complement at the tensor's word width, ``ceil(word/4)`` hex
  digits;
- one ``.coe`` file per tensor (Xilinx, radix 16, the same hex words);
- ``tensors.npz``: every tensor's raw integers (int64; hex strings for words above 64 bits);
- ``datapath.toml``.

Tensor names are ``step{t}/layer{i}/{stage}`` with stages ``input weight bias product acc pre act
error local weight_grad bias_grad [weight_velocity bias_velocity] weight_update bias_update
weight_updated bias_updated`` (docs/hardware.md), ``step{t}/target`` (the step's targets in the
target role), and ``step{t}/lfsr_state`` (the LFSR lanes at the start of step t) when the random
source is an ``LfsrSource``. A bundle is
written into a temporary directory and renamed into place, so a failure leaves no half-written
bundle; :func:`load` checks every file against the manifest's hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import fixprop
from fixprop.datapath import Datapath
from fixprop.errors import FixpropError
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat
from fixprop.hardware.lfsr import LfsrSource
from fixprop.nn.arithmetic import FixedArithmetic
from fixprop.nn.dynamic import DynamicFractions
from fixprop.nn.mlp import MLP, LayerParams

#: The stages exported per step and layer, in the order the hardware computes them (a datapath
#: with working copies, register accumulators or momentum changes the list a little:
#: :func:`layer_stages`). ``*_velocity`` is the momentum role's cast (only with momentum),
#: ``*_update`` the update role's ``u = cast(lr * step)``.
STAGES = ("input", "weight", "bias", "product", "acc", "pre", "act", "error", "local",
          "weight_grad", "bias_grad", "weight_velocity", "bias_velocity", "weight_update", "bias_update",
          "weight_updated", "bias_updated")


def layer_stages(datapath: Datapath, layer: int) -> tuple[str, ...]:
    """The stages a bundle holds for ``layer`` under ``datapath``: :data:`STAGES`, with the
    working copies ``weight_fwd`` / ``bias_fwd`` after ``bias`` when the datapath has them at
    that layer, and without ``product`` when the layer's acc is a register or adder tree
    (``accumulate`` sequential or tree: no exact sum exists; ``acc`` holds the result), and with
    ``weight_velocity`` / ``bias_velocity`` only when the datapath has momentum."""
    stages = []
    for stage in STAGES:
        if stage == "product" and datapath.cast_for("acc", layer).accumulate != "exact":
            continue
        if stage.endswith("_velocity") and datapath.momentum is None:
            continue
        stages.append(stage)
        if stage == "bias":
            stages += [f"{role}_fwd" for role in ("weight", "bias")
                       if datapath.optional_cast(f"{role}_fwd", layer) is not None]
    return tuple(stages)
MANIFEST = "manifest.json"
NPZ = "tensors.npz"
#: 2: adds step{t}/target, the update and velocity stages, and the manifest's "lfsr" table.
FORMAT_VERSION = 2


class BundleError(FixpropError, ValueError):
    """A test-vector bundle is missing, tampered with, or inconsistent."""


# -- encodings -----------------------------------------------------------------------------
def hex_digits(word: int) -> int:
    """Hex digits of one value of a ``word``-bit tensor: ceil(word / 4)."""
    return -(-word // 4)


def to_hex_words(raw: np.ndarray, fmt: QFormat) -> list[str]:
    """Row-major two's-complement hex words (``ceil(word/4)`` digits, lower case) of raw integers."""
    mask, digits = (1 << fmt.word) - 1, hex_digits(fmt.word)
    return [format(int(v) & mask, f"0{digits}x") for v in np.asarray(raw).reshape(-1)]


def from_hex_words(words: Sequence[str], fmt: QFormat) -> list[int]:
    """Raw integers from two's-complement hex words (the inverse of :func:`to_hex_words`)."""
    out = []
    for word in words:
        try:
            value = int(word, 16)
        except ValueError:
            raise BundleError(f"{word!r} is not a hexadecimal word") from None
        if value >> fmt.word:
            raise BundleError(f"hex word {word!r} has more than {fmt.word} bits")
        if fmt.signed and value >> (fmt.word - 1):
            value -= 1 << fmt.word
        out.append(value)
    return out


def mem_text(name: str, raw: np.ndarray, fmt: QFormat) -> str:
    """A ``$readmemh`` file: header comments, then one hex word per line, row-major."""
    encoding = "two's complement hex" if fmt.signed else "unsigned hex"
    header = [f"// {name}", f"// shape {list(np.shape(raw))} format {fmt} (word {fmt.word}, frac {fmt.frac}, "
              f"{'signed' if fmt.signed else 'unsigned'}), row-major, {encoding}"]
    return "\n".join(header + to_hex_words(raw, fmt)) + "\n"


_MEM_HEADER = re.compile(r"^// shape (\[[0-9, ]*\]) format ([su]\d+\.-?\d+) ")


def mem_header(text: str) -> tuple[list[int], QFormat]:
    """The shape and format a ``.mem`` file's header states."""
    lines = text.splitlines()
    match = _MEM_HEADER.match(lines[1]) if len(lines) > 1 else None
    if match is None:
        raise BundleError("a .mem file of a bundle starts with '// <name>' and '// shape [...] format sW.F ...'")
    return json.loads(match.group(1)), QFormat.parse(match.group(2))


def parse_mem(text: str) -> list[str]:
    """The hex words of a ``.mem`` file (comments and blank lines skipped)."""
    words = []
    for line in text.splitlines():
        line = line.split("//", 1)[0].strip()
        if line:
            words.extend(line.split())
    return words


def coe_text(raw: np.ndarray, fmt: QFormat) -> str:
    """A Xilinx ``.coe`` memory initialisation file, radix 16."""
    words = to_hex_words(raw, fmt)
    body = ",\n".join(words) + ";" if words else ";"
    return f"memory_initialization_radix=16;\nmemory_initialization_vector=\n{body}\n"


def parse_coe(text: str) -> list[str]:
    """The hex words of a ``.coe`` file."""
    if "memory_initialization_radix=16;" not in text.replace(" ", ""):
        raise BundleError("a .coe file of a bundle must have memory_initialization_radix=16")
    vector = text.split("memory_initialization_vector=", 1)[1]
    return [w.strip() for w in vector.replace(";", "").replace("\n", "").split(",") if w.strip()]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _file_stem(name: str) -> str:
    return name.replace("/", "_")


# -- running the steps -----------------------------------------------------------------------
def training_tensors(net: MLP, datapath: Datapath, x: np.ndarray, y: np.ndarray, steps: int,
                     params: Sequence[LayerParams] | None = None,
                     rng: np.random.Generator | None = None) -> list[tuple[str, FixedArray]]:
    """Every stage's FixedArray of ``steps`` SGD steps, step t on rows [t*B, (t+1)*B) of x and y.

    ``x`` and ``y`` hold ``steps * B`` samples; parameters start from ``params`` (float64,
    quantized into the weight and bias roles) or the network's own initialisation. With dynamic
    fractions, every tensor is in its step's formats (the manifest records each one's), and at
    a check that moves a state role's fraction ``weight_updated`` / ``bias_updated`` are already
    cast into the new format (= the next step's ``weight`` / ``bias``).
    """
    if steps < 1:
        raise fixprop.ConfigError(f"steps must be >= 1; got {steps}")
    if len(x) % steps or len(y) != len(x):
        raise fixprop.ShapeError(f"x and y must hold steps * batch samples; got {len(x)} and {len(y)} for {steps} steps")
    batch = len(x) // steps
    ar = FixedArithmetic(datapath, rng)
    state = net.params_in(ar, net.init_params() if params is None else params)
    velocity = net.zero_velocity(ar, state) if datapath.momentum is not None else None
    dynamic = DynamicFractions(datapath, net.n_layers) if datapath.dynamic is not None else None
    tensors: list[tuple[str, FixedArray]] = []
    for t in range(steps):
        xs, ys = x[t * batch:(t + 1) * batch], y[t * batch:(t + 1) * batch]
        if isinstance(rng, LfsrSource) and rng.state.size:  # the lanes used so far, at the step's start
            registers = rng.state.astype(np.int64)  # width <= 63 bits
            tensors.append((f"step{t}/lfsr_state", FixedArray(registers, QFormat(rng.width, 0, signed=False))))
        ar.observer = None if dynamic is None else dynamic.observer  # counts the step's casts
        layer_names = [layer_stages(ar.datapath, i) for i in range(net.n_layers)]  # this step's datapath
        trace = net.forward(ar, state, xs)
        target = ar.data(MLP._batch(ys, net.layer_sizes[-1], "y"), "target")  # where backward casts it
        grads = net.backward(ar, state, trace, target)
        updates: list[LayerParams] = []
        new_state, new_velocity = net.sgd_step(ar, state, grads, velocity, updates=updates)
        velocity = new_velocity
        if dynamic is not None:  # every interval steps the fractions move; the state is cast into them
            new_state, velocity = dynamic.step_done(ar, new_state, velocity)
        tensors.append((f"step{t}/target", target))
        for i, (layer, g, p, q, u) in enumerate(zip(trace.layers, grads, state, new_state, updates)):
            v = new_velocity[i] if new_velocity is not None else LayerParams(None, None)
            values = {"input": layer.input, "weight": p.weight, "bias": p.bias, "weight_fwd": layer.weight,
                      "bias_fwd": layer.bias, "product": layer.product,
                      "acc": layer.pre_full, "pre": layer.pre, "act": layer.act, "error": g.error,
                      "local": g.local_error,
                      "weight_grad": g.weight_grad, "bias_grad": g.bias_grad,
                      "weight_velocity": v.weight, "bias_velocity": v.bias,
                      "weight_update": u.weight, "bias_update": u.bias,
                      "weight_updated": q.weight, "bias_updated": q.bias}
            tensors += [(f"step{t}/layer{i}/{stage}", values[stage]) for stage in layer_names[i]]
        state = new_state
    return tensors


# -- writing and reading ----------------------------------------------------------------------
def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """Raise BundleError when ``out`` may not receive a bundle: it exists and ``overwrite`` is
    False, or it exists and is not a bundle (never replaced). Called before any work is done."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} exists; choose another directory, or replace it (overwrite=True, fixprop export --force)")
    if out.exists() and not (out / MANIFEST).is_file():
        raise BundleError(f"{out} exists and is not a bundle (no {MANIFEST}): it is not replaced")
    return out


def write(tensors: Sequence[tuple[str, FixedArray]], out: str | Path, datapath: Datapath,
          network: dict[str, Any] | None = None, overwrite: bool = False,
          lfsr: LfsrSource | None = None) -> Path:
    """Write a bundle atomically: into a temporary directory beside ``out``, then renamed.
    ``lfsr``: the LFSR source the steps' stochastic casts drew from, recorded in the manifest
    (``"lfsr": {"seed", "bits", "width", "taps"}``) so a testbench can rebuild its lanes.

    An existing ``out`` is an error unless ``overwrite`` and it is a bundle; it is then moved aside,
    the new bundle renamed in, and the old one deleted (two renames: ``out`` is briefly absent).
    """
    out = check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is for others to read
    try:
        entries, arrays = [], {}
        for name, value in tensors:
            fmt, raw = value.fmt, value.raw
            stem = _file_stem(name)
            mem = mem_text(name, raw, fmt)
            (staging / f"{stem}.mem").write_text(mem)
            (staging / f"{stem}.coe").write_text(coe_text(raw, fmt))
            arrays[stem] = (np.asarray(raw, dtype=np.int64) if raw.dtype == np.int64
                            else np.array(to_hex_words(raw, fmt)).reshape(np.shape(raw)))
            entries.append({"name": name, "shape": list(np.shape(raw)), "word": fmt.word, "frac": fmt.frac,
                            "signed": fmt.signed, "files": {"mem": f"{stem}.mem", "coe": f"{stem}.coe",
                                                            "npz": f"{NPZ}:{stem}"},
                            "sha256": _sha256(mem)})
        np.savez(staging / NPZ, **arrays)
        (staging / "datapath.toml").write_text(datapath.to_toml())
        manifest = {"fixprop": fixprop.__version__, "bundle_format": FORMAT_VERSION,
                    "datapath": datapath.to_toml(), "datapath_file": "datapath.toml",
                    "network": network or {}, "tensors": entries}
        if lfsr is not None:
            manifest["lfsr"] = {"seed": lfsr.seed, "bits": lfsr.bits, "width": lfsr.width, "taps": lfsr.taps}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():  # replace: move the old bundle aside, the new one in, then drop the old
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "bundle")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


@dataclass
class Bundle:
    """A loaded bundle: the manifest, the datapath, and every tensor as a FixedArray."""

    path: Path
    manifest: dict
    datapath: Datapath
    tensors: dict[str, FixedArray]

    def __getitem__(self, name: str) -> FixedArray:
        try:
            return self.tensors[name]
        except KeyError:
            raise BundleError(f"no tensor {name!r} in {self.path}") from None


def load(path: str | Path) -> Bundle:
    """Read a bundle back bit-identically. A missing file, a changed value, a hash, shape or format
    that does not match the manifest and the files' headers, files that disagree with each other,
    or a manifest entry missing a key or holding a value of the wrong type raise
    :class:`BundleError` naming the file or tensor and what is wrong."""
    path = Path(path)
    try:
        return _load(path)
    except BundleError:
        raise
    except FixpropError as error:
        raise BundleError(f"{path}: {error}") from None
    except (KeyError, TypeError, IndexError, ValueError, OSError) as error:  # a case not foreseen below
        raise BundleError(f"{path} is not a consistent bundle: {type(error).__name__}: {error}") from None


def _load(path: Path) -> Bundle:
    if not path.exists():
        raise BundleError(f"{path} does not exist")
    if not path.is_dir():
        raise BundleError(f"{path} is not a bundle: a bundle is a directory")
    if not (path / MANIFEST).exists():
        raise BundleError(f"{path} is not a bundle: no {MANIFEST}")
    try:
        manifest = json.loads(_read_text(path, MANIFEST, "the manifest"))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path / MANIFEST} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("bundle_format") != FORMAT_VERSION:
        raise BundleError(f"{path / MANIFEST}: not a fixprop bundle of format {FORMAT_VERSION}")
    where = str(path / MANIFEST)
    toml = _field(manifest, "datapath", str, where)
    datapath = Datapath.from_toml(toml, source=f"{where} datapath")
    datapath_file = _field(manifest, "datapath_file", str, where)
    if _read_text(path, datapath_file, "the datapath file") != toml:
        raise BundleError(f"{path / datapath_file} differs from the manifest's datapath")
    entries = _field(manifest, "tensors", list, where)
    _check_complete(manifest, datapath, where)
    if not (path / NPZ).is_file():
        raise BundleError(f"{path} has no {NPZ}")
    try:
        npz = np.load(path / NPZ, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise BundleError(f"{path / NPZ} is not a readable .npz file ({type(error).__name__}: {error})") from None
    tensors = {}
    with npz:
        for index, entry in enumerate(entries):
            name, value = _load_tensor(path, entry, index, npz)
            tensors[name] = value
    return Bundle(path, manifest, datapath, tensors)


def _field(table: Any, key: str, kind: type, where: str) -> Any:
    """``table[key]``, which must be of type ``kind``; else a BundleError naming ``where`` and the key."""
    if not isinstance(table, dict):
        raise BundleError(f"{where} must be a JSON object; got {type(table).__name__}")
    if key not in table:
        raise BundleError(f"{where} has no key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # true is no integer
        raise BundleError(f"{where}: {key} must be {kind.__name__}; got {value!r}")
    return value


def _read_text(path: Path, file_name: str, what: str) -> str:
    """A file of the bundle (a plain name inside it) as UTF-8 text; BundleErrors name the file."""
    if Path(file_name).name != file_name or file_name in ("", ".."):
        raise BundleError(f"{path / MANIFEST}: {what} must be a file name inside the bundle; got {file_name!r}")
    try:
        data = (path / file_name).read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: file missing: {file_name} ({what})") from None
    except OSError as error:
        raise BundleError(f"{path / file_name}: cannot read {what} ({error.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BundleError(f"{path / file_name}: {what} is not UTF-8 text (byte 0x{data[error.start]:02x} "
                          f"at offset {error.start})") from None


def _load_tensor(path: Path, entry: Any, index: int, npz: Any) -> tuple[str, FixedArray]:
    """One manifest entry's tensor, checked against its files; BundleErrors name the tensor."""
    name = entry.get("name") if isinstance(entry, dict) else None
    where = f"{path / MANIFEST}: tensor {name if isinstance(name, str) else f'#{index}'}"
    name = _field(entry, "name", str, where)
    shape = tuple(_field(entry, "shape", list, where))
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
        raise BundleError(f"{where}: shape must be a list of integers >= 0; got {list(shape)}")
    try:
        fmt = QFormat(_field(entry, "word", int, where), _field(entry, "frac", int, where),
                      _field(entry, "signed", bool, where))
    except FixpropError as error:
        raise BundleError(f"{where}: {error}") from None
    files = _field(entry, "files", dict, where)
    mem_file = _field(files, "mem", str, f"{where} files")
    coe_file = _field(files, "coe", str, f"{where} files")
    sha256 = _field(entry, "sha256", str, where)
    mem = _read_text(path, mem_file, f"the .mem file of {name}")
    coe = _read_text(path, coe_file, f"the .coe file of {name}")
    where = f"{path}: tensor {name}"
    if _sha256(mem) != sha256:
        raise BundleError(f"{where}: {mem_file} does not match its sha256 in the manifest")
    try:
        header_shape, header_fmt = mem_header(mem)
        if tuple(header_shape) != shape or header_fmt != fmt:
            raise BundleError(f"the manifest says {list(shape)} {fmt}, the .mem header {header_shape} {header_fmt}")
        words = parse_mem(mem)
        if len(words) != int(np.prod(shape, dtype=np.int64)):
            raise BundleError(f"{len(words)} values in {mem_file} for shape {list(shape)}")
        if any(len(w) != hex_digits(fmt.word) for w in words):
            raise BundleError(f"{mem_file}: words must have {hex_digits(fmt.word)} hex digits for {fmt}")
        values = from_hex_words(words, fmt)
        if parse_coe(coe) != words:
            raise BundleError(f"{coe_file} differs from the .mem file")
        stem = _file_stem(name)
        if stem not in npz.files:
            raise BundleError(f"{NPZ} has no array {stem!r}")
        try:
            stored = npz[stem]
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise BundleError(f"{NPZ}: array {stem!r} is unreadable ({type(error).__name__}: {error})") from None
        from_npz = (stored.reshape(-1).tolist() if stored.dtype.kind == "i"
                    else from_hex_words(stored.reshape(-1).tolist(), fmt))
        if from_npz != values or tuple(stored.shape) != shape:
            raise BundleError(f"{NPZ} differs from the .mem file")
    except (BundleError, FixpropError) as error:
        raise BundleError(f"{where}: {error}") from None
    except (ValueError, TypeError, AttributeError) as error:  # e.g. a non-hex word, a string array in the npz
        raise BundleError(f"{where}: unreadable value ({type(error).__name__}: {error})") from None
    raw = np.array(values, dtype=np.int64 if fmt.fits_int64 else object).reshape(shape)
    return name, FixedArray(raw, fmt)


def _check_complete(manifest: dict, datapath: Datapath, where: str) -> None:
    """Every stage of every step and layer the network section promises is listed."""
    network = manifest.get("network") or {}
    if not isinstance(network, dict):
        raise BundleError(f"{where}: network must be a JSON object; got {network!r}")
    if "steps" not in network or "layer_sizes" not in network:
        return  # a bundle written with write() by hand: nothing promised
    steps = _field(network, "steps", int, f"{where} network")
    layer_sizes = _field(network, "layer_sizes", list, f"{where} network")
    names = {_field(entry, "name", str, f"{where}: tensor #{index}")
             for index, entry in enumerate(manifest["tensors"])}
    promised = [f"step{t}/layer{i}/{stage}" for t in range(steps)
                for i in range(len(layer_sizes) - 1) for stage in layer_stages(datapath, i)]
    promised += [f"step{t}/target" for t in range(steps)]
    missing = [name for name in promised if name not in names]
    if missing:
        raise BundleError(f"{where}: the manifest lists no tensor {missing[0]} ({len(missing)} missing in all)")
