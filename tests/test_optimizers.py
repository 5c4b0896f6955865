"""Every named optimiser follows Keras 3's update rule: its first update against the formula
of Keras's source written by hand, and its steps against optax's own transformation where
the two rules agree (multi-step agreement with Keras itself is tests/test_keras_parity.py)."""

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerance import assert_rounding_close

import nnfun
from nnfun import optimizers, train

LR = 0.1
PARAMS = {"W": jnp.array([[1.0, -1.0], [0.5, 2.0]]), "b": jnp.array([0.1, -0.3])}
# Gradients of several scales and a zero, so that sign-like and scaled updates differ.
GRADS = [
    {"W": jnp.array([[0.5, -2.0], [3.0, 0.0]]), "b": jnp.array([1e-3, -0.25])},
    {"W": jnp.array([[-1.0, 0.5], [0.25, 4.0]]), "b": jnp.array([0.2, 0.0])},
    {"W": jnp.array([[0.75, 1.0], [-3.0, -0.5]]), "b": jnp.array([-0.1, 0.3])},
]
EPS = 1e-7  # Keras's epsilon


def first_update(name, g, p):
    """The first step's update from Keras's rule with Keras's default constants."""
    g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
    if name in ("sgd", "gd", "momentum"):  # momentum: m = -lr g
        return -LR * g
    if name == "nesterov":  # 0.9 m - lr g with m = -lr g
        return -LR * 1.9 * g
    if name == "adagrad":  # accumulator starts at 0.1, epsilon inside the root
        return -LR * g / np.sqrt(0.1 + g * g + EPS)
    if name == "rmsprop":  # v = 0.1 g^2, epsilon inside the root
        return -LR * g / np.sqrt(0.1 * g * g + EPS)
    if name in ("adam", "adamw"):  # the corrections in the rate, epsilon outside the root
        alpha = LR * np.sqrt(1 - 0.999) / (1 - 0.9)
        adam = -alpha * 0.1 * g / (np.sqrt(0.001 * g * g) + EPS)
        return adam - LR * 0.004 * p if name == "adamw" else adam
    if name == "adamax":  # m = 0.1 g, u = |g|
        return -LR * 0.1 * g / (0.1 * (np.abs(g) + EPS))
    if name == "nadam":
        u1, u2 = 0.9 * (1 - 0.5 * 0.96), 0.9 * (1 - 0.5 * 0.96**2)
        m_hat = u2 * 0.1 * g / (1 - u1 * u2) + (1 - u1) * g / (1 - u1)
        return -LR * m_hat / (np.abs(g) + EPS)
    if name == "adadelta":  # no delta yet: sqrt(eps) g / sqrt(0.05 g^2 + eps)
        return -LR * np.sqrt(EPS) * g / np.sqrt(0.05 * g * g + EPS)
    raise AssertionError(name)


# Where Keras's rule and optax's agree (a constant rate), optax built directly.
DIRECT = {
    "sgd": optax.sgd(LR),
    "gd": optax.sgd(LR),
    "momentum": optax.sgd(LR, momentum=0.9),
    "nesterov": optax.sgd(LR, momentum=0.9, nesterov=True),
    "adagrad": optax.adagrad(LR, eps=EPS),
    "rmsprop": optax.rmsprop(LR, eps=EPS, eps_in_sqrt=True),
}
NAMES = sorted(train.OPTIMIZERS)


def test_every_named_optimizer_is_tested():
    assert NAMES == sorted(optimizers.NAMES)
    for name in NAMES:
        first_update(name, 1.0, 1.0)  # raises for a name without its formula


@pytest.mark.parametrize("name", NAMES)
def test_first_update_is_kerass_rule(name):
    opt = nnfun.Config.make("mse", name, learning_rate=LR).optimizer
    updates, _ = opt.update(GRADS[0], opt.init(PARAMS), PARAMS)
    expected = {k: first_update(name, v, PARAMS[k]) for k, v in GRADS[0].items()}
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_steps_follow_optax_built_directly(name):
    ours = nnfun.Config.make("mse", name, learning_rate=LR).optimizer
    theirs = DIRECT[name]
    p, q = PARAMS, PARAMS
    s, t = ours.init(p), theirs.init(q)
    for g in GRADS:
        u, s = ours.update(g, s, p)
        v, t = theirs.update(g, t, q)
        p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
        chex.assert_trees_all_close(p, q, rtol=1e-5, atol=1e-5)  # lr stored as float32


def test_moments_carry_over_between_steps():
    """Step 2 of momentum uses step 1's velocity: 0.9 g1 + g2 (plain SGD would use g2)."""
    opt = nnfun.Config.make("mse", "momentum", learning_rate=LR).optimizer
    _, state = opt.update(GRADS[0], opt.init(PARAMS), PARAMS)
    updates, _ = opt.update(GRADS[1], state, PARAMS)
    expected = {k: -LR * (0.9 * np.asarray(GRADS[0][k]) + np.asarray(GRADS[1][k])) for k in PARAMS}
    assert_rounding_close(updates, expected)
