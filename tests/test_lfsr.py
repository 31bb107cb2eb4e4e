"""The LFSR random source against an independent bit-by-bit reference, and in stochastic casts."""

from __future__ import annotations

import numpy as np
import pytest

from fixprop import ConfigError, FixedArray, QFormat
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


def test_bundles_carry_the_lfsr_lanes_and_a_stochastic_step_is_reproducible(tmp_path):
    from fixprop import MLP, Datapath
    from fixprop.hardware import export, load
    from fixprop.nn import FixedArithmetic

    dp = Datapath.uniform(16, 8, "STOCH", "SAT")
    net = MLP([3, 4, 2], init="uniform_neg")
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2))
    first = load(export(net, dp, x, y, 2, tmp_path / "a", rng=LfsrSource(seed=5)))
    again = load(export(net, dp, x, y, 2, tmp_path / "b", rng=LfsrSource(seed=5)))
    assert all(first[name].identical(again[name]) for name in first.tensors)  # same seed, same integers
    # step 0 starts after the parameters were quantized (STOCH draws from the same lanes)
    source = LfsrSource(seed=5)
    net.params_in(FixedArithmetic(dp, source), net.init_params())
    assert first["step0/lfsr_state"].raw.tolist() == source.state.astype(np.int64).tolist()
    later = first["step1/lfsr_state"]
    assert later.fmt.word == 32 and not later.fmt.signed
    assert all(int(v) != 0 for v in later.raw)  # Galois registers never reach 0
    assert later.raw.tolist() != first["step0/lfsr_state"].raw.tolist()


def test_more_than_64_dropped_bits_use_only_the_elements_own_lane():
    """Equal top bits with a set bit below round up, and lane 0 moves exactly `bits` steps."""
    seed, bits, shift = 3, 16, 70
    out, after = reference_lane(LfsrSource(seed=seed).lane_seed(0), LfsrSource().taps, bits)
    u = int("".join(map(str, out)), 2)
    dropped = (u << (shift - bits)) | 1  # top 16 bits equal U, one bit set far below
    raw = np.array([(5 << shift) + dropped], dtype=object)
    source = LfsrSource(seed=seed, bits=bits)
    got = FixedArray(raw, QFormat(shift + 8, shift)).cast("s8.0", "STOCH", rng=source)
    assert got.raw.tolist() == [6]
    assert int(source.state[0]) == after
