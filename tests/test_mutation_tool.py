"""The mutation sampler itself (tools/mutation_sample.py): planted mutants in a tiny project,
one in a jitted function, are run in a fresh interpreter and reported as killed or survived."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import mutation_sample  # noqa: E402

MODULE = """import jax


@jax.jit
def double(x):
    return x * 2


def untested(x):
    return x + 1
"""

TEST = """import jax.numpy as jnp

from pkg.mod import double


def test_double():
    assert float(double(jnp.float32(3.0))) == 6.0
"""


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch):
    """The tiny project's tests need no pytest plugin: loading every installed one (the
    sampler's runs inherit this environment) costs each run a second of CPU."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text(MODULE)
    (root / "tests").mkdir()
    (root / "tests" / "test_mod.py").write_text(TEST)
    return root


def find(project, function, before, after):
    found = [
        m
        for m in mutation_sample.mutants("pkg/mod.py", project)
        if (m.function, m.before, m.after) == (function, before, after)
    ]
    assert len(found) == 1, [(m.function, m.before, m.after) for m in found]
    return found[0]


def test_a_mutant_in_a_jitted_function_is_executed_and_killed(project):
    # The unmutated run compiles double and fills JAX's persistent cache first: a mutant
    # that reused that program would pass and read as a false survivor.
    assert mutation_sample.run_tests(project, ["tests/test_mod.py"], 120)[0] == "survived"
    mutant = find(project, "double", "x * 2", "x / 2")
    row = mutation_sample.run_mutant(mutant, project, ["tests/test_mod.py"], 120)
    assert row["outcome"] == "killed", row
    assert (project / "pkg" / "mod.py").read_text() == MODULE  # the file is put back


def test_a_mutant_no_test_reaches_is_reported_as_surviving(project):
    mutant = find(project, "untested", "x + 1", "x - 1")
    row = mutation_sample.run_mutant(mutant, project, ["tests/test_mod.py"], 120)
    assert row["outcome"] == "survived", row


def test_the_sample_is_reproducible_and_depends_on_the_seed():
    keys = [[m.key for m in mutation_sample.sample("run_record", 5, seed)[0]] for seed in (0, 0, 1)]
    assert keys[0] == keys[1] and keys[0] != keys[2]
    assert len(set(keys[0])) == 5


def test_wilson_interval_matches_the_published_value():
    # 8 of 10: (0.490, 0.943) (Wilson 1927; Newcombe 1998, Table I's method 3).
    low, high = mutation_sample.wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
