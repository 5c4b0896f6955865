"""``fit(..., track={name: fn(params, model_state)})``: per-epoch probes computed inside the
compiled program, checked before anything compiles, and the device buffers that hold them
sized to the run (never more memory than the epochs a chunk really holds)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import jax
import numpy as np

DEVICE_BUDGET = 1 << 30  # bytes of probe buffers one compiled chunk may hold


def check(track) -> tuple[tuple[str, Callable], ...]:
    if track is None:
        return ()
    if not isinstance(track, dict):
        raise TypeError(f"track: expected a dict {{name: fn(params, model_state)}}, got {track!r}")
    for name, fn in track.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"track[{name!r}]: expected a name and a function, got {fn!r}")
        try:
            inspect.signature(fn).bind(None, None)
        except TypeError:
            raise TypeError(
                f"track[{name!r}]: expected a function fn(params, model_state), got one with "
                f"signature {inspect.signature(fn)}"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): let the call decide
            pass
    return tuple(track.items())


def bytes_per_epoch(track, state) -> int:
    """What one epoch of every probe takes (one model's state)."""
    total = 0
    for _, fn in track:
        shapes = jax.eval_shape(fn, state.params, state.model_state)
        total += sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
    return total


def capacity(track, state, wanted: int, epochs: int | None = None) -> int:
    """The chunk capacity: ``wanted``, halved until the probes' buffers fit DEVICE_BUDGET.
    ValueError before training when the probes of all ``epochs`` would not fit in half the
    host's memory (they are returned whole)."""
    if not track:
        return wanted
    each = bytes_per_epoch(track, state)
    if epochs is not None:  # probe buffers in proportion to the run, not chunks.MIN_CAPACITY
        wanted = min(wanted, 1 << max(0, epochs - 1).bit_length())
    if epochs is not None and each * epochs > _host_memory() // 2:
        raise ValueError(
            f"track: the probes take {each / 2**20:.1f} MiB an epoch, {each * epochs / 2**30:.1f} "
            f"GiB for {epochs} epochs, more than half this host's memory; probe fewer or "
            "smaller values (e.g. a norm instead of a matrix) or run fewer epochs per call"
        )
    size = wanted
    while size > 1 and each * size > DEVICE_BUDGET:
        size //= 2
    return size


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40
