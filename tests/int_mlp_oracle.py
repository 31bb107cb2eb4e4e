"""An independent Python-int implementation of the fixed-point MLP, from docs/datapath.md.

Shares no code with fixprop's network or arithmetic: values are lists of Python ints with an
explicit fraction count, every cast goes through oracle.round_fraction / overflow_int. It reads
the datapath object only as configuration.
"""

from __future__ import annotations

from fractions import Fraction

from oracle import overflow_int, round_fraction

MEAN_SCALE_BITS = 24  # docs/datapath.md: mse multiplies by round(2**f / N) * 2**-f, f = 24 + ceil(log2 N)


class Val:
    """One exact fixed-point number: integer ``raw`` at ``frac`` fraction bits."""

    __slots__ = ("raw", "frac")

    def __init__(self, raw: int, frac: int):
        self.raw, self.frac = raw, frac

    def at(self, frac: int) -> int:
        assert frac >= self.frac
        return self.raw << (frac - self.frac)

    def __add__(self, other: "Val") -> "Val":
        f = max(self.frac, other.frac)
        return Val(self.at(f) + other.at(f), f)

    def __sub__(self, other: "Val") -> "Val":
        f = max(self.frac, other.frac)
        return Val(self.at(f) - other.at(f), f)

    def __mul__(self, other: "Val") -> "Val":
        return Val(self.raw * other.raw, self.frac + other.frac)

    def fraction(self) -> Fraction:
        return Fraction(self.raw) / Fraction(2) ** self.frac


def total(vals: list[Val]) -> Val:
    out = vals[0]
    for v in vals[1:]:
        out = out + v
    return out


def cast(v: Val, spec) -> Val:
    """The role cast: round to spec.frac (or keep), then overflow into spec.word (or keep all bits)."""
    frac = v.frac if spec.frac is None else spec.frac
    rounded = round_fraction(Fraction(v.raw) * Fraction(2) ** (frac - v.frac), spec.rounding.name)
    if spec.word is None:
        return Val(rounded, frac)
    return Val(overflow_int(rounded, spec.word, spec.signed, spec.overflow.name), frac)


def quantize(x: float, spec) -> Val:
    rounded = round_fraction(Fraction(x) * Fraction(2) ** spec.frac, spec.rounding.name)
    return Val(overflow_int(rounded, spec.word, spec.signed, spec.overflow.name), spec.frac)


def activation(name: str, z: Val) -> Val:
    if name == "relu":
        return z if z.raw > 0 else Val(0, z.frac)
    if name == "linear":
        return z
    if name.startswith("leaky_relu:"):
        k = int(name.split(":")[1])
        return Val(z.raw << k, z.frac + k) if z.raw > 0 else Val(z.raw, z.frac + k)
    if name == "hard_tanh":
        one = Fraction(1)
        if z.fraction() >= one:
            return Val(1, 0)
        if z.fraction() <= -one:
            return Val(-1, 0)
        return z
    raise ValueError(name)


def derivative(name: str, z: Val, relu_at_zero: float) -> Val:
    if name == "relu":
        half_units = 2 if z.raw > 0 else (int(relu_at_zero * 2) if z.raw == 0 else 0)
        return Val(half_units, 1)
    if name == "linear":
        return Val(1, 0)
    if name.startswith("leaky_relu:"):
        k = int(name.split(":")[1])
        return Val(1 << k if z.raw > 0 else 1, k)
    if name == "hard_tanh":
        return Val(1 if -1 < z.fraction() < 1 else 0, 0)
    raise ValueError(name)


