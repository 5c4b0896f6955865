"""Pooling layers with hand-written backward passes, Keras's names and arguments.

A window of ``pool_size`` moves in steps of ``strides`` (default: the pool size) over each
channel of x (batch, *spatial, channels); see nnfun.windows for the padding. Backward, per
window tap (the inputs a tap reads over every window is a strided slice of the padded x, and
its adjoint puts values back there):

  max      y = max over the window; dx routes dy to the window's winner. Tie rule (the
           ``kink``): the first maximum in row-major order wins, the others get 0; at a tie
           y is not differentiable and central differences there are invalid.
  average  y = mean over the window's real inputs (with "same", padding is not counted, as in
           Keras); dx spreads dy / count over them.
  global   the window is the whole of each channel's map: (batch, *spatial, C) -> (batch, C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnfun import windows
from nnfun.layers import Layer

TIE_RULE = (
    "a tie for a window's maximum: the first maximum in row-major order takes the whole "
    "gradient, the others get 0 (any split is a valid subgradient; y is not differentiable there)"
)


def _check_rank(layer, shape, rank: int) -> None:
    if len(shape) != rank + 2:
        raise ValueError(
            f"x: {layer} expected shape (batch, {rank} spatial axes, channels), got {tuple(shape)}"
        )


@dataclass(frozen=True)
class _Pool(Layer):
    pool_size: int | tuple[int, ...] = 2
    strides: int | tuple[int, ...] | None = None
    padding: str = "valid"

    rank: ClassVar[int] = 2

    def __post_init__(self):
        name = type(self).__name__
        size = windows.int_tuple(name, "pool_size", self.pool_size, self.rank)
        object.__setattr__(self, "pool_size", size)
        strides = size if self.strides is None else self.strides
        object.__setattr__(self, "strides", windows.int_tuple(name, "strides", strides, self.rank))
        object.__setattr__(self, "padding", windows.check_padding(name, self.padding))

    def __str__(self):
        k, s = ("x".join(map(str, v)) for v in (self.pool_size, self.strides))
        s = "" if self.strides == self.pool_size else f", strides={s}"
        return f"{type(self).__name__}({k}{s}{', same' if self.padding == 'same' else ''})"

    def _geometry(self, spatial):
        """(pads, output sizes) for inputs of these spatial sizes."""
        args = (self.pool_size, self.strides, (1,) * self.rank, self.padding)
        out = windows.out_sizes(spatial, *args)
        if min(out) < 1:
            raise ValueError(
                f"{type(self).__name__}: pool_size={self.pool_size} does not fit the input's "
                f"spatial size {tuple(spatial)}"
            )
        return windows.pads(spatial, *args), out

    def output_shape(self, in_shape):
        _check_rank(self, (None, *in_shape), self.rank)
        return (*self._geometry(in_shape[:-1])[1], in_shape[-1])

    def _reduce(self, x, init, op, pads):
        dims = (1, *self.pool_size, 1)
        strides = (1, *self.strides, 1)
        return lax.reduce_window(x, init, op, dims, strides, ((0, 0), *pads, (0, 0)))

    def _crop(self, dxp, pads):
        """The padded input's gradient cut back to x's rows."""
        return windows.spatial_pad(dxp, 0, [(-lo, -hi) for lo, hi in pads])


@dataclass(frozen=True)
class _MaxPool(_Pool):
    kink: ClassVar[str] = TIE_RULE

    def forward(self, params, state, x, key=None, train=False):
        _check_rank(self, x.shape, self.rank)
        pads, _ = self._geometry(x.shape[1:-1])
        y = self._reduce(x, np.array(-np.inf, x.dtype), lax.max, pads)
        return y, state, (x, y)

    def backward(self, params, cache, dy):
        x, y = cache
        pads, out = self._geometry(x.shape[1:-1])
        xp = windows.spatial_pad(x, -jnp.inf, pads)  # padding never wins
        taken = jnp.zeros(y.shape, bool)  # windows whose winner has been found
        dxp = jnp.zeros(xp.shape, dy.dtype)
        for tap in windows.taps(self.pool_size):
            wins = (windows.tap_slice(xp, tap, self.strides, out) == y) & ~taken
            taken = taken | wins
            routed = jnp.where(wins, dy, 0)
            dxp = dxp + windows.tap_place(routed, tap, self.strides, xp.shape[1:-1])
        return {}, self._crop(dxp, pads)


@dataclass(frozen=True)
class _AveragePool(_Pool):
    def _counts(self, spatial, pads, out, dtype):
        """How many real (unpadded) inputs each window holds, (1, *out, 1)."""
        count = np.ones((1,) * (self.rank + 2))
        for axis, (n, k, s, (lo, _), o) in enumerate(
            zip(spatial, self.pool_size, self.strides, pads, out, strict=True)
        ):
            starts = np.arange(o) * s - lo
            per_axis = np.minimum(starts + k, n) - np.maximum(starts, 0)
            shape = [-1 if a == axis + 1 else 1 for a in range(count.ndim)]
            count = count * per_axis.reshape(shape)
        return jnp.asarray(count, dtype)

    def forward(self, params, state, x, key=None, train=False):
        _check_rank(self, x.shape, self.rank)
        pads, out = self._geometry(x.shape[1:-1])
        total = self._reduce(x, np.array(0, x.dtype), lax.add, pads)
        return total / self._counts(x.shape[1:-1], pads, out, x.dtype), state, x.shape

    def backward(self, params, cache, dy):
        shape = cache
        pads, out = self._geometry(shape[1:-1])
        share = dy / self._counts(shape[1:-1], pads, out, dy.dtype)
        padded = [n + lo + hi for n, (lo, hi) in zip(shape[1:-1], pads, strict=True)]
        dxp = sum(
            windows.tap_place(share, tap, self.strides, padded)
            for tap in windows.taps(self.pool_size)
        )
        return {}, self._crop(dxp, pads)


@dataclass(frozen=True)
class MaxPooling2D(_MaxPool):
    """Keras's ``MaxPooling2D(pool_size=2, strides=None, padding="valid")`` on (batch, h, w,
    c); the gradient goes to each window's first maximum (row-major) on a tie."""

    rank: ClassVar[int] = 2


