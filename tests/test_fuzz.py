"""Property tests of the public functions, valid and invalid input apart: valid input (any
numeric dtype, batch size and finite values) works and gives finite output of the right
shape; invalid input (wrong kind, shape, labels or non-finite values) raises the documented
ValueError/TypeError. Example counts come from the Hypothesis profile (tests/conftest.py)."""

import functools
import warnings

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import nnfun
from nnfun import activations, losses, train
from nnfun.layers import Dense

NET = nnfun.Sequential([Dense(4, "tanh", input_dim=3), Dense(2, "softmax")])
PARAMS = NET.init(jax.random.key(0))
CFG = nnfun.Config.make("categorical_crossentropy", "sgd", learning_rate=0.1)
DOCUMENTED = (ValueError, TypeError)
NUMERIC = [np.float32, np.float16, np.int32, np.bool_]


# ---- strategies ------------------------------------------------------------------------
ROWS = 3  # one batch size: each new (shape, dtype) compiles the ops again


@st.composite
def valid_x(draw, features=3):
    """(rows, features) of any numeric dtype with finite values."""
    dtype = draw(st.sampled_from(NUMERIC))
    values = draw(hnp.arrays(np.float32, (ROWS, features),
                             elements=st.floats(-1e4, 1e4, width=16)))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # large floats cast to small integer types
        return values.astype(dtype)


def valid_labels(n, classes):
    """Integer labels (n,) in [0, classes), or one-hot targets (n, classes)."""
    labels = st.lists(st.integers(0, classes - 1), min_size=n, max_size=n).map(
        lambda v: np.asarray(v, np.int32)
    )
    return labels | labels.map(lambda v: np.eye(classes, dtype=np.float32)[v])


def not_an_array():
    return st.sampled_from(["abc", None, [[1.0, 2.0], [3.0]], np.array(["a", "b"]),
                            np.ones((2, 3), object), np.ones((2, 3), np.complex64)])  # fmt: skip


@st.composite
def invalid_x(draw, features=3):
    """Inputs the network refuses: not numeric, a wrong shape or NaN/inf (an empty batch is
    valid for apply; fit refuses it)."""
    kind = draw(st.sampled_from(["kind", "shape", "non-finite"]))
    if kind == "kind":
        return draw(not_an_array())
    if kind == "shape":
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4).filter(
            lambda s: len(s) != 2 or s[1] != features))  # fmt: skip
        return np.ones(shape, np.float32)
    x = draw(valid_x(features)).astype(np.float32)
    x[draw(st.integers(0, x.shape[0] - 1)), draw(st.integers(0, features - 1))] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf])
    )
    return x


@st.composite
def invalid_labels(draw, n, classes):
    """Targets refused for n samples of ``classes``: out of range, float class labels, a
    wrong count or width, non-finite, not numeric."""
    kind = draw(st.sampled_from(["range", "float", "count", "width", "non-finite", "kind"]))
    if kind == "range":
        y = np.zeros(n, np.int32)
        y[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, classes, 7]))
        return y
    if kind == "float":
        return np.zeros(n, np.float32)
    if kind == "count":
        return np.zeros(draw(st.sampled_from([n - 1, n + 1])), np.int32)
    if kind == "width":
        return np.zeros((n, draw(st.sampled_from([classes - 1, classes + 1]))), np.float32)
    if kind == "non-finite":
        return np.full((n, classes), np.nan, np.float32)
    return np.array(["a"] * n)


# ---- network ---------------------------------------------------------------------------
@given(x=valid_x())
def test_apply_on_valid_input_gives_finite_probabilities(x):
    event(str(x.dtype))
    out = NET.apply(PARAMS, x)
    assert out.shape == (x.shape[0], 2)
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(np.asarray(out).sum(1), 1.0, rtol=1e-5)


@given(x=invalid_x())
def test_apply_on_invalid_input_raises_a_documented_error(x):
    try:
        NET.apply(PARAMS, x)
    except DOCUMENTED as e:
        event(type(e).__name__)
        return
    raise AssertionError(f"no ValueError/TypeError for x = {x!r}")


@given(data=st.data(), loss=st.sampled_from(["categorical_crossentropy", "mse"]))
def test_loss_and_manual_grad_on_valid_input_are_finite(data, loss):
    x = data.draw(valid_x())
    y = data.draw(valid_labels(x.shape[0], 2))
    j = NET.loss(PARAMS, x, y, loss=loss)
    grads = NET.manual_grad(PARAMS, x, y, loss=loss)
    assert j.shape == () and float(j) >= 0
    chex.assert_trees_all_equal_shapes(grads, PARAMS)
    chex.assert_tree_all_finite((j, grads))


@given(data=st.data())
def test_loss_and_manual_grad_on_invalid_input_raise_documented_errors(data):
    x, y = np.ones((3, 3), np.float32), np.array([0, 1, 1], np.int32)
    loss = "categorical_crossentropy"
    part = data.draw(st.sampled_from(["x", "y", "loss"]))
    if part == "x":
        x = data.draw(invalid_x())
        y = np.zeros(np.shape(x)[0] if np.ndim(x) == 2 else 3, np.int32)
    elif part == "y":
        y = data.draw(invalid_labels(3, 2))
    else:
        loss = data.draw(st.sampled_from(["hinge", "", "MSE"]))
    event(part)
    for fn in (NET.loss, NET.manual_grad):
        try:
            fn(PARAMS, x, y, loss=loss)
        except DOCUMENTED:
            continue
        raise AssertionError(f"{fn.__name__}: no ValueError/TypeError for {part}: {x!r}, {y!r}")


