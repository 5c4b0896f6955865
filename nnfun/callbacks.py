"""Keras-style callbacks for ``fit``: early stopping, model checkpoints, learning-rate
schedules, CSV logs, your own.

``fit`` runs chunks of epochs as one compiled program and calls each callback's hooks for
every epoch of a chunk when the chunk ends. A callback says what it needs: the built-ins that
only read the logs (``CSVLogger``, ``ModelCheckpoint`` with a fixed path, ``TerminateOnNaN``)
cost nothing, and ``EarlyStopping``'s and save-best ``ModelCheckpoint``'s rules run inside the
program (their memory rides in the loop). A hook written in a class of your own (a
``Callback`` subclass, or a subclass of a built-in that overrides one) makes ``fit`` return
to Python after every epoch, so that ``self.model`` holds that epoch's weights and
``self.model.stop_training = True`` stops after it; so do the learning-rate callbacks, which
change the rate between epochs without recompiling. Epochs carry Keras's numbers: they count
from ``initial_epoch``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nnfun.monitor import Monitor

EPOCH_HOOKS = ("on_epoch_begin", "on_epoch_end")
TRAIN_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")
UNCALLED_BATCH_HOOKS = (
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class Callback:
    """Base class: override ``on_train_begin/end(logs)`` and ``on_epoch_begin/end(epoch,
    logs)``.

    ``epoch`` is Keras's number (``initial_epoch`` ... ``epochs - 1``) and ``logs`` maps
    "loss", each metric and their "val_" versions to that epoch's floats.
    """

    model: Any = None
    params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None) -> None:
        pass

    def on_train_end(self, logs=None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        pass

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        """Before a training step; ``batch`` counts the epoch's steps from 0. With
        ``steps_per_execution=K`` it is called once per K steps, with the group's first."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        """After a step (or a group of K: numbered as Keras 3 numbers it, the group's first
        step + K - 1, even for a shorter last group); ``logs`` holds the epoch's running
        "loss" and metrics so far, as Keras's."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs=None) -> None:
        pass

    def on_batch_end(self, batch: int, logs=None) -> None:
        pass

    @property
    def needs_every_epoch(self) -> bool:
        """True when an epoch hook runs code of a class outside nnfun's own callbacks (it
        may read the current weights or stop the run), or the callback changes the
        learning rate between epochs."""
        return _user_hook(type(self), EPOCH_HOOKS)

    @property
    def needs_every_batch(self) -> bool:
        """True when a training-batch hook is a class's outside nnfun: ``fit`` then runs
        ``steps_per_execution`` steps per compiled call and calls it between them."""
        return _user_hook(type(self), TRAIN_BATCH_HOOKS)


def _user_hook(kind: type, hooks: tuple[str, ...]) -> bool:
    """Whether the first class in ``kind``'s MRO defining one of ``hooks`` is not nnfun's."""
    for hook in hooks:
        for klass in kind.__mro__:
            if hook in vars(klass):
                if klass.__module__ != __name__:
                    return True
                break
    return False


def _maximise(mode: str, monitor: str) -> bool:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":  # as Keras: accuracy-like names are maximised, everything else minimised
        name = monitor.removeprefix("val_")
        return name in ("acc", "accuracy") or name.endswith("_accuracy")
    return mode == "max"


