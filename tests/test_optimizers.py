"""Every named optimiser is the optax transformation its name promises: its first update
against the textbook formula written by hand, its first steps against optax's own
transformation built directly."""

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerance import assert_rounding_close

import nnfun
from nnfun import train

LR = 0.1
PARAMS = {"W": jnp.array([[1.0, -1.0], [0.5, 2.0]]), "b": jnp.array([0.1, -0.3])}
# Gradients of several scales and a zero, so that sign-like and scaled updates differ.
GRADS = [
    {"W": jnp.array([[0.5, -2.0], [3.0, 0.0]]), "b": jnp.array([1e-3, -0.25])},
    {"W": jnp.array([[-1.0, 0.5], [0.25, 4.0]]), "b": jnp.array([0.2, 0.0])},
    {"W": jnp.array([[0.75, 1.0], [-3.0, -0.5]]), "b": jnp.array([-0.1, 0.3])},
]


def first_update(name, g):
    """The first step's update from the textbook rule (optax's defaults for the constants)."""
    g = np.asarray(g, np.float64)
    if name in ("sgd", "gd", "momentum"):  # momentum: the velocity starts at the gradient
        return -LR * g
    if name == "nesterov":  # look ahead: g + 0.9 v with v = g
        return -LR * 1.9 * g
    if name == "adagrad":  # accumulator starts at 0.1
        return -LR * g / np.sqrt(0.1 + g * g + 1e-7)
    if name == "rmsprop":  # nu = 0.1 g^2, eps inside the root
        return -LR * g / np.sqrt(0.1 * g * g + 1e-8)
    if name == "adam":  # bias-corrected moments are g and g^2 on step 1
        return -LR * g / (np.abs(g) + 1e-8)
    raise AssertionError(name)


DIRECT = {
    "sgd": optax.sgd(LR),
    "gd": optax.sgd(LR),
    "momentum": optax.sgd(LR, momentum=0.9),
    "nesterov": optax.sgd(LR, momentum=0.9, nesterov=True),
    "adagrad": optax.adagrad(LR),
    "rmsprop": optax.rmsprop(LR),
    "adam": optax.adam(LR),
}


def test_every_named_optimizer_is_tested():
    assert sorted(DIRECT) == sorted(train.OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_first_update_is_the_textbook_rule(name):
    opt = nnfun.Config.make("mse", name, learning_rate=LR).optimizer
    updates, _ = opt.update(GRADS[0], opt.init(PARAMS), PARAMS)
    expected = {k: first_update(name, v) for k, v in GRADS[0].items()}
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