@pytest.mark.parametrize("x", ["abc", None, np.float32(1.0)], ids=["str", "None", "scalar"])
def test_loss_with_x_that_is_no_batch_raises_a_documented_error(x):
    with pytest.raises(DOCUMENTED):
        NET.loss(PARAMS, x, np.zeros(3, np.int32), loss="categorical_crossentropy")


# ---- losses and activations --------------------------------------------------------------
@given(data=st.data(), name=st.sampled_from(sorted(losses.LOSSES)))
def test_losses_on_valid_input_are_finite(data, name):
    n, k = ROWS, 3
    pred = data.draw(hnp.arrays(np.float32, (n, k), elements=st.floats(-10, 10, width=32)))
    y = data.draw(valid_labels(n, k))
    value, grad = losses.value(name, pred, y), losses.gradient(name, pred, y)
    assert value.shape == () and grad.shape == pred.shape
    chex.assert_tree_all_finite((value, grad))


@given(data=st.data(), name=st.sampled_from(sorted(losses.LOSSES)))
def test_losses_on_invalid_input_raise_documented_errors(data, name):
    pred, y = np.full((3, 2), 0.5, np.float32), np.array([0, 1, 1], np.int32)
    bad = data.draw(st.sampled_from(["pred kind", "pred dims", "pred int", "y kind", "y shape"]))
    if bad == "pred kind":
        pred = data.draw(not_an_array() | st.just([[0.5, 0.5]] * 3))
    elif bad == "pred dims":
        pred = np.full(data.draw(st.sampled_from([(), (3,)])), 0.5, np.float32)
    elif bad == "pred int":
        pred = np.ones((3, 2), data.draw(st.sampled_from([np.int32, np.uint8, np.bool_])))
    elif bad == "y kind":
        y = data.draw(not_an_array())
    else:
        y = np.zeros(data.draw(st.sampled_from([(3, 3), (3, 1), (2, 2), (3, 2, 1)])), np.float32)
    event(bad)
    for fn in (losses.value, losses.gradient):
        try:
            fn(name, pred, y)
        except DOCUMENTED:
            continue
        raise AssertionError(f"{fn.__name__}: no ValueError/TypeError for {bad}")


@functools.cache
def _activation_and_vjp(name):
    """g(z) and its vjp with ones, as one program per activation and dtype."""
    act = activations.ACTIVATIONS[name]

    def both(z):
        a = act.fn(z)
        return a, act.vjp(z, a, jnp.ones_like(a))

    return jax.jit(both)


@given(
    z=hnp.arrays(
        st.sampled_from([np.float32, np.float16]),
        st.just((2, 3)),
        elements=st.floats(-1e4, 1e4, width=16),
    ),  # fmt: skip
    name=st.sampled_from(sorted(activations.ACTIVATIONS)),
)
def test_activations_keep_shape_and_stay_finite(z, name):
    a, dz = _activation_and_vjp(name)(z)
    assert a.shape == dz.shape == z.shape and a.dtype == dz.dtype == z.dtype
    if z.dtype == np.float32:  # float16 may overflow (exp(12) > 65504): no promise there
        chex.assert_tree_all_finite((a, dz), custom_message=name)


# ---- fit ---------------------------------------------------------------------------------
def _fit(x, y, batch_size, epochs):
    return train.fit(NET, x, y, config=CFG, key=jax.random.key(0), epochs=epochs,
                     batch_size=batch_size)  # fmt: skip


# Each case compiles a program: a partial last batch with integer inputs, and one batch.
@pytest.mark.parametrize(
    ("n", "batch_size", "dtype"), [(5, 2, np.int32), (3, 4, np.float32)], ids=["5-by-2", "3-by-4"]
)
def test_fit_on_valid_tiny_data_trains_every_batch(n, batch_size, dtype):
    epochs = 2
    rng = np.random.default_rng(n)
    x = (3 * rng.normal(size=(n, 3))).astype(dtype)
    y = rng.integers(0, 2, n)
    state, hist = _fit(x, y, batch_size, epochs)
    batches = len(range(0, n, batch_size))  # every sample used: the last batch may be smaller
    assert len(hist["loss"]) == epochs and int(state.epoch) == epochs
    assert int(state.step) == epochs * batches
    chex.assert_tree_all_finite((state.params, hist["loss"]))


@given(
    fault=st.sampled_from(["n", "features", "labels", "batch_size", "epochs"]),
    data=st.data(),
)
def test_fit_with_one_invalid_argument_raises_a_documented_error(fault, data):
    n, features, low, high, batch_size, epochs = 5, 3, 0, 2, 2, 1
    if fault == "n":
        n = 0
    elif fault == "features":
        features = data.draw(st.sampled_from([2, 4]))
    elif fault == "labels":
        low, high = data.draw(st.sampled_from([(-1, 2), (0, 3), (2, 5)]))
    elif fault == "batch_size":
        batch_size = data.draw(st.sampled_from([0, -2, 2.5, "4", True, None]))
    else:
        epochs = data.draw(st.sampled_from([-1, 1.0, "2", None]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = np.resize(np.arange(low, high), n)  # every label of [low, high) present
    event(fault)
    try:
        _fit(x, y, batch_size, epochs)
    except DOCUMENTED:
        return
    raise AssertionError(f"no ValueError/TypeError for {fault}")
