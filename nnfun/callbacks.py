"""Keras-style callbacks for ``fit``: early stopping, model checkpoints, CSV logs, your own.

``fit`` runs chunks of epochs as one compiled program. The built-in callbacks cost it
nothing: ``EarlyStopping`` runs inside the program (its best value, best state and patience
counter ride in the loop), and ``ModelCheckpoint``, ``CSVLogger`` and ``TerminateOnNaN`` only
read the per-epoch logs, which the host receives for every epoch of a chunk at its end. A
callback of your own whose ``on_epoch_begin``/``on_epoch_end`` runs Python code makes ``fit``
return to Python after every epoch, so that ``self.model`` holds that epoch's weights and
``self.model.stop_training = True`` stops after it. Per-batch hooks are not offered: a whole
epoch is one program (use ``fit(..., track={...})`` for per-epoch probes computed inside it).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, NamedTuple

import jax

BATCH_HOOKS = (
    "on_batch_begin",
    "on_batch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class Callback:
    """Base class: override ``on_train_begin/end(logs)`` and ``on_epoch_begin/end(epoch, logs)``.

    ``epoch`` is the 0-based index within the run (``initial_epoch`` ... ``epochs - 1``) and
    ``logs`` maps "loss", each metric and their "val_" versions to that epoch's floats.
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

    @property
    def needs_every_epoch(self) -> bool:
        """True when per-epoch hooks run user code that may read the current weights."""
        kind = type(self)
        return (
            kind.on_epoch_begin is not Callback.on_epoch_begin
            or kind.on_epoch_end is not Callback.on_epoch_end
        )


class _LogsOnly(Callback):
    """A built-in callback whose per-epoch work only reads the logs: replayed after a chunk."""

    @property
    def needs_every_epoch(self) -> bool:
        return False


def _maximise(mode: str, monitor: str) -> bool:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":  # as Keras: accuracy-like names are maximised, everything else minimised
        name = monitor.removeprefix("val_")
        return name in ("acc", "accuracy") or name.endswith("_accuracy")
    return mode == "max"


class Monitor(NamedTuple):
    """What the compiled run tracks for a monitored value (static: part of the program)."""

    name: str
    maximise: bool
    min_delta: float
    patience: int | None  # None: track the best without ever stopping


class EarlyStopping(_LogsOnly):
    """Stops when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (Keras semantics); the epoch that triggers it is still recorded.

    ``mode`` "auto" maximises accuracy-like names and minimises the rest. With
    ``restore_best_weights`` the state returned is the best epoch's. Runs inside the compiled
    program, and its memory (best value, best state, counter) is checkpointed, so a resumed
    run stops where an uninterrupted one does.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor: expected a log name such as 'val_loss', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)):
            raise TypeError(f"min_delta: expected a number, got {min_delta!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.maximise = _maximise(mode, monitor)
        self.restore_best_weights = bool(restore_best_weights)

    def as_monitor(self) -> Monitor:
        return Monitor(self.monitor, self.maximise, self.min_delta, self.patience)

    def __repr__(self):
        return (
            f"EarlyStopping(monitor={self.monitor!r}, min_delta={self.min_delta}, "
            f"patience={self.patience}, mode={self.mode!r}, "
            f"restore_best_weights={self.restore_best_weights})"
        )


class ModelCheckpoint(_LogsOnly):
    """Saves the model to ``filepath`` after an epoch (Keras semantics).

    With ``save_best_only`` only when ``monitor`` improved, and what is saved is that best
    epoch's model, tracked inside the compiled program. ``filepath`` may hold ``{epoch}`` and
    log names (``"ckpt-{epoch:02d}-{val_loss:.3f}"``); then every epoch returns to Python.
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
    ):
        self.filepath = str(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = mode
        self.maximise = _maximise(mode, monitor)

    @property
    def formatted(self) -> bool:
        """True when the path changes from epoch to epoch."""
        return "{" in self.filepath

    @property
    def needs_every_epoch(self) -> bool:
        return self.formatted

    def as_monitor(self) -> Monitor:
        return Monitor(self.monitor, self.maximise, 0.0, None)

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


class CSVLogger(_LogsOnly):
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


class TerminateOnNaN(_LogsOnly):
    """Stops at the first non-finite loss. ``fit`` always does (it is kept for Keras
    scripts): the state returned is the last finite, completed epoch's, and
    ``history["stopped"]`` names the epoch, step and first non-finite leaf."""


class History(Callback):
    """What ``fit`` returns, as Keras: ``history`` maps each log name to its per-epoch list,
    ``epoch`` lists the epoch indices; ``stopped``/``best_epoch`` say why and where it ended."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def extend(self, epochs: list[int], history: dict) -> None:
        self.epoch.extend(epochs)
        for k, v in history.items():
            if isinstance(v, list):
                self.history.setdefault(k, []).extend(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def split(callbacks) -> tuple[EarlyStopping | None, list[Callback]]:
    """Checks a callbacks list; returns (its EarlyStopping or None, the others)."""
    if callbacks is None:
        return None, []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    stopping, others = None, []
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}]: expected an nnfun.callbacks.Callback, got {cb!r}")
        for hook in BATCH_HOOKS:
            if getattr(type(cb), hook, None) is not None:
                raise ValueError(
                    f"callbacks[{i}] ({type(cb).__name__}) defines {hook}: nnfun runs each "
                    "epoch as one compiled program, so there are no per-batch hooks; use "
                    "on_epoch_end, or fit(..., track={...}) for per-epoch probes"
                )
        if isinstance(cb, EarlyStopping):
            if stopping is not None:
                raise ValueError("callbacks: expected at most one EarlyStopping, got two")
            stopping = cb
        else:
            others.append(cb)
    return stopping, others
