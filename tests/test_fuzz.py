"""Property tests: random shapes, dtypes and values through the public functions either work
(right shape, finite where the input is) or fail with the documented ValueError/TypeError."""

import warnings

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nnfun
from nnfun import activations, losses, train
from nnfun.layers import Dense

NET = nnfun.Sequential([Dense(4, "tanh", input_dim=3), Dense(2, "softmax")])
PARAMS = NET.init(jax.random.key(0))
CFG = nnfun.Config.make("categorical_crossentropy", "sgd", learning_rate=0.1)
DOCUMENTED = (ValueError, TypeError)
FAST = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)

DTYPES = [np.float32, np.float16, np.float64, np.int32, np.uint8, np.bool_, np.complex64]
VALUES = st.floats(allow_nan=True, allow_infinity=True, width=16) | st.sampled_from(
    [0.0, 1.0, -1.0, 2.0, 1e4, -1e4]
)


@st.composite
def arrays(draw, valid=None, max_dims=3):
    """Mostly arrays of the ``valid`` shape with ordinary values; otherwise a random dtype,
    shape and values (NaN, inf, +-1e4 included), or something that is not an array at all."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(["abc", None, [[1.0, 2.0], [3.0]], np.array(["a", "b"])]))
    if valid is not None and kind >= 4:
        shape, dtype, elements = valid, np.float32, st.floats(-3, 3, width=32)
    else:
        dtype, elements = draw(st.sampled_from(DTYPES)), VALUES
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=4))
    values = draw(hnp.arrays(np.float32, shape, elements=elements))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN/inf cast to integer dtypes
        return values.astype(dtype)


@st.composite
def labels(draw, n, classes):
    """Integer labels (n,) mostly in [0, classes), one-hot (n, classes), or any array."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(arrays(max_dims=2))
    y = np.asarray(draw(st.lists(st.integers(-1 if kind == 1 else 0, classes - 1 + (kind == 1)),
                                 min_size=n, max_size=n)), np.int32)  # fmt: skip
    return np.eye(classes, dtype=np.float32)[y % classes] if kind == 2 else y


def all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def finite_input(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind in "biuf" and bool(np.isfinite(x).all())


@FAST
@given(x=arrays(valid=(4, 3)))
def test_apply_works_or_raises_documented_errors(x):
    try:
        out = NET.apply(PARAMS, x)
    except DOCUMENTED as e:
        event(type(e).__name__)
        return
    event("worked")
    assert out.shape == (x.shape[0], 2) and x.shape[1:] == (3,)
    assert finite_input(x) and all_finite(out)


@FAST
@given(data=st.data())
def test_loss_and_manual_grad_work_or_raise_documented_errors(data):
    x = data.draw(arrays(valid=(5, 3)))
    y = data.draw(labels(5, 2))
    loss = data.draw(st.sampled_from(["categorical_crossentropy", "mse", "hinge"]))
    try:
        j = NET.loss(PARAMS, x, y, loss=loss)
        grads = NET.manual_grad(PARAMS, x, y, loss=loss)
    except DOCUMENTED as e:
        event(type(e).__name__)
        return
    event("worked")
    assert j.shape == () and jax.tree.structure(grads) == jax.tree.structure(PARAMS)
    if finite_input(x) and finite_input(y) and np.abs(y).max(initial=0) <= 1:
        assert all_finite((j, grads))


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(losses.LOSSES)))
def test_losses_work_or_raise_documented_errors(data, name):
    pred = data.draw(arrays(valid=(4, 3)))
    y = data.draw(labels(4, 3))
    try:
        value = losses.value(name, pred, y)
        grad = losses.gradient(name, pred, y)
    except DOCUMENTED as e:
        event(type(e).__name__)
        return
    event("worked")
    assert value.shape == () and grad.shape == pred.shape


@FAST
@given(z=arrays(valid=(2, 3)), name=st.sampled_from(sorted(activations.ACTIVATIONS)))
def test_activations_keep_shape_and_stay_finite(z, name):
    act = activations.ACTIVATIONS[name]
    try:
        a = act.fn(jnp.asarray(z))
        dz = act.vjp(jnp.asarray(z), a, jnp.ones_like(a))
    except DOCUMENTED as e:
        event(type(e).__name__)
        return
    event("worked")
    assert a.shape == dz.shape == np.shape(z)
    if finite_input(z) and np.dtype(z.dtype).kind == "f" and z.dtype != np.float16:
        assert all_finite((a, dz)), (name, z)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    n=st.sampled_from([1, 3, 5, 6, 0]),
    features=st.sampled_from([3, 3, 3, 2]),
    low=st.sampled_from([0, 0, 0, -1]),
    high=st.sampled_from([2, 2, 2, 3]),
    batch_size=st.sampled_from([2, 4, 1, 0, -2, 2.5, "4"]),
    epochs=st.sampled_from([1, 2, 0, -1, 1.0]),
    float_x=st.booleans(),
)
def test_fit_on_tiny_data_works_or_raises_documented_errors(
    n, features, low, high, batch_size, epochs, float_x
):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, features)).astype(np.float32 if float_x else np.int32)
    y = rng.integers(low, high, n)
    try:
        state, hist = train.fit(
            NET, x, y, config=CFG, key=jax.random.key(0), epochs=epochs, batch_size=batch_size
        )
    except DOCUMENTED as e:
        event(type(e).__name__)
        return
    event("worked")
    assert n >= 1 and features == 3 and y.min() >= 0 and y.max() < 2
    assert len(hist.get("loss", [])) == epochs and int(state.epoch) == epochs
    assert int(state.step) == epochs * train.steps_per_epoch(n, batch_size)
    assert all_finite(state.params)
