"""check_network's modes and weights: training mode by default, evaluation mode as well for
layers that behave differently in it, every line saying its mode, and the layer-by-layer pass
weighing BatchNorm's statistics as the network does."""

from dataclasses import dataclass

import jax
import numpy as np
import pytest

import nnfun
from nnfun import gradcheck
from nnfun.layers import Activation, BatchNorm, Dense, Dropout

CCE = "categorical_crossentropy"
# test_gradcheck's shapes, so that op-by-op runs reuse the operations compiled there.
X = np.random.default_rng(0).normal(size=(5, 3))
Y = np.array([0, 1, 2, 0, 1])
M = np.array([True, True, False, True, True])  # a padded batch's real rows


@pytest.fixture(autouse=True)
def cpu64():
    """test_gradcheck's context too (float64 enabled on the CPU, where gradcheck runs), so
    that the parameters' initialisation reuses the operations compiled there."""
    with gradcheck.errors.cpu64():
        yield


@dataclass(frozen=True)
class EvalFormulaBatchNorm(BatchNorm):
    """Planted bug: training mode's dx forgets that the batch statistics depend on x."""

    def backward(self, params, cache, dy):
        x_hat, inv_std, _, p = cache
        return super().backward(params, (x_hat, inv_std, False, p), dy)


@dataclass(frozen=True)
class UnweightedBatchNorm(BatchNorm):
    """Planted bug: the weighted batch statistics' dx computed as if unweighted."""

    def backward(self, params, cache, dy):
        x_hat, inv_std, train, _ = cache
        return super().backward(params, (x_hat, inv_std, train, None), dy)


@dataclass(frozen=True)
class HalfWeightDense(Dense):
    """Planted bug, the same in both modes: dW = X^T dZ / 2."""

    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "W": grads["W"] / 2}, dx


def bn_net(norm, first=Dense):
    return nnfun.Network([first(3, input_dim=3), norm, Activation("tanh"), Dense(3, "softmax")])


@pytest.fixture(scope="module")
def params():
    return bn_net(BatchNorm()).init(jax.random.key(0))


def test_a_wrong_training_mode_backward_fails_by_default_and_each_line_says_its_mode(params):
    net = bn_net(EvalFormulaBatchNorm())
    result = gradcheck.check_network(net, params, X, Y, loss=CCE, max_elements=24)
    assert not result.ok
    modes = [(piece.layer, piece.mode, piece.ok) for piece in result.pieces]
    assert modes == [
        (None, "train", True), (3, "train", True), (2, "train", True),
        (1, "train", False), (1, "eval", True), (0, "train", True),
    ]  # fmt: skip
    assert result.mode == "train" and not result.autodiff.ok
    assert result.eval_check is not None and result.eval_check.ok  # eval's formula is right
    assert result.diagnosis().startswith("first disagreement: layer 1 (EvalFormulaBatchNorm")
    text = str(result)
    for header in ("jax.grad, train", "finite differences, train", "jax.grad, eval"):
        assert f"manual vs {header} mode" in text
    assert "FAIL [train] layer 1 (EvalFormulaBatchNorm" in text
    assert "ok   [eval] layer 1 (EvalFormulaBatchNorm" in text
    assert "train: training mode, eval: evaluation mode" in text
    # The course's number is defined over every element: not computed from a sample.
    assert result.difference is None and "over all 30 elements only" in text
    # One mode when asked: evaluation mode alone cannot see the bug.
    only_eval = gradcheck.check_network(
        bn_net(EvalFormulaBatchNorm()), params, X, Y, loss=CCE, train=False, finite_diff=False
    )
    assert only_eval.ok and only_eval.mode == "eval" and only_eval.eval_check is None
    assert {piece.mode for piece in only_eval.pieces} == {"eval"}


def test_layers_that_do_not_differ_are_checked_once_and_dropout_gets_a_key():
    net = nnfun.Network([Dense(3, "tanh", input_dim=3), Dense(3, "softmax")])
    plain = gradcheck.check_network(net, net.init(jax.random.key(1)), X, Y, loss=CCE,
                                    finite_diff=False)  # fmt: skip
    assert plain.ok and plain.eval_check is None
    assert {piece.mode for piece in plain.pieces} == {"train"}
    net = nnfun.Network([Dense(3, "tanh", input_dim=3), Dropout(0.5), Dense(3, "softmax")])
    dropped = gradcheck.check_network(net, net.init(jax.random.key(1)), X, Y, loss=CCE,
                                      finite_diff=False)  # fmt: skip
    assert dropped.ok and dropped.eval_check is not None
    assert [(p.layer, p.mode) for p in dropped.pieces if p.layer == 1] == [
        (1, "train"),
        (1, "eval"),
    ]


def test_the_layer_by_layer_pass_weighs_batch_norm_as_the_network_does(params):
    wrong = gradcheck.check_network(
        bn_net(UnweightedBatchNorm()), params, X, Y, loss=CCE, mask=M, train=True,
        finite_diff=False,
    )  # fmt: skip
    assert not wrong.autodiff.ok
    culprit = wrong.first_disagreement
    assert (culprit.layer, culprit.mode) == (1, "train")
    assert [leaf.path for leaf in culprit.report.failures] == ["dx"]
    right = gradcheck.check_network(
        bn_net(BatchNorm()), params, X, Y, loss=CCE, mask=M, finite_diff=False
    )
    right.assert_ok()
    # A layer checked in training mode only is its own culprit in evaluation mode too.
    half = gradcheck.check_network(
        bn_net(BatchNorm(), HalfWeightDense), params, X, Y, loss=CCE, finite_diff=False
    )
    assert [r.reference for r in half.reports] == ["jax.grad", "jax.grad"]  # train, eval
    for mode, report in zip(("train", "eval"), half.reports, strict=True):
        assert [leaf.path for leaf in report.failures] == ["[0]['W']"]
        assert half.blame(report.failures[0], mode) == "  <- layer 0's own backward"
