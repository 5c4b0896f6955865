"""Shared test helpers and the Hypothesis profiles.

Profiles (``NNFUN_HYPOTHESIS_PROFILE``): "ci", the default, is deterministic (derandomized,
no example database) with 25 examples a test; "thorough" draws 40 times as many, at random,
for a local run: ``NNFUN_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_fuzz.py``.
Tests that fix their own ``max_examples`` keep it.
"""

from __future__ import annotations

import json
import os

import pytest
import xla_flags
from hypothesis import HealthCheck, settings

# The suite compiles thousands of small programs and runs each a few times: XLA's backend
# optimisation and its newer CPU fusion emitters (MLIR) cost more compile time than they save
# there; without them the suite takes half the time. What the tests check holds under both,
# bit-for-bit results included (test_default_compiler.py runs those under XLA's defaults).
xla_flags.set_for_the_suite()

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("NNFUN_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _fresh_programs_after_monkeypatching(request):
    """A test that patches code (a planted bug) leaves no program built from it behind:
    compiled programs are shared by networks of the same structure (nnfun.program_cache)."""
    yield
    if "monkeypatch" in request.fixturenames:
        from nnfun import program_cache

        program_cache.clear()


@pytest.fixture
def run_experiment(tmp_path):
    """Runs an experiment module with --quick into tmp_path; returns its metrics.json after
    checking that its conclusion held and that it drew a figure."""

    def run(module, *flags) -> dict:
        out = tmp_path / module.NAME
        assert module.main(["--quick", *flags, "--out", str(out)]) is True
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["conclusion_held"] and all(metrics["checks"].values())
        assert list(out.glob("*.png")) or list(out.glob("*.md")), "no figure or table written"
        return metrics

    return run


@pytest.fixture(scope="module")
def keras():
    """Keras 3 on its JAX backend, the oracle of the differential tests (skipped without it)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="keras (the test extra) is the oracle here")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras runs on {keras.backend.backend()}, the oracle needs its JAX backend")
    return keras
