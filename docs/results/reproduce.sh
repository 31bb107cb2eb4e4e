#!/usr/bin/env bash
# Reproduces every figure and table of docs/results.md (about five minutes on 2 cores: sections 1-4 about half a minute, section 5 about four).
# Run from the repository root after: pip install ".[plot,dask,digits]"
set -euo pipefail
out=docs/results

# 1. ik: per-role formats of 16-bit words, proposed from ranges observed while training (seeds 1, 2),
#    then trained on seed 0 side by side with float; and how narrow the same integer bits can go.
fixprop ranges --dataset ik --epochs 20 --seeds 1,2 --propose 16 --out $out/ik_w16.toml --plot $out/ik_ranges.png
fixprop train --dataset ik --epochs 20 --datapath $out/ik_w16.toml --plot $out/ik_w16_curves.png --quiet
fixprop sweep --templates $out/ik_w16.toml --words 8-16 --measure train --epochs 20 --out $out/ik_words --quiet

# 2. digits: the same with 16-bit words; held-out accuracy.
fixprop ranges --dataset digits --hidden 32 --epochs 10 --seeds 1 --propose 16 --out $out/digits_w16.toml
fixprop train --dataset digits --hidden 32 --epochs 30 --datapath $out/digits_w16.toml \
    --plot $out/digits_w16_curves.png --quiet

# 3. rounding: every role s16.f, f = 4..12, round-half-even against stochastic rounding, ik.
fixprop sweep --words 16 --fracs 4-12 --roundings RND_CONV,STOCH --measure train --epochs 20 \
    --out $out/rounding --quiet
for seed in 1 2 3; do  # other training seeds, same data
    fixprop sweep --words 16 --fracs 6-8 --roundings RND_CONV,STOCH --measure train --epochs 20 --seed $seed \
        --out $out/rounding_seed$seed --no-plot --quiet
done

# 4. per-role formats against the seed's shared (24, 12) on the verify experiment, seeds 0..7;
#    ranges observed on other seeds (8..39), no margin.
fixprop ranges --seeds 8-39 --propose 24 --margin 0 --out $out/verify_w24.toml
fixprop ranges --seeds 8-39 --propose 20 --margin 0 --out $out/verify_w20.toml
fixprop ranges --seeds 8-39 --propose 24 --margin 0 --per-role --out $out/verify_w24_per_role.toml
fixprop ranges --seeds 8-39 --propose 20 --margin 0 --per-role --out $out/verify_w20_per_role.toml
fixprop sweep --templates seed,$out/verify_w24.toml,$out/verify_w24_per_role.toml --words 24 --fracs 12 \
    --seeds 0-7 --out $out/verify_w24 --quiet
fixprop sweep --templates seed,$out/verify_w20.toml,$out/verify_w20_per_role.toml --words 20 --fracs 12 \
    --seeds 0-7 --out $out/verify_w20 --quiet
fixprop sweep --templates uniform --words 16,20,24 --fracs 8-20 --seeds 0-7 --out $out/verify_uniform --quiet

# 5. hardware fidelity: product casts, saturating accumulators, master weights, PWL sigmoid
python docs/results/fidelity.py
