"""Hardware hand-off: test-vector bundles for RTL testbenches (docs/hardware.md)."""

import copy

from fixprop.errors import FixpropError
from fixprop.hardware.bundle import STAGES, Bundle, BundleError, check_out, load, training_tensors, write
from fixprop.hardware.lfsr import LfsrSource

__all__ = ["STAGES", "Bundle", "BundleError", "LfsrSource", "check_engine", "check_out", "export", "load",
           "training_tensors", "write"]


def export(net, datapath, x, y, steps: int, out, params=None, rng=None, overwrite: bool = False,
           check_backend: str | None = None):
    """Run ``steps`` SGD steps of ``net`` under ``datapath`` on x, y (steps * batch samples) and
    write every stage's integers as a bundle in ``out``; returns the bundle's path. An ``out``
    that may not be written (``check_out``) is refused before the steps run.

    ``check_backend`` (auto, numpy or numba): before writing, the same steps also run on that
    compiled engine (``Model.train_step``), and its parameters after every step must equal the
    bundle's ``weight_updated``/``bias_updated``; a difference raises and nothing is written.
    When the input or target role rounds STOCH the check is not possible (the step-by-step pass
    draws their words between the forward casts') and raises ConfigError."""
    check_out(out, overwrite)
    check_rng = copy.deepcopy(rng)  # the same random stream for the engine's run
    tensors = training_tensors(net, datapath, x, y, steps, params, rng)
    if check_backend is not None:
        check_engine(net, datapath, x, y, steps, params, check_rng, tensors, check_backend)
    from fixprop.hardware.state import network_table

    network = {**network_table(net), "init": net.init, "seed": net.seed, "steps": steps, "batch": len(x) // steps}
    return write(tensors, out, datapath, network, overwrite, lfsr=rng if isinstance(rng, LfsrSource) else None)


def check_engine(net, datapath, x, y, steps: int, params, rng, tensors, backend: str) -> None:
    """Run the steps of :func:`training_tensors` on the compiled engine ``backend`` (from the
    same initial parameters and random stream ``rng``) and raise FixpropError at the first
    parameter that differs from the tensors' ``weight_updated``/``bias_updated``."""
    from fixprop.errors import ConfigError
    from fixprop.fixed.modes import Rounding
    from fixprop.nn.arithmetic import FixedArithmetic
    from fixprop.nn.mlp import Model

    if datapath.needs_stepwise:
        raise ConfigError("this datapath (product casts, register accumulators or dynamic fractions) trains "
                          "only on the step-by-step path that writes the bundle: there is no compiled engine to "
                          "check; leave out --backend")
    stochastic = [role for role in ("input", "target") if datapath.cast_for(role, None).rounding is Rounding.STOCH]
    if stochastic:
        roles = " and ".join(stochastic) + (" roles round" if len(stochastic) > 1 else " role rounds")
        raise ConfigError(f"the {roles} STOCH: the engine cannot replay the step-by-step pass's random "
                          "words for it; check another datapath, or leave out --backend")
    model = Model(net, FixedArithmetic(datapath, rng), net.init_params() if params is None else params,
                  datapath.momentum is not None, backend=backend)
    by_name = dict(tensors)
    batch = len(x) // steps
    for t in range(steps):
        model.train_step(x[t * batch:(t + 1) * batch], y[t * batch:(t + 1) * batch])
        for i, p in enumerate(model.params):
            for stage, got in (("weight_updated", p.weight), ("bias_updated", p.bias)):
                want = by_name[f"step{t}/layer{i}/{stage}"]
                if got.fmt != want.fmt or not (got.raw == want.raw).all():
                    raise FixpropError(f"the {backend} engine differs from the step-by-step pass at step {t}, "
                                       f"layer {i}, {stage}: please report this as a fixprop bug")
