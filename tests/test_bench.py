"""`fixprop bench --quick --json`: the structure of its output (never its timings)."""

from __future__ import annotations

import json

from fixprop.cli import main

RATIO_KEYS = {
    "matmul_vs_blas", "train_step_vs_float", "autograd_vs_fixprop_per_sample",
    "autograd_vs_fixprop_per_sample_fixed", "autograd_loop_vs_fixprop_batched", "memory_vs_float",
    "backend_auto_vs_best_worst",
}


def test_bench_quick_json_structure(capsys):
    assert main(["bench", "--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert RATIO_KEYS <= set(result["ratios"])
    assert all(isinstance(v, float) and v > 0 for v in result["ratios"].values())
    assert result["matmul"]["typical"]["exact"] and result["matmul"]["full_scale"]["exact"]
    assert {"fixprop", "numpy_float64", "numpy_int64"} <= set(result["matmul"]["typical"]["seconds"])
    assert {"fixprop_fixed", "fixprop_float", "autograd_float"} <= set(result["train_step"]["seconds"])
    if result["peers"]["apytypes"]:
        assert "apytypes_vs_fixprop" in result["ratios"]
        assert result["train_step"]["apytypes_same_integers"] is True  # the peer computes the same integers
    assert {"fixprop_float", "fixprop_fixed", "autograd_grad", "compat_class_float"} <= set(
        result["seed"]["per_sample_seconds"])
    assert {"fixprop_fixed", "fixprop_float"} <= set(result["memory"]["peak_bytes"])
    assert set(result["targets"]) <= set(result["ratios"])
    for case in result["backends"]["cases"]:  # every engine timed side by side, and auto's choice named
        assert set(case["seconds"]) == {"numpy", "numba", "auto"} and case["auto_chose"] in ("numpy", "numba")
    compile_cost = result["compile"]  # cold and cached, each in fresh processes
    assert compile_cost["numba_available"] is True
    for kind in ("cold", "cached"):
        assert {"import_numba", "first_step", "second_step", "first_step_with_numba_import"} <= set(compile_cost[kind])
    assert {"compile_cold_seconds", "compile_cached_seconds"} <= set(result["ratios"])
    assert result["train"]["same_results"] is True  # both engines' training results compared, equal
    assert {"ik_train_numpy_vs_compiled", "ik_train_numpy_vs_compiled_no_counts"} <= set(result["ratios"])


def test_bench_rejects_unknown_sections(capsys):
    assert main(["bench", "--quick", "nonsense"]) == 2
    assert "allowed: matmul, train_step, seed, memory, backends, compile, train" in capsys.readouterr().err
