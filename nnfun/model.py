"""The Keras face: ``Sequential`` with compile / fit / evaluate / predict, as Keras users
expect them, a thin stateful shell over the pure network (:mod:`nnfun.network`) and the
training functions (:mod:`nnfun.train`, :mod:`nnfun.fit`).

A model holds its ``compiled`` configuration, its ``state`` (a ``TrainState``: weights,
optimiser state, BatchNorm statistics, PRNG key, counters) and its ``history``. Weights are
created from the model's key at the first call that needs them; each new model draws its key
from a process-wide seed sequence, so two models differ and a rerun of a script is
identical; ``set_random_seed(n)`` restarts the sequence and an explicit ``key=`` wins.
"""

from __future__ import annotations

import random

import jax
import numpy as np

from nnfun import fit as fitting
from nnfun import train
from nnfun.callbacks import History
from nnfun.network import Network

_seeds = {"seed": 0, "drawn": 0}


def set_random_seed(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global RNG and nnfun's model-key sequence (as
    ``keras.utils.set_random_seed``): the models created after it start from fixed weights."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)  # noqa: NPY002 - the legacy global RNG, as Keras seeds it
    _seeds.update(seed=int(seed), drawn=0)


def next_key() -> jax.Array:
    """The next key of the process-wide sequence: fold_in(key(seed), models drawn so far)."""
    key = jax.random.fold_in(jax.random.key(_seeds["seed"]), _seeds["drawn"])
    _seeds["drawn"] += 1
    return key


class Sequential(Network):
    """A stack of layers with the Keras methods. ``key`` (a PRNG key or an int seed) fixes
    the initial weights and the training randomness; by default it is drawn from the
    process-wide sequence (``set_random_seed``)."""

    def __init__(self, layers=(), input_shape=None, *, key=None, name: str | None = None):
        super().__init__(layers, input_shape)
        self.name = name or "sequential"
        self._key = next_key() if key is None else train.as_key("key", key)
        self.compiled: train.Config | None = None
        self.state: train.TrainState | None = None
        self.history = History()  # every fit call's epochs, one after another
        self.stop_training = False  # a callback sets it to end fit after the current epoch

    # ---- weights ------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.state is not None

    def build(self, input_shape=None) -> None:
        """Creates the weights (from the model's key) if they do not exist yet."""
        if input_shape is not None and self._input_shape is None:
            self._input_shape = tuple(int(s) for s in input_shape)
        if self.state is None:
            self.state = train.init_state(self, self.compiled, self._key)

    def _build_for(self, x) -> None:
        """Builds from the data's per-sample shape when no layer declared the input's."""
        if self.state is None and self._input_shape is None:
            try:
                self.input_shape  # noqa: B018 - raises when unknown
            except ValueError:
                if np.ndim(x) >= 2:
                    self._input_shape = tuple(np.shape(x)[1:])
        self.build()

    # ---- training -----------------------------------------------------------------------
    def compile(self, loss="categorical_crossentropy", optimizer="adam", metrics=(), **config):
        """Chooses loss, optimiser and metrics (Keras style). After ``fit`` it takes effect
        from the next step: the weights stay; the optimiser's moments stay when only its
        hyper-parameters (learning rate) change, and start afresh when the optimiser does."""
        self.compiled = train.Config.make(loss=loss, optimizer=optimizer, metrics=metrics,
                                          **config)  # fmt: skip
        if self.state is not None:
            self.state = train.with_optimizer(self.state, self.compiled)
        return self

    def _require_compiled(self, what: str) -> train.Config:
        if self.compiled is None:
            raise ValueError(f"model: call compile(loss=..., optimizer=...) before {what}()")
        return self.compiled

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        validation_batch_size=None,
        *,
        key=None,
        **options,
    ) -> History:
        """Trains the epochs ``initial_epoch .. epochs - 1`` from the current weights (Keras
        semantics: a second ``fit(epochs=3)`` trains 3 more); returns this call's History.

        ``key`` fixes the initial weights and training randomness of a model not built yet.
        nnfun's own options pass through to :func:`nnfun.fit.fit`: ``track``,
        ``checkpoint_dir``, ``checkpoint_every``, ``keep_checkpoints``, ``epochs_per_chunk``,
        ``mesh``.
        """
        config = self._require_compiled("fit")
        if key is not None:
            if self.state is not None:
                raise ValueError(
                    "key: the model's weights exist already; pass key= to Sequential(...) "
                    "or to the first fit"
                )
            self._key = train.as_key("key", key)
        self._build_for(x)
        self.stop_training = False
        for c in callbacks or ():
            if hasattr(c, "set_model"):
                c.set_model(self)
        state, history = fitting.fit(
            self,
            x,
            y,
            config=config,
            state=self.state,
            epochs=epochs,
            initial_epoch=initial_epoch,
            batch_size=32 if batch_size is None else batch_size,
            validation_data=validation_data,
            validation_split=validation_split,
            validation_batch_size=validation_batch_size,
            shuffle=shuffle,
            sample_weight=sample_weight,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=verbose,
            on_state=self._set_state,
            **options,
        )
        self.state = state
        result = History()
        result.set_model(self)
        epochs_run = history.pop("epoch", [])
        result.stopped = history.pop("stopped", None)
        result.best_epoch = history.pop("best_epoch", None)
        result.extend(epochs_run, history)
        result.history.update({k: v for k, v in history.items() if not isinstance(v, list)})
        self.history.extend(epochs_run, history)
        return result

    def _set_state(self, state) -> None:
        self.state = state

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 return_dict=False):  # fmt: skip
        """The loss (a float) without metrics, else ``[loss, *metrics]`` (or a dict with
        ``return_dict``), in evaluation mode; the loss includes L1/L2."""
        config = self._require_compiled("evaluate")
        self._build_for(x)
        values = fitting.evaluate(self, self.state, x, y, config=config, batch_size=batch_size,
                                  sample_weight=sample_weight)  # fmt: skip
        if return_dict:
            return dict(zip(("loss", *config.metrics), values, strict=True))
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto") -> np.ndarray:
        """Network outputs for x in evaluation mode, as a NumPy array (batch, outputs)."""
        self._build_for(x)
        return fitting.predict(self, self.state, x, batch_size=batch_size)
