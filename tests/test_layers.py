"""Layers: each hand-written backward against jax.vjp of its forward in float64, plus what
each layer promises (the maxout winner, PReLU/RReLU slopes, dropout masks and scaling,
BatchNorm statistics and running state, Flatten shapes) and shape errors that name the layer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnfun
from nnfun import gradcheck
from nnfun.layers import Activation, BatchNorm, Dense, Dropout, Flatten, Maxout, PReLU, RReLU

TOL = 1e-10


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def normal(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale)


@functools.partial(jax.jit, static_argnames=("layer", "train"))
def _manual_and_vjp(layer, params, state, x, dy, key, train):
    def forward(p, x):
        return layer.forward(p, state, x, key=key, train=train)[0]

    _, vjp = jax.vjp(forward, params, x)
    _, _, cache = layer.forward(params, state, x, key=key, train=train)
    return layer.backward(params, cache, dy), vjp(dy)


def backward_vs_vjp(layer, params, x, *, state=None, key=None, train=False, seed=9):
    """Report of layer.backward's (dparams, dx) against jax.vjp of layer.forward (jitted:
    one small program per layer and shape is faster than op-by-op dispatch)."""
    state = layer.init_state(x.shape[1:], x.dtype) if state is None else state
    y_shape = jax.eval_shape(lambda: layer.forward(params, state, x, key=key, train=train)[0])
    dy = normal(y_shape.shape, seed)
    manual, ref = _manual_and_vjp(layer, params, state, x, dy, key, train)
    assert jax.tree.structure(manual[0]) == jax.tree.structure(params)
    return gradcheck.compare(manual, ref, tol=TOL, name="jax.vjp")


def test_dense_forward_and_backward():
    layer = Dense(3, "tanh")
    params = {"W": normal((4, 3), 1), "b": normal((3,), 2)}
    x = normal((5, 4), 3)
    y, _, (x_cached, z, a) = layer.forward(params, {}, x)
    np.testing.assert_allclose(z, np.asarray(x) @ np.asarray(params["W"]) + params["b"])
    np.testing.assert_allclose(y, np.tanh(z), rtol=1e-15)
    report = backward_vs_vjp(layer, params, x)
    assert report.ok, str(report)
    # The textbook equations: dW = X^T dZ, db = sum dZ, dX = dZ W^T.
    dz = normal((5, 3), 4)
    grads, dx = layer.backward_affine(params, (x, z, a), dz)
    np.testing.assert_allclose(grads["W"], np.asarray(x).T @ np.asarray(dz), rtol=1e-14)
    np.testing.assert_allclose(grads["b"], np.asarray(dz).sum(0), rtol=1e-14)
    np.testing.assert_allclose(dx, np.asarray(dz) @ np.asarray(params["W"]).T, rtol=1e-14)


def test_maxout_sends_the_gradient_to_the_winning_piece_only():
    layer = Maxout(units=2, pieces=3)
    # Unit 0: piece 2 wins for x > 0 and piece 0 for x < 0; unit 1: piece 1 always (bias).
    params = {
        "W": jnp.asarray([[[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]),  # (in=1, units=2, pieces=3)
        "b": jnp.asarray([[0.0, -5.0, 0.0], [0.0, 1.0, 0.0]]),
    }
    x = jnp.asarray([[2.0], [-3.0]])
    y, _, cache = layer.forward(params, {}, x)
    np.testing.assert_array_equal(y, [[2.0, 1.0], [3.0, 1.0]])
    dy = jnp.asarray([[10.0, 100.0], [1.0, 1000.0]])
    grads, dx = layer.backward(params, cache, dy)
    np.testing.assert_array_equal(grads["b"], [[1.0, 0.0, 10.0], [0.0, 1100.0, 0.0]])
    np.testing.assert_array_equal(
        grads["W"][0], [[-3.0, 0.0, 20.0], [0.0, 2 * 100 - 3 * 1000, 0.0]]
    )
    np.testing.assert_array_equal(dx, [[10.0 * 1.0], [1.0 * -1.0]])
    random = {"W": normal((4, 2, 3), 1), "b": normal((2, 3), 2)}
    report = backward_vs_vjp(layer, random, normal((6, 4)))
    assert report.ok, str(report)


def test_prelu_derivatives_for_input_and_slope():
    layer = PReLU(slope_init=0.25)
    params = layer.init(jax.random.key(0), (2,))
    np.testing.assert_array_equal(params["slope"], [0.25, 0.25])
    x = jnp.asarray([[-2.0, 3.0], [4.0, -1.0], [-1.0, -2.0]])
    y, _, cache = layer.forward(params, {}, x)
    np.testing.assert_array_equal(y, [[-0.5, 3.0], [4.0, -0.25], [-0.25, -0.5]])
    grads, dx = layer.backward(params, cache, jnp.ones_like(x))
    np.testing.assert_array_equal(grads["slope"], [-3.0, -3.0])  # sum of x where x <= 0
    np.testing.assert_array_equal(dx, [[0.25, 1.0], [1.0, 0.25], [0.25, 0.25]])
    slopes = {"slope": normal((3,), 1, 0.3)}
    for x in (normal((5, 3), 2), normal((2, 4, 4, 3), 3)):  # (N, F) and (N, H, W, C)
        report = backward_vs_vjp(layer, slopes, x)
        assert report.ok, str(report)


def test_rrelu_slopes_come_from_the_key_in_training_and_are_the_mean_at_evaluation():
    layer = RReLU(lower=0.1, upper=0.3)
    x = -jnp.abs(normal((200, 50))) - 0.01  # all negative: y / x is the slope
    key = jax.random.key(4)
    y, _, _ = layer.forward({}, {}, x, key=key, train=True)
    slopes = np.asarray(y / x)
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3
    assert slopes.mean() == pytest.approx(0.2, abs=0.002)  # U[0.1, 0.3]: mean 0.2, sd 0.058
    assert slopes.var() == pytest.approx(0.2**2 / 12, rel=0.05)
    assert np.histogram(slopes, bins=4, range=(0.1, 0.3))[0].min() > 2300  # flat: 2500 each
    again, _, _ = layer.forward({}, {}, x, key=key, train=True)
    np.testing.assert_array_equal(again, y)
    other, _, _ = layer.forward({}, {}, x, key=jax.random.key(5), train=True)
    assert not np.allclose(other, y)
    evaluation, _, _ = layer.forward({}, {}, x, train=False)  # no key needed
    np.testing.assert_allclose(evaluation, 0.2 * x, rtol=1e-15)
    positive = jnp.abs(x)
    np.testing.assert_array_equal(layer.forward({}, {}, positive, key=key, train=True)[0], positive)
    # Manual backward with the same key = jax.vjp of the forward with that key.
    for train in (True, False):
        report = backward_vs_vjp(layer, {}, normal((6, 5)), key=key, train=train)
        assert report.ok, str(report)
    with pytest.raises(ValueError, match="lower=0.5, upper=0.2"):
        RReLU(lower=0.5, upper=0.2)


@pytest.mark.parametrize("scaled", [True, False], ids=["inverted", "classic"])
def test_dropout_masks_scaling_and_backward(scaled):
    rate, layer = 0.3, Dropout(0.3, scaled=scaled)
    x = jnp.ones((400, 100))
    key = jax.random.key(1)
    y, _, _ = layer.forward({}, {}, x, key=key, train=True)
    values = set(np.unique(np.asarray(y)).round(12))
    kept_value = 1 / (1 - rate) if scaled else 1.0
    assert values == {0.0, round(kept_value, 12)}
    assert np.mean(np.asarray(y) != 0) == pytest.approx(1 - rate, abs=0.005)
    assert float(jnp.mean(y)) == pytest.approx(1.0 if scaled else 1 - rate, abs=0.01)
    np.testing.assert_array_equal(layer.forward({}, {}, x, key=key, train=True)[0], y)
    assert not np.array_equal(layer.forward({}, {}, x, key=jax.random.key(2), train=True)[0], y)
    # Evaluation is deterministic and needs no key: identity (inverted) or x (1 - rate).
    evaluation, _, _ = layer.forward({}, {}, normal((3, 4)), train=False)
    expected = normal((3, 4)) * (1.0 if scaled else 1 - rate)
    np.testing.assert_allclose(evaluation, expected, rtol=1e-15)
    # Manual backward with the same key (the same mask) = jax.vjp.
    for train in (True, False):
        report = backward_vs_vjp(layer, {}, normal((8, 6)), key=key, train=train)
        assert report.ok, str(report)
    with pytest.raises(ValueError, match=r"Dropout: rate: expected a number in \[0, 1\), got 1"):
        Dropout(1)


@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 2, 5)], ids=["N,F", "N,H,W,C"])
def test_batchnorm_normalises_and_its_backward_matches_jax(shape):
    layer = BatchNorm(momentum=0.9, epsilon=1e-5)
    c = shape[-1]
    x = normal(shape, 1, 3.0) + 2.0
    params = layer.init(jax.random.key(0), shape[1:])
    state = layer.init_state(shape[1:])
    np.testing.assert_array_equal(state["mean"], np.zeros(c))
    np.testing.assert_array_equal(state["var"], np.ones(c))
    y, new_state, _ = layer.forward(params, state, x, train=True)
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(jnp.mean(y, axis=axes), 0.0, atol=1e-13)
    batch_var = np.var(np.asarray(x), axis=axes)
    np.testing.assert_allclose(jnp.var(y, axis=axes), batch_var / (batch_var + 1e-5), rtol=1e-12)
    # Running statistics: momentum * old + (1 - momentum) * batch; the old state untouched.
    np.testing.assert_allclose(new_state["mean"], 0.1 * np.mean(np.asarray(x), axis=axes))
    np.testing.assert_allclose(new_state["var"], 0.9 + 0.1 * batch_var)
    np.testing.assert_array_equal(state["mean"], np.zeros(c))
    assert new_state is not state
    # Evaluation uses the running statistics, and changes no state.
    y_eval, same, _ = layer.forward(params, new_state, x, train=False)
    inv = 1 / np.sqrt(np.asarray(new_state["var"]) + 1e-5)
    np.testing.assert_allclose(y_eval, (np.asarray(x) - np.asarray(new_state["mean"])) * inv)
    assert same is new_state
    # Backward, with gamma and beta away from 1 and 0.
    params = {"gamma": normal((c,), 2) + 1.5, "beta": normal((c,), 3)}
    for train in (True, False):
        report = backward_vs_vjp(layer, params, x, state=new_state, train=train)
        assert report.ok, (train, str(report))
    with pytest.raises(ValueError, match="at least 2 values per feature"):
        layer.forward(params, state, jnp.ones((1, c)), train=True)


@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 2, 5)], ids=["N,F", "N,H,W,C"])
def test_batchnorm_weighted_statistics_against_numpy_and_backward_against_jax(shape):
    """A float mask (N,) weighs each sample's values in the batch statistics (a mask-0 sample,
    padding, is left out) and the hand-written backward of the weighted statistics is exact."""
    layer, c = BatchNorm(momentum=0.9, epsilon=1e-5), shape[-1]
    x = normal(shape, 1, 3.0) + 2.0
    w = jnp.asarray(np.random.default_rng(2).uniform(0.0, 2.0, shape[0])).at[1].set(0.0)
    x = x.at[1].set(1e3)  # the weight-0 sample, far off: it must not move the statistics
    params = {"gamma": normal((c,), 2) + 1.5, "beta": normal((c,), 3)}
    state = layer.init_state(shape[1:], jnp.float64)

    @jax.jit
    def run(params, x, dy, w):
        def forward(p, x):
            return layer.forward(p, state, x, train=True, mask=w)

        y, new_state, cache = forward(params, x)
        _, vjp = jax.vjp(lambda p, x: forward(p, x)[0], params, x)
        return y, new_state, layer.backward(params, cache, dy), vjp(dy)

    dy = normal(shape, 5)
    y, new_state, manual, ref = run(params, x, dy, w)
    # NumPy: every sample's H*W values carry its weight.
    values = np.asarray(x).reshape(-1, c)
    weights = np.repeat(np.asarray(w), values.shape[0] // shape[0])
    mean = np.average(values, axis=0, weights=weights)
    var = np.average((values - mean) ** 2, axis=0, weights=weights)
    np.testing.assert_allclose(new_state["mean"], 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(new_state["var"], 0.9 + 0.1 * var, rtol=1e-12)
    expected = (np.asarray(x) - mean) / np.sqrt(var + 1e-5) * params["gamma"] + params["beta"]
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    report = gradcheck.compare(manual, ref, tol=TOL, name="jax.vjp")
    assert report.ok, str(report)
    # A batch of weight-0 samples only (all padding) leaves the running statistics as they were.
    _, kept, _ = layer.forward(params, new_state, x, train=True, mask=jnp.zeros(shape[0]))
    np.testing.assert_array_equal(kept["mean"], new_state["mean"])
    np.testing.assert_array_equal(kept["var"], new_state["var"])


def test_flatten_and_activation_layers():
    x = normal((2, 3, 4, 5))
    layer = Flatten()
    assert layer.output_shape((3, 4, 5)) == (60,)
    y, _, cache = layer.forward({}, {}, x)
    np.testing.assert_array_equal(y, np.asarray(x).reshape(2, 60))
    _, dx = layer.backward({}, cache, y)
    np.testing.assert_array_equal(dx, x)
    # The notes' 64x64x3 image -> 12288 features.
    net = nnfun.Sequential([Flatten(), Dense(2, "softmax")], input_shape=(64, 64, 3))
    assert net.shapes() == [(64, 64, 3), (12288,), (2,)]
    for act in ("softmax", "gelu", "relu"):
        report = backward_vs_vjp(Activation(act), {}, normal((4, 6)) + 0.01)
        assert report.ok, (act, str(report))


def test_shape_mismatch_names_the_layer_and_both_shapes():
    dense = Dense(4, "relu")
    p = dense.init(jax.random.key(0), (3,))
    cases = [
        (dense, p, (2, 5), r"x: Dense\(4, relu\) expected shape \(batch, 3\), got \(2, 5\)"),
        (dense, p, (2, 3, 1), r"Dense\(4, relu\) expected shape \(batch, 3\), got \(2, 3, 1\)"),
        (
            Maxout(2),
            Maxout(2).init(jax.random.key(0), (3,)),
            (2, 5),
            r"Maxout.*\(batch, 3\).*\(2, 5\)",
        ),
        (
            PReLU(),
            {"slope": jnp.ones(3)},
            (2, 5),
            r"PReLU expected shape \(batch, \.\.\., 3\).*\(2, 5\)",
        ),
        (
            BatchNorm(),
            BatchNorm().init(None, (3,)),
            (2, 4),
            r"BatchNorm .*\(batch, \.\.\., 3\).*\(2, 4\)",
        ),
    ]
    for layer, params, shape, message in cases:
        state = layer.init_state((3,))
        with pytest.raises(ValueError, match=message):
            layer.forward(params, state, jnp.ones(shape), train=True)
    # The same check under jit (shapes are static).
    with pytest.raises(ValueError, match=r"Dense\(4, relu\) expected shape \(batch, 3\)"):
        jax.jit(lambda x: dense.forward(p, {}, x)[0])(jnp.ones((2, 5)))
    # Through a network: the first layer, and a declared input_dim that disagrees.
    net = nnfun.Sequential([Dense(4, "relu", input_dim=3), Dense(2)])
    with pytest.raises(
        ValueError, match=r"x: layer 0 \(Dense\(4, relu\)\) .*\(batch, 3\), got \(2, 5\)"
    ):
        net.apply(net.init(jax.random.key(0)), jnp.ones((2, 5)))
    with pytest.raises(
        ValueError,
        match=r"input_dim: layer 1 \(Dense\(2, identity\)\) declares input_dim=7, "
        r"but receives per-sample shape \(4,\) from layer 0",
    ):
        nnfun.Sequential([Dense(4, input_dim=3), Dense(2, input_dim=7)]).init(jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"declares input_dim=3, .* \(5,\) from the network's input_shape"
    ):
        nnfun.Sequential([Dense(4, input_dim=3)], input_shape=5).shapes()


@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.sampled_from([(2, 1), (3, 4), (1, 2, 2, 3)]),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_property_batchnorm_and_prelu_backward_over_shapes_and_scales(shape, scale, seed):
    with jax.enable_x64(True):
        x = normal(shape, seed, scale) + scale
        c = shape[-1]
        bn = {"gamma": normal((c,), seed + 1) + 2.0, "beta": normal((c,), seed + 2)}
        dy = normal(shape, seed + 3)
        state = BatchNorm().init_state(shape[1:])
        (dparams, dx), (ref_params, ref_dx) = _manual_and_vjp(
            BatchNorm(), bn, state, x, dy, None, True
        )
        # dx is of order |gamma| |dy| / std(x) but may cancel to rounding noise (two samples
        # give x_hat = +-1 and dx = 0): compare on that natural scale.
        natural = float(jnp.max(jnp.abs(bn["gamma"])) * jnp.max(jnp.abs(dy)))
        natural /= float(jnp.min(jnp.std(x.reshape(-1, c), axis=0)))
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-9, atol=1e-11 * natural)
        for name in ("gamma", "beta"):
            np.testing.assert_allclose(dparams[name], ref_params[name], rtol=1e-9, atol=1e-12)
        report = backward_vs_vjp(PReLU(), {"slope": normal((c,), seed + 4)}, x - scale)
        assert report.ok, str(report)