def _number(name: str, value, optional: bool = False):
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _check_monitor(monitor) -> str:
    if not isinstance(monitor, str):
        raise TypeError(f"monitor: expected a log name such as 'val_loss', got {monitor!r}")
    return monitor


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (Keras 3's rule, :mod:`nnfun.monitor`): an improving epoch never stops
    the run, and with patience 0 it stops after the first epoch that does not improve.

    ``mode`` "auto" maximises accuracy-like names and minimises the rest; ``baseline`` must
    be beaten too for the wait to reset; epochs before ``start_from_epoch`` are not watched.
    With ``restore_best_weights`` the weights (and BatchNorm statistics) of the best epoch are
    restored at the end of the run; the optimiser state, step counter and PRNG key go on.
    After ``fit``: ``stopped_epoch`` (0 if it did not stop) and ``best_epoch``, Keras's
    numbers. Runs inside the compiled program; its memory is checkpointed, so a resumed run
    stops where an uninterrupted one does.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        self.monitor = _check_monitor(monitor)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        if (isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, int)
                or start_from_epoch < 0):  # fmt: skip
            raise ValueError(f"start_from_epoch: expected an int >= 0, got {start_from_epoch!r}")
        self.min_delta = abs(_number("min_delta", min_delta))
        self.baseline = _number("baseline", baseline, optional=True)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.maximise = _maximise(mode, monitor)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = start_from_epoch
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best = None

    @property
    def needs_every_epoch(self) -> bool:
        return _user_hook(type(self), EPOCH_HOOKS)

    def as_monitor(self) -> Monitor:
        return Monitor(self.monitor, self.maximise, self.min_delta, self.patience,
                       self.baseline, self.start_from_epoch)  # fmt: skip

    def __repr__(self):
        return (
            f"EarlyStopping(monitor={self.monitor!r}, min_delta={self.min_delta}, "
            f"patience={self.patience}, mode={self.mode!r}, baseline={self.baseline}, "
            f"restore_best_weights={self.restore_best_weights}, "
            f"start_from_epoch={self.start_from_epoch})"
        )


class ModelCheckpoint(Callback):
    """Saves the model to ``filepath`` after each epoch (Keras semantics).

    With ``save_best_only`` only after an epoch where ``monitor`` improved (no ``min_delta``;
    ``initial_value_threshold`` is a best value to beat from the start), and what is saved is
    that epoch's model, tracked inside the compiled program. ``filepath`` may hold
    ``{epoch}`` (Keras's number + 1) and log names (``"ckpt-{epoch:02d}-{val_loss:.3f}"``).
    ``save_weights_only`` writes ``model.save_weights`` instead of ``model.save``.
    """

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq="epoch",
        initial_value_threshold: float | None = None,
    ):
        if save_freq != "epoch":
            raise ValueError(
                f"save_freq: expected 'epoch' (nnfun saves between epochs), got {save_freq!r}"
            )
        self.filepath = str(filepath)
        self.monitor = _check_monitor(monitor)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = mode
        self.maximise = _maximise(mode, monitor)
        self.initial_value_threshold = _number(
            "initial_value_threshold", initial_value_threshold, optional=True
        )

    @property
    def needs_every_epoch(self) -> bool:
        # A path that changes per epoch (saves every epoch) or a hook of your own.
        return ("{" in self.filepath and not self.save_best_only) or _user_hook(
            type(self), EPOCH_HOOKS
        )

    def as_monitor(self) -> Monitor:
        return Monitor(self.monitor, self.maximise, 0.0, None, None, 0,
                       self.initial_value_threshold)  # fmt: skip

    def path(self, epoch: int, logs: dict) -> str:
        return self.filepath.format(epoch=epoch + 1, **(logs or {}))

    def save(self, state, epoch: int, logs: dict) -> None:
        if self.model is None or not hasattr(self.model, "save"):
            raise ValueError(
                "ModelCheckpoint: needs the Keras face (Sequential.fit) to save a model; "
                "with nnfun.train.fit use checkpoint_dir=..."
            )
        path = self.path(epoch, logs)
        if self.save_weights_only:
            self.model.save_weights(path, state=state)
        else:
            self.model.save(path, state=state)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved the model to {path}")