def train_step(dp, activations: list[str], loss: str, weights, biases, xs, ys, velocity=None):
    """One forward + backward + SGD step on a batch. weights[l][j][i], biases[l][j] are floats
    (the initial values) or Vals; xs, ys lists of float rows. Returns a dict of every stage."""
    W = [[[w if isinstance(w, Val) else quantize(w, dp.cast_for("weight", l)) for w in row] for row in layer]
         for l, layer in enumerate(weights)]
    B = [[b if isinstance(b, Val) else quantize(b, dp.cast_for("bias", l)) for b in layer] for l, layer in enumerate(biases)]
    batch = len(xs)
    acts = [[[quantize(v, dp["input"]) for v in row] for row in xs]]
    pres = []
    for l in range(len(W)):
        pre_l, act_l = [], []
        for a in acts[-1]:
            pre_row, act_row = [], []
            for j in range(len(W[l])):
                product = total([W[l][j][i] * a[i] for i in range(len(a))])
                pre = cast(cast(product, dp.cast_for("acc", l)) + B[l][j], dp.cast_for("pre", l))
                pre_row.append(pre)
                act_row.append(cast(activation(activations[l], pre), dp.cast_for("act", l)))
            pre_l.append(pre_row)
            act_l.append(act_row)
        pres.append(pre_l)
        acts.append(act_l)
    Y = [[quantize(v, dp["target"]) for v in row] for row in ys]
    n_out = len(Y[0])
    errors = []
    for b in range(batch):
        row = []
        for j in range(n_out):
            diff = acts[-1][b][j] - Y[b][j]
            if loss == "half_sse":
                g = diff
            elif loss == "sse":
                g = Val(diff.raw, diff.frac - 1)  # 2 * diff
            else:
                n = batch * n_out
                f = MEAN_SCALE_BITS + (n - 1).bit_length()
                scale = Val(round_fraction(Fraction(2**f, n), "RND_CONV"), f)
                g = Val(diff.raw, diff.frac - 1) * scale
            row.append(cast(g, dp.cast_for("out_err", len(W) - 1)))
        errors.append(row)
    grads = [None] * len(W)
    for l in reversed(range(len(W))):
        local = [[cast(errors[b][j] * derivative(activations[l], pres[l][b][j], dp.relu_grad_at_zero), dp.cast_for("bias_grad", l))
                  for j in range(len(W[l]))] for b in range(batch)]
        bias_grad = [cast(total([local[b][j] for b in range(batch)]), dp.cast_for("bias_grad", l)) for j in range(len(W[l]))]
        weight_grad = [[cast(total([local[b][j] * acts[l][b][i] for b in range(batch)]), dp.cast_for("weight_grad", l))
                        for i in range(len(W[l][0]))] for j in range(len(W[l]))]
        prop = None
        if l > 0:
            prop = [[cast(total([local[b][j] * W[l][j][i] for j in range(len(W[l]))]), dp.cast_for("prop_err", l))
                     for i in range(len(W[l][0]))] for b in range(batch)]
        grads[l] = {"error": errors, "local": local, "bias_grad": bias_grad, "weight_grad": weight_grad, "prop": prop}
        errors = prop

    def lr_times(v: Val) -> Val:
        if dp.lr_shift is not None:
            return Val(v.raw, v.frac + dp.lr_shift)
        return v * Val(dp.lr.raw, dp.lr.fmt.frac)

    def step(value: Val, grad: Val, role: str, v_old: Val | None, l: int):
        s = grad
        v_new = None
        if v_old is not None:
            mu = Val(dp.momentum.raw, dp.momentum.fmt.frac)
            v_new = cast(mu * v_old + grad, dp.cast_for("momentum", l))
            s = v_new
        return cast(value - cast(lr_times(s), dp.cast_for("update", l)), dp.cast_for(role, l)), v_new

    new_W, new_B, new_V = [], [], []
    for l in range(len(W)):
        vw = velocity[l][0] if velocity else None
        vb = velocity[l][1] if velocity else None
        w_rows, vw_rows = [], []
        for j in range(len(W[l])):
            pairs = [step(W[l][j][i], grads[l]["weight_grad"][j][i], "weight", vw[j][i] if vw else None, l)
                     for i in range(len(W[l][0]))]
            w_rows.append([p[0] for p in pairs])
            vw_rows.append([p[1] for p in pairs])
        b_pairs = [step(B[l][j], grads[l]["bias_grad"][j], "bias", vb[j] if vb else None, l) for j in range(len(W[l]))]
        new_W.append(w_rows)
        new_B.append([p[0] for p in b_pairs])
        new_V.append((vw_rows, [p[1] for p in b_pairs]))
    return {"acts": acts, "pres": pres, "grads": grads, "weights": new_W, "biases": new_B, "velocity": new_V}
