"""Metrics reported beside the loss: per-sample scores ``(output, y) -> (batch,)``.

A metric is looked up by the name given to ``compile`` (Keras' spellings: ``"accuracy"`` or
``"acc"``, ``"mae"``, ``"mse"``) and bound to the loss, which says whether the network's
output is a probability or a logit: one sigmoid probability is a hit when it is on the
label's side of 0.5, one logit when it is on the label's side of 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from nnfun import losses

Array = jax.Array
Metric = Callable[[Array, Array], Array]

ALIASES = {  # Keras's spellings; the log keeps the name given, as Keras's does
    "acc": "accuracy",
    "binary_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "mean_absolute_error": "mae",
    "mean_squared_error": "mse",
}
NAMES = ("accuracy", "mae", "mse", *ALIASES)


def _accuracy(output: Array, y: Array, threshold: float) -> Array:
    """Per-sample hit: argmax for several outputs, output > threshold for one output."""
    target = losses.targets_like(output, y)
    if output.shape[-1] == 1:
        return ((output[:, 0] > threshold) == (target[:, 0] > 0.5)).astype(output.dtype)
    return (jnp.argmax(output, -1) == jnp.argmax(target, -1)).astype(output.dtype)


def _mae(output: Array, y: Array) -> Array:
    return jnp.mean(jnp.abs(output - losses.targets_like(output, y)), -1)


def _mse(output: Array, y: Array) -> Array:
    return jnp.mean((output - losses.targets_like(output, y)) ** 2, -1)


def check(name: str) -> str:
    """The name itself when it is a known metric; ValueError otherwise."""
    if name not in NAMES:
        raise ValueError(f"metrics: expected names from {sorted(NAMES)}, got {name!r}")
    return name


def get(name: str, loss: losses.Loss | str | None = None) -> Metric:
    """The per-sample metric ``name`` for outputs trained with ``loss``."""
    name = ALIASES.get(check(name), name)
    if name == "accuracy":
        from_logits = loss is not None and losses.get(loss).name.endswith("_from_logits")
        threshold = 0.0 if from_logits else 0.5
        return lambda output, y: _accuracy(output, y, threshold)
    return {"mae": _mae, "mse": _mse}[name]


# ---- Keras's metric classes: each stands for its name (the key it logs under) -------------
def _named(default: str):
    def metric(name: str = default, dtype=None, **options) -> str:
        if name != default:
            raise ValueError(f"name: only the default name {default!r} is offered, got {name!r}")
        if options.get("threshold", 0.5) != 0.5:
            raise ValueError(f"threshold: only 0.5 is offered, got {options['threshold']!r}")
        return default

    return metric


Accuracy = _named("accuracy")
BinaryAccuracy = _named("binary_accuracy")
CategoricalAccuracy = _named("categorical_accuracy")
SparseCategoricalAccuracy = _named("sparse_categorical_accuracy")
MeanAbsoluteError = _named("mean_absolute_error")
MeanSquaredError = _named("mean_squared_error")
