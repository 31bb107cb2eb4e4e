"""cocotb 2.x testbench: drives layer_top.v (dense_layer + grad_unit) with a fixprop bundle and
checks every integer.

The bundle is read with ``fixprop.hardware.load`` (which verifies its hashes). For every step and
sample, layer 0's input, weight and bias go in and acc, pre and act must equal the bundle's; then
the step's local errors and inputs run through the gradient accumulators and weight_grad must
equal the bundle's.
Run it with ``run_cocotb.py BUNDLE_DIR --round RND|RND_CONV`` (or through its ``run`` function).
"""

from __future__ import annotations

import os

import cocotb
from cocotb.triggers import Timer

from fixprop.hardware import load


def pack(values, word: int) -> int:
    """Little-endian packing of two's-complement words: element i at bits [i*word, (i+1)*word)."""
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << word) - 1)) << (i * word)
    return out


def unpack(bits: int, word: int, count: int) -> list[int]:
    """Signed words from a packed vector (the inverse of :func:`pack`)."""
    values = []
    for i in range(count):
        v = (bits >> (i * word)) & ((1 << word) - 1)
        values.append(v - (1 << word) if v >> (word - 1) else v)
    return values


async def clock(dut) -> None:
    """One rising and falling edge of clk."""
    await Timer(1, unit="ns")
    dut.clk.value = 1
    await Timer(1, unit="ns")
    dut.clk.value = 0


@cocotb.test()
async def bundle_layer0(dut):
    """Every sample of every step of layer 0 of the bundle in FIXPROP_BUNDLE."""
    bundle = load(os.environ["FIXPROP_BUNDLE"])
    steps = bundle.manifest["network"]["steps"]
    w_acc = len(dut.acc.value) // int(dut.N_OUT.value)
    w_pre = len(dut.pre.value) // int(dut.N_OUT.value)
    dut.clk.value, dut.clear.value, dut.valid.value = 0, 0, 0
    checked = mismatches = 0
    for t in range(steps):
        weight, bias = bundle[f"step{t}/layer0/weight"], bundle[f"step{t}/layer0/bias"]
        n_out, n_in = weight.shape
        dut.w.value = pack(weight.raw.reshape(-1), weight.fmt.word)
        dut.b.value = pack(bias.raw, bias.fmt.word)
        inputs = bundle[f"step{t}/layer0/input"]
        expected = {stage: bundle[f"step{t}/layer0/{stage}"].raw for stage in ("acc", "pre", "act")}
        for s in range(inputs.shape[0]):
            dut.a.value = pack(inputs.raw[s], inputs.fmt.word)
            await Timer(1, unit="ns")
            got = {"acc": unpack(dut.acc.value.to_unsigned(), w_acc, n_out),
                   "pre": unpack(dut.pre.value.to_unsigned(), w_pre, n_out),
                   "act": unpack(dut.act.value.to_unsigned(), w_pre, n_out)}
            for stage, values in got.items():
                for o, value in enumerate(values):
                    checked += 1
                    if value != int(expected[stage][s, o]):
                        mismatches += 1
                        dut._log.error(f"step {t} sample {s} {stage}[{o}]: rtl {value}, bundle "
                                       f"{int(expected[stage][s, o])}")
        # the weight gradient of the step: one sample per clock through the accumulators
        local = bundle[f"step{t}/layer0/local"]
        wanted = bundle[f"step{t}/layer0/weight_grad"]
        dut.clear.value, dut.valid.value = 1, 0
        await clock(dut)
        dut.clear.value, dut.valid.value = 0, 1
        for s in range(inputs.shape[0]):
            dut.a.value = pack(inputs.raw[s], inputs.fmt.word)
            dut.local_error.value = pack(local.raw[s], local.fmt.word)
            await clock(dut)
        dut.valid.value = 0
        await Timer(1, unit="ns")
        got = unpack(dut.weight_grad.value.to_unsigned(), wanted.fmt.word, wanted.size)
        for k, value in enumerate(got):
            checked += 1
            if value != int(wanted.raw.reshape(-1)[k]):
                mismatches += 1
                dut._log.error(f"step {t} weight_grad[{k}]: rtl {value}, bundle {int(wanted.raw.reshape(-1)[k])}")
    dut._log.info(f"{checked} values checked, {mismatches} mismatches")
    assert mismatches == 0, f"{mismatches} of {checked} values differ from the bundle"
