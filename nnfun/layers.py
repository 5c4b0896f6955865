"""Layers: small frozen specs with pure ``init`` / ``forward`` / ``backward`` functions.

Every layer has
  ``init(key, in_shape, dtype) -> params``          a dict of arrays ({} when none),
  ``init_state(in_shape, dtype) -> state``          non-parameter state ({} when none),
  ``output_shape(in_shape) -> shape``               per-sample shapes, batch excluded,
  ``forward(params, state, x, key, train) -> (y, new_state, cache)``,
  ``backward(params, cache, dy) -> (dparams, dx)``  written by hand from the equations.
Randomness comes from ``key``; training versus evaluation is the ``train`` argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from nnfun import activations, initializers, layer_face, regularizers

Array = jax.Array
Params = dict[str, Array]


class Layer(layer_face.WeightsOfLayer):
    """Defaults for layers without parameters, state or randomness; Keras's ``name`` and
    ``trainable`` (:mod:`nnfun.layer_face`)."""

    name: str | None = None  # None: the model names it after its class
    trainable = True  # False: compile() leaves its parameters as they are

    stochastic = False  # needs a key in training
    takes_mask = False  # forward takes mask, the rows that count (BatchNorm's batch statistics)
    regularized: tuple[str, ...] = ()  # params that L1/L2 penalise
    input_dim: int | None = None
    input_shape: tuple[int, ...] | None = None  # Keras's input_shape= on a first layer
    kernel_regularizer: regularizers.L1L2 | None = None  # a per-layer penalty on `regularized`

    def init(self, key, in_shape, dtype=jnp.float32) -> Params:
        return {}

    def init_state(self, in_shape, dtype=jnp.float32) -> dict[str, Array]:
        return {}

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape


def _features(layer: Any, in_shape: tuple[int, ...]) -> int:
    if len(in_shape) != 1:
        raise ValueError(
            f"{layer}: expected inputs of shape (batch, features), got per-sample shape "
            f"{in_shape}; add Flatten() first"
        )
    return in_shape[0]


def _check_x(layer: Any, x: Array, features: int, *, flat: bool = True) -> None:
    """Raises ValueError naming ``layer`` when ``x`` does not match its parameters' shape.

    Shapes are static, so the check also runs (once, while tracing) under jit and vmap.
    """
    shape = tuple(x.shape)
    if (len(shape) != 2 if flat else len(shape) < 2) or shape[-1] != features:
        want = f"(batch, {features})" if flat else f"(batch, ..., {features})"
        raise ValueError(f"x: {layer} expected shape {want}, got {shape}")


def _check_inits(layer: Any) -> None:
    for name in ("kernel_init", "bias_init"):
        try:
            initializers.get(getattr(layer, name))
        except ValueError as e:  # name the argument, keep the list of valid names
            raise ValueError(f"{type(layer).__name__}: {name}: {e}") from None


def _shape_arg(layer: Any, name: str, shape: Any) -> tuple[int, ...]:
    """A per-sample shape given as an int or a sequence of positive ints."""
    dims = (shape,) if isinstance(shape, int) else shape
    try:
        dims = tuple(dims)
        ok = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
    except TypeError:
        ok = False
    if not ok or not dims:
        raise ValueError(f"{layer}: {name}: expected a tuple of positive ints, got {shape!r}")
    return dims


def _keras_arguments(layer: Any) -> None:
    """Resolves Keras's argument names onto nnfun's: kernel_initializer / bias_initializer
    are aliases of kernel_init / bias_init (both read the same afterwards), input_shape=(n,)
    sets input_dim=n, kernel_regularizer is looked up (nnfun.regularizers)."""
    name = type(layer).__name__
    fields = type(layer).__dataclass_fields__
    for keras, own in (("kernel_initializer", "kernel_init"), ("bias_initializer", "bias_init")):
        value, current = getattr(layer, keras), getattr(layer, own)
        if value is not None:
            if current != fields[own].default and current != value:
                raise ValueError(
                    f"{name}: {keras}: {own} is its alias; give one of them, got "
                    f"{keras}={value!r} and {own}={current!r}"
                )
            object.__setattr__(layer, own, value)
        object.__setattr__(layer, keras, getattr(layer, own))
    try:
        object.__setattr__(layer, "kernel_regularizer", regularizers.get(layer.kernel_regularizer))
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None
    if layer.input_shape is not None:
        shape = _shape_arg(name, "input_shape", layer.input_shape)
        if len(shape) != 1:
            raise ValueError(
                f"{name}: input_shape: expected (features,), got {shape}; put "
                f"Flatten(input_shape={shape}) first"
            )
        if layer.input_dim is not None and layer.input_dim != shape[0]:
            raise ValueError(
                f"{name}: input_shape={shape} and input_dim={layer.input_dim} disagree"
            )
        object.__setattr__(layer, "input_shape", shape)
        object.__setattr__(layer, "input_dim", shape[0])


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer a = g(x @ W + b); x (batch, in), W (in, units), b (units,).

    Keras's names work too: ``kernel_initializer`` / ``bias_initializer`` (aliases of
    ``kernel_init`` / ``bias_init``), ``input_shape=(in,)`` (sets ``input_dim``) and
    ``kernel_regularizer`` (``nnfun.regularizers.l2(1e-4)``: a penalty on this layer's W).
    """

    units: int
    activation: str | activations.Activation | None = None
    input_dim: int | None = None
    kernel_init: Any = "glorot_uniform"
    bias_init: Any = "zeros"
    kernel_initializer: Any = None
    bias_initializer: Any = None
    kernel_regularizer: Any = None
    input_shape: tuple[int, ...] | None = None

    regularized = ("W",)

    def __post_init__(self):
        if not isinstance(self.units, int) or isinstance(self.units, bool) or self.units < 1:
            raise ValueError(f"Dense: units: expected a positive int, got {self.units!r}")
        activations.get(self.activation)
        _keras_arguments(self)
        _check_inits(self)

    @property
    def act(self) -> activations.Activation:
        return activations.get(self.activation)

    def __str__(self):
        return f"Dense({self.units}, {self.act.name})"

    def init(self, key, in_shape, dtype=jnp.float32):
        n_in = _features(self, in_shape)
        w_key, b_key = jax.random.split(key)
        return {
            "W": initializers.get(self.kernel_init)(w_key, (n_in, self.units), dtype),
            "b": initializers.get(self.bias_init)(b_key, (self.units,), dtype),
        }

    def output_shape(self, in_shape):
        _features(self, in_shape)
        return (self.units,)

    def forward(self, params, state, x, key=None, train=False):
        _check_x(self, x, params["W"].shape[0])
        z = x @ params["W"] + params["b"]
        a = self.act.fn(z)
        return a, state, (x, z, a)

    def backward(self, params, cache, dy):
        x, z, a = cache
        return self.backward_affine(params, cache, self.act.vjp(z, a, dy))

    def backward_affine(self, params, cache, dz):
        """From dZ: dW = X^T dZ, db = sum_batch dZ, dX = dZ W^T."""
        x = cache[0]
        # X^T dZ computed as (dZ^T X)^T: XLA's CPU backend runs a product that sums over its
        # left operand's first axis 2-6x slower inside a training loop (wide inputs).
        return {"W": (dz.T @ x).T, "b": jnp.sum(dz, axis=0)}, dz @ params["W"].T


