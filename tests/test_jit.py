"""nn/jit.py: numba imported lazily, one warning when it cannot be imported, FIXPROP_DISABLE_NUMBA,
and numba's on-disk cache (NUMBA_CACHE_DIR, no writable location, a second process loading the
compiled kernel instead of compiling it). Most checks run in a fresh Python process: what a
process imports, warns and caches is per process."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import jit_sample_kernel
import numpy as np
import pytest

from fixprop.errors import ConfigError
from fixprop.nn import jit

TESTS = Path(__file__).parent
SAMPLE = TESTS / "jit_sample_kernel.py"
A = [2**62, -5, 3, 0]
B = [2**62 - 1, 7, -3, -2**63]
SUM = [2**63 - 1, 2, 0, -2**63]  # A + B, worked out by hand: every value fits int64

# Compiles (or loads) the sample kernel, runs it and prints what happened as one JSON line.
RUN_SAMPLE = f"""
import json, numpy as np
import jit_sample_kernel
from fixprop.nn.jit import cache_dir, compiled
kernel = compiled(jit_sample_kernel.add_int64)
out = kernel(np.array({A}, dtype=np.int64), np.array({B}, dtype=np.int64))
print(json.dumps({{"sum": [int(v) for v in out], "source": jit_sample_kernel.__file__,
                   "cache_dir": cache_dir(jit_sample_kernel.add_int64),
                   "hits": sum(kernel.stats.cache_hits.values()),
                   "misses": sum(kernel.stats.cache_misses.values())}}))
"""


def run_python(code: str, env: dict[str, str] | None = None, path: tuple[Path, ...] = ()) -> dict:
    """Run ``code`` in a fresh interpreter (``path`` and tests/ importable, no numba settings
    inherited besides ``env``); its last stdout line is JSON, returned."""
    environ = {k: v for k, v in os.environ.items() if k not in (jit.DISABLE_ENV, "NUMBA_CACHE_DIR")}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(TESTS), os.environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def unwritable(tmp_path: Path, name: str) -> Path:
    """A directory path nothing can be written into: an existing directory with mode 0o555, or,
    where that does not stop writes (running as root), a path under a regular file."""
    path = tmp_path / name
    path.mkdir()
    path.chmod(0o555)
    try:
        (path / "probe").mkdir()
    except PermissionError:
        return path
    (path / "probe").rmdir()
    path.chmod(0o755)
    blocker = tmp_path / f"{name}-is-a-file"
    blocker.write_text("")
    return blocker / name


def read_only_install(tmp_path: Path) -> Path:
    """A copy of the sample kernel in a directory where no ``__pycache__`` can be made (like a
    read-only site-packages): the directory is 0o555, or, as root, ``__pycache__`` is a file."""
    install = tmp_path / "install"
    install.mkdir()
    shutil.copy(SAMPLE, install)
    install.chmod(0o555)
    try:
        (install / "__pycache__").mkdir()
    except PermissionError:
        return install
    (install / "__pycache__").rmdir()
    (install / "__pycache__").write_text("")
    return install


@pytest.fixture
def restore_modes(tmp_path):
    """Give every directory under tmp_path its write permission back, so pytest can remove it."""
    yield
    for directory in [tmp_path, *tmp_path.rglob("*")]:
        if directory.is_dir():
            directory.chmod(0o755)


def fresh_sample_kernel(directory: Path, monkeypatch) -> object:
    """A new function object for the sample kernel (``compiled`` makes one kernel per function),
    imported from a copy in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    source = Path(shutil.copy(SAMPLE, directory))
    name = f"jit_sample_kernel_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module.add_int64


def test_import_and_help_do_not_import_numba():
    code = """
import argparse, contextlib, io, json, runpy, sys
import fixprop
after_import = sorted(m for m in sys.modules if m.split(".")[0] == "numba")
from fixprop.cli import build_parser, main
sys.argv = ["fixprop", "--help"]
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        runpy.run_module("fixprop.cli", run_name="__main__")  # python -m fixprop.cli --help
    except SystemExit:
        pass
helped = "usage: fixprop" in out.getvalue()
commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
for name in commands:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([name, "--help"])
        except SystemExit:
            pass
after_help = sorted(m for m in sys.modules if m.split(".")[0] == "numba")
from fixprop.nn.jit import numba_available
available = numba_available()
print(json.dumps({"after_import": after_import, "after_help": after_help, "helped": helped,
                  "commands": sorted(commands), "available": available, "loaded": "numba" in sys.modules}))
"""
    got = run_python(code)
    assert got["after_import"] == [] and got["after_help"] == []
    assert got["helped"] and {"train", "sweep", "verify", "bench"} <= set(got["commands"])
    assert got["loaded"] == got["available"]  # the first numba_available() imports it (the check can fail)


