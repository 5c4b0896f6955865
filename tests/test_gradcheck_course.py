"""The course's gradient-checking exercise: LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID on its
own data (NumPy seed 1), its two planted bugs (dW2 doubled, db1 with 4/m), its difference
number against the same formula computed in NumPy and against its published value, and its
layout (dicts W1, b1 with W (n_l, n_l-1), gradients dW1, db1, samples as columns)."""

from dataclasses import dataclass

import numpy as np
import pytest

import nnfun
from nnfun import gradcheck
from nnfun.layers import Activation, Dense, Dropout

BCE = "binary_crossentropy"
PUBLISHED = 0.2850931567761624  # the exercise's printed difference with both bugs


def course_case():
    """The exercise's test case: x (4, 3) samples as columns, y (3,), parameters."""
    rng = np.random.RandomState(1)  # the exercise's np.random.seed(1) and np.random.randn
    x, y = rng.randn(4, 3), np.array([1, 1, 0])
    shapes = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3), "b3": (1, 1)}
    return x, y, {name: rng.randn(*shape) for name, shape in shapes.items()}


def course_forward(X, Y, p):
    """The exercise's forward pass and cost, the unfused log(a), log(1 - a) form."""
    Z1 = p["W1"] @ X + p["b1"]
    A1 = np.maximum(0, Z1)
    Z2 = p["W2"] @ A1 + p["b2"]
    A2 = np.maximum(0, Z2)
    Z3 = p["W3"] @ A2 + p["b3"]
    A3 = 1 / (1 + np.exp(-Z3))
    # Exactly the exercise's expression: sum(...) / m instead of 1/m * sum(...) already
    # moves the difference's 10th digit (0.28509315672 instead of 0.28509315678).
    logprobs = np.multiply(-np.log(A3), Y) + np.multiply(-np.log(1 - A3), 1 - Y)
    cost = 1.0 / X.shape[1] * np.sum(logprobs)
    return cost, (A1, Z1, A2, Z2, A3)


def course_backward(X, Y, p, *, bugs: bool):
    """The exercise's backward pass, with its two bugs when ``bugs``."""
    m = X.shape[1]
    _, (A1, Z1, A2, Z2, A3) = course_forward(X, Y, p)
    dZ3 = A3 - Y
    dZ2 = (p["W3"].T @ dZ3) * (A2 > 0)
    dZ1 = (p["W2"].T @ dZ2) * (A1 > 0)
    return {
        "dW1": dZ1 @ X.T / m,
        "db1": (4 if bugs else 1) * np.sum(dZ1, axis=1, keepdims=True) / m,
        "dW2": (2 if bugs else 1) * dZ2 @ A1.T / m,
        "db2": np.sum(dZ2, axis=1, keepdims=True) / m,
        "dW3": dZ3 @ A2.T / m,
        "db3": np.sum(dZ3, axis=1, keepdims=True) / m,
    }


def numpy_difference(X, Y, p, grads, epsilon=1e-7):
    """The exercise's gradient_check_n, element by element in NumPy."""
    names = ["W1", "b1", "W2", "b2", "W3", "b3"]
    theta = np.concatenate([p[k].ravel() for k in names])
    grad = np.concatenate([grads["d" + k].ravel() for k in names])
    splits = np.cumsum([p[k].size for k in names])[:-1]

    def cost(t):
        parts = np.split(t, splits)
        return course_forward(
            X, Y, {k: v.reshape(p[k].shape) for k, v in zip(names, parts, strict=True)}
        )[0]

    approx = np.empty_like(theta)
    for i in range(theta.size):
        plus, minus = theta.copy(), theta.copy()
        plus[i] += epsilon
        minus[i] -= epsilon
        approx[i] = (cost(plus) - cost(minus)) / (2 * epsilon)
    return np.linalg.norm(grad - approx) / (np.linalg.norm(grad) + np.linalg.norm(approx))


@dataclass(frozen=True)
class DoubledWeightDense(Dense):
    """The course's bug in layer 2 (nnfun's layer 1): dW = 2 X^T dZ."""

    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "W": 2 * grads["W"]}, dx


@dataclass(frozen=True)
class FourfoldBiasDense(Dense):
    """The course's bug in layer 1 (nnfun's layer 0): db = 4 sum dZ."""

    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "b": 4 * grads["b"]}, dx


def course_net(first=Dense, second=Dense):
    return nnfun.Network([first(5, "relu", input_dim=4), second(3, "relu"), Dense(1, "sigmoid")])


@pytest.fixture(scope="module")
def case():
    X, Y, parameters = course_case()
    return X, Y, parameters, gradcheck.from_course(parameters)