@dataclass(frozen=True)
class Maxout(Layer):
    """a_u = max_k (x @ W[:, u, k] + b[u, k]); W (in, units, pieces), b (units, pieces).

    The gradient flows to the winning piece only (the first one on a tie).
    """

    units: int
    pieces: int = 2
    input_dim: int | None = None
    kernel_init: Any = "glorot_uniform"
    bias_init: Any = "zeros"

    regularized = ("W",)

    def __post_init__(self):
        for name in ("units", "pieces"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Maxout: {name}: expected a positive int, got {value!r}")
        _check_inits(self)

    def __str__(self):
        return f"Maxout({self.units} units x {self.pieces} pieces)"

    def init(self, key, in_shape, dtype=jnp.float32):
        n_in = _features(self, in_shape)
        w_key, b_key = jax.random.split(key)
        shape = (self.units, self.pieces)
        return {
            "W": initializers.get(self.kernel_init)(w_key, (n_in, *shape), dtype),
            "b": initializers.get(self.bias_init)(b_key, shape, dtype),
        }

    def output_shape(self, in_shape):
        _features(self, in_shape)
        return (self.units,)

    def forward(self, params, state, x, key=None, train=False):
        _check_x(self, x, params["W"].shape[0])
        z = jnp.einsum("ni,iuk->nuk", x, params["W"]) + params["b"]
        winner = jnp.argmax(z, axis=-1)
        # take_along_axis (not max) so that autodiff also sends the gradient to one winner.
        y = jnp.take_along_axis(z, winner[..., None], axis=-1)[..., 0]
        return y, state, (x, winner)

    def backward(self, params, cache, dy):
        x, winner = cache
        dz = dy[..., None] * jax.nn.one_hot(winner, self.pieces, dtype=dy.dtype)
        dparams = {"W": jnp.einsum("ni,nuk->iuk", x, dz), "b": jnp.sum(dz, axis=0)}
        return dparams, jnp.einsum("nuk,iuk->ni", dz, params["W"])


@dataclass(frozen=True)
class PReLU(Layer):
    """a = x if x > 0 else slope * x, one learned slope per feature (last axis).

    da/dx = 1 or slope; da/dslope = 0 or x. At x = 0 the left side is used (slope, 0).
    """

    slope_init: float = 0.25

    def __str__(self):
        return "PReLU"

    def init(self, key, in_shape, dtype=jnp.float32):
        return {"slope": jnp.full((in_shape[-1],), self.slope_init, dtype)}

    def forward(self, params, state, x, key=None, train=False):
        _check_x(self, x, params["slope"].shape[0], flat=False)
        return jnp.where(x > 0, x, params["slope"] * x), state, x

    def backward(self, params, cache, dy):
        x = cache
        positive = x > 0
        dslope = jnp.sum(jnp.where(positive, 0, dy * x).reshape(-1, x.shape[-1]), axis=0)
        return {"slope": dslope}, jnp.where(positive, dy, dy * params["slope"])


@dataclass(frozen=True)
class RReLU(Layer):
    """Randomized leaky ReLU: slope ~ U[lower, upper] per element in training, drawn from
    ``key``; the mean slope (lower + upper) / 2 at evaluation."""

    lower: float = 1 / 8
    upper: float = 1 / 3

    stochastic = True

    def __post_init__(self):
        if not 0 <= self.lower <= self.upper:
            raise ValueError(
                f"RReLU: expected 0 <= lower <= upper, got lower={self.lower}, upper={self.upper}"
            )

    def __str__(self):
        return f"RReLU[{self.lower:g}, {self.upper:g}]"

    def forward(self, params, state, x, key=None, train=False):
        if train:
            slope = jax.random.uniform(key, x.shape, x.dtype, self.lower, self.upper)
        else:
            slope = jnp.asarray((self.lower + self.upper) / 2, x.dtype)
        return jnp.where(x > 0, x, slope * x), state, (x, slope)

    def backward(self, params, cache, dy):
        x, slope = cache
        return {}, jnp.where(x > 0, dy, dy * slope)


@dataclass(frozen=True)
class Dropout(Layer):
    """Drops each input with probability ``rate`` in training (mask drawn from ``key``).

    Inverted (default): kept units are scaled by 1/(1 - rate) in training and nothing is
    done at evaluation. Classic (``scaled=False``, the notes' form): no scaling in training
    and outputs times the keep probability (1 - rate) at evaluation, which is the same as
    multiplying the next layer's weights by it.
    """

    rate: float
    scaled: bool = True

    stochastic = True

    def __post_init__(self):
        if isinstance(self.rate, bool) or not (
            isinstance(self.rate, (int, float)) and 0 <= self.rate < 1
        ):
            raise ValueError(f"Dropout: rate: expected a number in [0, 1), got {self.rate!r}")

    def __str__(self):
        return f"Dropout({self.rate:g})"

    def forward(self, params, state, x, key=None, train=False):
        keep = 1.0 - self.rate
        if train:
            mask = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype)
            scale = mask / keep if self.scaled else mask
        else:
            scale = jnp.asarray(1.0 if self.scaled else keep, x.dtype)
        return x * scale, state, scale

    def backward(self, params, cache, dy):
        return {}, dy * cache


