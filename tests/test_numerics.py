"""Numerical regressions across modules: non-finite values are never hidden, large logits,
bfloat16 compute, and weighted (masked) BatchNorm statistics."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_rounding_close

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


# ---- BatchNorm: running statistics under bfloat16, weighted (masked) batch statistics ------
def test_batchnorm_running_statistics_stay_float32_under_bfloat16_compute():
    """A 1% momentum update added in bfloat16 rounds away (the running mean of data of mean
    3 stalled at 2.04): the running statistics and their update stay in float32."""
    net = nnfun.Sequential([BatchNorm(), Dense(2, "softmax")], input_shape=(4,))
    params = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batches = rng.normal(3.0, 2.0, size=(300, 32, 4)).astype(np.float32)
    labels = jnp.zeros(32, jnp.int32)

    @jax.jit
    def run(state, xs):
        def step(state, xb):
            _, aux = net.objective(
                params, xb, labels, loss="categorical_crossentropy", state=state,
                train=True, compute_dtype="bfloat16",
            )  # fmt: skip
            return aux.state, None

        return jax.lax.scan(step, state, xs)[0]

    state = run(net.init_state(), jnp.asarray(batches))
    assert state[0]["mean"].dtype == jnp.float32
    # NumPy in float64 on the values the layer sees: the data rounded to bfloat16.
    seen = batches.astype(jnp.bfloat16).astype(np.float64)
    mean, var = np.zeros(4), np.ones(4)
    for xb in seen:
        mean = 0.99 * mean + 0.01 * xb.mean(axis=0)
        var = 0.99 * var + 0.01 * xb.var(axis=0)
    assert_rounding_close(state[0]["mean"], mean, ulps=256)
    assert_rounding_close(state[0]["var"], var, ulps=256)
    assert np.all(np.abs(mean - 3.0 * (1 - 0.99**300)) < 0.05)  # 2.85: what they approach


def _bn_net():
    return nnfun.Sequential(
        [Dense(5, "tanh", input_dim=3), BatchNorm(momentum=0.9), Dense(3, "softmax")]
    )


def test_zero_weight_samples_are_left_out_of_batchnorm_exactly():
    """Padding a batch with masked-out rows changes nothing: loss, running statistics and
    both gradients equal those of the batch without the pads (the pads used to enter the
    batch statistics: loss 0.777 vs 0.860)."""
    net, loss = _bn_net(), "categorical_crossentropy"
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), net.init(jax.random.key(0)))
        state = net.init_state(jnp.float64)
        x = jnp.asarray(rng.normal(size=(8, 3)))
        y = jnp.asarray(rng.integers(0, 3, 8))
        pads = jnp.asarray(rng.normal(5.0, 10.0, size=(3, 3)))  # far from the data
        x_pad = jnp.concatenate([x, pads])
        y_pad = jnp.concatenate([y, jnp.zeros(3, y.dtype)])
        w = jnp.concatenate([jnp.ones(8), jnp.zeros(3)])
        kw = dict(loss=loss, state=state, train=True)

        @jax.jit  # one program per weighting: op-by-op dispatch is slow
        def both(x, y, sample_weight=None, mask=None):
            extra = {"sample_weight": sample_weight, "mask": mask}
            (value, aux), manual = net.value_and_manual_grad(params, x, y, **kw, **extra)
            auto = jax.grad(lambda p: net.loss(p, x, y, **kw, **extra))(params)
            return value, aux.state, manual, auto

        plain = both(x, y)
        padded = both(x_pad, y_pad, mask=w)
        chex.assert_trees_all_close(padded, plain, rtol=1e-12, atol=1e-15)
        # Weights other than 0/1 weigh the statistics as the loss does; the hand-written
        # backward of the weighted statistics agrees with jax.grad.
        value, _, manual, auto = both(x_pad, y_pad, jnp.asarray(rng.uniform(0, 2, 11)))
        chex.assert_trees_all_close(manual, auto, rtol=1e-10, atol=1e-14)
        assert not np.allclose(value, plain[0])


def test_net_loss_checks_concrete_targets_as_apply_checks_x():
    net = _small_net()
    params = net.init(jax.random.key(0))
    x, loss = jnp.ones((10, 3)), "categorical_crossentropy"
    with pytest.raises(ValueError, match=r"y: expected 10 samples \(as many as x\), got 40"):
        net.loss(params, x, jnp.zeros(40, jnp.int32), loss=loss)
    with pytest.raises(ValueError, match=r"y: expected class labels in \[0, 3\)"):
        net.objective(params, x, jnp.full(10, 3), loss=loss)
    # An x that is no batch at all gets forward's documented error for x, not an IndexError.
    with pytest.raises(TypeError, match="x: expected a numeric array, got None"):
        net.loss(params, None, jnp.zeros(10, jnp.int32), loss=loss)
    with pytest.raises(ValueError, match=r"x: layer 0 .* expected shape \(batch, 3\), got \(\)"):
        net.loss(params, np.float32(1.0), jnp.zeros(10, jnp.int32), loss=loss)
    # Under jit the targets are tracers: no value checks, the same result as before.
    y = jnp.arange(10) % 3
    np.testing.assert_allclose(
        jax.jit(lambda p: net.loss(p, x, y, loss=loss))(params),
        net.loss(params, x, y, loss=loss),
        rtol=1e-6,
    )
