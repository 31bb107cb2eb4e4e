"""Gradient comparison metrics that survive zero gradients.

The seed's "percentage difference" divides by the reference, which fails where the reference
is exactly zero (dead ReLUs). Here such entries are excluded from the relative error and
counted (``zero_reference_count``); the other metrics need no division by single entries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """How far ``got`` is from ``ref`` (both float64 arrays of one tensor or of many).

    mean_relative_error: mean of |got - ref| / |ref| over entries with ref != 0 (a fraction);
    zero_reference_count: entries excluded because ref == 0; max_abs_error; max_abs_error_lsb:
    the same in LSBs of the gradient's format (None in float); relative_rms_error:
    ||got - ref|| / ||ref||; sqnr_db: 10 log10(sum ref^2 / sum (got - ref)^2) (inf when equal);
    cosine_similarity; sign_agreement: fraction of entries whose signs (-1, 0, +1) agree.
    """

    count: int
    mean_relative_error: float
    zero_reference_count: int
    max_abs_error: float
    max_abs_error_lsb: float | None
    relative_rms_error: float
    sqnr_db: float
    cosine_similarity: float
    sign_agreement: float

    def to_json(self) -> dict:
        """As a dict for JSON: infinities and NaN become None (JSON has neither)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def compare(got: np.ndarray, ref: np.ndarray, lsb: float | None = None) -> Metrics:
    """Metrics of ``got`` against the reference ``ref`` (same shape); ``lsb`` is got's LSB weight."""
    got = np.asarray(got, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if got.shape != ref.shape:
        raise ValueError(f"cannot compare arrays of {got.size} and {ref.size} entries")
    err = got - ref
    nonzero = ref != 0
    relative = np.abs(err[nonzero]) / np.abs(ref[nonzero])
    ref_energy, err_energy = float(np.sum(ref**2)), float(np.sum(err**2))
    norm_product = math.sqrt(float(np.sum(got**2)) * ref_energy)
    max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    return Metrics(
        count=int(got.size),
        mean_relative_error=float(relative.mean()) if relative.size else math.nan,
        zero_reference_count=int((~nonzero).sum()),
        max_abs_error=max_abs,
        max_abs_error_lsb=None if lsb is None else max_abs / lsb,
        relative_rms_error=math.sqrt(err_energy / ref_energy) if ref_energy else (0.0 if err_energy == 0 else math.inf),
        sqnr_db=10 * math.log10(ref_energy / err_energy) if err_energy else math.inf,
        cosine_similarity=float(np.dot(got, ref)) / norm_product if norm_product else float(err_energy == 0),
        sign_agreement=float(np.mean(np.sign(got) == np.sign(ref))) if got.size else 1.0,
    )


def seed_mean_relative_error(per_tensor: Sequence[tuple[Metrics, Metrics]]) -> float:
    """The seed notebook's overall figure: (mean over layers of the weight errors + mean over
    layers of the bias errors) / 2, each tensor's error being its mean relative error.
    Tensors whose reference is entirely zero have no relative error and are left out."""
    weights = [w.mean_relative_error for w, _ in per_tensor if not math.isnan(w.mean_relative_error)]
    biases = [b.mean_relative_error for _, b in per_tensor if not math.isnan(b.mean_relative_error)]
    parts = [float(np.mean(v)) for v in (weights, biases) if v]
    return float(np.mean(parts)) if parts else math.nan


def compare_gradients(
    got: Sequence[tuple[np.ndarray, np.ndarray]],
    ref: Sequence[tuple[np.ndarray, np.ndarray]],
    lsb: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict:
    """Per-layer and overall metrics of (weight_grad, bias_grad) lists against a reference.

    Returns ``{"mean_relative_error": <seed's overall figure>, "overall": Metrics of every entry,
    "layers": [{"weight": Metrics, "bias": Metrics}, ...]}``; ``lsb`` gives the LSB weight of
    each layer's weight and bias gradient formats (fixed point only).
    """
    layers = []
    for i, ((gw, gb), (rw, rb)) in enumerate(zip(got, ref)):
        lsb_w = lsb[0][i] if lsb else None
        lsb_b = lsb[1][i] if lsb else None
        layers.append((compare(gw, rw, lsb_w), compare(gb, rb, lsb_b)))
    flat_got = np.concatenate([np.ravel(a) for pair in got for a in pair])
    flat_ref = np.concatenate([np.ravel(a) for pair in ref for a in pair])
    overall = compare(flat_got, flat_ref)
    if lsb:  # the overall LSB figure is the largest per-tensor one
        overall = Metrics(**{**asdict(overall), "max_abs_error_lsb": max(
            m.max_abs_error_lsb for pair in layers for m in pair)})
    return {
        "mean_relative_error": seed_mean_relative_error(layers),
        "overall": overall,
        "layers": [{"weight": w, "bias": b} for w, b in layers],
    }