@dataclass(frozen=True)
class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, per feature (the last axis).

    Training uses the batch's statistics over every axis but the last (N for (N, F), N*H*W
    for (N, H, W, C) feature maps), over the rows of ``mask`` (N,) when given (as Keras's
    ``mask``: a padded batch's real rows; sample weights do not enter them, as in Keras), so
    a row of mask 0 leaves them untouched: mean = sum_i p_i x_i, var = sum_i p_i
    (x_i - mean)^2, p = m / sum(m) (a float mask weighs the rows). It returns running
    statistics updated as running = momentum * running + (1 - momentum) * batch (kept when
    the whole mask is 0), computed in the state's dtype (float32 under bfloat16 compute,
    where a 1% update would round away); evaluation uses the running ones.
    """

    momentum: float = 0.99
    epsilon: float = 1e-5

    takes_mask = True

    def __post_init__(self):
        if not 0 <= self.momentum < 1:
            raise ValueError(f"BatchNorm: momentum: expected [0, 1), got {self.momentum!r}")

    def __str__(self):
        return "BatchNorm"

    def init(self, key, in_shape, dtype=jnp.float32):
        c = in_shape[-1]
        return {"gamma": jnp.ones((c,), dtype), "beta": jnp.zeros((c,), dtype)}

    def init_state(self, in_shape, dtype=jnp.float32):
        c = in_shape[-1]
        return {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}

    def forward(self, params, state, x, key=None, train=False, mask=None):
        _check_x(self, x, params["gamma"].shape[0], flat=False)
        axes = tuple(range(x.ndim - 1))
        p = None  # each row's share of the statistics (the mask over its sum), or None: 1/count
        if train:
            count = math.prod(x.shape[:-1])
            if count < 2:
                raise ValueError(
                    "BatchNorm: training needs at least 2 values per feature to estimate a "
                    f"variance, got x of shape {x.shape}"
                )
            # Statistics in the wider of x's and the state's dtype, then x's for the rest.
            acc = jnp.promote_types(x.dtype, state["mean"].dtype)
            xs = x.astype(acc)
            m = self.momentum
            if mask is None:
                mean = jnp.mean(xs, axis=axes)
                var = jnp.mean(jnp.square(xs - mean), axis=axes)
            else:
                rows = jnp.reshape(mask, (-1,) + (1,) * (x.ndim - 1)).astype(acc)
                total = jnp.sum(rows) * (count // x.shape[0])
                p = rows / jnp.maximum(total, jnp.finfo(acc).tiny)
                mean = jnp.sum(p * xs, axis=axes)
                var = jnp.sum(p * jnp.square(xs - mean), axis=axes)
                m = jnp.where(total > 0, m, 1.0).astype(acc)  # an all-padding batch
                p = p.astype(x.dtype)
            state = {
                k: (m * state[k] + (1 - m) * v).astype(state[k].dtype)
                for k, v in (("mean", mean), ("var", var))
            }
        else:
            mean, var = state["mean"], state["var"]
        mean, var = mean.astype(x.dtype), var.astype(x.dtype)
        inv_std = jax.lax.rsqrt(var + self.epsilon)
        x_hat = (x - mean) * inv_std
        return params["gamma"] * x_hat + params["beta"], state, (x_hat, inv_std, train, p)

    def backward(self, params, cache, dy):
        x_hat, inv_std, train, p = cache
        axes = tuple(range(dy.ndim - 1))
        dparams = {"gamma": jnp.sum(dy * x_hat, axis=axes), "beta": jnp.sum(dy, axis=axes)}
        dx_hat = dy * params["gamma"]
        if not train:  # fixed statistics: x_hat is affine in x
            return dparams, dx_hat * inv_std
        # The batch mean and variance depend on every x:
        # dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)),
        if p is None:
            mean_dx_hat = jnp.mean(dx_hat, axis=axes)
            mean_dx_hat_x_hat = jnp.mean(dx_hat * x_hat, axis=axes)
            return dparams, inv_std * (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat)
        # and with weights (d mean/dx_i = p_i, d var/dx_i = 2 p_i (x_i - mean)):
        # dx_i = inv_std * (dx_hat_i - p_i * (sum(dx_hat) + x_hat_i * sum(dx_hat * x_hat))).
        sum_dx_hat = jnp.sum(dx_hat, axis=axes)
        sum_dx_hat_x_hat = jnp.sum(dx_hat * x_hat, axis=axes)
        return dparams, inv_std * (dx_hat - p * (sum_dx_hat + x_hat * sum_dx_hat_x_hat))


@dataclass(frozen=True)
class Flatten(Layer):
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...), e.g. 64x64x3 images -> 12288.

    ``input_shape=(d1, d2, ...)`` declares the network's input on a first layer (Keras)."""

    input_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.input_shape is not None:
            object.__setattr__(
                self, "input_shape", _shape_arg("Flatten", "input_shape", self.input_shape)
            )

    def __str__(self):
        return "Flatten"

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)

    def forward(self, params, state, x, key=None, train=False):
        return x.reshape(x.shape[0], -1), state, x.shape

    def backward(self, params, cache, dy):
        return {}, dy.reshape(cache)


