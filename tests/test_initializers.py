"""Initialisers: exact values for the constant ones, bounds and variances (statistically, on
a large matrix) for the random ones, explicit keys, zero biases and the symmetry trap."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_rounding_close

import nnfun
from nnfun import initializers
from nnfun.layers import Dense, Maxout

FAN_IN, FAN_OUT = 400, 250  # 100k entries: variances to well under 5%
SHAPE = (FAN_IN, FAN_OUT)
KEY = jax.random.key(0)


def test_zeros_ones_and_constant():
    np.testing.assert_array_equal(initializers.zeros(KEY, (3, 2)), np.zeros((3, 2)))
    np.testing.assert_array_equal(initializers.get("ones")(KEY, (2, 2)), np.ones((2, 2)))
    w = initializers.constant(0.5)(KEY, (3, 4), jnp.float16)
    assert w.dtype == jnp.float16 and w.shape == (3, 4)
    np.testing.assert_array_equal(w, np.full((3, 4), 0.5))


# name -> (variance, bound or None): uniform U(-a, a) has variance a^2 / 3.
EXPECTED = {
    "normal": (0.01**2, None),
    "large_normal": (10.0**2, None),
    "uniform_fan_in": (1 / (3 * FAN_IN), 1 / math.sqrt(FAN_IN)),
    "glorot_uniform": (2 / (FAN_IN + FAN_OUT), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "glorot_normal": (2 / (FAN_IN + FAN_OUT), None),
    "he_normal": (2 / FAN_IN, None),
    "he_uniform": (2 / FAN_IN, math.sqrt(6 / FAN_IN)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_random_initialisers_have_their_variance_and_bounds(name):
    variance, bound = EXPECTED[name]
    w = np.asarray(initializers.get(name)(KEY, SHAPE), np.float64)
    assert w.shape == SHAPE and w.dtype == np.float64
    assert abs(w.mean()) < 0.02 * math.sqrt(variance)  # centred: 6 standard errors
    assert w.var() == pytest.approx(variance, rel=0.05)
    if bound is None:  # normal: tails beyond 3 standard deviations exist but are rare
        assert 0.001 < np.mean(np.abs(w) > 3 * math.sqrt(variance)) < 0.005
    else:  # uniform: inside the bound, reaching close to it
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound


def test_named_aliases_and_the_notes_rules():
    assert initializers.get("xavier") is initializers.glorot_uniform
    assert initializers.get("he") is initializers.he_normal
    # The notes' small random init: randn * 0.01.
    np.testing.assert_allclose(
        initializers.normal(0.01)(KEY, (5, 3)), 0.01 * jax.random.normal(KEY, (5, 3)), rtol=1e-6
    )
    # The notes' uniform rule with d = fan_in = shape[0] (a Dense W is (in, out)).
    w = initializers.uniform_fan_in(KEY, (4, 1000))
    assert float(jnp.max(jnp.abs(w))) <= 0.5 and float(jnp.max(jnp.abs(w))) > 0.49


def test_explicit_keys_decide_the_values():
    for name in ("normal", "glorot_uniform", "he_normal", "uniform_fan_in"):
        init = initializers.get(name)
        a, b = init(jax.random.key(7), (6, 5)), init(jax.random.key(7), (6, 5))
        c = init(jax.random.key(8), (6, 5))
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c), name
    net = nnfun.Sequential([Dense(5, "relu", input_dim=5), Dense(5, "relu"), Dense(2)])
    init = jax.jit(net.init)  # one program rather than op by op
    p1, p2 = init(jax.random.key(3)), init(jax.random.key(3))
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_array_equal(x, y)
    # Each layer draws from its own key: equal shapes, different weights.
    assert not np.allclose(p1[0]["W"], p1[1]["W"])


def test_dtype_is_honoured():
    with jax.enable_x64(True):
        for name in ("he_uniform", "glorot_normal", "zeros"):
            assert initializers.get(name)(KEY, (3, 2), jnp.float64).dtype == jnp.float64
    assert initializers.he_normal(KEY, (3, 2), jnp.bfloat16).dtype == jnp.bfloat16
    net = nnfun.Sequential([Dense(3, input_dim=2)])
    shapes = jax.eval_shape(lambda: net.init(KEY, jnp.float16))  # dtypes, nothing computed
    assert shapes[0]["W"].dtype == shapes[0]["b"].dtype == jnp.float16


def test_layers_use_fan_in_and_zero_biases():
    params = Dense(300, kernel_init="he_uniform").init(KEY, (50,))
    assert params["W"].shape == (50, 300) and params["b"].shape == (300,)
    np.testing.assert_array_equal(params["b"], 0.0)
    assert float(jnp.max(jnp.abs(params["W"]))) <= math.sqrt(6 / 50)
    assert float(jnp.max(jnp.abs(params["W"]))) > 0.99 * math.sqrt(6 / 50)
    # Maxout: W (in, units, pieces): fan_in = in, fan_out = units * pieces.
    params = Maxout(20, pieces=3).init(KEY, (40,))
    assert params["W"].shape == (40, 20, 3) and params["b"].shape == (20, 3)
    np.testing.assert_array_equal(params["b"], 0.0)
    bound = math.sqrt(6 / (40 + 20 * 3))  # glorot_uniform: the bound, reached, and a^2/3
    w = np.asarray(params["W"], np.float64)
    assert 0.99 * bound < np.abs(w).max() <= bound
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.1)  # 2400 draws: 2% standard error
    custom = Dense(3, kernel_init=initializers.constant(2.0), bias_init="ones").init(KEY, (2,))
    np.testing.assert_array_equal(custom["W"], 2.0)
    np.testing.assert_array_equal(custom["b"], 1.0)


def test_constant_init_is_the_symmetry_trap():
    """Every hidden unit starts equal, so every one gets the same gradient (and stays equal)."""
    net = nnfun.Sequential(
        [Dense(4, "tanh", input_dim=3, kernel_init=initializers.constant(0.3)), Dense(2, "softmax")]
    )
    params = [
        {"W": initializers.constant(0.3)(KEY, (3, 4)), "b": jnp.zeros(4)},
        {"W": jnp.full((4, 2), 0.2).at[:, 1].set(-0.1), "b": jnp.zeros(2)},  # outputs differ
    ]
    np.testing.assert_array_equal(net.init(KEY)[0]["W"], params[0]["W"])
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jnp.arange(8) % 2
    grad = jax.jit(lambda p: net.manual_grad(p, x, y, loss="categorical_crossentropy"))
    grads = grad(params)
    g = np.asarray(grads[0]["W"])
    assert np.abs(g).max() > 1e-3
    assert_rounding_close(g, np.repeat(g[:, :1], 4, axis=1))
    b = np.asarray(grads[0]["b"])
    assert_rounding_close(b, np.full_like(b, b[0]))
    # A random init breaks the symmetry.
    random = [{**params[0], "W": initializers.glorot_uniform(KEY, (3, 4))}, params[1]]
    g = np.asarray(grad(random)[0]["W"])
    assert not np.allclose(g, g[:, :1])


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="initializer: expected one of") as err:
        initializers.get("glorot")
    for name in ("zeros", "normal", "uniform_fan_in", "glorot_uniform", "he_normal"):
        assert repr(name) in str(err.value)
    assert "'glorot'" in str(err.value)
    with pytest.raises(ValueError, match="Dense: kernel_init: initializer: expected one of"):
        Dense(3, kernel_init="gaussian")
    with pytest.raises(ValueError, match="Maxout: bias_init: .*'he_uniform'"):
        Maxout(3, bias_init=1.5)


# name -> the draw at the layer's own shape, written out from the rule (the independent form);
# fan_in = shape[0], fan_out = the product of the rest.
def _glorot(s):
    return math.sqrt(6 / (s[0] + math.prod(s[1:])))


DIRECT = {
    "normal": lambda k, s, d: 0.01 * jax.random.normal(k, s, d),
    "uniform_fan_in": lambda k, s, d: jax.random.uniform(k, s, d, -(s[0] ** -0.5), s[0] ** -0.5),
    "glorot_uniform": lambda k, s, d: jax.random.uniform(k, s, d, -_glorot(s), _glorot(s)),
    "glorot_normal": lambda k, s, d: (
        math.sqrt(2 / (s[0] + math.prod(s[1:]))) * jax.random.normal(k, s, d)
    ),
    "he_normal": lambda k, s, d: math.sqrt(2 / s[0]) * jax.random.normal(k, s, d),
    "he_uniform": lambda k, s, d: jax.random.uniform(
        k, s, d, -math.sqrt(6 / s[0]), math.sqrt(6 / s[0])
    ),
    "RandomNormal": lambda k, s, d: 0.5 + 0.05 * jax.random.normal(k, s, d),
    "RandomUniform": lambda k, s, d: jax.random.uniform(k, s, d, -0.05, 0.05),
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_eager_draws_equal_the_draw_at_the_layers_own_shape(name):
    """Eager draws come from one compiled program per power-of-two size, cut to the shape:
    the values must be those of a draw at the shape itself (under jit an initialiser
    draws at its own shape anyway). A 4-D kernel, bfloat16 and a size past 1024."""
    classes = {"RandomNormal": initializers.RandomNormal(mean=0.5),
               "RandomUniform": initializers.RandomUniform()}  # fmt: skip
    init = classes.get(name) or initializers.get(name)
    cases = [((5, 3), jnp.float32), ((3, 3, 2, 4), jnp.float32), ((7, 1), jnp.bfloat16),
             ((1025, 2), jnp.float16)]  # fmt: skip
    for shape, dtype in cases:
        key = jax.random.fold_in(KEY, math.prod(shape))
        got, want = init(key, shape, dtype), DIRECT[name](key, shape, dtype)
        assert got.shape == shape and got.dtype == dtype, (name, shape)
        # The same random bits; the float arithmetic on them ran in kernels of two sizes,
        # which another CPU may round differently: a few ulps, not bit for bit.
        want = np.asarray(want, np.float64)
        ulps = 4 * float(jnp.finfo(dtype).eps) * np.max(np.abs(want))
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=ulps,
                                   err_msg=f"{name} {shape}")  # fmt: skip