FAILED_IMPORTS = {
    "missing": ("import sys; sys.modules['numba'] = None", "ModuleNotFoundError"),
    "numpy too new": ("raise ImportError('Numba needs NumPy 2.3 or less. Got NumPy 2.9.')",
                      "ImportError: Numba needs NumPy 2.3 or less. Got NumPy 2.9."),
    "other error": ("raise AttributeError(\"module 'numpy' has no attribute 'long'\")",
                    "AttributeError: module 'numpy' has no attribute 'long'"),
}


@pytest.mark.parametrize("case", FAILED_IMPORTS)
def test_numba_failing_to_import_warns_once_and_gives_no_kernel(case, tmp_path):
    shim, reason = FAILED_IMPORTS[case]
    path: tuple[Path, ...] = ()
    if case != "missing":  # a numba package that fails on import, found before the real one
        (tmp_path / "numba").mkdir()
        (tmp_path / "numba" / "__init__.py").write_text(shim + "\n")
        path, shim = (tmp_path,), ""
    code = f"""
import json, sys, warnings
{shim}
import jit_sample_kernel
from fixprop.nn import jit
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = jit.compiled(jit_sample_kernel.add_int64)
    available = jit.numba_available()
    second = jit.compiled(jit_sample_kernel.add_int64)
print(json.dumps({{"kernels": [first is None, second is None], "available": available,
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught],
                  "user_warning": all(issubclass(w.category, UserWarning) for w in caught)}}))
"""
    got = run_python(code, path=path)
    assert got["kernels"] == [True, True] and got["available"] is False
    assert len(got["warnings"]) == 1 and got["user_warning"]
    category, message = got["warnings"][0]
    assert category == "NumbaUnavailableWarning"
    assert reason in message and "numpy path" in message and "same results" in message
    assert "FIXPROP_DISABLE_NUMBA=1" in message


def test_model_without_numba_trains_to_the_same_integers_on_numpy():
    code = """
import json, sys, warnings
sys.modules["numba"] = None
import numpy as np
from fixprop import MLP, Datapath
net = MLP([3, 6, 2], init="he", seed=1)
dp = Datapath.uniform(14, 9, "STOCH")
x, y = np.random.default_rng(0).uniform(-1, 1, (4, 3)), np.random.default_rng(1).uniform(-1, 1, (4, 2))
reference = net.fixed_model(dp, rng=np.random.default_rng(4))
reference.compiled = False
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = net.fixed_model(dp, rng=np.random.default_rng(4), backend="numba")
    losses = [model.train_step(x, y) for _ in range(3)]
want = [reference.train_step(x, y) for _ in range(3)]
pairs = zip(model.params, reference.params)
same = all(a.weight.identical(b.weight) and a.bias.identical(b.bias) for a, b in pairs)
print(json.dumps({"losses": losses == want, "params": same,
                  "warnings": [w.category.__name__ for w in caught]}))
"""
    got = run_python(code)
    assert got == {"losses": True, "params": True, "warnings": ["NumbaUnavailableWarning"]}


def test_disable_env_gives_no_kernel_without_importing_numba_or_warning():
    code = """
import json, sys, warnings
import jit_sample_kernel
from fixprop.nn import jit
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    kernel = jit.compiled(jit_sample_kernel.add_int64)
    available = jit.numba_available()
print(json.dumps({"kernel": kernel is None, "available": available, "warnings": len(caught),
                  "loaded": "numba" in sys.modules}))
"""
    got = run_python(code, env={jit.DISABLE_ENV: "1"})
    assert got == {"kernel": True, "available": False, "warnings": 0, "loaded": False}