@dataclass(frozen=True)
class MaxPooling1D(_MaxPool):
    """Keras's ``MaxPooling1D`` on (batch, steps, channels); ties as MaxPooling2D."""

    rank: ClassVar[int] = 1


@dataclass(frozen=True)
class AveragePooling2D(_AveragePool):
    """Keras's ``AveragePooling2D(pool_size=2, strides=None, padding="valid")`` on (batch,
    h, w, c); with "same" each window averages its real inputs only."""

    rank: ClassVar[int] = 2


@dataclass(frozen=True)
class AveragePooling1D(_AveragePool):
    """Keras's ``AveragePooling1D`` on (batch, steps, channels)."""

    rank: ClassVar[int] = 1


@dataclass(frozen=True)
class _GlobalPool(Layer):
    rank: ClassVar[int] = 2

    def __str__(self):
        return type(self).__name__

    def output_shape(self, in_shape):
        _check_rank(self, (None, *in_shape), self.rank)
        return (in_shape[-1],)


@dataclass(frozen=True)
class GlobalAveragePooling2D(_GlobalPool):
    """(batch, h, w, c) -> (batch, c): the mean of each channel's map; dx = dy / (h w)."""

    def forward(self, params, state, x, key=None, train=False):
        _check_rank(self, x.shape, self.rank)
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), state, x.shape

    def backward(self, params, cache, dy):
        shape = cache
        cells = np.prod(shape[1:-1])
        return {}, jnp.broadcast_to((dy / cells).reshape(shape[0], *(1,) * self.rank, -1), shape)


@dataclass(frozen=True)
class GlobalMaxPooling2D(_GlobalPool):
    """(batch, h, w, c) -> (batch, c): the maximum of each channel's map; dx routes dy to
    it, the first in row-major order on a tie (``kink``)."""

    kink: ClassVar[str] = TIE_RULE

    def forward(self, params, state, x, key=None, train=False):
        _check_rank(self, x.shape, self.rank)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        winner = jnp.argmax(flat, axis=1)  # the first maximum: jnp.argmax's own rule
        y = jnp.take_along_axis(flat, winner[:, None], axis=1)[:, 0]
        return y, state, (x.shape, winner)

    def backward(self, params, cache, dy):
        shape, winner = cache
        cells = int(np.prod(shape[1:-1]))
        routed = jax.nn.one_hot(winner, cells, axis=1, dtype=dy.dtype) * dy[:, None]
        return {}, routed.reshape(shape)


@dataclass(frozen=True)
class GlobalAveragePooling1D(GlobalAveragePooling2D):
    """(batch, steps, c) -> (batch, c): the mean over the steps."""

    rank: ClassVar[int] = 1


@dataclass(frozen=True)
class GlobalMaxPooling1D(GlobalMaxPooling2D):
    """(batch, steps, c) -> (batch, c): the maximum over the steps (ties as GlobalMaxPooling2D)."""

    rank: ClassVar[int] = 1
