"""Convolution layers, Conv2D and Conv1D, with their backward passes written out by hand.

Layouts are Keras's: x (batch, *spatial, in) ("NHWC"), kernel W (*kernel_size, in, out), b
(out,). With x_pad the input padded by (lo, hi) (see nnfun.windows), stride s, dilation d,
and p, i running over output positions and kernel taps (per spatial axis):

  forward   z[n, p, o] = sum_{i, c} x_pad[n, p s + i d, c] W[i, c, o] + b[o],  a = g(z)
  backward  dz = g'(z) dy (the activation's vjp), then
            db[o]       = sum_{n, p} dz[n, p, o]
            dW[i, c, o] = sum_{n, p} x_pad[n, p s + i d, c] dz[n, p, o]
                          (a correlation of the input with the output gradient)
            dx          = dz with s - 1 zeros between neighbours, correlated with the kernel
                          flipped in space and with in/out swapped (the transposed
                          convolution), padded so that it has x's size

The forward and the two correlations run on ``lax.conv_general_dilated``; nothing here calls
jax.grad or jax.vjp (gradcheck compares against them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax

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

    def _specs(self, lhs: str, rhs: str, out: str) -> lax.ConvDimensionNumbers:
        """Dimension numbers from templates where S stands for the spatial letters."""
        s = "HW"[-self.rank :]
        return lax.conv_dimension_numbers(
            (1,) * (self.rank + 2),
            (1,) * (self.rank + 2),
            tuple(t.replace("S", s) for t in (lhs, rhs, out)),
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
        self._spatial(x.shape[1:])
        z = lax.conv_general_dilated(
            x, w, self.strides, self._pads(x.shape[1:-1]),
            rhs_dilation=self.dilation_rate,
            dimension_numbers=self._specs("NSC", "SIO", "NSC"),
        )  # fmt: skip
        if self.use_bias:
            z = z + params["b"]
        a = self.act.fn(z)
        return a, state, (x, z, a)

    def backward(self, params, cache, dy):
        x, z, a = cache
        return self.backward_affine(params, cache, self.act.vjp(z, a, dy))

    def backward_affine(self, params, cache, dz):
        """From dZ: db, dW (correlation of x and dz), dx (transposed convolution)."""
        x, w = cache[0], params["W"]
        sizes, out = x.shape[1:-1], dz.shape[1:-1]
        k, s, d = self.kernel_size, self.strides, self.dilation_rate
        pads = self._pads(sizes)
        grads = {}
        # dW[i, c, o] = sum_{n, p} x_pad[n, p s + i d, c] dz[n, p, o]: a convolution whose
        # batch is x's channels, whose contraction runs over samples and positions, with dz
        # as the kernel dilated by s and steps of d; x_pad is cut (hi < 0) to the rows read.
        axes = list(zip(pads, out, s, k, d, sizes, strict=True))
        used = [(lo, (o - 1) * si + (ki - 1) * di + 1 - n - lo)
                for (lo, _), o, si, ki, di, n in axes]  # fmt: skip
        grads["W"] = lax.conv_general_dilated(
            windows.spatial_pad(x, 0, used), dz, d, "VALID",
            rhs_dilation=s,
            dimension_numbers=self._specs("CSN", "ISO", "SNC"),
        ).astype(w.dtype)  # fmt: skip
        if self.use_bias:
            grads["b"] = jnp.sum(dz, axis=tuple(range(dz.ndim - 1)))
        # dx[n, r, c] = sum over (p, i) with p s + i d - lo = r of dz[n, p, o] W[i, c, o]:
        # dz spread s apart, padded, correlated with the flipped kernel (in and out swapped).
        back = [((ki - 1) * di - lo, n + lo - 1 - (o - 1) * si)
                for (lo, _), o, si, ki, di, n in axes]  # fmt: skip
        dx = lax.conv_general_dilated(
            dz, jnp.flip(w, axis=tuple(range(self.rank))), (1,) * self.rank, back,
            lhs_dilation=s, rhs_dilation=d,
            dimension_numbers=self._specs("NSC", "SOI", "NSC"),
        )  # fmt: skip
        return grads, dx


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
