"""Keras 3's optimisers on optax: the same names, defaults and update rules.

``get("rmsprop")`` or ``RMSprop(learning_rate=1e-3, rho=0.9)`` is an optax
``GradientTransformation`` whose step is Keras's own arithmetic (where optax differs: Keras's
RMSprop and Adagrad add epsilon inside the root of the accumulator, Adam adds it outside the
root of the uncorrected v and folds the bias corrections into the rate; SGD's momentum holds
-lr * g, so a rate changed by a callback weighs only the new gradients). The learning rate is
an injected hyper-parameter (callbacks change it between epochs without recompiling);
``weight_decay`` subtracts ``lr * wd * p`` (Keras's decoupled decay); ``clipnorm`` (each
weight's gradient), ``global_clipnorm`` and ``clipvalue`` clip the gradients first.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nnfun import validation


class KerasState(NamedTuple):
    """``count``: steps taken; ``slots``: the rule's accumulators, each shaped like params."""

    count: jax.Array
    slots: tuple


# ---- the update rules, one leaf at a time: (g, slots, lr, t, hyper) -> (update, slots) -----
def _sgd(g, s, lr, t, h):
    if h["momentum"] == 0:
        return -lr * g, ()
    m = s[0] * h["momentum"] - g * lr
    return (m * h["momentum"] - g * lr if h["nesterov"] else m), (m,)


def _rmsprop(g, s, lr, t, h):
    rho = h["rho"]
    v = rho * s[0] + (1 - rho) * jnp.square(g)
    rest = s[1:]
    if h["centered"]:
        a = rho * rest[0] + (1 - rho) * g
        denominator, rest = v - jnp.square(a) + h["epsilon"], (a, *rest[1:])
    else:
        denominator = v + h["epsilon"]
    increment = lr * g / jnp.sqrt(denominator)
    if h["momentum"] > 0:
        m = h["momentum"] * rest[-1] + increment
        return -m, (v, *rest[:-1], m)
    return -increment, (v, *rest)


def _adagrad(g, s, lr, t, h):
    acc = s[0] + jnp.square(g)
    return -(lr * g) / jnp.sqrt(acc + h["epsilon"]), (acc,)


def _adam(g, s, lr, t, h):
    b1, b2 = h["beta_1"], h["beta_2"]
    alpha = lr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
    m = s[0] + (g - s[0]) * (1 - b1)
    v = s[1] + (jnp.square(g) - s[1]) * (1 - b2)
    if h["amsgrad"]:
        v_hat = jnp.maximum(s[2], v)
        return -(m * alpha) / (jnp.sqrt(v_hat) + h["epsilon"]), (m, v, v_hat)
    return -(m * alpha) / (jnp.sqrt(v) + h["epsilon"]), (m, v)


def _adamax(g, s, lr, t, h):
    m = s[0] + (g - s[0]) * (1 - h["beta_1"])
    u = jnp.maximum(h["beta_2"] * s[1], jnp.abs(g))
    return -(lr * m) / ((1 - h["beta_1"] ** t) * (u + h["epsilon"])), (m, u)


def _nadam(g, s, lr, t, h):
    b1, b2 = h["beta_1"], h["beta_2"]
    u_t = b1 * (1.0 - 0.5 * 0.96**t)
    u_next = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
    product = s[2] * u_t  # Keras updates its running product of u before the step
    product_next = product * u_next
    m = s[0] + (g - s[0]) * (1 - b1)
    v = s[1] + (jnp.square(g) - s[1]) * (1 - b2)
    m_hat = u_next * m / (1 - product_next) + (1 - u_t) * g / (1 - product)
    v_hat = v / (1 - b2**t)
    return -(m_hat * lr) / (jnp.sqrt(v_hat) + h["epsilon"]), (m, v, product)


def _adadelta(g, s, lr, t, h):
    rho, eps = h["rho"], h["epsilon"]
    acc_g = rho * s[0] + (1 - rho) * jnp.square(g)
    delta = -(jnp.sqrt(s[1] + eps) * g) / jnp.sqrt(acc_g + eps)
    acc_delta = rho * s[1] + (1 - rho) * jnp.square(delta)
    return lr * delta, (acc_g, acc_delta)


