"""The loss, dropout and maxout experiments in --quick mode: each runs in-process, its
conclusion holds and its key numbers are what the notes predict."""

from __future__ import annotations

from experiments import dropout_ensemble, loss_choice, maxout


def test_loss_choice(tmp_path, run_experiment):
    m = run_experiment(loss_choice)
    mse, ce = m["mse"], m["cross-entropy"]
    assert m["start_output"] > 0.998
    # dL/dz at a = sigmoid(7) for target 0: cross-entropy a - y, squared error 2 (a - y) a (1 - a).
    assert abs(ce["dz_wrong_start"] - 0.99909) < 1e-3
    assert abs(mse["dz_wrong_start"] - 0.00182) < 1e-4
    assert m["dz_ratio"] > 500 and m["db_ratio"] > 500
    assert ce["dz_hand_vs_autodiff_rel_error"] < 1e-9
    assert mse["db_manual_vs_autodiff_rel_error"] < 1e-9
    # Cross-entropy escapes the wrong start within 3 epochs; the squared error is still stuck.
    assert all(e is not None and e <= 3 for e in ce["epochs_to_target"])
    assert all(e is None or e > 10 for e in mse["epochs_to_target"])
    assert ce["train_accuracy"] > 0.85
    assert mse["train_accuracy"] < 0.6  # still predicting class 1 everywhere


def test_dropout_ensemble(tmp_path, run_experiment):
    m = run_experiment(dropout_ensemble, "--seeds", "2")  # every check holds on each seed
    for form in ("inverted", "classic"):
        r = m[form]
        assert r["agreement_min"] >= 0.97, form
        assert r["mean_abs_diff_arithmetic"] < 0.03, form
        # Weight scaling is closer to the normalised geometric mean than to the arithmetic one.
        assert r["mean_abs_diff_geometric"] < r["mean_abs_diff_arithmetic"], form
        assert abs(r["accuracy_scaled"] - r["accuracy_arithmetic"]) <= 0.02, form
        assert r["accuracy_scaled"] > 0.9, form
        # One linear layer: the difference is Monte-Carlo noise, mean |N(0, 1)| = 0.80.
        assert 0.6 < r["linear_diff_over_stderr"] < 1.0, form
        assert r["linear_max_z"] < 5, form


def test_maxout(tmp_path, run_experiment):
    m = run_experiment(maxout)
    for name in ("relu", "leaky_relu", "abs"):
        assert m["reproductions"][name]["exact"], name
    assert m["reproductions"]["relu_2d"]["max_abs_diff"] <= 1e-7
    assert max(m["grid_mse"]) < 0.05
    assert m["max_unit_kinks"] <= m["pieces"] - 1
    assert max(m["network_kinks"]) <= m["units"] * (m["pieces"] - 1)
    assert m["gradcheck_autodiff_rel_error"] < 1e-7
    w = m["winner_only"]
    assert w["manual_losing_all_zero"] and w["autodiff_losing_all_zero"]
    assert w["per_sample_max_diff"] < 1e-12
