"""Trained-state files: a network's fixed-point parameters with the network and datapath they
belong to (``fixprop train --save-state FILE``), for deployment (``fixprop hls --weights FILE``).

A state file is JSON::

    {"fixprop": "0.1.0", "state_format": 1, "datapath": "<TOML>",
     "network": {"layer_sizes": [3, 16, 5], "activation": "relu", "output_activation": "relu", "loss": "sse"},
     "layers": [{"weight": {"format": "s16.10", "shape": [16, 3], "raw": [...]},
                 "bias": {"format": "s16.10", "shape": [16], "raw": [...]}}, ...],
     "fixed_params_sha256": "..."}

``raw`` holds the raw integers row-major (value = raw * 2**-frac); the digest is
``explore.train.params_sha256`` of the parameters, so a file can be matched to a training run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import fixprop
from fixprop.datapath import Datapath
from fixprop.errors import ConfigError
from fixprop.fixed.array import FixedArray
from fixprop.fixed.format import QFormat
from fixprop.nn.mlp import MLP, LayerParams

STATE_FORMAT = 1


def network_table(net: MLP) -> dict[str, Any]:
    """The network keys a state file (and a bundle's manifest) records."""
    return {"layer_sizes": net.layer_sizes, "activation": str(net.activation),
            "output_activation": str(net.output_activation), "loss": net.loss.name}


def save_state(path: str | Path, net: MLP, datapath: Datapath, params: Sequence[LayerParams]) -> Path:
    """Write the fixed-point ``params`` (FixedArrays) of ``net`` under ``datapath`` to ``path``
    (written beside it, then renamed: no half-written file)."""
    from fixprop.explore.train import params_sha256

    layers = []
    for i, p in enumerate(params):
        entry = {}
        for kind, value in (("weight", p.weight), ("bias", p.bias)):
            if not isinstance(value, FixedArray):
                raise ConfigError(f"layer {i} {kind}: a state file holds fixed-point parameters; got "
                                  f"{type(value).__name__}")
            entry[kind] = {"format": str(value.fmt), "shape": list(value.shape),
                           "raw": [int(v) for v in np.asarray(value.raw, dtype=object).reshape(-1)]}
        layers.append(entry)
    document = {"fixprop": fixprop.__version__, "state_format": STATE_FORMAT, "datapath": datapath.to_toml(),
                "network": network_table(net), "layers": layers, "fixed_params_sha256": params_sha256(list(params))}
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(document, out, indent=1)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_state(path: str | Path) -> tuple[MLP, Datapath, list[LayerParams]]:
    """(network, datapath, parameters as FixedArrays) from a state file; a missing file, a key
    missing or of the wrong type, a raw value outside its format, or a shape that does not match
    the network is a ConfigError naming the file and the key."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the state file ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a JSON state file ({error})") from None

    def field(table: Any, key: str, kind: type, where: str) -> Any:
        if not isinstance(table, dict) or key not in table:
            raise ConfigError(f"{path}: {where} has no key {key!r}")
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{path}: {where} key {key!r} must be {kind.__name__}; got {value!r}")
        return value

    if field(document, "state_format", int, "the file") != STATE_FORMAT:
        raise ConfigError(f"{path}: state_format {document['state_format']}; this fixprop reads {STATE_FORMAT}")
    datapath = Datapath.from_toml(field(document, "datapath", str, "the file"), source=f"{path} datapath")
    network = field(document, "network", dict, "the file")
    net = MLP(field(network, "layer_sizes", list, "network"), field(network, "activation", str, "network"),
              field(network, "output_activation", str, "network"), field(network, "loss", str, "network"))
    layers = field(document, "layers", list, "the file")
    if len(layers) != net.n_layers:
        raise ConfigError(f"{path}: {len(layers)} layers of parameters for a network of {net.n_layers}")
    params = []
    for i, (entry, n_in, n_out) in enumerate(zip(layers, net.layer_sizes[:-1], net.layer_sizes[1:])):
        values = []
        for kind, shape in (("weight", [n_out, n_in]), ("bias", [n_out])):
            where = f"layer {i} {kind}"
            table = field(entry, kind, dict, f"layer {i}")
            fmt = QFormat.parse(field(table, "format", str, where))
            if field(table, "shape", list, where) != shape:
                raise ConfigError(f"{path}: {where} has shape {table['shape']}; the network needs {shape}")
            raw = field(table, "raw", list, where)
            if len(raw) != int(np.prod(shape)) or any(isinstance(v, bool) or not isinstance(v, int) for v in raw):
                raise ConfigError(f"{path}: {where} raw must be {int(np.prod(shape))} integers")
            if any(not fmt.raw_min <= v <= fmt.raw_max for v in raw):
                raise ConfigError(f"{path}: {where} has a raw value outside {fmt}")
            dtype = np.int64 if fmt.fits_int64 else object
            values.append(FixedArray(np.array(raw, dtype=dtype).reshape(shape), fmt))
        params.append(LayerParams(*values))
    return net, datapath, params
