"""Gradient checking: the notes' computational graph J = 3(a + bc) by hand, by jax.grad and by
finite differences; the error measure and its tolerances; planted bugs caught and blamed on
the layer and leaf where they sit; no false alarms on correct networks (zero gradients, kinks,
ties, L1 at 0, large leaves); one-piece checkers; the command for a student's file."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import activations, gradcheck, losses
from nnfun.gradcheck import __main__ as command
from nnfun.gradcheck.errors import cpu64
from nnfun.layers import Activation, BatchNorm, Dense, Dropout, Maxout

FIXTURES = Path(__file__).parent / "gradcheck_fixtures"
sys.path.insert(0, str(FIXTURES))
from student_layers import Scale, ScaleForgetsS, bad_half_squared, bad_tanh  # noqa: E402

CCE = "categorical_crossentropy"


@pytest.fixture(autouse=True)
def float64():
    with cpu64():  # float64 on the CPU, gradcheck's own context: eager ops compile once for both
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


def test_error_measure_has_a_floor_scaled_to_the_gradient_and_a_tolerance_per_dtype():
    for dtype in (jnp.float64, jnp.float32, jnp.bfloat16):
        assert gradcheck.tolerance(dtype) == pytest.approx(np.sqrt(float(jnp.finfo(dtype).eps)))
    with pytest.raises(TypeError, match="dtype: expected a floating dtype .* got int32"):
        gradcheck.tolerance(jnp.int32)
    # By hand: leaf 'a' is off by 0.5 at its largest |ref| 2.5; leaf 'z' has true gradient 0
    # and 1e-17 of rounding noise, measured against the floor 1000 sqrt(eps) * 2.5.
    manual = {"a": jnp.array([1.0, 2.0]), "z": jnp.array([1e-17, 0.0])}
    reference = {"a": jnp.array([1.0, 2.5]), "z": jnp.array([0.0, 0.0])}
    floor = 1e3 * np.sqrt(np.finfo(np.float64).eps) * 2.5
    expected = np.array([0.5 / 2.5, 1e-17 / floor])
    report = gradcheck.compare(manual, reference)
    np.testing.assert_allclose([leaf.rel_error for leaf in report.leaves], expected, rtol=1e-12)
    assert [leaf.path for leaf in report.failures] == ["['a']"]
    assert report.tol == gradcheck.tolerance(jnp.float64)

    # The same numbers from the jittable form, inside jit and lax.scan, traced once.
    @jax.jit
    @chex.assert_max_traces(n=1)
    def per_step(manual, reference):
        def step(carry, scale):
            scaled = jax.tree.map(lambda g: g * scale, manual)
            return carry, gradcheck.leaf_errors(scaled, reference)

        return jax.lax.scan(step, 0, jnp.array([1.0, 1.0]))[1]

    chex.assert_trees_all_close(per_step(manual, reference), np.stack([expected] * 2), rtol=1e-12)
    per_step(manual, reference)
    nan = {**manual, "a": manual["a"].at[0].set(jnp.nan)}
    assert np.isinf(np.asarray(gradcheck.leaf_errors(nan, reference))[0])
    # float32 gradients are held to float32's tolerance (the README's example): a rounding
    # difference of 3.4e-7 is not a failure; float32 against float64 too.
    g32 = jnp.array([0.5, -0.25, 0.125], jnp.float32)
    nudged = g32 * jnp.float32(1 + 3.4e-7)
    assert gradcheck.compare([nudged], [g32]).ok
    assert gradcheck.compare([nudged], [g32.astype(jnp.float64)]).tol == gradcheck.tolerance(
        jnp.float32
    )
    assert not gradcheck.compare([g32 * 1.01], [g32]).ok
    errors32 = gradcheck.leaf_errors([nudged], [g32])
    assert errors32.dtype == jnp.float32 and float(errors32[0]) < gradcheck.tolerance(jnp.float32)


def small_net(*middle, out=None):
    """3 -> 3 (tanh) -> middle -> out: every layer 3 wide, as in test_network's matrix, so
    that op-by-op runs reuse the operations already compiled for those shapes."""
    out = Dense(3, "softmax") if out is None else out
    return nnfun.Network([Dense(3, "tanh", input_dim=3), *middle, out])


X = np.random.default_rng(0).normal(size=(5, 3))
Y = np.array([0, 1, 2, 0, 1])


def test_check_network_reports_every_leaf_whole_and_layer_by_layer():
    net = small_net(Dense(3, "sigmoid"))
    params = net.init(jax.random.key(0))  # float32: check_network moves everything to float64
    result = gradcheck.check_network(net, params, X, Y, loss=CCE)
    result.assert_ok()
    assert [r.reference for r in result.reports] == ["jax.grad", "finite differences"]
    for report in result.reports:
        paths = [leaf.path for leaf in report.leaves]
        assert paths == ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']", "[2]['W']", "[2]['b']"]
        assert [leaf.checked for leaf in report.leaves] == [9, 3, 9, 3, 9, 3]
        assert all(len(leaf.worst_index) == 2 for leaf in report.leaves[::2])  # W: (i, j)
    assert result.autodiff.worst.rel_error < 1e-12
    assert result.finite_differences.worst.rel_error < 1e-7
    # Backprop order: the fused loss, the output layer from dZ, then down to layer 0.
    assert [piece.name for piece in result.pieces] == [
        "loss categorical_crossentropy_from_logits (fused with Dense(3, softmax))",
        "layer 2 (Dense(3, softmax)) backward_affine from dZ",
        "layer 1 (Dense(3, sigmoid))",
        "layer 0 (Dense(3, tanh))",
    ]
    assert [leaf.path for leaf in result.pieces[3].report.leaves] == ["[0]['W']", "[0]['b']", "dx"]
    assert result.first_disagreement is None
    text = str(result)
    assert "manual vs jax.grad" in text and "manual vs finite differences" in text
    assert "[1]['W']" in text and "FAIL" not in text and "no disagreement" in text
    assert gradcheck.leaf_names(params, net)[2] == "params[1]['W'] (layer 1, Dense(3, sigmoid))"


@dataclass(frozen=True)
class DoubledBiasDense(Dense):
    """A Dense layer whose hand-written backward has a bug: db = 2 sum dZ."""

    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "b": 2 * grads["b"]}, dx


def test_planted_bias_bugs_are_caught_and_named():
    # The same bug in a hidden layer and in the (fused softmax) output layer: both reported.
    net = small_net(DoubledBiasDense(3, "relu"), out=DoubledBiasDense(3, "softmax"))
    params = net.init(jax.random.key(1))
    result = gradcheck.check_network(net, params, X, Y, loss=CCE)
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
    failing = {p.layer: [leaf.path for leaf in p.report.failures] for p in result.pieces}
    assert failing == {None: [], 2: ["[2]['b']"], 1: ["[1]['b']"], 0: []}
    assert result.first_disagreement.layer == 2
    assert result.diagnosis().startswith(
        "first disagreement: layer 2 (DoubledBiasDense: Dense(3, softmax)) backward_affine"
    )
    assert "below it" not in result.diagnosis()  # a parameter gradient feeds nothing below
    with pytest.raises(AssertionError, match=r"FAIL \[1\]\['b'\](.|\n)*FAIL \[2\]\['b'\]"):
        result.assert_ok()


def test_a_wrong_dx_is_blamed_on_its_own_layer_not_on_the_layers_below():
    net = small_net(ScaleForgetsS())  # layer 1 returns dx = dy instead of dy * s
    params = net.init(jax.random.key(2))
    result = gradcheck.check_network(net, params, X, Y, loss=CCE, finite_diff=False)
    # The whole-gradient comparison fails below the culprit, which itself looks fine there ...
    assert [leaf.path for leaf in result.autodiff.failures] == ["[0]['W']", "[0]['b']"]
    # ... the layer-by-layer check names it.
    first = result.first_disagreement
    assert (first.layer, [leaf.path for leaf in first.report.failures]) == (1, ["dx"])
    assert [p.ok for p in result.pieces] == [True, True, False, True]
    assert result.diagnosis().startswith("first disagreement: layer 1 (ScaleForgetsS()): dx")
    assert result.diagnosis().endswith("the layers below it fail because of it")
    assert "FAIL [0]['W']" in str(result) and "<- inherited from layer 1" in str(result)
    # As the first layer its dx feeds no parameter gradient: the check still fails on it.
    net = nnfun.Network([ScaleForgetsS(), Dense(3, "softmax")], input_shape=3)
    result = gradcheck.check_network(net, net.init(jax.random.key(3)), X, Y, loss=CCE)
    assert all(report.ok for report in result.reports) and not result.ok  # FD agrees too
    assert result.first_disagreement.layer == 0
    assert [leaf.path for leaf in result.first_disagreement.report.failures] == ["dx"]


@dataclass(frozen=True)
class ScaleWrongGrad(Scale):
    """Planted bug: ds = sum dy, forgetting the factor x."""

    def backward(self, params, cache, dy):
        _, dx = super().backward(params, cache, dy)
        return {"s": jnp.sum(dy, axis=0)}, dx


@dataclass(frozen=True)
class NoBatchSumDense(Dense):
    """Planted bug: db = dZ, the batch sum forgotten (a (batch, units) gradient)."""

    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "b": dz}, dx


def test_a_wrong_parameter_gradient_and_a_missing_batch_sum_are_named():
    net = small_net(ScaleWrongGrad(), out=NoBatchSumDense(3, "softmax"))
    params = net.init(jax.random.key(4))
    result = gradcheck.check_network(net, params, X, Y, loss=CCE, finite_diff=False)
    failing = {p.layer: [leaf.path for leaf in p.report.failures] for p in result.pieces}
    assert failing == {None: [], 2: ["[2]['b']"], 1: ["[1]['s']"], 0: []}
    missing_sum = result.pieces[1].report.failures[0]
    assert missing_sum.note == "manual gradient has shape (5, 3), expected (3,)"
    assert result.diagnosis().startswith("first disagreement: layer 2 (NoBatchSumDense: Dense(")
    assert [leaf.path for leaf in result.autodiff.failures] == ["[1]['s']", "[2]['b']"]


def test_wrong_activation_loss_and_fused_gradients_are_blamed_on_their_source(monkeypatch):
    # A wrong activation derivative in layer 1.
    net = small_net(Dense(3, bad_tanh))
    params = net.init(jax.random.key(5))
    result = gradcheck.check_network(net, params, X, Y, loss=CCE, finite_diff=False)
    assert result.first_disagreement.name == "layer 1 (Dense(3, bad_tanh))"
    assert [leaf.path for leaf in result.first_disagreement.report.failures] == [
        "[1]['W']",
        "[1]['b']",
        "dx",
    ]
    # A wrong loss gradient: the loss piece comes first, everything below inherits it.
    net = small_net(out=Dense(3, "sigmoid"))
    params = net.init(jax.random.key(6))
    targets = np.eye(3)[Y]
    result = gradcheck.check_network(
        net, params, X, targets, loss=bad_half_squared, finite_diff=False
    )
    assert result.first_disagreement.name == "loss bad_half_squared"
    assert [p.ok for p in result.pieces] == [False, True, True]
    assert result.diagnosis().endswith("the layers below it fail because of it")
    # A wrong fused output gradient (softmax + cross-entropy from the logits: p instead of p - y).
    fused = losses.categorical_crossentropy_from_logits
    wrong = losses.Loss(fused.name, fused.fn, lambda z, y: activations.softmax.fn(z))
    monkeypatch.setitem(losses.FUSED, ("softmax", CCE), wrong)
    net = small_net()
    params = net.init(jax.random.key(7))
    result = gradcheck.check_network(net, params, X, Y, loss=CCE, finite_diff=False)
    first = result.first_disagreement
    assert first.name == "loss categorical_crossentropy_from_logits (fused with Dense(3, softmax))"
    assert [leaf.path for leaf in first.report.failures] == ["dJ/dz"]
    assert all(p.ok for p in result.pieces[1:]) and not result.autodiff.ok


def test_correct_networks_pass_zero_gradients_batch_norm_and_l1_at_zero():
    # Dense -> BatchNorm: BatchNorm removes the mean, so the first bias's true gradient is 0
    # and what the two computations return is rounding noise.
    net = nnfun.Network(
        [Dense(3, input_dim=3), BatchNorm(), Activation("tanh"), Dense(3, "softmax")]
    )
    params = net.init(jax.random.key(8))
    params[0]["b"] = params[0]["b"] + 0.3
    result = gradcheck.check_network(
        net, params, X, Y, loss=CCE, state=net.init_state(), train=True
    )
    result.assert_ok()
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        zero = jax.grad(net.loss)(p64, X, Y, loss=CCE, state=net.init_state(), train=True)
    assert float(jnp.max(jnp.abs(zero[0]["b"]))) < 1e-15
    # L1 with every weight exactly 0: both gradients take sign(0) = 0 there; finite
    # differences see |w| at 0 as a kink and skip it.
    net = small_net(Dense(3, "relu", kernel_init="zeros"))
    params = net.init(jax.random.key(9))
    result = gradcheck.check_network(net, params, X, Y, loss=CCE, l1=0.01)
    result.assert_ok()
    fd = {leaf.path: leaf for leaf in result.finite_differences.leaves}
    assert fd["[1]['W']"].kinks == 9 and fd["[1]['W']"].checked == 0
    assert result.autodiff.worst.rel_error < 1e-12


def test_kinks_give_no_false_failures():
    # ReLU exactly at 0: an all-zero input row with zero biases puts every first-layer
    # pre-activation of that sample on the kink. Shrinking the next layer's weights makes the
    # slope jump small against the whole gradient but not against the bias's own gradient:
    # a threshold relative to the whole gradient would miss the kink and fail the bias.
    net = nnfun.Network([Dense(3, "relu", input_dim=3), Dense(3, "softmax")])
    params = net.init(jax.random.key(0), jnp.float64)
    params[1]["W"] = params[1]["W"] * 1e-3
    x = X.copy()
    x[0] = 0.0
    result = gradcheck.check_network(net, params, x, Y, loss=CCE)
    result.assert_ok()
    fd = {leaf.path: leaf for leaf in result.finite_differences.leaves}
    assert fd["[0]['b']"].kinks == 3 and fd["[0]['W']"].kinks == 0
    # There the central difference is the mean of the two one-sided slopes, not g'(0) = 0:
    # without skipping kinks the check would fail.
    x, y = jnp.asarray(x, jnp.float64), jnp.asarray(Y)
    loss = lambda p: float(net.loss(p, x, y, loss=CCE))  # noqa: E731
    shifted = [
        [{**params[0], "b": params[0]["b"].at[0].add(eps)}, params[1]] for eps in (1e-6, -1e-6)
    ]
    central = (loss(shifted[0]) - loss(shifted[1])) / 2e-6
    manual = net.manual_grad(params, x, y, loss=CCE)[0]["b"][0]
    assert abs(central - float(manual)) > 1e-3 * abs(central)
    # Maxout with every piece equal: each unit is a tie; the first piece wins, as in jax.grad.
    net = nnfun.Network([Maxout(3, pieces=2, input_dim=3), Dense(3, "softmax")])
    params = net.init(jax.random.key(3), jnp.float64)
    params[0]["W"] = jnp.repeat(params[0]["W"][..., :1], 2, axis=-1)
    result = gradcheck.check_network(net, params, X, Y, loss=CCE)
    result.assert_ok()
    assert sum(leaf.kinks for leaf in result.finite_differences.leaves) > 0


def test_every_leaf_is_sampled_even_far_beyond_the_sample_limit():
    rng = np.random.default_rng(4)
    params = {"w": jnp.asarray(rng.normal(size=(60, 50))), "b": jnp.asarray(rng.normal(size=3))}

    def f(p):
        return jnp.sum(jnp.tanh(p["w"]) ** 2) + jnp.sum(jnp.sin(p["b"]))

    grads = jax.grad(f)(params)
    doubled = {**grads, "b": 2 * grads["b"]}  # the bug sits in the small leaf
    result = gradcheck.check(f, params, doubled, max_elements=64)
    fd = {leaf.path: leaf for leaf in result.finite_differences.leaves}
    assert fd["['b']"].checked == 3 and 60 <= fd["['w']"].checked <= 68
    assert [leaf.path for leaf in result.finite_differences.failures] == ["['b']"]
    # A leaf of which nothing was compared is never ok.
    empty = gradcheck.LeafError("['w']", 0.0, (), 0.0, 0.0, checked=0, kinks=0, size=3000)
    assert not gradcheck.Report("finite differences", [empty], 1e-5).ok


def test_finite_differences_sample_large_trees_and_agree_with_jax_grad():
    rng = np.random.default_rng(4)
    params = {"w": jnp.asarray(rng.normal(size=(30, 20))), "s": jnp.float64(0.5)}

    def f(p):
        return jnp.sum(jnp.tanh(p["w"]) ** 2) * p["s"] + jnp.sin(p["s"])

    estimate, checked, kink = gradcheck.finite_differences(f, params, max_elements=100)
    # 100 spread by size (600 -> 100, 1 -> 0), each leaf at least min(size, 4).
    assert int(np.sum(checked["w"])) == 100 and bool(checked["s"]) and not np.any(kink["w"])
    ref = jax.grad(f)(params)
    mask = np.asarray(checked["w"])
    # Central differences with eps = 1e-6 in float64: ~1e-16 |f| / eps of rounding error.
    scale = float(jnp.max(jnp.abs(ref["w"])))
    np.testing.assert_allclose(estimate["w"][mask], np.asarray(ref["w"])[mask], atol=1e-7 * scale)
    np.testing.assert_array_equal(estimate["w"][~mask], 0.0)


def test_float32_params_are_promoted_and_a_float32_loss_is_refused():
    with jax.enable_x64(False):  # as a user runs it: float32 everywhere
        w = jnp.array([0.5, -1.5, 2.0], jnp.float32)
        f = lambda w: jnp.sum(jnp.sin(w) * w)  # noqa: E731
        manual = jnp.sin(w) + w * jnp.cos(w)
        result = gradcheck.check(f, w, manual)
    result.assert_ok()  # float32 gradient within float32's tolerance, checked in float64
    assert result.autodiff.tol == gradcheck.tolerance(jnp.float32)
    assert not gradcheck.check(f, w, manual * 1.01).ok
    cast = lambda w: jnp.sum(w.astype(jnp.float32) ** 2)  # noqa: E731
    with pytest.raises(TypeError, match="loss_fn: expected a float64 value .* got float32"):
        gradcheck.check(cast, w, 2 * w)


def test_check_derivative_and_check_vjp_catch_wrong_formulas():
    z = jnp.linspace(-4, 4, 15).reshape(5, 3)
    sig = activations.sigmoid
    good = gradcheck.check_derivative(sig.fn, sig.derivative, z)  # derivative(z, a)
    assert good.ok and good.leaves[0].path == "g'(z)" and good.leaves[0].checked == 15
    assert gradcheck.check_derivative(sig.fn, lambda z: sig.derivative(z, sig.fn(z)), z).ok
    bad = gradcheck.check_derivative(sig.fn, sig.fn, z)  # a instead of a(1 - a)
    assert not bad.ok and bad.worst.worst_index == (4, 2)  # largest error at z = 4
    np.testing.assert_allclose(bad.worst.manual, sig.fn(4.0), rtol=1e-12)
    # ReLU at exactly 0 is a kink: skipped and counted, never a failure.
    relu = activations.relu
    at_zero = gradcheck.check_derivative(relu.fn, relu.derivative, jnp.zeros((2, 2)))
    assert at_zero.ok and at_zero.leaves[0].kinks == 4
    sm, ct = activations.softmax, jnp.arange(15.0).reshape(5, 3) / 7
    assert gradcheck.check_vjp(sm.fn, lambda z, ct: sm.vjp(z, sm.fn(z), ct), z, ct).ok
    reversed_ct = lambda z, ct: sm.vjp(z, sm.fn(z), ct[:, ::-1])  # noqa: E731
    assert not gradcheck.check_vjp(sm.fn, reversed_ct, z, ct).ok


def test_check_activation_loss_and_layer_one_piece_at_a_time():
    relu = gradcheck.check_activation("relu")  # the default grid holds z = 0 exactly
    for checked in (relu, gradcheck.check_activation("softmax")):
        checked.assert_ok()
    assert relu.autodiff.leaves[0].kinks == 1
    # A derivative that is not a subgradient at the kink (relu'(0) = 2) fails there only.
    steep = activations.elementwise(
        "steep", activations.relu.fn, lambda z, a: jnp.where(z == 0, 2.0, (z > 0) * 1.0)
    )
    steep_check = gradcheck.check_activation(steep)
    assert steep_check.autodiff.ok
    assert [leaf.path for leaf in steep_check.finite_differences.failures] == [
        "g'(z) at kinks, within the one-sided slopes"
    ]
    wrong = gradcheck.check_activation(bad_tanh)
    for report in wrong.reports:
        assert "g'(z)" in [leaf.path for leaf in report.failures]
    pred = np.random.default_rng(5).uniform(0.05, 0.95, size=(5, 3))
    targets = np.eye(3)[Y]
    gradcheck.check_loss(CCE, pred, targets, sample_weight=np.arange(5.0)).assert_ok()
    bad = gradcheck.check_loss(bad_half_squared, pred, targets)
    assert [leaf.path for r in bad.reports for leaf in r.failures] == [
        "bad_half_squared: dJ/dpred"
    ] * 2
    for layer in (BatchNorm(), Dropout(0.5)):
        gradcheck.check_layer(layer, 3, finite_diff=False).assert_ok()
    good = gradcheck.check_layer(Scale(), 3, train=True)
    good.assert_ok()
    assert [leaf.path for leaf in good.finite_differences.leaves] == ["train ['s']", "train dx"]
    bad = gradcheck.check_layer(ScaleForgetsS(), 3, finite_diff=False)
    assert [leaf.path for leaf in bad.autodiff.failures] == ["train dx", "eval dx"]
    with pytest.raises(TypeError, match="layer: expected an nnfun Layer instance"):
        gradcheck.check_layer(Scale, 3)


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


def test_the_command_checks_a_students_file_and_exits_with_its_verdict(tmp_path, capsys):
    # The real entry point, as a course's CI runs it: a correct file exits 0 (its ReLU is
    # written with maximum, whose jax.grad is 1/2 at the tie: a kink, skipped, not failed).
    run = subprocess.run(
        [sys.executable, "-m", "nnfun.gradcheck", str(FIXTURES / "student_ok.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "RuntimeWarning" not in run.stderr
    assert run.stdout.strip().endswith("1 checked, 0 failed")
    # The planted bugs fail it (exit 1), each named; what the file imports is not checked.
    assert command.main([str(FIXTURES / "student_layers.py")]) == 1
    out = capsys.readouterr().out
    summary = out.strip().splitlines()[-1]
    assert summary == "6 checked, 3 failed: bad_tanh, bad_half_squared, ScaleForgetsS"
    for line in ("ok   activation softsign", "FAIL activation bad_tanh", "ok   loss half_squared",
                 "FAIL loss bad_half_squared", "ok   layer Scale", "FAIL layer ScaleForgetsS",
                 "FAIL train dx", "FAIL eval dx"):  # fmt: skip
        assert line in out
    assert "relu" not in out
    # Usage errors: no such file, nothing to check, a failing import, no argument.
    assert command.main([str(tmp_path / "missing.py")]) == 2
    empty = tmp_path / "empty.py"
    empty.write_text("import nnfun\nx = 1\n")
    assert command.main([str(empty)]) == 2
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad student file')\n")
    assert command.main([str(broken)]) == 2
    err = capsys.readouterr().err
    assert "found no nnfun Activation, Loss or Layer" in err and "bad student file" in err
    with pytest.raises(SystemExit) as usage:
        command.main([])
    assert usage.value.code == 2
