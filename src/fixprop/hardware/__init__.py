"""Hardware hand-off: test-vector bundles for RTL testbenches (docs/hardware.md)."""

from fixprop.hardware.bundle import STAGES, Bundle, BundleError, check_out, load, training_tensors, write
from fixprop.hardware.lfsr import LfsrSource

__all__ = ["STAGES", "Bundle", "BundleError", "LfsrSource", "check_out", "export", "load", "training_tensors", "write"]


def export(net, datapath, x, y, steps: int, out, params=None, rng=None, overwrite: bool = False):
    """Run ``steps`` SGD steps of ``net`` under ``datapath`` on x, y (steps * batch samples) and
    write every stage's integers as a bundle in ``out``; returns the bundle's path. An ``out``
    that may not be written (``check_out``) is refused before the steps run."""
    check_out(out, overwrite)
    tensors = training_tensors(net, datapath, x, y, steps, params, rng)
    network = {"layer_sizes": net.layer_sizes, "activation": str(net.activation),
               "output_activation": str(net.output_activation), "loss": net.loss.name,
               "init": net.init, "seed": net.seed, "steps": steps, "batch": len(x) // steps}
    return write(tensors, out, datapath, network, overwrite)
