"""Experiment 18 (loss landscapes) in --quick mode: its measured conclusions hold, and its
curvatures agree with NumPy's closed forms for the Hessians of the two convex models."""

from __future__ import annotations

import math

import chex
import numpy as np
from sklearn import datasets

from experiments import loss_landscape


def _columns(d, names) -> np.ndarray:
    x = d.data[:, [list(d.feature_names).index(n) for n in names]]
    return (x - x.mean(0)) / x.std(0)


def test_loss_landscape(tmp_path, run_experiment):
    m = run_experiment(loss_landscape, "--seeds", "6")

    # Convex models: Hessian PSD on the grid, loss below every chord (float64 rounding).
    for label, c in m["convex"].items():
        assert c["min_eigenvalue_relative"] >= -1e-12, label
        assert c["max_chord_gap"] <= 1e-12, label
    # Linear regression's Hessian is the constant 2 [X 1]^T [X 1] / m: NumPy's eigenvalues.
    x = _columns(datasets.load_diabetes(), loss_landscape.REGRESSION_FEATURES)
    xb = np.hstack([x, np.ones((len(x), 1))])
    eig = np.linalg.eigvalsh(2 * xb.T @ xb / len(x))
    linear = m["convex"]["linear regression (MSE)"]
    extremes = np.array([linear["min_eigenvalue"], linear["max_eigenvalue"]])
    chex.assert_trees_all_close(extremes, eig[[0, -1]], rtol=1e-9)

    # Logistic regression's minimum: NumPy's gradient X^T (s - y) / m vanishes there, and
    # the slice's Hessian X^T diag(s (1 - s)) X / m has the L and mu the rates are built on.
    d = datasets.load_breast_cancer()
    x = _columns(d, loss_landscape.CLASSIFICATION_FEATURES)
    theta = np.asarray(m["contours"]["minimum"])
    s = 1 / (1 + np.exp(-(x @ theta[:2] + theta[2])))
    xb = np.hstack([x, np.ones((len(x), 1))])
    assert np.max(np.abs(xb.T @ (s - d.target) / len(x))) < 1e-12
    mu, big_l = np.linalg.eigvalsh((x * (s * (1 - s))[:, None]).T @ x / len(x))
    lr = m["learning_rates"]
    chex.assert_trees_all_close(np.array([lr["mu"], lr["L"]]), np.array([mu, big_l]), rtol=1e-9)
    rates = {k: lr["paths"][k]["rate"] for k in loss_landscape.RATE_FACTORS}
    expected = {k: f * 2 / big_l for k, f in loss_landscape.RATE_FACTORS.items()}
    chex.assert_trees_all_close(rates, expected, rtol=1e-9)

    # XOR: every certified minimum, its swap, and the chord between them.
    xor = m["xor"]
    assert len(xor["solved_seeds"]) >= 1
    for i in xor["solved_seeds"]:
        assert xor["gradient_norm"][i] < 1e-8 and xor["min_eigenvalue_at_minimum"][i] > 0
        assert xor["swapped_loss_difference"][i] <= 1e-12
        assert xor["distance_between_minima"][i] > 1
        assert xor["max_rise_above_chord"][i] > 0.1
        assert xor["max_rise_above_chord_plain_bce"][i] > 0.1
        assert xor["middle_min_eigenvalue"][i] < 0
        assert xor["negative_eigenvalue_fraction_on_line"][i] > 0

    # One sigmoid weight on (1, 0): J = s^2 has J'' < 0 from w = ln 2 on; softplus' J'' > 0.
    ow = m["one_weight"]
    step = loss_landscape.ONE_WEIGHT[1] - loss_landscape.ONE_WEIGHT[0]
    assert abs(ow["mse_first_negative_w"] - math.log(2)) <= step
    assert ow["mse_min_J2"] < -0.1  # 2 s^2 (1 - s)(2 - 3 s) reaches about -0.12
    assert ow["ce_min_J2"] > 0 and ow["ce_J2_vs_s_1_minus_s"] < 1e-12

    # Contours: normal gradient pointing outwards, denser where steeper.
    c = m["contours"]
    assert c["max_angle_error_deg"] <= 1.0
    assert c["max_implicit_slope_vs_measured_deg"] <= 1.0
    assert c["min_outward_component"] > 0
    assert c["spacing_vs_grad_spearman"] <= -0.9
    assert c["spacing_steep_third"] < c["spacing_gentle_third"]

    # Learning rates: slow, good, oscillating, not converging above 2/L.
    small, good, large, above = (lr["paths"][k] for k in loss_landscape.RATE_FACTORS)
    assert small["sign_changes_along_steepest"] == 0 == good["sign_changes_along_steepest"]
    assert small["iterations_to_level"] >= 5 * good["iterations_to_level"]
    assert large["reversal_fraction"] >= 0.9 and large["iterations_to_level"] is not None
    assert above["iterations_to_level"] is None and above["final_distance_ratio"] > 1e-3
    assert lr["near_minimum_growth"]["above 2/L"] > 100 > 1 > lr["near_minimum_growth"]["too large"]
    factors = np.asarray(lr["sweep_factors"])
    converged = np.asarray(lr["sweep_final_distance_ratio"]) < 1e-6
    assert np.array_equal(converged, factors < 1)
    quadratic = np.asarray(lr["linear_regression_final_distance_ratio"])
    assert np.all(quadratic[factors < 1] < 1e-6) and np.all(quadratic[factors > 1] > 1e6)

    out = tmp_path / loss_landscape.NAME
    for figure in ("landscape.png", "learning_rates.png", "convexity.png"):
        assert (out / figure).stat().st_size > 10_000, figure
