"""Keras 3 as the oracle: one script, written once against a library namespace, run by Keras
and by nnfun in the same process, nnfun starting from Keras's initial weights.

A script is ``script(lib, model) -> dict`` where ``lib`` is ``keras`` or ``nnfun`` (the same
attribute paths: ``lib.layers.Dense``, ``lib.optimizers.Adam``, ``lib.callbacks...``) and
``model`` the library's model; ``build(lib)`` gives the layers. Keras runs its steps eagerly
(``jit_compile=False``): the same arithmetic, and with tiny shapes far quicker than compiling
every model; ``shuffle=False`` makes the batches the same.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nnfun  # noqa: E402

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4)).astype(np.float32)
LABELS = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)  # three classes
Y_REG = np.stack([X[:, 0] - 2 * X[:, 1], X[:, 2] * X[:, 3]], 1).astype(np.float32)


def keras_compile(model):
    """Keras's ``compile`` with eager steps (the script's own arguments kept)."""
    original = model.compile

    def compile(*args, **kwargs):
        kwargs.setdefault("jit_compile", False)
        return original(*args, **kwargs)

    model.compile = compile
    return model


def twins(build, input_dim: int = 4, seed: int = 0):
    """(Keras model, nnfun model) of the layers ``build(lib)``; nnfun's weights are Keras's
    initial ones."""
    keras.utils.set_random_seed(seed)
    theirs = keras_compile(keras.Sequential([keras.Input((input_dim,)), *build(keras)]))
    ours = nnfun.Sequential([nnfun.Input(shape=(input_dim,)), *build(nnfun)])
    ours.set_weights(theirs.get_weights())
    return theirs, ours


def run_both(build, script, input_dim: int = 4, seed: int = 0):
    """The script's results under Keras and under nnfun: (theirs, ours), each the dict the
    script returns plus "weights" (the final weights)."""
    theirs, ours = twins(build, input_dim, seed)
    results = []
    for lib, model in ((keras, theirs), (nnfun, ours)):
        out = script(lib, model)
        out["weights"] = [np.asarray(w) for w in model.get_weights()]
        results.append(out)
    return tuple(results)


def max_abs_diff(a, b) -> float:
    """The largest |a - b| over matching leaves (lists, dicts of lists, arrays, floats)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"keys: Keras {sorted(a)} nnfun {sorted(b)}"
        return max((max_abs_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)) and a and not np.isscalar(a[0]):
        assert len(a) == len(b), f"lengths: Keras {len(a)} nnfun {len(b)}"
        return max((max_abs_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shapes: Keras {a.shape} nnfun {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def assert_same(theirs, ours, atol: float = 1e-5, rtol: float = 0.0, what: str = "") -> float:
    """Asserts every number of ``ours`` within atol + rtol |theirs| of ``theirs``; returns
    the largest difference."""
    if rtol:
        scale = max_abs_diff(theirs, _zeros_like(theirs))
        atol = atol + rtol * scale
    diff = max_abs_diff(theirs, ours)
    assert diff <= atol, f"{what}: nnfun differs from Keras by {diff:.3g} (> {atol:.3g})"
    return diff


def _zeros_like(tree):
    if isinstance(tree, dict):
        return {k: _zeros_like(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and tree and not np.isscalar(tree[0]):
        return [_zeros_like(v) for v in tree]
    return np.zeros_like(np.asarray(tree, np.float64))


def history_of(h) -> dict:
    """A History's per-epoch logs as {key: [floats]}."""
    return {k: [float(v) for v in vs] for k, vs in h.history.items() if isinstance(vs, list)}
