"""An LFSR random source for ``Rounding.STOCH`` that RTL can reproduce bit for bit.

Specification (docs/hardware.md, "Stochastic rounding with an LFSR"):

- One register per lane: lane k serves element k (row-major) of every stochastic cast; a cast
  of n elements uses lanes 0..n-1 and leaves the others as they are. Casts happen in the order
  of docs/datapath.md (forward layer by layer, output error, backward from the last layer, update).
- Each register is a ``width``-bit Galois LFSR shifting right: each step outputs its least
  significant bit ``o``, shifts right by one, and XORs ``taps`` into the register when ``o`` is 1.
  The default is 32 bits with taps 0x80200003 (x^32 + x^22 + x^2 + x + 1, maximal length).
- Lane k starts from ``(seed + k * 0x9E3779B9) mod 2**width`` (1 instead of 0).
- Each rounding takes ``bits`` steps of its lane; the first output bit is the most significant of
  an integer ``U`` of ``bits`` bits. The element rounds up when
  ``U * 2**(64 - bits) < dropped * 2**(64 - shift)``: U against the dropped fraction's top
  ``bits`` bits, up also on equality when any lower dropped bit is set.
"""

from __future__ import annotations

import numpy as np

from fixprop.errors import ConfigError

#: x^32 + x^22 + x^2 + x + 1 in right-shifting Galois form.
DEFAULT_TAPS = 0x80200003
LANE_STRIDE = 0x9E3779B9


class LfsrSource:
    """Per-lane Galois LFSRs; pass as ``rng`` wherever STOCH needs a random source.

    Args:
        seed: the lanes' common seed (lane k starts at ``seed + k * 0x9E3779B9``, mod 2**width).
        bits: random bits each rounding consumes (1..64).
        width: register width in bits (2..63).
        taps: feedback mask of the Galois form (bit ``width-1`` must be set).
    """

    def __init__(self, seed: int = 1, bits: int = 16, width: int = 32, taps: int = DEFAULT_TAPS) -> None:
        if not 2 <= width <= 63:
            raise ConfigError(f"LFSR width must be 2..63 bits; got {width}")
        if not 1 <= bits <= 64:
            raise ConfigError(f"LFSR bits per rounding must be 1..64; got {bits}")
        if taps >> width or not taps >> (width - 1):
            raise ConfigError(f"LFSR taps {taps:#x} must have bit {width - 1} set and fit {width} bits")
        self.seed, self.bits, self.width, self.taps = seed, bits, width, taps
        self.state = np.zeros(0, dtype=np.uint64)

    def lane_seed(self, lane: int) -> int:
        """The initial register of a lane."""
        value = (self.seed + lane * LANE_STRIDE) % (1 << self.width)
        return value or 1

    def _ensure_lanes(self, n: int) -> None:
        if n > len(self.state):
            new = np.array([self.lane_seed(k) for k in range(len(self.state), n)], dtype=np.uint64)
            self.state = np.concatenate([self.state, new])

    def random_words(self, shape: tuple[int, ...]) -> np.ndarray:
        """One 64-bit word per element: the lane's next ``bits`` output bits, MSB first, in the
        top bits of the word (the low ``64 - bits`` bits are zero)."""
        n = int(np.prod(shape, dtype=np.int64))
        self._ensure_lanes(n)
        state = self.state[:n].copy()
        taps = np.uint64(self.taps)
        word = np.zeros(n, dtype=np.uint64)
        one = np.uint64(1)
        for _ in range(self.bits):
            out = state & one
            word = (word << one) | out
            state = (state >> one) ^ (taps * out)
        self.state[:n] = state
        if self.bits < 64:
            word = word << np.uint64(64 - self.bits)
        return word.reshape(shape)
