"""Per-layer weight penalties, Keras's ``Dense(..., kernel_regularizer=l2(1e-4))``.

A regularizer is a record with the penalty ``R(W)`` and its hand-written gradient, added to J
and to dJ/dW of that layer's kernel in both the autodiff and the manual backward pass:

    R(W) = l1 * sum |W| + l2 * sum W^2,    dR/dW = l1 * sign(W) + 2 * l2 * W

This is Keras's convention (``l2`` multiplies ``sum W^2``). The compile-level ``l2=`` of
``Sequential.compile`` / ``Config.make`` follows the notes instead, ``l2/2 * sum W^2`` with
gradient ``l2 * W``: ``compile(l2=2e-4)`` equals ``kernel_regularizer=l2(1e-4)`` on every layer.
The derivative of |w| at 0 is taken as 0 (sign(0) = 0), in both gradients.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jax.Array


def _factor(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not (value >= 0 and value < float("inf")):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class L1L2:
    """R(W) = l1 * sum |W| + l2 * sum W^2 (Keras's ``L1L2``)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "l1", _factor("l1", self.l1))
        object.__setattr__(self, "l2", _factor("l2", self.l2))

    def __call__(self, w: Array) -> Array:
        """The penalty, a scalar. |w| is written as w * sign(w) with sign held constant, so
        that jax.grad gives sign(w), 0 at w = 0, as ``gradient`` does (jnp.abs gives 1 there)."""
        total = jnp.zeros((), w.dtype)
        if self.l1:
            total = total + self.l1 * jnp.sum(w * jax.lax.stop_gradient(jnp.sign(w)))
        if self.l2:
            total = total + self.l2 * jnp.sum(w * w)
        return total

    def gradient(self, w: Array) -> Array:
        """dR/dW = l1 * sign(W) + 2 * l2 * W, written by hand (shape of W)."""
        return self.l1 * jnp.sign(w) + 2.0 * self.l2 * w

    def get_config(self) -> dict[str, float]:
        return {"l1": self.l1, "l2": self.l2}


def l1(l1: float = 0.01) -> L1L2:  # noqa: E741 - Keras's name
    """R(W) = l1 * sum |W|."""
    return L1L2(l1=l1)


def l2(l2: float = 0.01) -> L1L2:
    """R(W) = l2 * sum W^2 (Keras's form: no 1/2)."""
    return L1L2(l2=l2)


def l1_l2(l1: float = 0.0, l2: float = 0.0) -> L1L2:  # noqa: E741
    """R(W) = l1 * sum |W| + l2 * sum W^2 (defaults as Keras 3's ``L1L2``)."""
    return L1L2(l1=l1, l2=l2)


def get(regularizer) -> L1L2 | None:
    """None, a regularizer, ``"l1"``/``"l2"``/``"l1_l2"`` (Keras's defaults) or a config dict
    ``{"l1": ..., "l2": ...}``."""
    if regularizer is None or isinstance(regularizer, L1L2):
        return regularizer
    if isinstance(regularizer, str) and regularizer in _BY_NAME:
        return _BY_NAME[regularizer]()
    if isinstance(regularizer, dict) and set(regularizer) <= {"l1", "l2"}:
        return L1L2(**regularizer)
    raise ValueError(
        "kernel_regularizer: expected None, nnfun.regularizers.l1(x) / l2(x) / l1_l2(l1, l2), "
        f"one of {sorted(_BY_NAME)} or a dict with keys 'l1', 'l2', got {regularizer!r}"
    )


_BY_NAME = {"l1": l1, "l2": l2, "l1_l2": l1_l2}
