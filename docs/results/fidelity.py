"""Hardware-fidelity findings of docs/results.md ("The arithmetic hardware builds"): product
casts, saturating accumulators, master and working weights, piecewise-linear activations.

Run from the repository root (docs/results/reproduce.sh does): python docs/results/fidelity.py
Prints the markdown tables that docs/results.md shows and writes them to
docs/results/fidelity.md. Every number comes from fixprop's public API on its built-in data sets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fixprop import Datapath, RoleCast
from fixprop.explore.ranges import collect_training, propose_datapath
from fixprop.explore.train import TrainConfig, train
from fixprop.nn import MLP, FixedArithmetic
from fixprop.verify.experiment import Experiment, make_data, run

HERE = Path(__file__).parent


def with_roles(dp: Datapath, name: str, **roles: RoleCast) -> Datapath:
    return replace(dp, roles={**dp.roles, **roles}, name=name)


def with_layers(dp: Datapath, role: str, make) -> Datapath:
    """``dp`` with ``make(cast)`` applied to ``role`` and to its per-layer overrides."""
    layers = {layer: {r: (make(c) if r == role else c) for r, c in o.items()} for layer, o in dp.layers.items()}
    return replace(dp, roles={**dp.roles, role: make(dp[role])}, layers=layers)


def ratio(result: dict) -> str:
    return f"{result['final']['loss_ratio']:.3f}"


# -- 1. products cast to 16 bits on ik ---------------------------------------------------------
def products_on_ik() -> list[str]:
    """ik with the 16-bit proposal (docs/results/ik_w16.toml): every product cast into the
    16-bit format of the sum it feeds (product -> acc's, prop_product -> prop_err's,
    grad_product -> weight_grad's, per layer), truncated (TRN) or rounded (RND), against exact
    products."""
    base = Datapath.load(HERE / "ik_w16.toml")

    pairs = (("product", "acc"), ("prop_product", "prop_err"), ("grad_product", "weight_grad"))

    def products(rounding: str) -> Datapath:
        roles = {product: replace(base[total], rounding=rounding) for product, total in pairs}
        layers = {layer: {**o, **{product: replace(o[total], rounding=rounding) for product, total in pairs
                                  if total in o}} for layer, o in base.layers.items()}
        return replace(base, roles={**base.roles, **roles}, layers=layers, name=f"ik_w16, products {rounding}")

    rows = ["| products | fixed / float held-out loss (ik, 20 epochs) | fixed held-out loss |", "|---|---|---|"]
    for label, dp in (("exact", base), ("cast to 16 bits, TRN", products("TRN")),
                      ("cast to 16 bits, RND", products("RND"))):
        result = train(TrainConfig(dataset="ik", epochs=20), dp, count_casts=False)
        rows.append(f"| {label} | {ratio(result)} | {result['final']['fixed_test_loss']:.5f} |")
    return rows


# -- 2. a narrow saturating accumulator on the verify experiment --------------------------------
def accumulators_on_verify(seeds=range(8)) -> list[str]:
    """The verify experiment ([3,7,7,5], init uniform_neg: terms of both signs) in the seed's
    (24,12) datapath, with acc narrowed to s26.24: range [-2, 2), every fraction bit of the
    products kept (so no rounding). Partial sums reach 3.1 and final sums 3.0 over seeds 0-7.
    SAT or WRAP, accumulated exactly then cast, in sequence, or in a tree: how many acc and
    weight-gradient integers differ from the same overflow mode applied once to the exact sum,
    and the gradient error against autograd (mean over seeds)."""
    seed_dp = Datapath.seed(24, 12)
    rows = ["| acc (s26.24) | acc integers differing from exact-then-cast | weight-gradient integers differing "
            "| fixed gradient error vs autograd (mean of seeds 0-7) |", "|---|---|---|---|"]
    for overflow in ("SAT", "WRAP"):
        reference: dict[int, tuple[list, list]] = {}
        for accumulate in ("exact", "sequential", "tree"):
            acc = RoleCast(26, 24, True, "RND_CONV", overflow, accumulate)
            dp = with_roles(seed_dp, f"seed(24,12), acc s26.24 {overflow} {accumulate}", acc=acc)
            acc_diff = grad_diff = total_acc = total_grad = 0
            errors = []
            for seed in seeds:
                accs, grads = _integers(dp, seed)
                reference.setdefault(seed, (accs, grads))
                for mine, theirs in zip(accs, reference[seed][0]):
                    acc_diff += int((mine != theirs).sum())
                    total_acc += mine.size
                for mine, theirs in zip(grads, reference[seed][1]):
                    grad_diff += int((mine != theirs).sum())
                    total_grad += mine.size
                result = run(Experiment(datapath=dp, seed=seed, init="uniform_neg", timing_repeats=0))
                errors.append(result["fixed"]["mean_relative_error"])
            label = "exact, then " + overflow if accumulate == "exact" else f"{accumulate} {overflow}"
            rows.append(f"| {label} | {acc_diff} of {total_acc} | {grad_diff} of {total_grad} | "
                        f"{100 * float(np.mean(errors)):.3f}% |")
    plain = [run(Experiment(seed=seed, init="uniform_neg", timing_repeats=0))["fixed"]["mean_relative_error"]
             for seed in seeds]
    rows.append(f"| seed(24,12) as it is (acc full width, rounded to 12 bits) | - | - | "
                f"{100 * float(np.mean(plain)):.3f}% |")
    return rows


def _integers(dp: Datapath, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The verify experiment's acc integers per layer and weight-gradient integers per layer."""
    net = MLP((3, 7, 7, 5), init="uniform_neg", seed=seed)
    x, y = make_data(net, 1, seed)
    ar = FixedArithmetic(dp)
    params = net.params_in(ar, net.init_params())
    trace = net.forward(ar, params, x)
    grads = net.backward(ar, params, trace, y)
    return ([np.array(layer.acc.raw, dtype=object) for layer in trace.layers],
            [np.array(g.weight_grad.raw, dtype=object) for g in grads])


# -- 3. master and working weights on digits ----------------------------------------------------
def master_weights_on_digits() -> list[str]:
    """digits (64 -> 32 -> 10) from the 16-bit proposal (docs/results/digits_w16.toml): 8-bit
    activations and 8-bit working weights, their formats proposed at 8 bits with no margin from
    the ranges of a 10-epoch run on another seed (written to docs/results/digits_w8.toml), with
    the 16-bit master weights; against those 8-bit weights updated in place (no master copy)."""
    base = Datapath.load(HERE / "digits_w16.toml")
    collector, _ = collect_training(TrainConfig(dataset="digits", hidden=(32,), epochs=10, seed=1), base)
    w8 = propose_datapath(collector, base, 8, margin=0)
    w8.save(HERE / "digits_w8.toml")
    layers = {layer: dict(base.layers.get(layer, {})) for layer in range(2)}
    for layer in range(2):
        layers[layer]["act"] = w8.cast_for("act", layer)
        layers[layer]["weight_fwd"] = w8.cast_for("weight", layer)
    master = replace(base, layers=layers, name="16-bit master weights, 8-bit working weights and activations")
    in_place = replace(base, layers={layer: {**base.layers.get(layer, {}), "act": w8.cast_for("act", layer),
                                             "weight": w8.cast_for("weight", layer)} for layer in range(2)},
                       name="8-bit weights updated in place, 8-bit activations")
    rows = ["| weights (digits, 30 epochs) | held-out accuracy | float accuracy |", "|---|---|---|"]
    for label, dp in (("16-bit master, 8-bit working copy; 8-bit activations", master),
                      ("8-bit weights updated in place; 8-bit activations", in_place),
                      ("16-bit proposal (reference)", base)):
        result = train(TrainConfig(dataset="digits", hidden=(32,), epochs=30), dp, count_casts=False)
        final = result["final"]
        rows.append(f"| {label} | {100 * final['fixed_test_accuracy']:.1f}% | {100 * final['float_test_accuracy']:.1f}% |")
    return rows


# -- 4. piecewise-linear sigmoid ----------------------------------------------------------------
def pwl_sigmoid_networks() -> list[str]:
    """pwl_sigmoid hidden layers trained on ik and digits in the 16-bit proposals, and its
    gradient error against autograd on the verify experiment (seed (24,12), seeds 0-7)."""
    rows = ["| network | fixed / float held-out loss | float held-out loss | held-out accuracy, fixed (float) |",
            "|---|---|---|---|"]
    ik = train(TrainConfig(dataset="ik", epochs=20, activation="pwl_sigmoid"), Datapath.load(HERE / "ik_w16.toml"),
               count_casts=False)
    relu = train(TrainConfig(dataset="ik", epochs=20), Datapath.load(HERE / "ik_w16.toml"), count_casts=False)
    rows.append(f"| ik, 3 -> 16 pwl_sigmoid -> 5, ik_w16 | {ratio(ik)} | {ik['final']['float_test_loss']:.5f} "
                f"(relu: {relu['final']['float_test_loss']:.5f}) | - |")
    digits = train(TrainConfig(dataset="digits", hidden=(32,), epochs=30, activation="pwl_sigmoid"),
                   Datapath.load(HERE / "digits_w16.toml"), count_casts=False)
    final = digits["final"]
    rows.append(f"| digits, 64 -> 32 pwl_sigmoid -> 10, digits_w16 | {ratio(digits)} | {final['float_test_loss']:.4f} | "
                f"{100 * final['fixed_test_accuracy']:.1f}% ({100 * final['float_test_accuracy']:.1f}%) |")
    errors = {name: [] for name in ("float", "fixed")}
    for seed in range(8):
        result = run(Experiment(activation="pwl_sigmoid", seed=seed, timing_repeats=0))
        for name in errors:
            errors[name].append(result[name]["mean_relative_error"])
    relu = [run(Experiment(seed=seed, timing_repeats=0))["fixed"]["mean_relative_error"] for seed in range(8)]
    rows += ["", "| verify, [3,7,7,5] pwl_sigmoid, seed(24,12) | gradient error vs autograd (mean of seeds 0-7) |",
             "|---|---|",
             f"| float | {100 * float(np.mean(errors['float'])):.2e}% |",
             f"| fixed | {100 * float(np.mean(errors['fixed'])):.2f}% |",
             f"| fixed, the same network with relu | {100 * float(np.mean(relu)):.2f}% |"]
    return rows


# -- 5. dynamic fixed point on ik ---------------------------------------------------------------
def dynamic_on_ik() -> list[str]:
    """ik at 12-bit words: the 16-bit proposal moved to 12 bits (same integer bits: sweep's
    rescale), static, against the same formats as the initial fractions of dynamic ones (every
    role but the data, bounds +-4 bits, a check every 50 steps, overflow rate 1e-3); and a
    uniform s12.6 start, static and dynamic."""
    from fixprop.datapath import DynamicRule
    from fixprop.explore.sweep import rescaled

    def dynamic(dp: Datapath, name: str) -> Datapath:
        def moving(role: str, cast: RoleCast) -> RoleCast:
            if role in ("input", "target", "momentum") or cast.word is None or cast.frac is None:
                return cast
            return replace(cast, dynamic=(cast.frac - 4, cast.frac + 4))

        return replace(dp, roles={r: moving(r, c) for r, c in dp.roles.items()},
                       layers={layer: {r: moving(r, c) for r, c in o.items()} for layer, o in dp.layers.items()},
                       dynamic=DynamicRule(50, 1e-3), name=name)

    proposal = rescaled(Datapath.load(HERE / "ik_w16.toml"), 12)
    uniform = Datapath.uniform(12, 6)
    rows = ["| ik, 12-bit words, 20 epochs | fixed / float held-out loss | final fractions (weight, act per layer) |",
            "|---|---|---|"]
    for label, dp in (("16-bit proposal at 12 bits, static", proposal),
                      ("the same, dynamic", dynamic(proposal, "proposal at 12 bits, dynamic")),
                      ("uniform s12.6, static", uniform),
                      ("uniform s12.6, dynamic", dynamic(uniform, "uniform s12.6, dynamic"))):
        result = train(TrainConfig(dataset="ik", epochs=20), dp, count_casts=False)
        fracs = result["dynamic_fractions"]
        shown = "-" if fracs is None else ", ".join(f"{k} {v}" for k, v in fracs[-1].items()
                                                    if k.split("/")[0] in ("weight", "act"))
        rows.append(f"| {label} | {ratio(result)} | {shown} |")
    return rows


def main() -> None:
    sections = [("Products cast before the adder (ik)", products_on_ik()),
                ("A narrow saturating accumulator (verify experiment)", accumulators_on_verify()),
                ("Master and working weights (digits)", master_weights_on_digits()),
                ("Piecewise-linear sigmoid", pwl_sigmoid_networks()),
                ("Dynamic fixed point (ik, 12-bit words)", dynamic_on_ik())]
    text = "\n\n".join(f"### {title}\n\n" + "\n".join(rows) for title, rows in sections) + "\n"
    (HERE / "fidelity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
