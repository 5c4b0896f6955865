"""Callbacks' checks and modes, directly (sampled mutants of nnfun.callbacks survived the fit
tests): the message of a callbacks argument that is not a list, and ``mode="max"`` on a name
that "auto" would minimise."""

import jax.numpy as jnp
import pytest

import nnfun
from nnfun import monitor
from nnfun.callbacks import as_list


def test_callbacks_not_a_list_named_in_the_error():
    with pytest.raises(TypeError, match=r"callbacks: expected a list of callbacks, got 'stop'"):
        as_list("stop")


def stops_after(stopping, values):
    """Keras's rule over ``values`` (epochs 0, 1, ...) as ``stopping`` configures it."""
    m = stopping.as_monitor()
    memory = monitor.start(m)
    for epoch, v in enumerate(values):
        memory, _, stop = monitor.update(m, memory, jnp.float32(v), epoch)
        if bool(stop):
            return epoch + 1
    return len(values)


def test_mode_max_maximises_a_loss():
    falling = [5.0, 4.0, 3.0]
    # Minimised ("auto" on a loss), every epoch improves: no stop.
    assert stops_after(nnfun.EarlyStopping("loss", patience=0), falling) == 3
    # Maximised, epoch 1 does not improve on 5: patience 0 stops after it.
    assert stops_after(nnfun.EarlyStopping("loss", patience=0, mode="max"), falling) == 2
