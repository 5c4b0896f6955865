"""Compiled programs are shared by equal networks and never outlive a change of structure."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import nnfun
from nnfun import epochs, program_cache, train

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 5)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.float32)[:, None]
CONFIG = nnfun.Config.make("binary_crossentropy", "sgd", learning_rate=0.1)


def net(activation="relu", cls=nnfun.Network):
    layers = [nnfun.Dense(6, "relu"), nnfun.Dense(7, activation), nnfun.Dense(1, "sigmoid")]
    return cls(layers, input_shape=5)


def fit(model):
    state, _ = train.fit(model, X, Y, config=CONFIG, epochs=2, batch_size=16,
                         key=jax.random.key(0))  # fmt: skip
    return state


@pytest.fixture
def traces(monkeypatch):
    """How many times fit's chunk program is traced (once per compiled program)."""
    epochs.compiled_run.cache_clear()
    program_cache._TWINS.clear()
    calls = []
    original = epochs.run_epochs

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(epochs, "run_epochs", counted)
    return calls


def test_a_network_rebuilt_layer_for_layer_reuses_the_compiled_program(traces):
    first, second = fit(net()), fit(net())
    assert len(traces) == 1
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params), strict=True):
        np.testing.assert_array_equal(a, b)
    fit(net("tanh"))  # another structure: its own program
    assert len(traces) == 2


def test_a_network_changed_after_fit_trains_as_its_new_structure(traces):
    reference = fit(net("tanh"))
    model = net("relu", nnfun.Sequential)
    fit(model)
    model.pop()
    model.pop()
    model.add(nnfun.Dense(7, "tanh"))  # same shapes as before: only the activation differs
    model.add(nnfun.Dense(1, "sigmoid"))
    changed = fit(model)
    for a, b in zip(jax.tree.leaves(changed.params), jax.tree.leaves(reference.params),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_the_shared_twin_keeps_no_training_state():
    model = net(cls=nnfun.Sequential)
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    model.fit(X, Y, epochs=1, verbose=0)
    twin = program_cache.twin(model)
    assert twin is not model and twin.state is None and twin.layers == model.layers
    assert twin.layers is not model.layers


COMPILED: list[str] = []  # names of the programs XLA compiled, from here on
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _, **kw: (
        COMPILED.append(kw.get("fun_name"))
        if event == "/jax/core/compile/backend_compile_duration"
        else None
    )
)


def test_the_chunks_of_a_run_share_one_compiled_program():
    program_cache.clear()
    before = COMPILED.count("jit(run_epochs)")
    fit(net())
    states = train.init_many(net(), CONFIG, jax.random.split(jax.random.key(1), 2))
    train.fit_many(net(), X, Y, states, config=CONFIG, epochs=3, batch_size=16,
                   epochs_per_chunk=1)  # fmt: skip
    # fit's program and fit_many's (vmapped) one, each compiled once for all their chunks.
    assert COMPILED.count("jit(run_epochs)") - before == 2
