"""Verification against autodiff references (autograd, JAX, PyTorch) and comparison metrics."""

from fixprop.verify.experiment import Experiment, format_report, make_data, run, to_json
from fixprop.verify.metrics import Metrics, compare, compare_gradients
from fixprop.verify.references import BACKENDS, reference_gradients

__all__ = ["BACKENDS", "Experiment", "Metrics", "compare", "compare_gradients", "format_report",
           "make_data", "reference_gradients", "run", "to_json", "verify"]


def verify(**kwargs) -> dict:
    """Run the verify experiment (keyword arguments of :class:`Experiment`); returns the result dict."""
    return run(Experiment(**kwargs))
