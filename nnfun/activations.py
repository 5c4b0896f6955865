"""Activations, each with its derivative written by hand beside it.

An activation is a record: ``fn(z) -> a`` and ``vjp(z, a, da) -> dz``, the backward
step dZ = dA * g'(Z). Element-wise activations also expose ``derivative(z, a) -> g'(z)``;
softmax is not element-wise, so its ``vjp`` applies the full Jacobian. Derivatives
receive both ``z`` and ``a = fn(z)`` so that formulas like sigmoid' = a(1 - a) reuse the
forward value instead of recomputing it. Nothing here calls ``jax.grad``.

Non-finite inputs are never hidden: g(NaN) = NaN for every activation (softmax: the whole
row), and g(+-inf) is g's limit where the formula reaches it (relu(-inf) = 0, sigmoid(inf) =
1, elu(-inf) = -alpha); swish and gelu give NaN at -inf (-inf * 0), as ``jax.nn`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

Array = jax.Array


class Activation(NamedTuple):
    """An activation g and its hand-written backward step.

    ``fn(z) -> a``; ``vjp(z, a, da) -> dz``; ``derivative(z, a) -> g'(z)`` for element-wise g
    (None for softmax); ``kink`` names where g' is undefined and the value used there.
    """

    name: str
    fn: Callable[[Array], Array]
    vjp: Callable[[Array, Array, Array], Array]
    derivative: Callable[[Array, Array], Array] | None
    kink: str = ""


def elementwise(name: str, fn, derivative, kink: str = "") -> Activation:
    """Builds an element-wise activation whose backward step is dZ = dA * g'(Z)."""
    return Activation(name, fn, lambda z, a, da: da * derivative(z, a), derivative, kink)


def _sigmoid(z: Array) -> Array:
    # Two branches so that exp never overflows: 1/(1+e^-z) for z >= 0, e^z/(1+e^z) otherwise.
    e = jnp.exp(-jnp.abs(z))
    return jnp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z: Array) -> Array:
    # log(1 + e^z) as logaddexp(z, 0): finite for any z, and its autodiff derivative is
    # sigmoid(z) everywhere (max(z, 0) + log1p(e^-|z|) gives jax.grad 0 at z = 0, not 1/2).
    return jnp.logaddexp(z, 0.0)


def _softmax(z: Array) -> Array:
    e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_vjp(z: Array, a: Array, da: Array) -> Array:
    # J = diag(a) - a a^T, so J^T da = a * (da - <da, a>): the full Jacobian, never its diagonal.
    return a * (da - jnp.sum(da * a, axis=-1, keepdims=True))


def _gelu(z: Array) -> Array:
    return 0.5 * z * (1.0 + erf(z / jnp.sqrt(2.0).astype(z.dtype)))


def _gelu_derivative(z: Array, a: Array) -> Array:
    # d/dz [z Phi(z)] = Phi(z) + z phi(z)
    cdf = 0.5 * (1.0 + erf(z / jnp.sqrt(2.0).astype(z.dtype)))
    pdf = jnp.exp(-0.5 * z * z) / jnp.sqrt(2.0 * jnp.pi).astype(z.dtype)
    return cdf + z * pdf


def leaky_relu(slope: float = 0.01) -> Activation:
    """g(z) = z for z > 0 else slope*z; g' = 1 or slope (slope at z = 0)."""
    return elementwise(
        "leaky_relu",
        lambda z: jnp.where(z > 0, z, slope * z),
        lambda z, a: jnp.where(z > 0, 1.0, slope).astype(z.dtype),
        kink=f"z = 0: derivative taken as {slope} (the left side)",
    )


def elu(alpha: float = 1.0) -> Activation:
    """g(z) = z for z > 0 else alpha(e^z - 1); g' = 1 or g(z) + alpha."""
    return elementwise(
        "elu",
        # The inner where (not minimum, whose derivative at a tie is 1/2) keeps jax.grad at
        # z = 0 equal to the convention below, and expm1 of huge z out of the unused branch.
        lambda z: jnp.where(z > 0, z, alpha * jnp.expm1(jnp.where(z > 0, 0, z))),
        lambda z, a: jnp.where(z > 0, 1.0, a + alpha).astype(z.dtype),
        kink="z = 0 when alpha != 1: derivative taken as alpha (the left side)",
    )


identity = elementwise("identity", lambda z: z, lambda z, a: jnp.ones_like(z))
sigmoid = elementwise("sigmoid", _sigmoid, lambda z, a: a * (1.0 - a))
tanh = elementwise("tanh", jnp.tanh, lambda z, a: 1.0 - a * a)
relu = elementwise(
    "relu",
    # Tested as z <= 0 (not z > 0) so that NaN, for which every comparison is False, takes
    # the z branch and propagates instead of becoming 0; jax.grad then gives 1 at NaN, as
    # the derivative below does.
    lambda z: jnp.where(z <= 0, jnp.zeros_like(z), z),
    lambda z, a: jnp.where(z <= 0, 0.0, 1.0).astype(z.dtype),
    kink="z = 0: derivative taken as 0 (as jax.nn.relu does)",
)
softplus = elementwise("softplus", _softplus, lambda z, a: _sigmoid(z))
swish = elementwise(
    "swish",
    lambda z: z * _sigmoid(z),
    lambda z, a: _sigmoid(z) * (1.0 + z * (1.0 - _sigmoid(z))),
)
gelu = elementwise("gelu", _gelu, _gelu_derivative)
softmax = Activation("softmax", _softmax, _softmax_vjp, None)

ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (identity, sigmoid, tanh, relu, leaky_relu(), elu(), softplus, swish, gelu, softmax)
}
ACTIVATIONS["linear"] = identity


def get(activation: str | Activation | None) -> Activation:
    """Looks an activation up by name (None means identity); records pass through."""
    if activation is None:
        return identity
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"activation: expected one of {sorted(ACTIVATIONS)} or an Activation, got {activation!r}"
    )
