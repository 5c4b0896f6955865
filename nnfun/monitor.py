"""The rule of a monitored value (early stopping, save-best checkpoints, learning-rate
plateaus), written once as array code so that it runs inside the compiled chunk of epochs
and on the host alike.

Keras's rule, epoch by epoch (``epoch`` is Keras's number, counted from ``initial_epoch``):
an epoch before ``start_from_epoch`` is ignored; the first watched epoch is always an
improvement; later ones improve when ``value - min_delta < best`` (``value + min_delta >
best`` when maximising). An improvement records the value and its epoch and resets the
wait, unless a ``baseline`` is given and not beaten; otherwise the wait grows by one, and
with a ``patience`` the run stops once ``wait >= patience`` (never after epoch 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Monitor(NamedTuple):
    """A monitored log value and its rule (static: part of the compiled program)."""

    name: str
    maximise: bool
    min_delta: float = 0.0
    patience: int | None = None  # None: track the best without ever stopping
    baseline: float | None = None  # the wait resets only when the value beats it too
    start_from_epoch: int = 0  # epochs before it are not watched
    initial: float | None = None  # a best value to beat from the start (None: no best yet)


class Memory(NamedTuple):
    """What a monitor remembers between epochs (arrays: it rides in the compiled loop)."""

    best_value: Array
    best_epoch: Array  # Keras's number of the best epoch; -1 before the first
    has_best: Array  # False until a best exists (True from the start with ``initial``)
    wait: Array  # epochs since the last improvement


def start(monitor: Monitor, lead: tuple[int, ...] = (), dtype=jnp.float32) -> Memory:
    """A fresh memory (one per model for a stack of ``lead`` models)."""
    worst = -jnp.inf if monitor.maximise else jnp.inf
    initial = worst if monitor.initial is None else monitor.initial
    return Memory(
        jnp.full(lead, initial, dtype),
        jnp.full(lead, -1, jnp.int32),
        jnp.full(lead, monitor.initial is not None, bool),
        jnp.zeros(lead, jnp.int32),
    )


def _beats(monitor: Monitor, value, reference):
    if monitor.maximise:
        return value - monitor.min_delta > reference
    return value + monitor.min_delta < reference


def update(monitor: Monitor, memory: Memory, value, epoch) -> tuple[Memory, Array, Array]:
    """One epoch of the rule: ``(memory, improved, stop)``."""
    watched = epoch >= monitor.start_from_epoch
    improved = watched & (~memory.has_best | _beats(monitor, value, memory.best_value))
    wait = memory.wait + 1
    if monitor.baseline is None:
        resets = improved
    else:
        resets = improved & _beats(monitor, value, jnp.asarray(monitor.baseline, value.dtype))
    wait = jnp.where(resets, 0, wait)
    new = Memory(
        jnp.where(improved, value, memory.best_value).astype(memory.best_value.dtype),
        jnp.where(improved, epoch, memory.best_epoch).astype(jnp.int32),
        memory.has_best | improved,
        jnp.where(watched, wait, memory.wait).astype(jnp.int32),
    )
    if monitor.patience is None:
        stop = jnp.zeros_like(improved)
    else:
        stop = watched & ~improved & (new.wait >= monitor.patience) & (epoch > 0)
    return new, improved, stop
