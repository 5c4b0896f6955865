"""A layer's Keras face: ``name``, ``trainable`` and its own weights.

Layers are frozen specs (hashable, so compiled programs key on them); Keras's two mutable
attributes live beside the fields and leave the hash alone: ``name=`` and ``trainable=`` in
the constructor, ``layer.trainable = False`` afterwards. As in Keras, ``trainable`` takes
effect at the next ``compile()``, whose optimiser then leaves a frozen layer's parameters
where they are (``frozen``). A layer added to a model reads and writes its weights through
that model (``get_weights`` / ``set_weights`` / ``weights``).
"""

from __future__ import annotations

import functools
import weakref

import jax
import jax.numpy as jnp
import optax

KERAS_ATTRIBUTES = ("name", "trainable")


def equip(cls: type) -> type:
    """Lets ``cls`` (a frozen dataclass layer) take ``name=`` / ``trainable=`` and set
    ``trainable`` (and ``name``) later; idempotent."""
    if cls.__dict__.get("_keras_face"):
        return cls
    frozen_setattr, init = cls.__setattr__, cls.__init__

    def __setattr__(self, attribute, value):
        if attribute in KERAS_ATTRIBUTES:
            _set(self, attribute, value)
        else:
            frozen_setattr(self, attribute, value)

    @functools.wraps(init)
    def __init__(self, *args, name=None, trainable=True, **kwargs):
        init(self, *args, **kwargs)
        _set(self, "name", name)
        _set(self, "trainable", trainable)

    cls.__setattr__, cls.__init__, cls._keras_face = __setattr__, __init__, True
    return cls


def _set(layer, attribute: str, value) -> None:
    kind = type(layer).__name__
    if attribute == "name" and value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{kind}: name: expected a non-empty str, got {value!r}")
    if attribute == "trainable" and not isinstance(value, bool):
        raise TypeError(f"{kind}: trainable: expected True or False, got {value!r}")
    object.__setattr__(layer, attribute, value)


def attach(layer, model, index: int) -> None:
    """Records that ``layer`` is ``model``'s layer ``index`` (for its weight methods)."""
    object.__setattr__(layer, "_owner", (weakref.ref(model), index))


def owner(layer):
    """(model, index) of the model holding ``layer``; ValueError when there is none."""
    ref = getattr(layer, "_owner", None)
    model = ref[0]() if ref else None
    if model is None or ref[1] >= len(model.layers) or model.layers[ref[1]] is not layer:
        raise ValueError(
            f"layer {layer}: it belongs to no model, so it has no weights yet; add it to a "
            "Sequential first"
        )
    return model, ref[1]


class WeightsOfLayer:
    """Keras's per-layer weight methods, read from and written to the owning model."""

    def get_weights(self) -> list:
        """This layer's weights as NumPy arrays, in Keras's order (as the model's)."""
        model, i = owner(self)
        return [
            w for (j, *_), w in zip(model._weights(), model.get_weights(), strict=True) if j == i
        ]

    def set_weights(self, weights) -> None:
        """Replaces this layer's weights (``get_weights``' order and shapes)."""
        model, i = owner(self)
        everything = model.get_weights()
        mine = [k for k, (j, *_) in enumerate(model._weights()) if j == i]
        if not isinstance(weights, (list, tuple)) or len(weights) != len(mine):
            got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
            raise ValueError(f"weights: expected {len(mine)} arrays for {self}, got {got}")
        for k, w in zip(mine, weights, strict=True):
            everything[k] = w
        model.set_weights(everything)

    @property
    def weights(self) -> list:
        return self.get_weights()

    @property
    def trainable_weights(self) -> list:
        model, i = owner(self)
        if not self.trainable:
            return []
        return [
            w
            for (j, kind, *_), w in zip(model._weights(), model.get_weights(), strict=True)
            if j == i and kind == "params"
        ]

    @property
    def non_trainable_weights(self) -> list:
        model, i = owner(self)
        return [
            w
            for (j, kind, *_), w in zip(model._weights(), model.get_weights(), strict=True)
            if j == i and (kind == "state" or not self.trainable)
        ]


def frozen(inner: optax.GradientTransformation, trainable) -> optax.GradientTransformation:
    """``inner`` with zero updates for the layers whose ``trainable`` flag is False (its
    state, and so its learning rate, unchanged)."""
    trainable = tuple(trainable)
    if all(trainable):
        return inner

    def update(updates, state, params=None):
        updates, state = inner.update(updates, state, params)
        return [
            u if t else jax.tree.map(jnp.zeros_like, u)
            for u, t in zip(updates, trainable, strict=True)
        ], state

    return optax.GradientTransformation(inner.init, update)