class LearningRateScheduler(Callback):
    """Sets the learning rate before each epoch to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``), as Keras; the rate is logged as "learning_rate". The optimiser must
    be given by name or be an nnfun optimizer (its rate is a hyper-parameter of the state)."""

    changes_learning_rate = True

    def __init__(self, schedule, verbose: int = 0):
        if not callable(schedule):
            raise TypeError(f"schedule: expected a function of (epoch, lr), got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def learning_rate_before(self, epoch: int, lr: float) -> float:
        try:
            new = self.schedule(epoch, lr)
        except TypeError:  # Keras's old one-argument form
            new = self.schedule(epoch)
        if (
            isinstance(new, bool)
            or not isinstance(new, (int, float))
            and not hasattr(new, "__float__")
        ):
            raise ValueError(f"LearningRateScheduler: schedule returned {new!r}, not a float")
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")
        return float(new)

    @property
    def needs_every_epoch(self) -> bool:
        return True


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` (down to ``min_lr``) when ``monitor`` has
    not improved by ``min_delta`` for ``patience`` epochs, then waits ``cooldown`` epochs
    (Keras's rule); the rate is logged as "learning_rate"."""

    changes_learning_rate = True

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):  # fmt: skip
        self.monitor = _check_monitor(monitor)
        self.factor = _number("factor", factor)
        if not self.factor < 1.0:
            raise ValueError(f"factor: expected a number < 1.0, got {factor!r}")
        self.patience, self.verbose, self.mode = patience, verbose, mode
        self.maximise = _maximise(mode, monitor)
        self.min_delta = abs(_number("min_delta", min_delta))
        self.cooldown, self.min_lr = cooldown, _number("min_lr", min_lr)
        self.on_train_begin()

    def on_train_begin(self, logs=None) -> None:
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def learning_rate_after(self, epoch: int, lr: float, logs: dict) -> float:
        current = logs[self.monitor]
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        delta = self.min_delta if self.maximise else -self.min_delta
        if self.best is None:
            better = True
        else:
            better = current - delta > self.best if self.maximise else current - delta < self.best
        if better:
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience and lr > float(np.float32(self.min_lr)):
                lr = max(lr * self.factor, self.min_lr)
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {lr}.")
                self.cooldown_counter, self.wait = self.cooldown, 0
        return lr

    @property
    def needs_every_epoch(self) -> bool:
        return True


class CSVLogger(Callback):
    """Writes one row per epoch (``epoch`` then the logs in sorted order) to ``filename``."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None) -> None:
        if jax.process_index() != 0:  # one host writes the log of a multi-host run
            return
        has_rows = self.append and self.filename.exists() and self.filename.stat().st_size > 0
        if not has_rows:
            self.filename.parent.mkdir(parents=True, exist_ok=True)
            self.filename.write_text("")
        self._keys = None
        if has_rows:
            with self.filename.open(newline="") as f:
                self._keys = next(csv.reader(f, delimiter=self.separator))[1:]

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if jax.process_index() != 0:
            return
        logs = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        with self.filename.open("a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self._keys is None:
                self._keys = sorted(logs)
                writer.writerow(["epoch", *self._keys])
            writer.writerow([epoch, *(logs.get(k, "NA") for k in self._keys)])


class TerminateOnNaN(Callback):
    """Stops at the first non-finite loss. ``fit`` always does (it is kept for Keras
    scripts): the state returned is the last finite, completed epoch's, and
    ``history["stopped"]`` names the epoch, step and first non-finite leaf."""


class History(Callback):
    """What ``fit`` returns, as Keras: ``history`` maps each log name to its per-epoch list,
    ``epoch`` lists the epochs' numbers (from ``initial_epoch``); ``params`` holds
    ``epochs``, ``steps`` and ``verbose``; ``stopped``/``best_epoch`` say why and where the
    run ended (Keras's numbers)."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self.stopped: str | None = None
        self.best_epoch: int | None = None

    def extend(self, epochs: list[int], history: dict) -> None:
        self.epoch.extend(epochs)
        for k, v in history.items():
            if isinstance(v, list):
                self.history.setdefault(k, []).extend(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def as_list(callbacks) -> list[Callback]:
    """``callbacks`` as a checked list: one callback alone is accepted, as Keras does."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks: expected a list of callbacks, got {callbacks!r}")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}]: expected an nnfun.callbacks.Callback, got {cb!r}")
        for hook in UNCALLED_BATCH_HOOKS:
            if getattr(type(cb), hook, None) is not None:
                raise ValueError(
                    f"callbacks[{i}] ({type(cb).__name__}) defines {hook}: fit validates "
                    "inside its compiled epoch, so it calls no test or predict batch hooks; "
                    "use on_epoch_end (or on_train_batch_end for training steps)"
                )
    if sum(isinstance(cb, EarlyStopping) for cb in callbacks) > 1:
        raise ValueError("callbacks: expected at most one EarlyStopping, got two")
    return list(callbacks)
