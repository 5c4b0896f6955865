"""Gradient checking: the notes' computational graph J = 3(a + bc) by hand, by jax.grad and by
finite differences; per-leaf reports; a planted backward bug is caught and named; kinks give
no false failures; the derivative and vjp checkers."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import activations, gradcheck
from nnfun.layers import Dense, Maxout


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def J(p):
    """The notes' computational graph: u = b c, v = a + u, J = 3 v."""
    return 3 * (p["a"] + p["b"] * p["c"])


def test_computational_graph_by_hand_by_jax_and_by_finite_differences():
    p = {"a": jnp.float64(5.0), "b": jnp.float64(3.0), "c": jnp.float64(2.0)}
    # Forward: u = 6, v = 11, J = 33.
    u = p["b"] * p["c"]
    v = p["a"] + u
    assert (float(u), float(v), float(J(p))) == (6.0, 11.0, 33.0)
    # Backward by the chain rule: dJ/dv = 3, dv/da = dv/du = 1, du/db = c, du/dc = b.
    dj_dv = 3.0
    manual = {"a": dj_dv * 1.0, "b": dj_dv * 1.0 * p["c"], "c": dj_dv * 1.0 * p["b"]}
    assert {k: float(g) for k, g in manual.items()} == {"a": 3.0, "b": 6.0, "c": 9.0}
    auto = jax.grad(J)(p)
    assert {k: float(g) for k, g in auto.items()} == {"a": 3.0, "b": 6.0, "c": 9.0}
    # The notes' nudge of 0.001: v 11 -> 11.001 moves J 33 -> 33.003, a slope of 3.
    bumped = {**p, "a": p["a"] + 0.001}
    np.testing.assert_allclose(J(bumped), 33.003, rtol=1e-14)
    for name, slope in (("a", 3.0), ("b", 6.0), ("c", 9.0)):
        one_sided = (J({**p, name: p[name] + 0.001}) - J(p)) / 0.001
        np.testing.assert_allclose(one_sided, slope, rtol=1e-9)
    # gradcheck's central differences with the same step, and the full check.
    estimate, checked, kink = gradcheck.finite_differences(J, p, eps=1e-3)
    for name, slope in (("a", 3.0), ("b", 6.0), ("c", 9.0)):
        np.testing.assert_allclose(estimate[name], slope, rtol=1e-10)
        assert bool(checked[name]) and not bool(kink[name])
    result = gradcheck.check(J, p, manual, eps=1e-3)
    result.assert_ok()
    assert [leaf.path for leaf in result.autodiff.leaves] == ["['a']", "['b']", "['c']"]
    assert result.autodiff.worst.rel_error == 0.0
    # A wrong hand derivative (forgetting the factor 3 on dJ/dc) is caught and named.
    wrong = gradcheck.check(J, p, {**manual, "c": p["b"]}, eps=1e-3)
    assert [leaf.path for leaf in wrong.autodiff.failures] == ["['c']"]
    assert [leaf.path for leaf in wrong.finite_differences.failures] == ["['c']"]


def small_net(*middle, out=None):
    """3 -> 3 (tanh) -> middle -> out: every layer 3 wide, as in test_network's matrix, so
    that op-by-op runs reuse the operations already compiled for those shapes."""
    out = Dense(3, "softmax") if out is None else out
    return nnfun.Sequential([Dense(3, "tanh", input_dim=3), *middle, out])


X = np.random.default_rng(0).normal(size=(5, 3))
Y = np.array([0, 1, 2, 0, 1])


def test_check_network_reports_every_leaf_against_both_references():
    net = small_net(Dense(3, "sigmoid"))
    params = net.init(jax.random.key(0))  # float32: check_network moves everything to float64
    result = gradcheck.check_network(net, params, X, Y, loss="categorical_crossentropy")
    result.assert_ok()
    assert [r.reference for r in result.reports] == ["jax.grad", "finite differences"]
    for report in result.reports:
        paths = [leaf.path for leaf in report.leaves]
        assert paths == ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']", "[2]['W']", "[2]['b']"]
        assert [leaf.checked for leaf in report.leaves] == [9, 3, 9, 3, 9, 3]
        assert all(len(leaf.worst_index) == 2 for leaf in report.leaves[::2])  # W: (i, j)
    assert result.autodiff.worst.rel_error < 1e-12
    assert result.finite_differences.worst.rel_error < 1e-7
    text = str(result)
    assert "manual vs jax.grad" in text and "manual vs finite differences" in text
    assert "[1]['W']" in text and "FAIL" not in text


@dataclass(frozen=True)
class DoubledBiasDense(Dense):
    """A Dense layer whose hand-written backward has a bug: db = 2 sum dZ."""

    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "b": 2 * grads["b"]}, dx


def test_planted_backward_bugs_are_caught_and_named():
    # The same bug in a hidden layer and in the (fused softmax) output layer: both reported.
    net = small_net(DoubledBiasDense(3, "relu"), out=DoubledBiasDense(3, "softmax"))
    params = net.init(jax.random.key(1))
    result = gradcheck.check_network(net, params, X, Y, loss="categorical_crossentropy")
    assert not result.ok
    for report in result.reports:
        assert [failure.path for failure in report.failures] == ["[1]['b']", "[2]['b']"]
        for bad in report.failures:
            np.testing.assert_allclose(bad.manual, 2 * bad.reference, rtol=1e-6)
            assert bad.rel_error > 0.3
        assert {leaf.path for leaf in report.leaves if leaf.rel_error < 1e-6} == {
            "[0]['W']",
            "[0]['b']",
            "[1]['W']",
            "[2]['W']",
        }
    with pytest.raises(AssertionError, match=r"FAIL \[1\]\['b'\](.|\n)*FAIL \[2\]\['b'\]"):
        result.assert_ok()


