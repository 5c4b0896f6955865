"""The depth and initialisation experiments in --quick mode: each conclusion holds and its
key numbers are what the notes predict."""

from __future__ import annotations

import sys
from pathlib import Path

# The experiments package lives at the repository root, beside nnfun.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import (  # noqa: E402
    batch_norm,
    dead_relus,
    initialisation,
    sparsity,
    vanishing_gradients,
)


def test_vanishing_gradients(tmp_path, run_experiment):
    m = run_experiment(vanishing_gradients)
    sig, relu = m["sigmoid"], m["relu"]
    assert sig["first_over_last_init"] < 1e-2
    assert 0.1 <= relu["first_over_last_init"] <= 10
    # Sigmoid's norms grow layer after layer towards the output (the vanishing pattern).
    norms = sig["grad_norm_per_layer_init"]
    assert all(a < b for a, b in zip(norms, norms[1:], strict=False))
    assert sig["test_accuracy_final"] < relu["test_accuracy_final"] - 0.1


def test_dead_relus(tmp_path, run_experiment):
    m = run_experiment(dead_relus)
    relu = m["relu"]
    assert relu["dead"][-1] >= relu["dead"][0] + 0.3
    assert relu["train_accuracy"][-1] < 0.5 <= relu["train_accuracy"][0]
    assert all(g == 0 for g in relu["dead_units_with_gradient"] if g == g)  # skip nan
    for variant in ("prelu", "rrelu"):
        assert m[variant]["train_accuracy"][-1] >= relu["train_accuracy"][-1] + 0.3


def test_sparsity(tmp_path, run_experiment):
    m = run_experiment(sparsity)
    relu, sigmoid = m["relu"], m["sigmoid"]
    assert abs(sigmoid["rate"][0] - 0.5) <= 0.1
    assert all(z == 0.0 for z in sigmoid["exact_zeros"])
    assert all(z >= 0.2 for z in relu["exact_zeros"])
    # The notes' lower ReLU rate shows at the large learning rate, not at the small one.
    assert relu["rate"][-1] < sigmoid["rate"][-1]
    assert relu["rate"][0] > sigmoid["rate"][0]


def test_initialisation(tmp_path, run_experiment):
    m = run_experiment(initialisation)
    for dataset in ("flower", "digits"):
        t = m[dataset]
        assert t["zeros"]["w1_column_spread"] == 0.0 == t["zeros"]["w1_max"]  # tanh: never moves
        sym = t["zeros (sigmoid)"]
        assert sym["w1_max"] > 0  # sigmoid: the weights move...
        assert sym["w1_column_spread_early"] <= 1e-4 * sym["w1_max_early"]  # ...units stay equal
        assert t["xavier"]["w1_column_spread"] >= 0.1 * t["xavier"]["w1_max"]  # random: unequal
        assert t["zeros"]["test_accuracy"] <= t["chance"] + 0.05
        assert t["large x10"]["initial_loss"] >= 10 * t["small x0.01"]["initial_loss"]
        assert t["large x10"]["saturated_at_init"] > 0.5
        assert t["he"]["test_accuracy"] >= t["zeros"]["test_accuracy"] + 0.3


def test_batch_norm(tmp_path, run_experiment):
    m = run_experiment(batch_norm)
    plain, bn = m["plain"], m["batchnorm"]
    assert bn["epochs_to_target"][-1] is not None
    assert plain["epochs_to_target"][-1] is None
    assert max(bn["final_accuracy"][-2:]) >= 0.9 > plain["final_accuracy"][-1]
