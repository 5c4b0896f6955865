"""Numerical regressions across modules: non-finite values are never hidden, large logits,
bfloat16 compute, and weighted (masked) BatchNorm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun.layers import BatchNorm, Dense, Dropout, Maxout, PReLU, RReLU

THRESHOLDING = [PReLU(), RReLU(), Maxout(4, pieces=3), Dropout(0.5), BatchNorm()]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("layer", THRESHOLDING, ids=str)
def test_thresholding_layers_pass_nan_on(layer, train):
    """NaN in feature 0 of every sample reaches the output (Maxout: every unit, whose pieces
    all read feature 0; BatchNorm in training: every feature 0 via the batch statistics)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
    x = x.at[:, 0].set(jnp.nan)
    params = layer.init(jax.random.key(0), (4,))
    out, _, _ = layer.forward(params, layer.init_state((4,)), x, jax.random.key(1), train)
    nan = np.isnan(np.asarray(out))
    assert nan.all() if isinstance(layer, Maxout) else nan[:, 0].all() and not nan[:, 1:].any()


def test_one_nan_weight_reaches_the_output_through_relu():
    """The issue's case: relu's where(z > 0, z, 0) turned a NaN weight into 0 and ``apply``
    returned finite probabilities."""
    net = nnfun.Sequential([Dense(5, "relu", input_dim=3), Dense(2, "softmax")])
    params = net.init(jax.random.key(0))
    params[0]["W"] = params[0]["W"].at[0, 0].set(jnp.nan)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
    assert bool(jnp.all(jnp.isnan(net.apply(params, x))))
