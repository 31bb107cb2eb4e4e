"""Loading and caching the numba kernels: one place that imports numba, lazily.

``compiled(kernel)`` gives the numba-compiled version of a plain-Python kernel function (defined at
module level in a fixprop module), or None when numba is unavailable; callers then take the numpy
path, which computes the same results. numba is imported at the first call, never by
``import fixprop`` or ``fixprop --help`` (the import costs about 0.2 s).

- numba cannot be imported (not installed, or e.g. a numpy newer than it supports): ONE
  :class:`NumbaUnavailableWarning` naming the reason, then None without another warning.
- ``FIXPROP_DISABLE_NUMBA=1`` in the environment: None, without importing numba or warning.
- Kernels are compiled in nopython mode with ``fastmath=False`` (nothing that rounds is ever
  reassociated) and ``cache=True``: numba's on-disk cache, in ``NUMBA_CACHE_DIR`` when that is set
  and writable, else in ``__pycache__`` next to the kernel's source, else in the user's cache
  directory (``~/.cache/numba``). Every process using the same location (sweep workers on a pool
  or Dask) loads the compiled code instead of compiling it again.
- No writable location (a read-only install and cache directory): numba refuses ``cache=True``
  when the kernel is decorated ("cannot cache function ...: no locator available"); the kernel
  is then compiled in memory (a debug-level log line). A location that fails later (removed or
  made read-only while running) makes a failed cache read a miss and a failed write a no-op.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from fixprop.errors import ConfigError

__all__ = ["DISABLE_ENV", "KERNEL_OPTIONS", "NumbaUnavailableWarning", "cache_dir", "compiled",
           "numba_available"]

#: Environment variable: "1" forces the numpy path (numba is not imported), "0" or unset allows numba.
DISABLE_ENV = "FIXPROP_DISABLE_NUMBA"
#: numba options of every kernel (compiled with ``numba.njit``: nopython). ``fastmath`` stays off:
#: it would let LLVM reassociate float sums. ``error_model="numpy"``: a division by zero gives
#: numpy's result, as the numpy path does, instead of raising (and keeps loops free of the checks
#: that block vectorization). ``nogil``: threads (e.g. Dask's) can run kernels side by side.
KERNEL_OPTIONS: dict[str, Any] = {"fastmath": False, "error_model": "numpy", "nogil": True}

log = logging.getLogger(__name__)


class NumbaUnavailableWarning(UserWarning):
    """numba could not be imported: fixprop computes on its numpy path (the same results, slower)."""


_lock = threading.Lock()
_import_tried = False
_numba: ModuleType | None = None
_kernels: dict[Callable[..., Any], Callable[..., Any]] = {}


def _disabled() -> bool:
    """True when ``FIXPROP_DISABLE_NUMBA=1``; a value other than 1, 0 or empty is a ConfigError."""
    value = os.environ.get(DISABLE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ConfigError(f"{DISABLE_ENV} must be 1 (compute on the numpy path) or 0 (use numba), "
                          f"got {value!r}")
    return value == "1"


def _import_numba() -> ModuleType | None:
    """The numba module, imported at the first call; None (after one warning) when it cannot be."""
    global _import_tried, _numba
    with _lock:
        if _import_tried:
            return _numba
        _import_tried = True
        try:
            import numba
        except Exception as error:  # noqa: BLE001 - ImportError, or whatever a numba/numpy mismatch raises
            reason = f"{type(error).__name__}: {error}".strip()
            warnings.warn(NumbaUnavailableWarning(
                f"numba cannot be imported ({reason}); fixprop computes on its numpy path instead: "
                f"the same results, more slowly. Install a numba that supports this numpy, or set "
                f"{DISABLE_ENV}=1 to choose the numpy path without this warning."), stacklevel=3)
            return None
        _defer_scipy_import()
        _numba = numba
        return numba


def _defer_scipy_import() -> None:
    """Keep numba from importing scipy.linalg (about 0.3 s) when it loads the first kernel.

    numba's CPU target imports ``numba.np.arraymath`` on the first compile or cache load, and that
    module imports scipy.linalg only to set one flag, ``_HAVE_BLAS`` (whether ``np.dot``-like
    calls may use BLAS); fixprop's kernels make none. Here it is imported with scipy hidden (its
    check then finds no BLAS) and the flag is set to whether scipy.linalg is installed, looked up
    without importing it: numba's state is what its own check gives, and scipy is imported when
    some code compiles a call that needs BLAS (numba's ``ensure_blas``). Skipped when scipy.linalg
    is already imported (nothing to save), and a no-op if numba's internals differ."""
    import importlib.util
    import sys

    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    try:  # numba itself imported the light scipy package (its version check), or there is none
        scipy_linalg = importlib.util.find_spec("scipy.linalg") is not None
    except (ImportError, ValueError):
        scipy_linalg = False
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        from numba.np import arraymath
    except Exception:  # noqa: BLE001 - numba imports it again when it needs it
        return
    finally:
        del sys.modules["scipy.linalg"]
    if isinstance(getattr(arraymath, "_HAVE_BLAS", None), bool):
        arraymath._HAVE_BLAS = scipy_linalg


def numba_available() -> bool:
    """True when kernels can be compiled: numba imports (tried once per process, see the module
    docstring) and ``FIXPROP_DISABLE_NUMBA`` is not 1."""
    return not _disabled() and _import_numba() is not None


def compiled(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """The numba-compiled version of the kernel ``function`` (a plain-Python function defined at
    module level), made once per function and process; None when numba is unavailable or disabled
    (the caller takes the numpy path). Compilation happens at the first call of the result, or
    comes from numba's on-disk cache."""
    if not inspect.isfunction(function):
        raise TypeError(f"compiled() takes a plain Python function, got {type(function).__name__}")
    if _disabled():
        return None
    numba = _import_numba()
    if numba is None:
        return None
    with _lock:
        kernel = _kernels.get(function)
        if kernel is None:
            kernel = _kernels[function] = _jit(numba, function)
    return kernel


def cache_dir(function: Callable[..., Any]) -> str | None:
    """The directory numba's on-disk cache of ``function``'s kernel lives in; None when the kernel
    is compiled in memory (no writable location) or not compiled (numba unavailable or disabled)."""
    kernel = compiled(function)
    return None if kernel is None else kernel.stats.cache_path


def _jit(numba: ModuleType, function: Callable[..., Any]) -> Callable[..., Any]:
    """numba's dispatcher of ``function``: cached on disk where a location is writable, else in memory."""
    try:
        kernel = numba.njit(cache=True, **KERNEL_OPTIONS)(function)
    except (RuntimeError, OSError) as error:  # raised when decorated: "no locator available"
        log.debug("numba kernel %s is compiled in memory, not cached: %s", function.__qualname__, error)
        return numba.njit(cache=False, **KERNEL_OPTIONS)(function)
    cache = getattr(kernel, "_cache", None)  # numba's FunctionCache (a private attribute: checked)
    if hasattr(cache, "load_overload") and hasattr(cache, "save_overload"):
        kernel._cache = _GuardedCache(cache, function.__qualname__)
    return kernel


class _GuardedCache:
    """numba's on-disk cache of one kernel (the dispatcher's ``_cache``), where an OSError on
    reading is a miss and on writing is skipped: the kernel compiles in memory instead of failing."""

    def __init__(self, cache: Any, name: str) -> None:
        self._cache = cache
        self._name = name

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        try:
            loaded = self._cache.load_overload(sig, target_context)
        except OSError as error:
            log.debug("numba cache of %s unreadable, compiling: %s", self._name, error)
            return None
        if loaded is None:  # numba compiles now: say why this call takes seconds (the CLI shows it)
            log.info("numba is compiling the kernel %s (once per install and cache directory, 10 to 20 s; "
                     "later runs load it from %s)", self._name, self._cache.cache_path)
        return loaded

    def save_overload(self, sig: Any, data: Any) -> None:
        try:
            self._cache.save_overload(sig, data)
        except OSError as error:
            log.debug("numba cache of %s unwritable, kept in memory: %s", self._name, error)

    def __getattr__(self, name: str) -> Any:  # cache_path, flush, enable, disable, ...
        return getattr(self._cache, name)
