"""Weight initialisers: ``init(key, shape, dtype) -> array`` with fan_in = shape[0].

The fan-based ones also take ``fans=(fan_in, fan_out)``: a convolution kernel (kh, kw, in,
out) passes Keras's (kh * kw * in, kh * kw * out).

zeros and constant exist to demonstrate the symmetry trap (every hidden unit of a layer
stays identical); the notes' small random init is ``normal(0.01)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]

# XLA compiles a random draw in 0.3-0.8 s on a CPU, once per shape: a network of new layer
# shapes paid that per layer. Eager draws of up to _SHARED values are made at the next power
# of two and cut on the host, so one compiled program serves every size up to it. The values
# are the same: threefry draws value i from counter i, so a longer draw begins with the shorter
# (the same bits; the float arithmetic on them is bit for bit on this CPU, ulps elsewhere).
_SHARED = 1 << 22


def _drawn(draw, key, shape, dtype):
    """``draw(key, shape, dtype)`` (elementwise in the drawn values), eagerly made from one
    compiled program per power-of-two size; under a trace (jit, vmap), at its own shape."""
    size = math.prod(shape)
    if (
        isinstance(key, jax.core.Tracer)
        or size > _SHARED
        or not jax.config.jax_threefry_partitionable  # then counters depend on the shape
        or str(jax.random.key_impl(key)) != "threefry2x32"
    ):
        return draw(key, shape, dtype)
    flat = np.asarray(draw(key, (max(1024, 1 << (size - 1).bit_length()),), dtype))
    return jnp.asarray(flat[:size].reshape(shape))


def _filled(key, shape, dtype, value):
    """Every entry ``value``: built on the host when eager (no program compiled per shape)."""
    if isinstance(key, jax.core.Tracer):
        return jnp.full(shape, value, dtype)
    return jnp.asarray(np.full(shape, value, dtype))


def _fans(shape: tuple[int, ...], fans: tuple[int, int] | None = None) -> tuple[int, int]:
    if fans is not None:
        return fans
    fan_in = shape[0]
    fan_out = math.prod(shape[1:]) if len(shape) > 1 else 1
    return fan_in, fan_out


def _uniform(key, shape, dtype, limit, low=None):
    """U(low, limit), low = -limit by default."""
    low = -limit if low is None else low
    return _drawn(lambda k, s, d: jax.random.uniform(k, s, d, low, limit), key, shape, dtype)


def _normal(key, shape, dtype, scale, mean=None):
    """N(0, 1) * scale (+ mean)."""
    if mean is None:
        return _drawn(lambda k, s, d: scale * jax.random.normal(k, s, d), key, shape, dtype)
    return _drawn(lambda k, s, d: mean + scale * jax.random.normal(k, s, d), key, shape, dtype)


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (the symmetry trap for weights; the default for biases)."""
    return _filled(key, shape, dtype, 0)


def constant(value: float) -> Initializer:
    """Every entry equal to ``value`` (symmetric like zeros)."""
    return lambda key, shape, dtype=jnp.float32: _filled(key, shape, dtype, value)


def normal(scale: float = 0.01) -> Initializer:
    """N(0, 1) * scale: the notes' ``np.random.randn(...) * 0.01``."""
    return lambda key, shape, dtype=jnp.float32: _normal(key, shape, dtype, scale)


def uniform_fan_in(key, shape, dtype=jnp.float32, *, fans=None):
    """U(-1/sqrt(fan_in), +1/sqrt(fan_in)), the notes' rule with d = fan_in."""
    limit = 1.0 / math.sqrt(_fans(shape, fans)[0])
    return _uniform(key, shape, dtype, limit)


def glorot_uniform(key, shape, dtype=jnp.float32, *, fans=None):
    """Xavier: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape, fans)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(key, shape, dtype, limit)


def glorot_normal(key, shape, dtype=jnp.float32, *, fans=None):
    """Xavier: N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape, fans)
    return _normal(key, shape, dtype, math.sqrt(2.0 / (fan_in + fan_out)))


def he_normal(key, shape, dtype=jnp.float32, *, fans=None):
    """He: N(0, 2 / fan_in), for ReLU layers."""
    return _normal(key, shape, dtype, math.sqrt(2.0 / _fans(shape, fans)[0]))


def he_uniform(key, shape, dtype=jnp.float32, *, fans=None):
    """He: U(-a, a) with a = sqrt(6 / fan_in)."""
    limit = math.sqrt(6.0 / _fans(shape, fans)[0])
    return _uniform(key, shape, dtype, limit)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros,
    "ones": constant(1.0),
    "normal": normal(0.01),
    "large_normal": normal(10.0),
    "uniform_fan_in": uniform_fan_in,
    "glorot_uniform": glorot_uniform,
    "xavier": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_normal": he_normal,
    "he": he_normal,
    "he_uniform": he_uniform,
}


FAN_BASED = (uniform_fan_in, glorot_uniform, glorot_normal, he_normal, he_uniform)


def get(init: str | Initializer) -> Initializer:
    """Looks an initialiser up by name; callables pass through."""
    if isinstance(init, str) and init in INITIALIZERS:
        return INITIALIZERS[init]
    if callable(init) and not isinstance(init, str):
        return init
    raise ValueError(
        f"initializer: expected one of {sorted(INITIALIZERS)} or a callable, got {init!r}"
    )


# ---- Keras's initializer classes: the rules above under Keras's names and arguments ---------
# (``seed`` is accepted and unused: the layer's key decides the draw.)
def Zeros() -> Initializer:  # noqa: N802
    return zeros


def Ones() -> Initializer:  # noqa: N802
    return constant(1.0)


def Constant(value=0.0) -> Initializer:  # noqa: N802
    return constant(float(value))


def RandomNormal(mean=0.0, stddev=0.05, seed=None) -> Initializer:  # noqa: N802
    return lambda key, shape, dtype=jnp.float32: _normal(key, shape, dtype, stddev, mean)


def RandomUniform(minval=-0.05, maxval=0.05, seed=None) -> Initializer:  # noqa: N802
    return lambda key, shape, dtype=jnp.float32: _uniform(key, shape, dtype, maxval, minval)


def GlorotUniform(seed=None) -> Initializer:  # noqa: N802
    return glorot_uniform


def GlorotNormal(seed=None) -> Initializer:  # noqa: N802
    return glorot_normal


def HeNormal(seed=None) -> Initializer:  # noqa: N802
    return he_normal


def HeUniform(seed=None) -> Initializer:  # noqa: N802
    return he_uniform