def test_both_course_bugs_are_named_each_at_its_own_leaf(case):
    X, Y, _, params = case
    net = course_net(FourfoldBiasDense, DoubledWeightDense)
    x, y = gradcheck.samples_from_course(X, Y)
    result = gradcheck.check_network(net, params, x, y, loss=BCE, fused=False)
    for report in result.reports:  # jax.grad and finite differences alike
        assert [leaf.path for leaf in report.failures] == ["[0]['b']", "[1]['W']"]
        blame = {leaf.path: result.blame(leaf, "train") for leaf in report.failures}
        assert blame == {
            "[0]['b']": "  <- layer 0's own backward",
            "[1]['W']": "  <- layer 1's own backward",
        }
    culprits = {p.layer: [leaf.path for leaf in p.report.failures] for p in result.culprits}
    assert culprits == {1: ["[1]['W']"], 0: ["[0]['b']"]}
    diagnosis = result.diagnosis()
    assert "layer 1 (DoubledWeightDense: Dense(3, relu)): [1]['W']" in diagnosis
    assert "layer 0 (FourfoldBiasDense: Dense(5, relu)): [0]['b']" in diagnosis
    assert "inherited" not in str(result) and "below it" not in diagnosis
    # The course's number, beside the per-leaf errors, as gradcheck.difference computes it.
    assert "difference" in str(result) and "a mistake" in str(result)
    assert result.difference == pytest.approx(PUBLISHED, rel=1e-7)
    assert result.elements == 47


def test_the_difference_matches_numpy_and_the_published_value(case):
    X, Y, parameters, params = case
    buggy = course_backward(X, Y, parameters, bugs=True)
    expected = numpy_difference(X, Y, parameters, buggy)
    assert expected == pytest.approx(PUBLISHED, rel=1e-15)  # the NumPy reference is the course's
    x, y = gradcheck.samples_from_course(X, Y)
    net = course_net()
    grads = gradcheck.from_course(buggy)

    def loss_fn(net):
        return lambda p: net.loss(p, x, y, loss=BCE)

    # The course's unfused form rounds like NumPy's to ~1e-9; the fused one (from the logits)
    # rounds differently, so the two agree to ~1e-7 only (see gradcheck.course).
    unfused = gradcheck.difference(loss_fn(gradcheck.unfused(net)), params, grads)
    fused = gradcheck.difference(loss_fn(net), params, grads)
    assert unfused == pytest.approx(expected, rel=1e-8)
    assert fused == pytest.approx(expected, rel=1e-6) and fused != unfused
    # Without the bugs: rounding noise of J divided by 2 epsilon (the course prints 1.19e-7 for
    # its correct solution), which a larger step shrinks: epsilon is the user's to choose.
    correct = course_backward(X, Y, parameters, bugs=False)
    right = gradcheck.from_course(correct)
    small = gradcheck.difference(loss_fn(gradcheck.unfused(net)), params, right)
    assert small == pytest.approx(numpy_difference(X, Y, parameters, correct), abs=2e-8)
    assert 1e-9 < small < 2e-7 and "probably right" in gradcheck.course.verdict(small)
    fine = gradcheck.difference(loss_fn(gradcheck.unfused(net)), params, right, epsilon=1e-5)
    assert fine < small / 10 and gradcheck.course.verdict(fine).startswith("< 1e-7: great")
    assert fine == pytest.approx(numpy_difference(X, Y, parameters, correct, 1e-5), rel=1e-2)


def test_a_students_numpy_gradients_are_checked_as_they_are(case):
    X, Y, parameters, _ = case
    buggy = course_backward(X, Y, parameters, bugs=True)
    result = gradcheck.check_course(course_net(), parameters, buggy, X, Y)
    for report in result.reports:
        assert [leaf.path for leaf in report.failures] == ["db1 [0]['b']", "dW2 [1]['W']"]
    assert result.difference == pytest.approx(PUBLISHED, rel=1e-8)
    assert "db1 [0]['b']" in str(result) and "a mistake" in str(result)


def test_course_layout_round_trips_with_parameter_free_layers(case):
    X, Y, parameters, _ = case
    net = nnfun.Network(
        [Dense(5, input_dim=4), Activation("relu"), Dropout(0.5), Dense(3, "relu"),
         Dense(1, "sigmoid")]
    )  # fmt: skip
    params = gradcheck.from_course(parameters, net)
    assert [sorted(p) for p in params] == [["W", "b"], [], [], ["W", "b"], ["W", "b"]]
    assert params[0]["W"].shape == (4, 5) and params[0]["b"].shape == (5,)
    back = gradcheck.to_course(params)
    assert list(back) == list(parameters)
    for name, value in parameters.items():
        np.testing.assert_array_equal(back[name], value)
    with pytest.raises(ValueError, match=r"parameters: net has 3 layers with W and b, got 2"):
        gradcheck.from_course({k: v for k, v in parameters.items() if k[-1] != "3"}, net)
    with pytest.raises(ValueError, match=r"parameters: b2 missing"):
        gradcheck.from_course({k: v for k, v in parameters.items() if k != "b2"})
    # nnfun's manual gradient in the course's layout is the course's own backward pass.
    net = gradcheck.unfused(course_net())  # the operations compiled for the first test
    x, y = gradcheck.samples_from_course(X, Y)
    with gradcheck.errors.cpu64():  # the first test's context: its compiled operations
        grads = net.manual_grad(gradcheck.from_course(parameters, net), x, y, loss=BCE)
    converted = gradcheck.to_course(grads, gradients=True)
    expected = course_backward(X, Y, parameters, bugs=False)
    assert list(converted) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(converted[name], value, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(gradcheck.from_course(converted)[1]["W"], grads[1]["W"])
