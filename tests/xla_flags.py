"""The XLA flags the suite compiles with: conftest.py sets them before JAX starts (the
subprocesses the tests launch inherit them); test_default_compiler.py runs the bit-for-bit
tests without them, under XLA's defaults (NNFUN_TEST_XLA=default)."""

import os

SUITE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def set_for_the_suite() -> None:
    if os.environ.get("NNFUN_TEST_XLA") == "default":
        return
    given = os.environ.get("XLA_FLAGS", "").split()
    os.environ["XLA_FLAGS"] = " ".join([*given, *(f for f in SUITE if f not in given)])