# name: (rule, slot initial values given the hyper-parameters, Keras's defaults)
_RULES = {
    "sgd": (
        _sgd,
        lambda h: (0.0,) if h["momentum"] else (),
        {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    ),
    "rmsprop": (
        _rmsprop,
        lambda h: (0.0,) * (1 + bool(h["centered"]) + (h["momentum"] > 0)),
        {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
    ),
    "adagrad": (
        _adagrad,
        lambda h: (h["initial_accumulator_value"],),
        {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
    ),
    "adam": (
        _adam,
        lambda h: (0.0,) * (3 if h["amsgrad"] else 2),
        {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    ),
    "adamax": (
        _adamax,
        lambda h: (0.0, 0.0),
        {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    ),
    "nadam": (
        _nadam,
        lambda h: (0.0, 0.0, 1.0),
        {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    ),
    "adadelta": (
        _adadelta,
        lambda h: (0.0, 0.0),
        {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7},
    ),
}
_RULES["adamw"] = (_adam, _RULES["adam"][1], {**_RULES["adam"][2], "weight_decay": 0.004})
_CLIPS = {"weight_decay": None, "clipnorm": None, "clipvalue": None, "global_clipnorm": None}
# nnfun's own spellings: Keras's SGD with Keras's momentum
ALIASES = {
    "gd": ("sgd", {}),
    "momentum": ("sgd", {"momentum": 0.9}),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
}
NAMES = tuple(sorted((*_RULES, *ALIASES)))


def _clip(grads, clipnorm, clipvalue, global_clipnorm):
    """Keras's gradient clipping (at most one of the three is set)."""
    if clipnorm:
        return jax.tree.map(
            lambda g: g * clipnorm / jnp.maximum(jnp.linalg.norm(g), clipnorm), grads
        )
    if global_clipnorm:
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        return jax.tree.map(
            lambda g: g * global_clipnorm / jnp.maximum(norm, global_clipnorm), grads
        )
    if clipvalue:
        return jax.tree.map(lambda g: jnp.clip(g, -clipvalue, clipvalue), grads)
    return grads


def keras_rule(name: str, learning_rate, **hyper) -> optax.GradientTransformation:
    """Keras's optimiser ``name`` as a GradientTransformation (learning_rate a float or a
    schedule ``step -> rate``, evaluated at the step count before the step, as Keras)."""
    rule, slots_of, _ = _RULES[name]
    decay = hyper.pop("weight_decay", None)
    clips = {k: hyper.pop(k, None) for k in ("clipnorm", "clipvalue", "global_clipnorm")}
    starts = slots_of(hyper)

    def init(params):
        slots = tuple(jax.tree.map(lambda p, v=v: jnp.full_like(p, v), params) for v in starts)
        return KerasState(jnp.zeros((), jnp.int32), slots)

    def update(grads, state, params=None):
        grads = _clip(grads, **clips)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = (state.count + 1).astype(jnp.float32)
        treedef = jax.tree.structure(grads)
        leaves = [treedef.flatten_up_to(s) for s in state.slots]
        out = [
            rule(g, tuple(s[i] for s in leaves), jnp.asarray(lr, g.dtype), t.astype(g.dtype), hyper)
            for i, g in enumerate(treedef.flatten_up_to(grads))
        ]
        updates = treedef.unflatten([u for u, _ in out])
        slots = tuple(treedef.unflatten([s[j] for _, s in out]) for j in range(len(starts)))
        if decay:
            if params is None:
                raise ValueError("params: weight_decay needs the parameters in update()")
            updates = jax.tree.map(
                lambda u, p: u - p * (decay * jnp.asarray(lr, p.dtype)), updates, params
            )
        return updates, KerasState(state.count + 1, slots)

    return optax.GradientTransformation(init, update)


class Optimizer:
    """A Keras optimiser's configuration; ``transformation()`` is its optax form."""

    name = ""

    def __init__(self, **config):
        rule_defaults = _RULES[self.name][2]
        for key, value in config.items():
            if key == "learning_rate":
                validation.check_learning_rate(value)
            elif value is not None and not isinstance(value, (bool, int, float)):
                raise TypeError(f"{type(self).__name__}: {key}: expected a number, got {value!r}")
        if sum(config.get(k) is not None for k in ("clipnorm", "clipvalue", "global_clipnorm")) > 1:
            raise ValueError(
                f"{type(self).__name__}: give at most one of clipnorm, clipvalue and "
                f"global_clipnorm, got {config}"
            )
        self.config = {**_CLIPS, **rule_defaults, **config}

    @property
    def learning_rate(self):
        return self.config["learning_rate"]

    def get_config(self) -> dict:
        return {"name": self.name, **self.config}

    @property
    def is_default(self) -> bool:
        """Whether only the learning rate differs from Keras's defaults (then the name and
        the rate describe it, as a saved model records it)."""
        defaults = {**_CLIPS, **_RULES[self.name][2]}
        return all(v == defaults[k] for k, v in self.config.items() if k != "learning_rate")

    def transformation(self, learning_rate=None) -> optax.GradientTransformation:
        """The optax transformation; a float rate is injected (a hyper-parameter of the
        state that callbacks change between epochs), a schedule is called per step."""
        config = dict(self.config)
        lr = config.pop("learning_rate") if learning_rate is None else learning_rate
        config.pop("learning_rate", None)
        return _transformation(self.name, tuple(sorted(config.items())), lr if callable(lr)
                               else float(lr))  # fmt: skip

    def __repr__(self):
        changed = {k: v for k, v in self.config.items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


@functools.lru_cache(maxsize=256)
def _transformation(name: str, config: tuple, lr) -> optax.GradientTransformation:
    """One transformation object per setting: equal configs then compare equal, and the
    programs compiled for one (keyed on the config) serve the other."""
    if callable(lr):
        return keras_rule(name, lr, **dict(config))
    factory = lambda learning_rate: keras_rule(name, learning_rate, **dict(config))  # noqa: E731
    return optax.inject_hyperparams(factory)(learning_rate=lr)


def _clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm) -> dict:
    return {
        "weight_decay": weight_decay,
        "clipnorm": clipnorm,
        "clipvalue": clipvalue,
        "global_clipnorm": global_clipnorm,
    }


class SGD(Optimizer):
    name = "sgd"

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class RMSprop(Optimizer):
    name = "rmsprop"

    def __init__(
        self,
        learning_rate=0.001,
        rho=0.9,
        momentum=0.0,
        epsilon=1e-7,
        centered=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            rho=rho,
            momentum=momentum,
            epsilon=epsilon,
            centered=centered,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class Adagrad(Optimizer):
    name = "adagrad"

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            initial_accumulator_value=initial_accumulator_value,
            epsilon=epsilon,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class Adam(Optimizer):
    name = "adam"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class AdamW(Optimizer):
    name = "adamw"

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class Adamax(Optimizer):
    name = "adamax"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class Nadam(Optimizer):
    name = "nadam"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


class Adadelta(Optimizer):
    name = "adadelta"

    def __init__(
        self,
        learning_rate=0.001,
        rho=0.95,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
    ):
        super().__init__(
            learning_rate=learning_rate,
            rho=rho,
            epsilon=epsilon,
            **_clip_args(weight_decay, clipnorm, clipvalue, global_clipnorm),
        )


CLASSES = {c.name: c for c in (SGD, RMSprop, Adagrad, Adam, AdamW, Adamax, Nadam, Adadelta)}


def from_name(name: str) -> Optimizer:
    """The Keras optimiser ``name`` (case-insensitive, as Keras's strings) with its defaults."""
    key = name.lower() if isinstance(name, str) else name
    if key not in CLASSES and key not in ALIASES:
        raise ValueError(
            f"optimizer: expected one of {list(NAMES)}, an nnfun.optimizers object or an "
            f"optax GradientTransformation, got {name!r}"
        )
    base, preset = ALIASES.get(key, (key, {}))
    return CLASSES[base](**preset)


def default_learning_rate(name: str) -> float:
    """Keras's default learning rate of the optimiser ``name``."""
    return from_name(name).learning_rate
