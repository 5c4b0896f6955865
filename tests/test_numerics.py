"""Numerical regressions across modules: non-finite values are never hidden, large logits,
bfloat16 compute, and weighted (masked) BatchNorm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import validation
from nnfun.layers import BatchNorm, Dense, Dropout, Flatten, Maxout, PReLU, RReLU

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


def _small_net():
    return nnfun.Sequential([Dense(4, "tanh", input_dim=3), Dense(3, "softmax")])


def test_bfloat16_arrays_work_in_eager_calls_as_under_jit():
    """NumPy gives bfloat16 dtype kind "V": a kind test refused it in every eager call."""
    net = _small_net()
    params = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 8))
    x16 = x.astype(jnp.bfloat16)
    eager = net.apply(params, x16)
    np.testing.assert_array_equal(eager, jax.jit(net.apply)(params, x16))
    loss = "categorical_crossentropy"
    value = net.loss(params, x, y, loss=loss, compute_dtype="bfloat16")
    jitted = jax.jit(lambda p, x, y: net.loss(p, x, y, loss=loss, compute_dtype="bfloat16"))
    np.testing.assert_allclose(value, jitted(params, x, y), rtol=1e-6)  # XLA may fuse
    # The checks still run on bfloat16 values, and still refuse what is not real numbers.
    with pytest.raises(ValueError, match=r"x: expected finite values, got 1 NaN .*\(2, 1\)"):
        net.apply(params, x16.at[2, 1].set(jnp.nan))
    with pytest.raises(TypeError, match="x: expected a numeric array .* got dtype complex64"):
        net.apply(params, x.astype(jnp.complex64))


@pytest.mark.parametrize(
    "layers, one_sample_ok",
    [
        ([BatchNorm(), Flatten(), Dense(2, "softmax")], True),  # (H, W, C) maps: H*W values
        ([Flatten(), BatchNorm(), Dense(2, "softmax")], False),  # flat features: 1 value
        ([BatchNorm(), Flatten(), BatchNorm(), Dense(2, "softmax")], False),
    ],
    ids=["maps", "flat", "both"],
)
def test_batchnorm_batch_check_refuses_exactly_what_the_layer_refuses(layers, one_sample_ok):
    """fit's early check against the layer itself: for each (n, batch_size), the check raises
    if and only if a training forward on the epoch's smallest batch raises."""
    net = nnfun.Sequential(layers, input_shape=(3, 2, 4))
    params = net.init(jax.random.key(0))
    for n, batch_size in [(9, 4), (9, 3), (8, 7), (1, 1), (5, 2)]:
        smallest = n % batch_size or batch_size
        try:
            net.forward(params, jnp.ones((smallest, 3, 2, 4)), train=True)
            layer_ok = True
        except ValueError:
            layer_ok = False
        assert layer_ok == (smallest >= 2 or one_sample_ok)  # the premise of the case
        try:
            validation.check_batchnorm_batches(net, n, batch_size)
            check_ok = True
        except ValueError as e:
            assert f"batch_size={batch_size} with {n} samples" in str(e)
            check_ok = False
        assert check_ok == layer_ok, (n, batch_size, layer_ok)
