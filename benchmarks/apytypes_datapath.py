"""The APyTypes peer of `fixprop bench train_step` lives in the package so the installed command
finds it: src/fixprop/bench/apytypes_datapath.py."""

from fixprop.bench.apytypes_datapath import ApyTypesStep  # noqa: F401
