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
    if isinstance(spec, Site):
        spec.record.setdefault(spec.site, []).append(v.fraction())
    frac = v.frac if spec.frac is None else spec.frac
    rounded = round_fraction(Fraction(v.raw) * Fraction(2) ** (frac - v.frac), spec.rounding.name)
    if spec.word is None:
        return Val(rounded, frac)
    return Val(overflow_int(rounded, spec.word, spec.signed, spec.overflow.name), frac)


def optional(dp, role: str, layer: int):
    """An optional role's cast at a layer (its override, else the role's), or None: read from the
    datapath's tables directly."""
    if isinstance(dp, Recording):
        spec = optional(dp.dp, role, layer)
        return None if spec is None else Site(spec, (role, layer), dp.record)
    return dp.layers.get(layer, {}).get(role, dp.roles.get(role))


class Site:
    """A role's cast at one site (role, layer) that records the exact value of every cast into
    ``record[site]`` (Fractions), for dynamic fixed point's counts."""

    def __init__(self, spec, site, record) -> None:
        self.spec, self.site, self.record = spec, site, record

    def __getattr__(self, name):
        return getattr(self.spec, name)


class Recording:
    """A datapath whose casts record their exact inputs per site (see :class:`Site`)."""

    def __init__(self, dp, record) -> None:
        self.dp, self.record = dp, record

    def cast_for(self, role, layer):
        return Site(self.dp.cast_for(role, layer), (role, layer), self.record)

    def __getitem__(self, role):
        return Site(self.dp[role], (role, None), self.record)

    def __getattr__(self, name):
        return getattr(self.dp, name)


def accumulate(terms: list[Val], spec) -> Val:
    """docs/datapath.md, "Accumulate modes": the terms t_0..t_{K-1} into the sum role ``spec``."""
    mode = spec.accumulate
    if mode == "exact":
        return cast(total(terms), spec)
    if mode == "sequential":  # a register that starts at 0: r = cast(r + t_k)
        r = Val(0, terms[0].frac)
        for t in terms:
            r = cast(r + t, spec)
        return r
    assert mode == "tree", mode
    if len(terms) == 1:
        return cast(terms[0], spec)
    level = list(terms)
    while len(level) > 1:
        up = [cast(level[i] + level[i + 1], spec) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])  # an odd last element goes up unchanged
        level = up
    return level[0]


def mac(products: list[Val], product_spec, sum_spec) -> Val:
    """Products (each cast first when the datapath has the product role) summed into a sum role."""
    terms = products if product_spec is None else [cast(p, product_spec) for p in products]
    return accumulate(terms, sum_spec)


def quantize(x: float, spec) -> Val:
    if isinstance(spec, Site):
        spec.record.setdefault(spec.site, []).append(Fraction(x))
    rounded = round_fraction(Fraction(x) * Fraction(2) ** spec.frac, spec.rounding.name)
    return Val(overflow_int(rounded, spec.word, spec.signed, spec.overflow.name), spec.frac)


def exact_val(value: Fraction) -> Val:
    """A dyadic Fraction as a Val (frac = the bits of its denominator)."""
    frac = max(value.denominator.bit_length() - 1, 0)
    assert value.denominator == 1 << frac
    return Val(int(value * 2**frac), frac)


def plan_sigmoid(z: Fraction) -> tuple[Fraction, Fraction]:
    """PLAN (Amin, Curtis and Hayes-Gill 1997) as docs/datapath.md states it: (value, slope)
    for z >= 0 by |z| range, and f(-z) = 1 - f(z) (same slope) below 0."""
    m = abs(z)
    if m < 1:
        y, d = m / 4 + Fraction(1, 2), Fraction(1, 4)
    elif m < Fraction(19, 8):
        y, d = m / 8 + Fraction(5, 8), Fraction(1, 8)
    elif m < 5:
        y, d = m / 32 + Fraction(27, 32), Fraction(1, 32)
    else:
        y, d = Fraction(1), Fraction(0)
    return (y, d) if z >= 0 else (1 - y, d)


def lookup_table(path: str, z: Fraction) -> tuple[Fraction, Fraction]:
    """docs/datapath.md, "Lookup tables": entry k = floor((z - z_min) / step), clamped to the
    table; (values[k], derivatives[k]). The TOML file is read here, with tomllib."""
    import math
    import tomllib

    with open(path, "rb") as file:
        doc = tomllib.load(file)
    n = 2 ** doc["index_bits"]
    k = math.floor((z - Fraction(doc["z_min"])) / Fraction(doc["step"]))
    k = min(max(k, 0), n - 1)
    return Fraction(doc["values"][k]), Fraction(doc["derivatives"][k])


def derivative_bits(name: str) -> int:
    """k of the derivative's format u(k+1).k for the hardware activations (docs/datapath.md)."""
    if name.startswith("lut:"):
        import tomllib

        with open(name[4:], "rb") as file:
            table = tomllib.load(file)["derivatives"]
        return max(Fraction(d).denominator.bit_length() - 1 for d in table)
    return {"hard_sigmoid": 2, "pwl_sigmoid": 5, "pwl_tanh": 3}[name]