def test_kinks_give_no_false_failures():
    # ReLU exactly at 0: an all-zero input row with zero biases puts every first-layer
    # pre-activation of that sample on the kink.
    net = nnfun.Sequential([Dense(3, "relu", input_dim=3), Dense(3, "softmax")])
    params = net.init(jax.random.key(2), jnp.float64)
    x = X.copy()
    x[0] = 0.0
    result = gradcheck.check_network(net, params, x, Y, loss="categorical_crossentropy")
    result.assert_ok()
    fd = {leaf.path: leaf for leaf in result.finite_differences.leaves}
    assert fd["[0]['b']"].kinks > 0 and fd["[0]['W']"].kinks == 0
    # There the central difference is the mean of the two one-sided slopes, not g'(0) = 0:
    # without skipping kinks the check would fail.
    x, y = jnp.asarray(x, jnp.float64), jnp.asarray(Y)
    loss = lambda p: float(net.loss(p, x, y, loss="categorical_crossentropy"))  # noqa: E731
    shifted = [
        [{**params[0], "b": params[0]["b"].at[0].add(eps)}, params[1]] for eps in (1e-6, -1e-6)
    ]
    central = (loss(shifted[0]) - loss(shifted[1])) / 2e-6
    manual = net.manual_grad(params, x, y, loss="categorical_crossentropy")[0]["b"][0]
    assert abs(central - float(manual)) > 1e-3 * abs(central)
    # Maxout with every piece equal: each unit is a tie; the first piece wins, as in jax.grad.
    net = nnfun.Sequential([Maxout(3, pieces=2, input_dim=3), Dense(3, "softmax")])
    params = net.init(jax.random.key(3), jnp.float64)
    params[0]["W"] = jnp.repeat(params[0]["W"][..., :1], 2, axis=-1)
    result = gradcheck.check_network(net, params, X, Y, loss="categorical_crossentropy")
    result.assert_ok()
    assert sum(leaf.kinks for leaf in result.finite_differences.leaves) > 0


def test_check_derivative_and_check_vjp_catch_wrong_formulas():
    z = jnp.linspace(-4, 4, 15).reshape(5, 3)
    sig = activations.sigmoid
    good = gradcheck.check_derivative(sig.fn, lambda z: sig.derivative(z, sig.fn(z)), z)
    assert good.ok and good.leaves[0].path == "g'(z)" and good.leaves[0].checked == 15
    bad = gradcheck.check_derivative(sig.fn, sig.fn, z)  # a instead of a(1 - a)
    assert not bad.ok and bad.worst.worst_index == (4, 2)  # largest error at z = 4
    np.testing.assert_allclose(bad.worst.manual, sig.fn(4.0), rtol=1e-12)
    # ReLU's derivative at exactly 0 agrees with jax.grad's (both 0).
    relu = activations.relu
    zeros = jnp.zeros((2, 2))
    assert gradcheck.check_derivative(relu.fn, lambda z: relu.derivative(z, z), zeros).ok
    sm, ct = activations.softmax, jnp.arange(15.0).reshape(5, 3) / 7
    assert gradcheck.check_vjp(sm.fn, lambda z, ct: sm.vjp(z, sm.fn(z), ct), z, ct).ok
    reversed_ct = lambda z, ct: sm.vjp(z, sm.fn(z), ct[:, ::-1])  # noqa: E731
    assert not gradcheck.check_vjp(sm.fn, reversed_ct, z, ct).ok


def test_finite_differences_sample_large_trees_and_agree_with_jax_grad():
    rng = np.random.default_rng(4)
    params = {"w": jnp.asarray(rng.normal(size=(30, 20))), "s": jnp.float64(0.5)}

    def f(p):
        return jnp.sum(jnp.tanh(p["w"]) ** 2) * p["s"] + jnp.sin(p["s"])

    estimate, checked, kink = gradcheck.finite_differences(f, params, max_elements=100)
    n_checked = int(np.sum(checked["w"])) + int(checked["s"])
    assert n_checked == 100 and not np.any(kink["w"])
    ref = jax.grad(f)(params)
    mask = np.asarray(checked["w"])
    # Central differences with eps = 1e-6 in float64: ~1e-16 |f| / eps of rounding error.
    scale = float(jnp.max(jnp.abs(ref["w"])))
    np.testing.assert_allclose(estimate["w"][mask], np.asarray(ref["w"])[mask], atol=1e-7 * scale)
    np.testing.assert_array_equal(estimate["w"][~mask], 0.0)


def test_compare_refuses_mismatched_trees_and_fails_on_nan():
    ref = [{"W": jnp.ones((2, 2)), "b": jnp.ones(2)}]
    with pytest.raises(ValueError, match="manual: expected a tree shaped like"):
        gradcheck.compare([{"W": jnp.ones((2, 2))}], ref)
    with pytest.raises(ValueError, match=r"\[0\]\['b'\]: manual gradient has shape \(3,\)"):
        gradcheck.compare([{"W": jnp.ones((2, 2)), "b": jnp.ones(3)}], ref)
    nan = [{"W": jnp.ones((2, 2)).at[1, 0].set(jnp.nan), "b": jnp.ones(2)}]
    report = gradcheck.compare(nan, ref)
    assert [leaf.path for leaf in report.failures] == ["[0]['W']"]
    assert report.worst.worst_index == (1, 0)
    exact = gradcheck.compare(ref, ref)
    assert exact.ok and exact.worst.rel_error == 0.0
