"""Convolution layers, Conv2D and Conv1D, with their backward passes written out by hand.

Layouts are Keras's: x (batch, *spatial, in) ("NHWC"), kernel W (*kernel_size, in, out), b
(out,). With x_pad the input padded by (lo, hi) (see nnfun.windows), stride s, dilation d,
and p, i running over output positions and kernel taps (per spatial axis):

  forward   z[n, p, o] = sum_{i, c} x_pad[n, p s + i d, c] W[i, c, o] + b[o],  a = g(z)
  backward  dz = g'(z) dy (the activation's vjp), then
            db[o]       = sum_{n, p} dz[n, p, o]
            dW[i, c, o] = sum_{n, p} x_pad[n, p s + i d, c] dz[n, p, o]
                          (a correlation of the input with the output gradient)
            dx_pad[n, p s + i d, c] += sum_o dz[n, p, o] W[i, c, o]
                          (the transposed convolution: every tap's share of dz sent back
                          to the rows it read, then the padding cut off)

All three run tap by tap: for each kernel tap i, the rows it reads, x_pad[:, p s + i d],
form a (batch, *out, in) slice, and the sums over c, o, n and p are matrix products with
W[i]. The forward could be one ``lax.conv_general_dilated``; taps are used because XLA's
CPU backend runs the gradient of that convolution with respect to its kernel 20x slower
inside a loop (a training epoch is one) than outside, while these products stay fast
(and, outside loops, are as fast or faster). Nothing here calls jax.grad or jax.vjp:
gradcheck compares against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nnfun import activations, initializers, windows
from nnfun.layers import Layer, _check_inits, _keras_arguments, _shape_arg


@dataclass(frozen=True)
class _Conv(Layer):
    """A convolution over ``rank`` spatial axes (see the module's docstring)."""

    filters: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "valid"
    dilation_rate: int | tuple[int, ...] = 1
    activation: str | activations.Activation | None = None
    use_bias: bool = True
    kernel_init: Any = "glorot_uniform"
    bias_init: Any = "zeros"
    kernel_initializer: Any = None
    bias_initializer: Any = None
    kernel_regularizer: Any = None
    input_shape: tuple[int, ...] | None = None

    rank: ClassVar[int] = 2
    regularized = ("W",)

    def __post_init__(self):
        name = type(self).__name__
        if not isinstance(self.filters, int) or isinstance(self.filters, bool) or self.filters < 1:
            raise ValueError(f"{name}: filters: expected a positive int, got {self.filters!r}")
        for arg in ("kernel_size", "strides", "dilation_rate"):
            value = windows.int_tuple(name, arg, getattr(self, arg), self.rank)
            object.__setattr__(self, arg, value)
        object.__setattr__(self, "padding", windows.check_padding(name, self.padding))
        activations.get(self.activation)
        shape = self.input_shape  # Dense's (features,) rule does not apply: checked below
        object.__setattr__(self, "input_shape", None)
        _keras_arguments(self)  # initialiser aliases and the regularizer
        _check_inits(self)
        if shape is not None:
            shape = _shape_arg(name, "input_shape", shape)
            if len(shape) != self.rank + 1:
                raise ValueError(
                    f"{name}: input_shape: expected {self.rank} spatial sizes and channels, "
                    f"got {shape}"
                )
            object.__setattr__(self, "input_shape", shape)

    @property
    def act(self) -> activations.Activation:
        return activations.get(self.activation)

    def __str__(self):
        k = "x".join(map(str, self.kernel_size))
        extra = "".join(
            f", {label}={'x'.join(map(str, v))}"
            for label, v in (("strides", self.strides), ("dilation", self.dilation_rate))
            if any(s != 1 for s in v)
        )
        pad = ", same" if self.padding == "same" else ""
        return f"{type(self).__name__}({self.filters}, {k}{extra}{pad}, {self.act.name})"

    # ---- shapes ---------------------------------------------------------------------------
    def _spatial(self, in_shape) -> tuple[int, ...]:
        name = type(self).__name__
        if len(in_shape) != self.rank + 1:
            raise ValueError(
                f"{self}: expected inputs of shape (batch, {self.rank} spatial axes, channels), "
                f"got per-sample shape {tuple(in_shape)}"
            )
        out = windows.out_sizes(
            in_shape[:-1], self.kernel_size, self.strides, self.dilation_rate, self.padding
        )
        if min(out) < 1:
            raise ValueError(
                f"{name}: kernel_size={self.kernel_size} with dilation_rate="
                f"{self.dilation_rate} does not fit the input's spatial size {in_shape[:-1]}"
            )
        return out

    def output_shape(self, in_shape):
        return (*self._spatial(in_shape), self.filters)

    def _pads(self, spatial):
        return windows.pads(
            spatial, self.kernel_size, self.strides, self.dilation_rate, self.padding
        )

    # ---- init -----------------------------------------------------------------------------
    def init(self, key, in_shape, dtype=jnp.float32):
        self._spatial(in_shape)
        shape = (*self.kernel_size, in_shape[-1], self.filters)
        receptive = math.prod(self.kernel_size)  # Keras's fans for a kernel
        fans = (receptive * in_shape[-1], receptive * self.filters)
        w_key, b_key = jax.random.split(key)
        init = initializers.get(self.kernel_init)
        if init in initializers.FAN_BASED:
            kernel = init(w_key, shape, dtype, fans=fans)
        else:
            kernel = init(w_key, shape, dtype)
        params = {"W": kernel}
        if self.use_bias:
            params["b"] = initializers.get(self.bias_init)(b_key, (self.filters,), dtype)
        return params

    # ---- forward / backward ---------------------------------------------------------------
    def forward(self, params, state, x, key=None, train=False):
        w = params["W"]
        if x.ndim != self.rank + 2 or x.shape[-1] != w.shape[-2]:
            raise ValueError(
                f"x: {self} expected shape (batch, {self.rank} spatial axes, {w.shape[-2]}), "
                f"got {tuple(x.shape)}"
            )
        out = self._spatial(x.shape[1:])
        xp = windows.spatial_pad(x, 0, self._pads(x.shape[1:-1]))
        z = sum(self._read(xp, tap, out) @ w[tap] for tap in windows.taps(self.kernel_size))
        if self.use_bias:
            z = z + params["b"]
        a = self.act.fn(z)
        return a, state, (x, z, a)

    def _offset(self, tap) -> tuple[int, ...]:
        """Where tap ``tap`` of the first window sits in the padded input: i d per axis."""
        return tuple(i * d for i, d in zip(tap, self.dilation_rate, strict=True))

    def _read(self, xp, tap, out):
        """The rows tap ``tap`` reads for every output position: x_pad[:, p s + i d, :]."""
        return windows.tap_slice(xp, self._offset(tap), self.strides, out)

    def backward(self, params, cache, dy):
        x, z, a = cache
        return self.backward_affine(params, cache, self.act.vjp(z, a, dy))

    def backward_affine(self, params, cache, dz):
        """From dZ: db, dW (correlation of x and dz), dx (transposed convolution)."""
        x, w = cache[0], params["W"]
        pads, out = self._pads(x.shape[1:-1]), dz.shape[1:-1]
        xp = windows.spatial_pad(x, 0, pads)
        rows = tuple(range(dz.ndim - 1))  # batch and output positions: summed over
        # x^T dz per tap, as (dz^T x)^T: the faster product on CPU (see Dense.backward_affine)
        grads = {"W": jnp.stack([
            jnp.tensordot(dz, self._read(xp, tap, out), axes=(rows, rows)).T
            for tap in windows.taps(self.kernel_size)
        ]).reshape(w.shape).astype(w.dtype)}  # fmt: skip
        if self.use_bias:
            grads["b"] = jnp.sum(dz, axis=rows)
        dxp = sum(
            windows.tap_place(dz @ w[tap].T, self._offset(tap), self.strides, xp.shape[1:-1])
            for tap in windows.taps(self.kernel_size)
        )
        crop = tuple((-lo, -hi) for lo, hi in pads)
        return grads, windows.spatial_pad(dxp, 0, crop)


@dataclass(frozen=True)
class Conv2D(_Conv):
    """2-D convolution, Keras's ``Conv2D``: x (batch, height, width, in) -> (batch, h', w',
    filters); W (kh, kw, in, filters). ``padding`` "valid" or "same"; ``strides`` and
    ``dilation_rate`` an int or a pair; Keras's initialiser fans (kh kw in, kh kw out)."""

    rank: ClassVar[int] = 2


@dataclass(frozen=True)
class Conv1D(_Conv):
    """1-D convolution, Keras's ``Conv1D``: x (batch, steps, in) -> (batch, steps', filters);
    W (k, in, filters). The same code as Conv2D with one spatial axis."""

    rank: ClassVar[int] = 1
