"""A student's file for ``python -m nnfun.gradcheck``: a correct layer, activation and loss,
and the same three with one planted derivative bug each."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from nnfun import Layer
from nnfun.activations import elementwise, relu  # noqa: F401  (imported, not the student's)
from nnfun.losses import Loss

GRADCHECK_INPUT_SHAPES = {"Scale": (3,), "ScaleForgetsS": (3,)}


@dataclass(frozen=True)
class Scale(Layer):
    """y = x * s, one learned scale per feature: dx = dy * s, ds = sum_batch dy * x."""

    def init(self, key, in_shape, dtype=jnp.float32):
        return {"s": 1.0 + 0.5 * jax.random.normal(key, in_shape[-1:], dtype)}

    def forward(self, params, state, x, key=None, train=False):
        return x * params["s"], state, x

    def backward(self, params, cache, dy):
        return {"s": jnp.sum(dy * cache, axis=0)}, dy * params["s"]


@dataclass(frozen=True)
class ScaleForgetsS(Scale):
    """Planted bug: dx = dy instead of dy * s."""

    def backward(self, params, cache, dy):
        grads, _ = super().backward(params, cache, dy)
        return grads, dy


softsign = elementwise(
    "softsign", lambda z: z / (1 + jnp.abs(z)), lambda z, a: (1 - jnp.abs(a)) ** 2
)
# Planted bug: tanh' = 1 - a instead of 1 - a^2.
bad_tanh = elementwise("bad_tanh", jnp.tanh, lambda z, a: 1 - a)
half_squared = Loss(
    "half_squared", lambda a, y: 0.5 * jnp.sum((a - y) ** 2, -1), lambda a, y: a - y
)
# Planted bug: the derivative of 1/2 (a - y)^2 taken as 2 (a - y).
bad_half_squared = Loss(
    "bad_half_squared", lambda a, y: 0.5 * jnp.sum((a - y) ** 2, -1), lambda a, y: 2 * (a - y)
)
