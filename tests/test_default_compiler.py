"""The bit-for-bit guarantees hold under XLA's default CPU compiler, not only the suite's.

The suite compiles with XLA's older CPU fusion emitters at backend optimisation level 0
(xla_flags.py: half the time); users compile with XLA's defaults. Two different compiled
programs give the same bits (chunks of epochs, a stream against the same arrays, a resume,
a replay) only if the compiler rounds each alike, so the tests marked ``bits`` run again
here, in one subprocess, under the defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from xla_flags import SUITE

ROOT = Path(__file__).resolve().parents[1]
FILES = ("tests/test_train.py", "tests/test_streams.py")  # where the `bits` tests live


@pytest.mark.skipif(os.environ.get("NNFUN_TEST_XLA") == "default", reason="already inside")
def test_bit_for_bit_tests_pass_under_xlas_default_compiler():
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in SUITE]
    env = {**os.environ, "NNFUN_TEST_XLA": "default", "XLA_FLAGS": " ".join(flags)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-m", "bits", *FILES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "deselected" in summary, summary
