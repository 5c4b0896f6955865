"""Losses, each with its derivative with respect to its input written by hand.

A loss is a record of two per-sample functions: ``fn(pred, y) -> (batch,)`` and
``grad(pred, y) -> d fn_i / d pred_i`` (shape of ``pred``). ``value`` and ``gradient``
reduce them as Keras does ("sum_over_batch_size"): J = sum_i m_i w_i L_i / sum_i m_i, with
sample weights w (1 by default) and a mask m of the real rows (1 by default; 0 for rows that
only pad a batch, e.g. across hosts or at the end of a stream: they count neither in the sum
nor in the batch size). The network passes w * m to BatchNorm's training statistics, so a pad
is left out of those too. Logit forms are stable for logits
of +-1e4, and ``FUSED`` pairs an output activation with its loss so that the network
backpropagates the textbook gradients softmax + CE -> (p - y)/m and sigmoid + BCE -> (a - y)/m.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nnfun import validation
from nnfun.activations import _sigmoid, _softmax, _softplus

Array = jax.Array

# Probabilities are clipped to [EPS, 1 - EPS] before log; the gradient is 0 where clipped.
EPS = 1e-7


class Loss(NamedTuple):
    """Per-sample loss ``fn(pred, y) -> (batch,)`` and its hand-written ``grad``."""

    name: str
    fn: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]


def targets_like(pred: Array, y: Array) -> Array:
    """Returns ``y`` as a float array of ``pred``'s shape: integer labels become one-hot."""
    # One output unit first: labels 0/1 are the targets themselves, not class indices.
    if y.shape == pred.shape[:-1] and pred.shape[-1] == 1:
        return y.reshape(pred.shape).astype(pred.dtype)
    if y.ndim == pred.ndim - 1 and jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, pred.shape[-1], dtype=pred.dtype)
    if y.shape != pred.shape:
        raise ValueError(
            f"y: expected shape {pred.shape} (or integer labels of shape {pred.shape[:-1]}), "
            f"got {y.shape}"
        )
    return y.astype(pred.dtype)


def _sum(x: Array) -> Array:
    return jnp.sum(x, axis=-1)


def _clipped(a: Array) -> tuple[Array, Array]:
    eps = jnp.asarray(EPS, a.dtype)
    return jnp.clip(a, eps, 1 - eps), ((a >= eps) & (a <= 1 - eps)).astype(a.dtype)


def _bce(a, y):
    a, _ = _clipped(a)
    return -_sum(y * jnp.log(a) + (1 - y) * jnp.log1p(-a))


def _bce_grad(a, y):
    a, inside = _clipped(a)
    return inside * (-y / a + (1 - y) / (1 - a))


def _cce(a, y):
    a, _ = _clipped(a)
    return -_sum(y * jnp.log(a))


def _cce_grad(a, y):
    a, inside = _clipped(a)
    return inside * (-y / a)


def _softmax_crossentropy(z: Array, y: Array) -> Array:
    # sum(y) lse(z) - sum y z with both terms taken after shifting z by its row max m: the
    # m's cancel exactly (sum(y) m - sum y m), so no two large numbers are subtracted (for
    # logits [1e4, 1e4 - 1, -1e4] float32 gave 0.313477 instead of 0.313262). The shift
    # is a constant to autodiff, whose gradient is then sum(y) softmax(z) - y as by hand.
    shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    return _sum(y) * jnp.log(_sum(jnp.exp(shifted))) - _sum(y * shifted)


mean_squared_error = Loss(
    # Keras' "mse": mean over the outputs of (a - y)^2.
    "mean_squared_error",
    lambda a, y: jnp.mean((a - y) ** 2, axis=-1),
    lambda a, y: 2.0 * (a - y) / a.shape[-1],
)
half_squared_error = Loss(
    # The notes' form L = 1/2 ||a - y||^2, whose derivative is simply a - y.
    "half_squared_error",
    lambda a, y: 0.5 * _sum((a - y) ** 2),
    lambda a, y: a - y,
)
binary_crossentropy = Loss("binary_crossentropy", _bce, _bce_grad)
binary_crossentropy_from_logits = Loss(
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - z y; d/dz = s(z) - y. softplus as
    # logaddexp keeps jax.grad right at z = 0 too (a zero-initialised output layer).
    "binary_crossentropy_from_logits",
    lambda z, y: _sum(_softplus(z) - z * y),
    lambda z, y: _sigmoid(z) - y,
)
categorical_crossentropy = Loss("categorical_crossentropy", _cce, _cce_grad)
categorical_crossentropy_from_logits = Loss(
    # -sum y log softmax(z) = sum(y) lse(z) - sum y z; d/dz = sum(y) softmax(z) - y = p - y.
    "categorical_crossentropy_from_logits",
    _softmax_crossentropy,
    lambda z, y: _sum(y)[..., None] * _softmax(z) - y,
)

LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        mean_squared_error,
        half_squared_error,
        binary_crossentropy,
        binary_crossentropy_from_logits,
        categorical_crossentropy,
        categorical_crossentropy_from_logits,
    )
}
LOSSES["mse"] = mean_squared_error
# Keras's name for integer labels: the same record (targets_like one-hots them), so the
# softmax fusion still applies.
LOSSES["sparse_categorical_crossentropy"] = categorical_crossentropy

# (output activation, loss) -> the same loss computed from the pre-activation z.
FUSED: dict[tuple[str, str], Loss] = {
    ("softmax", "categorical_crossentropy"): categorical_crossentropy_from_logits,
    ("sigmoid", "binary_crossentropy"): binary_crossentropy_from_logits,
}


def get(loss: str | Loss | Callable) -> Loss:
    """Looks a loss up by name; records pass through; a function ``fn(y_true, y_pred)`` of
    per-sample losses becomes a record (autodiff only)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    if callable(loss) and not isinstance(loss, str):
        return _from_function(loss)
    raise ValueError(
        f"loss: expected one of {sorted(LOSSES)}, a Loss or a function (y_true, y_pred), "
        f"got {loss!r}"
    )


def _normalised(weights: Array | None, mask: Array | None, batch: int, dtype) -> Array:
    """Each sample's share of J: w_i m_i / sum(m) (1/batch when neither is given)."""
    count = jnp.asarray(batch, dtype) if mask is None else jnp.sum(mask.astype(dtype))
    w = jnp.ones((batch,), dtype) if weights is None else weights.astype(dtype)
    if mask is not None:
        w = w * mask.astype(dtype)
    return w / jnp.maximum(count, jnp.finfo(dtype).tiny)


def value(loss: Loss, pred: Array, y: Array, weights: Array | None = None,
          mask: Array | None = None) -> Array:  # fmt: skip
    """J = sum_i m_i w_i L(pred_i, y_i) / sum_i m_i for ``pred`` (batch, k); weights and
    mask are (batch,)."""
    loss = get(loss)
    validation.check_loss_args(pred, y, weights)
    y = targets_like(pred, y)
    return jnp.sum(_normalised(weights, mask, pred.shape[0], pred.dtype) * loss.fn(pred, y))


def gradient(loss: Loss, pred: Array, y: Array, weights: Array | None = None,
             mask: Array | None = None) -> Array:  # fmt: skip
    """dJ/dpred, (batch, k): the per-sample gradient times m_i w_i / sum m (1/m when
    unweighted)."""
    loss = get(loss)
    validation.check_loss_args(pred, y, weights)
    y = targets_like(pred, y)
    return _normalised(weights, mask, pred.shape[0], pred.dtype)[:, None] * loss.grad(pred, y)


def _from_function(fn: Callable) -> Loss:
    """A Keras-style function ``fn(y_true, y_pred) -> (batch,)`` as a Loss; its gradient
    comes from autodiff only (grad="autodiff")."""
    name = getattr(fn, "__name__", type(fn).__name__)

    def no_manual_grad(a, y):
        raise ValueError(
            f"loss: {name} is a function without a hand-written derivative; compile with "
            "grad='autodiff' (the default) to train with it"
        )

    return Loss(name, lambda a, y: fn(targets_like(a, y), a), no_manual_grad)


# ---- Keras's loss classes (the records above, with Keras's arguments) ----------------------
def _keras_class(kind: str, name: str, from_logits=False, **rest) -> Loss:
    for arg, value in rest.items():
        default = {"label_smoothing": 0.0, "reduction": "sum_over_batch_size"}.get(arg)
        if arg in ("axis", "name", "dtype") or value == default:
            continue
        raise ValueError(f"{kind}: {arg}: only {default!r} is offered, got {value!r}")
    return LOSSES[f"{name}_from_logits" if from_logits else name]


def MeanSquaredError(reduction="sum_over_batch_size", name=None, dtype=None) -> Loss:  # noqa: N802
    return _keras_class("MeanSquaredError", "mean_squared_error", reduction=reduction)


def BinaryCrossentropy(
    from_logits=False,
    label_smoothing=0.0,
    axis=-1,  # noqa: N802
    reduction="sum_over_batch_size",
    name=None,
    dtype=None,
) -> Loss:
    return _keras_class(
        "BinaryCrossentropy",
        "binary_crossentropy",
        from_logits,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def CategoricalCrossentropy(
    from_logits=False,
    label_smoothing=0.0,
    axis=-1,  # noqa: N802
    reduction="sum_over_batch_size",
    name=None,
    dtype=None,
) -> Loss:
    return _keras_class(
        "CategoricalCrossentropy",
        "categorical_crossentropy",
        from_logits,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def SparseCategoricalCrossentropy(
    from_logits=False,
    reduction="sum_over_batch_size",  # noqa: N802
    name=None,
    dtype=None,
) -> Loss:
    # Integer labels are one-hot encoded by targets_like: the categorical records serve.
    return _keras_class(
        "SparseCategoricalCrossentropy",
        "categorical_crossentropy",
        from_logits,
        reduction=reduction,
    )
