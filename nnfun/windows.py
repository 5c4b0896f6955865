"""Sliding-window arithmetic shared by convolution and pooling (Keras's rules).

Along one spatial axis of size n, a window of k taps dilated by d (it spans (k - 1) d + 1)
moves in steps of s over the input padded by (lo, hi): output position p reads input rows
p s + i d - lo, i = 0..k-1. "valid" pads nothing; "same" pads
total = max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), lo = total // 2, hi = total - lo
(TensorFlow's and Keras's rule, more after than before), so that the output has ceil(n / s)
positions. Output size: (n + lo + hi - (k - 1) d - 1) // s + 1.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax import lax

PADDINGS = ("valid", "same")


def int_tuple(layer: str, name: str, value: Any, rank: int) -> tuple[int, ...]:
    """An int, or a sequence of ``rank`` positive ints, as a tuple of ``rank`` ints."""
    values = (value,) * rank if isinstance(value, int) else value
    try:
        values = tuple(values)
        ok = len(values) == rank and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
        )
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{layer}: {name}: expected a positive int or {rank} positive ints, got {value!r}"
        )
    return values


def check_padding(layer: str, padding: Any) -> str:
    """Keras's padding names, case-insensitive, lower-cased."""
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"{layer}: padding: expected one of {PADDINGS}, got {padding!r}")
    return padding.lower()


def pads(sizes, kernel, strides, dilation, padding: str) -> tuple[tuple[int, int], ...]:
    """(lo, hi) per spatial axis."""
    out = []
    for n, k, s, d in zip(sizes, kernel, strides, dilation, strict=True):
        span = (math.ceil(n / s) - 1) * s + (k - 1) * d + 1  # rows the "same" windows cover
        total = 0 if padding == "valid" else max(span - n, 0)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def out_sizes(sizes, kernel, strides, dilation, padding: str) -> tuple[int, ...]:
    """Output positions per spatial axis (0 or less when the window does not fit)."""
    return tuple(
        (n + lo + hi - (k - 1) * d - 1) // s + 1
        for n, k, s, d, (lo, hi) in zip(
            sizes, kernel, strides, dilation, pads(sizes, kernel, strides, dilation, padding),
            strict=True,
        )
    )  # fmt: skip


def taps(kernel) -> list[tuple[int, ...]]:
    """Every tap of a window, in row-major order (the order of Keras's kernel)."""
    grid = [()]
    for k in kernel:
        grid = [(*t, i) for t in grid for i in range(k)]
    return grid


def tap_slice(xp: jax.Array, tap, strides, out) -> jax.Array:
    """The inputs that tap ``tap`` of every window reads: (N, *out, C) from the padded
    (N, *padded, C) ``xp`` (undilated windows: row p s + i)."""
    start = (0, *tap, 0)
    ends = ((t + (o - 1) * s + 1) for t, o, s in zip(tap, out, strides, strict=True))
    limit = (xp.shape[0], *ends, xp.shape[-1])
    return lax.slice(xp, start, limit, (1, *strides, 1))


def tap_place(g: jax.Array, tap, strides, padded) -> jax.Array:
    """The adjoint of ``tap_slice``: (N, *out, C) values put back at rows p s + i of a zero
    (N, *padded, C) array (s - 1 zeros between neighbours)."""
    config = [(0, 0, 0)]
    for t, o, s, n in zip(tap, g.shape[1:-1], strides, padded, strict=True):
        config.append((t, n - t - (o - 1) * s - 1, s - 1))
    config.append((0, 0, 0))
    return lax.pad(g, jax.numpy.zeros((), g.dtype), config)


def spatial_pad(x: jax.Array, value, spatial_pads) -> jax.Array:
    """x (N, *spatial, C) padded (or, for negative amounts, cropped) on its spatial axes."""
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in spatial_pads), (0, 0, 0)]
    return lax.pad(x, jax.numpy.asarray(value, x.dtype), config)