@dataclass(frozen=True)
class Reshape(Layer):
    """(batch, *in_shape) -> (batch, *target_shape), Keras's ``Reshape``; one entry of
    ``target_shape`` may be -1 (inferred). The gradient is reshaped back."""

    target_shape: tuple[int, ...]

    def __post_init__(self):
        shape = self.target_shape
        dims = (shape,) if isinstance(shape, int) else shape
        ok = isinstance(dims, (tuple, list)) and all(
            isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in dims
        )
        if not ok or not dims or list(dims).count(-1) > 1:
            raise ValueError(
                f"Reshape: target_shape: expected positive ints (one may be -1), got {shape!r}"
            )
        object.__setattr__(self, "target_shape", tuple(dims))

    def __str__(self):
        return f"Reshape{self.target_shape}"

    def output_shape(self, in_shape):
        size, known = math.prod(in_shape), math.prod(d for d in self.target_shape if d != -1)
        if (-1 in self.target_shape and size % known) or (
            -1 not in self.target_shape and size != known
        ):
            raise ValueError(
                f"{self}: cannot reshape per-sample shape {tuple(in_shape)} ({size} values) "
                f"to {self.target_shape}"
            )
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def forward(self, params, state, x, key=None, train=False):
        return x.reshape(x.shape[0], *self.output_shape(x.shape[1:])), state, x.shape

    def backward(self, params, cache, dy):
        return {}, dy.reshape(cache)


@dataclass(frozen=True)
class Activation(Layer):
    """An activation on its own, e.g. after ``Dense(units)`` with no activation."""

    activation: str | activations.Activation

    def __post_init__(self):
        activations.get(self.activation)

    def __str__(self):
        return f"Activation({activations.get(self.activation).name})"

    def forward(self, params, state, x, key=None, train=False):
        a = activations.get(self.activation).fn(x)
        return a, state, (x, a)

    def backward(self, params, cache, dy):
        z, a = cache
        return {}, activations.get(self.activation).vjp(z, a, dy)


def _equip_all(cls: type) -> None:
    for sub in cls.__subclasses__():
        layer_face.equip(sub)
        _equip_all(sub)


_equip_all(Layer)


@dataclass(frozen=True)
class Input:
    """Not a layer: ``Sequential([Input(shape=(64,)), Dense(...)])`` declares the per-sample
    input shape, as ``keras.Input``; it must come first and adds no layer."""

    shape: tuple[int, ...]
    name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", _shape_arg("Input", "shape", self.shape))
