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
from nnfun import train, validation
from nnfun.callbacks import History
from nnfun.layer_face import frozen
from nnfun.model_face import KerasModelMethods
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


def _rows_trained(x, validation_split, validation_data) -> int:
    """The training rows of a fit call (after Keras's validation split)."""
    from nnfun.fit_inputs import split_at

    n = int(np.shape(x)[0])
    return split_at(n, validation_split) if validation_split and validation_data is None else n


def _streamed(x) -> bool:
    from nnfun.sources import is_stream

    return is_stream(x) and not isinstance(x, np.memmap)


class Sequential(KerasModelMethods, Network):
    """A stack of layers with the Keras methods. ``key`` (a PRNG key or an int seed) fixes
    the initial weights and the training randomness; by default it is drawn from the
    process-wide sequence (``set_random_seed``)."""

    def __init__(self, layers=(), input_shape=None, *, key=None, name: str | None = None):
        super().__init__(layers, input_shape)
        self.name = name or "sequential"
        self._key = next_key() if key is None else train.as_key("key", key)
        self.compiled: train.Config | None = None
        self.state: train.TrainState | None = None
        self.history = History()  # the last fit's History, as Keras
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
        if self.state is None and self._input_shape is None and not _streamed(x):
            try:
                self.input_shape  # noqa: B018 - raises when unknown
            except ValueError:
                if np.ndim(x) >= 2:
                    self._input_shape = tuple(np.shape(x)[1:])
        self.build()

    # ---- training -----------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, *, steps_per_execution=1,
                **config):  # fmt: skip
        """Chooses optimiser, loss and metrics in Keras's order and with Keras's default
        optimiser (RMSprop). After ``fit`` it takes effect from the next step: the weights
        stay; the optimiser's moments stay when only its hyper-parameters (learning rate)
        change, and start afresh when the optimiser does. Layers' ``trainable`` flags are
        read here, as Keras reads them. ``steps_per_execution`` is fit's default: the steps
        per compiled call when reading a stream or calling training-batch hooks (arrays
        without batch hooks run whole epochs per call)."""
        if loss is None:
            raise ValueError("loss: expected a loss name, object or function, got None")
        self._steps_per_execution = validation.check_int(
            "steps_per_execution", steps_per_execution, 1
        )
        compiled = train.Config.make(loss=loss, optimizer=optimizer, metrics=metrics or (),
                                     **config)  # fmt: skip
        trainable = [layer.trainable for layer in self.layers]
        self.compiled = compiled._replace(optimizer=frozen(compiled.optimizer, trainable))
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
        ``mesh``, and for streams (generators, PyDatasets, Grain, memory-mapped arrays)
        ``steps_per_epoch``, ``validation_steps``, ``steps_per_execution``.
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
        options.setdefault("steps_per_execution", getattr(self, "_steps_per_execution", 1))
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
            model=self,
            **options,
        )
        self.state = state
        result = History()
        result.set_model(self)
        if _streamed(x):
            steps = options.get("steps_per_epoch") or getattr(x, "__len__", lambda: None)()
        else:
            steps = train.steps_per_epoch(_rows_trained(x, validation_split, validation_data),
                                          32 if batch_size is None else batch_size)  # fmt: skip
        result.set_params({"epochs": epochs, "steps": steps, "verbose": verbose})
        result.stopped = history.pop("stopped", None)
        result.best_epoch = history.pop("best_epoch", None)
        result.extend(history.pop("epoch", []), history)
        result.history.update({k: v for k, v in history.items() if not isinstance(v, list)})
        self.history = result  # Keras: the model's history is its last fit's
        return result

    def _set_state(self, state) -> None:
        self.state = state

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, return_dict=False):  # fmt: skip
        """The loss (a float) without metrics, else ``[loss, *metrics]`` (or a dict with
        ``return_dict``), in evaluation mode; the loss includes L1/L2."""
        config = self._require_compiled("evaluate")
        self._build_for(x)
        values = fitting.evaluate(self, self.state, x, y, config=config, batch_size=batch_size,
                                  sample_weight=sample_weight, steps=steps)  # fmt: skip
        if return_dict:
            return dict(zip(("loss", *config.metrics), values, strict=True))
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None) -> np.ndarray:
        """Network outputs for x in evaluation mode, as a NumPy array (batch, outputs)."""
        self._build_for(x)
        return fitting.predict(self, self.state, x, batch_size=batch_size, steps=steps)

    # ---- inspection, weights and saving (Keras's names) -------------------------------------
    def _layer_names(self) -> list[str]:
        """Keras-style names: the class in snake_case, numbered from the second of a kind."""
        names, seen = [], {}
        for layer in self.layers:
            base = layer.name or _snake(type(layer).__name__)
            count = seen.get(base, 0) if layer.name is None else 0
            seen[base] = count + 1
            names.append(base if count == 0 else f"{base}_{count}")
        return names

    def _weights(self) -> list[tuple[int, str, str, jax.Array]]:
        """(layer index, "params"/"state", leaf name, array) in Keras's order: per layer its
        trainable weights (kernel W then bias b; BatchNorm gamma, beta), then its
        non-trainable ones (BatchNorm moving mean, moving variance)."""
        self.build()
        out = []
        for i, (p, s) in enumerate(zip(self.state.params, self.state.model_state, strict=True)):
            out += [(i, "params", k, p[k]) for k in sorted(p, key=_keras_rank)]
            out += [(i, "state", k, s[k]) for k in sorted(s, key=_keras_rank)]
        return out

    def count_params(self) -> int:
        """Number of weights, trainable and not (BatchNorm statistics count), as Keras."""
        return sum(int(np.size(a)) for *_, a in self._weights())

    def summary(self, print_fn=print) -> None:
        """Prints each layer (Keras-style name and type), its output shape and parameter
        count, then the totals: trainable, non-trainable (BatchNorm statistics), all.
        ``print_fn`` is called once per line. Builds the model if needed."""
        weights = self._weights()
        counts = [[0, 0] for _ in self.layers]
        for i, kind, _, a in weights:
            counts[i][kind == "state"] += int(np.size(a))
        trainable = sum(c[0] for c in counts)
        frozen = sum(c[1] for c in counts)
        nbytes = {0: 0, 1: 0}
        for _, kind, _, a in weights:
            nbytes[kind == "state"] += int(np.size(a)) * np.dtype(a.dtype).itemsize
        rows = [
            (f"{name} ({type(layer).__name__})", "(None, " + ", ".join(map(str, shape)) + ")",
             f"{sum(c):,}")
            for name, layer, shape, c in zip(self._layer_names(), self.layers,
                                             self.shapes()[1:], counts, strict=True)
        ]  # fmt: skip
        widths = [
            max(least, len(h), *(len(r[j]) for r in rows)) + 2
            for j, (h, least) in enumerate(zip(_HEADER, (28, 24, 10), strict=True))
        ]
        line = lambda cells: " " + "".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
        rule = sum(widths) + 1
        print_fn(f'Model: "{self.name}"')
        print_fn("_" * rule)
        print_fn(line(_HEADER).rstrip())
        print_fn("=" * rule)
        for row in rows:
            print_fn(line(row).rstrip())
        print_fn("=" * rule)
        total_bytes = nbytes[0] + nbytes[1]
        print_fn(f"Total params: {trainable + frozen:,} ({_readable(total_bytes)})")
        print_fn(f"Trainable params: {trainable:,} ({_readable(nbytes[0])})")
        print_fn(f"Non-trainable params: {frozen:,} ({_readable(nbytes[1])})")
        print_fn("_" * rule)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays in Keras's order: per layer W (in, out) then
        b; BatchNorm gamma, beta, moving mean, moving variance. Builds the model if needed."""
        return [np.array(a) for *_, a in self._weights()]

    def set_weights(self, weights) -> None:
        """Replaces the weights by ``weights``, NumPy arrays in ``get_weights``' order and
        shapes (cast to the model's dtypes); the optimiser state stays."""
        current = self._weights()
        if not isinstance(weights, (list, tuple)):
            raise TypeError(
                f"weights: expected a list of {len(current)} arrays, got {type(weights).__name__}"
            )
        if len(weights) != len(current):
            raise ValueError(
                f"weights: expected {len(current)} arrays (as get_weights returns), got "
                f"{len(weights)}"
            )
        params = [dict(p) for p in self.state.params]
        model_state = [dict(s) for s in self.state.model_state]
        names = self._layer_names()
        for j, ((i, kind, leaf, old), new) in enumerate(zip(current, weights, strict=True)):
            new = np.asarray(new)
            where = f"weights[{j}] (layer {i} {names[i]}, {leaf})"
            if new.dtype.kind not in "biuf":
                raise TypeError(f"{where}: expected a numeric array, got dtype {new.dtype}")
            if new.shape != tuple(old.shape):
                raise ValueError(f"{where}: expected shape {tuple(old.shape)}, got {new.shape}")
            target = params if kind == "params" else model_state
            target[i][leaf] = jax.numpy.asarray(new, dtype=old.dtype)
        self.state = self.state._replace(params=params, model_state=model_state)

    def save(self, path, state=None):
        """Writes the whole model to the folder ``path``: architecture, compile configuration,
        weights, BatchNorm statistics, optimiser state, key and counters
        (``nnfun.load_model`` reads it). ``state`` (a TrainState) replaces the model's own."""
        from nnfun import saving

        return saving.save_model(self, path, state=state)

    def save_weights(self, path, state=None):
        """Writes the weights and BatchNorm statistics (of ``state``, default the model's)."""
        from nnfun import saving

        return saving.save_weights(self, path, state=state)

    def load_weights(self, path) -> None:
        """Loads weights written by ``save_weights``; the shapes must match this model's."""
        from nnfun import saving

        saving.load_weights(self, path)


_HEADER = ("Layer (type)", "Output Shape", "Param #")
_KERAS_ORDER = ("W", "b", "gamma", "beta", "mean", "var")


def _keras_rank(name: str) -> tuple[int, str]:
    """Sort key putting a layer's leaves in Keras's order (unknown names after, by name)."""
    return (_KERAS_ORDER.index(name) if name in _KERAS_ORDER else len(_KERAS_ORDER), name)


def _snake(name: str) -> str:
    """BatchNorm -> batch_norm: an underscore where a capital follows a small letter."""
    return "".join(
        f"_{c}" if c.isupper() and i and name[i - 1].islower() else c for i, c in enumerate(name)
    ).lower()


def _readable(nbytes: int) -> str:
    """Bytes as Keras's summary writes them: 9.41 KB (powers of 1024)."""
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"
