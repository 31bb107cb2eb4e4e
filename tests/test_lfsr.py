"""The LFSR random source against an independent bit-by-bit reference, and in stochastic casts."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop import ConfigError, FixedArray
from fixprop.hardware import LfsrSource


def reference_lane(state: int, taps: int, steps: int) -> tuple[list[int], int]:
    """Bit by bit: output the LSB, shift right, XOR the taps in when the output was 1."""
    bits = []
    for _ in range(steps):
        out = state & 1
        bits.append(out)
        state >>= 1
        if out:
            state ^= taps
    return bits, state


def test_four_bit_register_has_maximal_period():
    source = LfsrSource(seed=1, bits=1, width=4, taps=0b1100)  # x^4 + x^3 + 1
    states = set()
    for _ in range(15):
        states.add(int(source.state[0]) if len(source.state) else 1)
        source.random_words((1,))
    assert len(states) == 15 and int(source.state[0]) == 1  # all 15 nonzero states, then back


@pytest.mark.parametrize("bits", [1, 7, 16, 64])
def test_words_equal_the_bit_by_bit_reference(bits):
    source = LfsrSource(seed=12345, bits=bits)
    lanes = [source.lane_seed(k) for k in range(5)]
    for call in range(3):
        words = source.random_words((5,))
        for k in range(5):
            out, lanes[k] = reference_lane(lanes[k], source.taps, bits)
            value = int("".join(map(str, out)), 2)  # first output bit is the MSB
            assert int(words[k]) == value << (64 - bits), (call, k)


def test_a_cast_rounds_up_exactly_when_the_lane_word_is_below_the_dropped_bits():
    raw = np.array([5, -3, 7, 1, 0, 6, -8, 2])
    got = FixedArray(raw, "s8.3").cast("s8.0", "STOCH", rng=LfsrSource(seed=7, bits=16))
    ref = LfsrSource(seed=7, bits=16)
    expected = []
    for k, r in enumerate(raw.tolist()):
        out, _ = reference_lane(ref.lane_seed(k), ref.taps, 16)
        u = int("".join(map(str, out)), 2)
        dropped = r & 7
        expected.append((r >> 3) + (u << 48 < dropped << 61))
    assert got.raw.tolist() == expected


def test_lfsr_rounding_is_nearly_unbiased():
    x = FixedArray(np.full(20_000, 5), "s8.3")  # 0.625
    got = x.cast("s8.0", "STOCH", rng=LfsrSource(seed=99, bits=16))
    assert abs(float(got.raw.mean()) - 0.625) < 0.02


def test_bad_lfsr_settings():
    with pytest.raises(ConfigError, match="width"):
        LfsrSource(width=70)
    with pytest.raises(ConfigError, match="taps"):
        LfsrSource(taps=0x3)