def hardware_activation(name: str, z: Fraction) -> tuple[Fraction, Fraction] | None:
    """(f(z), f'(z)) of the hardware activations from their definitions in docs/datapath.md."""
    if name.startswith("lut:"):
        return lookup_table(name[4:], z)
    if name == "hard_sigmoid":
        inside = -2 < z < 2
        return min(max(z / 4 + Fraction(1, 2), Fraction(0)), Fraction(1)), Fraction(1, 4) if inside else Fraction(0)
    if name == "pwl_sigmoid":
        return plan_sigmoid(z)
    if name == "pwl_tanh":  # 2 sigmoid(2z) - 1
        y, d = plan_sigmoid(2 * z)
        return 2 * y - 1, 4 * d
    return None


def activation(name: str, z: Val) -> Val:
    name = name.removesuffix(":output")  # the same function; only its derivative differs
    hardware = hardware_activation(name, z.fraction())
    if hardware is not None:
        return exact_val(hardware[0])
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


def derivative(name: str, z: Val, relu_at_zero: float, a: Val | None = None) -> Val:
    if name.endswith(":output"):  # from the cast activation a: a (1 - a), or 1 - a**2 for tanh
        one = Val(1, 0)
        return one - a * a if name.startswith("pwl_tanh") else a * (one - a)
    hardware = hardware_activation(name, z.fraction())
    if hardware is not None:  # docs/datapath.md: f'(z) in u(k+1).k, k the largest slope shift (a table's bits)
        k = derivative_bits(name)
        return Val(int(hardware[1] * 2**k), k)
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


def train_step(dp, activations: list[str], loss: str, weights, biases, xs, ys, velocity=None, record=None):
    """One forward + backward + SGD step on a batch. weights[l][j][i], biases[l][j] are floats
    (the initial values) or Vals; xs, ys lists of float rows. Returns a dict of every stage.
    ``record`` (a dict): every cast's exact input is appended to ``record[(role, layer)]``."""
    if record is not None:
        dp = Recording(dp, record)
    W = [[[w if isinstance(w, Val) else quantize(w, dp.cast_for("weight", l)) for w in row] for row in layer]
         for l, layer in enumerate(weights)]
    B = [[b if isinstance(b, Val) else quantize(b, dp.cast_for("bias", l)) for b in layer] for l, layer in enumerate(biases)]
    batch = len(xs)
    # working copies (docs/datapath.md, "Working copies"): forward and backward use these
    Wf = [[[cast(w, optional(dp, "weight_fwd", l)) if optional(dp, "weight_fwd", l) else w for w in row]
           for row in layer] for l, layer in enumerate(W)]
    Bf = [[cast(b, optional(dp, "bias_fwd", l)) if optional(dp, "bias_fwd", l) else b for b in layer]
          for l, layer in enumerate(B)]
    acts = [[[quantize(v, dp["input"]) for v in row] for row in xs]]
    pres = []
    for l in range(len(W)):
        pre_l, act_l = [], []
        for a in acts[-1]:
            pre_row, act_row = [], []
            for j in range(len(W[l])):
                acc = mac([a[i] * Wf[l][j][i] for i in range(len(a))], optional(dp, "product", l),
                          dp.cast_for("acc", l))
                pre = cast(acc + Bf[l][j], dp.cast_for("pre", l))
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
        local = [[cast(errors[b][j] * derivative(activations[l], pres[l][b][j], dp.relu_grad_at_zero, acts[l + 1][b][j]), dp.cast_for("bias_grad", l))
                  for j in range(len(W[l]))] for b in range(batch)]
        bias_grad = [accumulate([local[b][j] for b in range(batch)], dp.cast_for("bias_grad", l))
                     for j in range(len(W[l]))]
        weight_grad = [[mac([local[b][j] * acts[l][b][i] for b in range(batch)], optional(dp, "grad_product", l),
                            dp.cast_for("weight_grad", l))
                        for i in range(len(W[l][0]))] for j in range(len(W[l]))]
        prop = None
        if l > 0:
            prop = [[mac([local[b][j] * Wf[l][j][i] for j in range(len(W[l]))], optional(dp, "prop_product", l),
                         dp.cast_for("prop_err", l))
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
        u = cast(lr_times(s), dp.cast_for("update", l))
        updates.append(u)
        return cast(value - u, dp.cast_for(role, l)), v_new

    new_W, new_B, new_V, new_U = [], [], [], []
    for l in range(len(W)):
        updates: list[Val] = []  # this layer's u = cast_update(lr * step), weights row-major then biases
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
        n_w = len(W[l]) * len(W[l][0])
        new_U.append((updates[:n_w], updates[n_w:]))
    return {"acts": acts, "pres": pres, "grads": grads, "weights": new_W, "biases": new_B, "velocity": new_V,
            "updates": new_U, "targets": Y}
