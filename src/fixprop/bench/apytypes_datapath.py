"""The benchmark's training step written idiomatically on APyTypes arrays: a fair peer.

Same network, same datapath casts and modes as fixprop's fixed-point step (every role s16.10,
RND, SAT; lr 2**-7 as a shift), using APyTypes' own vectorized operations: full-precision
``@``, ``+``, ``*``, ``.cast`` per role, ReLU and its derivative as products with 0/1 masks.
``fixprop bench`` checks that it produces the same integers as fixprop before timing it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _apy():
    import apytypes

    return apytypes


class ApyTypesStep:
    """One SGD step of a ReLU MLP with sse loss on APyFixedArray, every role cast to (word, frac)."""

    def __init__(self, word: int, frac: int, lr_shift: int, rounding: str = "RND", overflow: str = "SAT"):
        apy = _apy()
        self.int_bits, self.frac = word - frac, frac
        self.lr_shift = lr_shift
        self.q = getattr(apy.QuantizationMode, rounding)
        self.o = getattr(apy.OverflowMode, overflow)

    def cast(self, x):
        """The datapath's cast, every role the same format."""
        return x.cast(int_bits=self.int_bits, frac_bits=self.frac, quantization=self.q, overflow=self.o)

    def from_raw(self, raw: np.ndarray):
        """fixprop raw integers of the role format as an APyFixedArray.

        (APyTypes 0.5.1 takes an int64 ndarray as signed integers; an ndarray of two's-complement
        bit patterns is not wrapped to the word and gives wrong products, lists are.)"""
        apy = _apy()
        writable = np.array(raw, dtype=np.int64)  # a read-only array is not taken as an ndarray
        return apy.APyFixedArray(writable, int_bits=self.int_bits, frac_bits=self.frac)

    @staticmethod
    def mask(condition: np.ndarray, scale_frac: int = 0):
        """A 0/1 (or 0/2**-scale_frac steps) APyFixedArray from a numpy mask."""
        apy = _apy()
        return apy.APyFixedArray(np.asarray(condition, dtype=np.int64), int_bits=2, frac_bits=scale_frac)

    def step(self, weights: Sequence, biases: Sequence, x, y):
        """Forward, backward (relu'(0) = 1/2) and update; returns (new weights, new biases)."""
        acts, pres = [x], []
        a = x
        for w, b in zip(weights, biases):
            acc = self.cast(a @ w.T)
            pre = self.cast(acc + b)  # bias broadcast over the batch
            pres.append(pre)
            a = self.cast(pre * self.mask(pre.to_numpy() > 0))
            acts.append(a)
        error = self.cast((a - y) << 1)
        new_w, new_b = [None] * len(weights), [None] * len(weights)
        for i in reversed(range(len(weights))):
            z = pres[i].to_numpy()
            derivative = self.mask((z > 0) * 2 + (z == 0) * 1, scale_frac=1)  # 1, 1/2 at 0, 0
            local = self.cast(error * derivative)
            bias_grad = self.cast(local.sum(axis=0))
            weight_grad = self.cast(local.T @ acts[i])
            if i > 0:
                error = self.cast(local @ weights[i])
            new_w[i] = self.cast(weights[i] - self.cast(weight_grad >> self.lr_shift))
            new_b[i] = self.cast(biases[i] - self.cast(bias_grad >> self.lr_shift))
        return new_w, new_b

    def raw(self, x) -> np.ndarray:
        """Signed raw integers of an APyFixedArray in the role format."""
        bits = self.int_bits + self.frac
        u = np.asarray(x.to_bits(), dtype=np.int64)
        return np.where(u >= 1 << (bits - 1), u - (1 << bits), u)