def test_disable_env_is_read_at_each_call(tmp_path, monkeypatch):
    pytest.importorskip("numba")
    add = fresh_sample_kernel(tmp_path / "kernels", monkeypatch)
    monkeypatch.setenv(jit.DISABLE_ENV, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jit.compiled(add) is None and jit.numba_available() is False
    monkeypatch.setenv(jit.DISABLE_ENV, "0")
    kernel = jit.compiled(add)
    assert kernel is not None and jit.compiled(add) is kernel  # one kernel per function
    assert jit.numba_available() is True


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_disable_env_other_values_are_refused(value, monkeypatch):
    monkeypatch.setenv(jit.DISABLE_ENV, value)
    with pytest.raises(ConfigError, match=f"FIXPROP_DISABLE_NUMBA must be 1 .* or 0 .*, got '{value}'"):
        jit.compiled(jit_sample_kernel.add_int64)


def test_compiled_refuses_what_is_not_a_python_function():
    with pytest.raises(TypeError, match="plain Python function, got builtin_function_or_method"):
        jit.compiled(len)


def test_no_writable_cache_location_compiles_in_memory(tmp_path, restore_modes):
    pytest.importorskip("numba")
    install = read_only_install(tmp_path)
    cache = unwritable(tmp_path, "numba-cache")
    user_cache = unwritable(tmp_path, "user-cache")  # numba's last resort, ~/.cache/numba
    env = {"NUMBA_CACHE_DIR": str(cache), "XDG_CACHE_HOME": str(user_cache)}
    got = run_python(RUN_SAMPLE, env=env, path=(install,))
    assert got == {"sum": SUM, "source": str(install / SAMPLE.name), "cache_dir": None,
                   "hits": 0, "misses": 1}
    assert not cache.exists() or list(cache.iterdir()) == []
    assert not user_cache.exists() or list(user_cache.iterdir()) == []


def test_cache_location_failing_after_the_kernel_is_made_compiles_in_memory(tmp_path, monkeypatch):
    numba = pytest.importorskip("numba")
    cache = tmp_path / "cache"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(cache))  # NUMBA_CACHE_DIR, read at numba import
    add = fresh_sample_kernel(tmp_path / "kernels", monkeypatch)
    assert jit.cache_dir(add).startswith(str(cache))
    shutil.rmtree(cache)
    cache.write_text("")  # the directory is gone, a file in its place: reading and writing fail
    kernel = jit.compiled(add)
    out = kernel(np.array(A, dtype=np.int64), np.array(B, dtype=np.int64))
    assert out.tolist() == SUM and sum(kernel.stats.cache_misses.values()) == 1


def test_second_process_loads_the_cached_kernel(tmp_path):
    pytest.importorskip("numba")
    cache = tmp_path / "numba-cache"
    first = run_python(RUN_SAMPLE, env={"NUMBA_CACHE_DIR": str(cache)})
    assert first["sum"] == SUM and (first["hits"], first["misses"]) == (0, 1)
    assert Path(first["cache_dir"]).parent == cache
    indexes = [p.name.split("-")[0] for p in cache.rglob("*.nbi")]
    assert indexes == ["jit_sample_kernel.add_int64"]  # one index file: the kernel's
    second = run_python(RUN_SAMPLE, env={"NUMBA_CACHE_DIR": str(cache)})
    assert second == {**first, "hits": 1, "misses": 0}


def test_the_command_line_says_when_numba_compiles_a_kernel(tmp_path):
    """A kernel compiled for the first time (a cache miss) takes seconds: fixprop's commands say
    so on the standard error, once; loading it from the cache says nothing."""
    pytest.importorskip("numba")
    cache = tmp_path / "numba-cache"
    notes = "import io, sys\nsys.stderr = io.StringIO()\nfrom fixprop.cli import _show_notes\n_show_notes()\n"
    code = notes + RUN_SAMPLE.replace('"sum": [int(v) for v in out],',
                                      '"sum": [int(v) for v in out], "stderr": sys.stderr.getvalue(),')
    first = run_python(code, env={"NUMBA_CACHE_DIR": str(cache)})
    assert first["sum"] == SUM and first["misses"] == 1
    assert first["stderr"] == ("fixprop: numba is compiling the kernel add_int64 (once per install and "
                               f"cache directory, 10 to 20 s; later runs load it from {first['cache_dir']})\n")
    second = run_python(code, env={"NUMBA_CACHE_DIR": str(cache)})
    assert second["sum"] == SUM and second["hits"] == 1 and second["stderr"] == ""


def test_loading_a_kernel_leaves_numba_as_its_own_blas_check_would(tmp_path):
    """fixprop keeps numba from importing scipy.linalg when it loads a kernel (numba imports it
    only to set ``_HAVE_BLAS``). Afterwards numba's flag must equal its own check's answer (run
    in the same process, after), and a user's numba function calling np.dot must still compile
    and use BLAS."""
    pytest.importorskip("numba")
    out = run_python(f"""
import json, sys, numpy as np
import jit_sample_kernel
from fixprop.nn.jit import compiled
kernel = compiled(jit_sample_kernel.add_int64)
kernel(np.array({A}, dtype=np.int64), np.array({B}, dtype=np.int64))
linalg_before = "scipy.linalg" in sys.modules
from numba.np import arraymath
flag = arraymath._HAVE_BLAS
import numba
@numba.njit
def dot(a, b):
    return np.dot(a, b)
value = float(dot(np.arange(3.0), np.arange(3.0)))
print(json.dumps({{"linalg_before": linalg_before, "flag": flag, "own_check": arraymath._check_blas(),
                   "dot": value}}))
""", env={"NUMBA_CACHE_DIR": str(tmp_path)})
    assert out["flag"] == out["own_check"]
    assert out["dot"] == 5.0
    if importlib.util.find_spec("scipy") is not None:
        assert out["linalg_before"] is False
