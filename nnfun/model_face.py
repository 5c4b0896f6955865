"""Keras's model conveniences that ``Sequential`` mixes in: calling the model, looking
layers up, the weight lists, ``pop`` and the ``*_on_batch`` methods. Each is a few lines over
``fit`` / ``evaluate`` / ``predict`` and the weights in Keras's order."""

from __future__ import annotations

import jax.numpy as jnp


class KerasModelMethods:
    """Mixed into ``Sequential``; uses its ``layers``, ``_weights``, ``fit``, ``evaluate``
    and ``predict``."""

    def __call__(self, x, training=False):
        """The outputs for ``x`` (evaluation mode; ``training=True`` is refused: training
        behaviour is the ``fit`` program's)."""
        if training:
            raise ValueError("training: model(x, training=True) is not offered; use fit")
        return jnp.asarray(self.predict(x, verbose=0))

    def get_layer(self, name=None, index=None):
        """The layer called ``name`` (as ``summary`` names it) or at ``index``."""
        if (name is None) == (index is None):
            raise ValueError(f"get_layer: give name or index, got name={name!r}, index={index!r}")
        if index is not None:
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"index: expected < {len(self.layers)} layers, got {index}")
            return self.layers[index]
        names = self._layer_names()
        if name not in names:
            raise ValueError(f"name: expected one of {names}, got {name!r}")
        return self.layers[names.index(name)]

    def pop(self):
        """Removes and returns the last layer; the weights of the others stay."""
        if not self.layers:
            raise ValueError("pop: the model has no layers")
        kept = self.get_weights()[: -len(self.layers[-1].get_weights()) or None]
        layer = self.layers.pop()
        if self.built:
            self.state = None
            self.build()
            self.set_weights(kept)
        return layer

    @property
    def output_shape(self) -> tuple:
        return (None, *self.shapes()[-1])

    @property
    def weights(self) -> list:
        return self.get_weights()

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimisation step on the batch; returns its loss (and metrics) before the
        step, as Keras. ``model.history`` is left as the last ``fit`` left it."""
        history = self.history
        logs = self.fit(
            x,
            y,
            batch_size=len(x),
            epochs=1,
            shuffle=False,
            verbose=0,
            sample_weight=sample_weight,
            class_weight=class_weight,
        ).history
        self.history = history
        values = {k: v[-1] for k, v in logs.items() if isinstance(v, list)}
        return values if return_dict else _scalar_or_list(list(values.values()))

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) on one batch, in evaluation mode."""
        return self.evaluate(
            x, y, batch_size=len(x), verbose=0, sample_weight=sample_weight, return_dict=return_dict
        )

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=len(x), verbose=0)


def _scalar_or_list(values: list):
    return values[0] if len(values) == 1 else values
