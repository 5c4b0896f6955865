"""The host loop around the training programs: chunks of epochs, progress, callbacks,
checkpoints, Ctrl-C; and evaluate / predict.

``fit`` runs the epochs ``initial_epoch .. epochs - 1`` (Keras semantics: each call trains
``epochs - initial_epoch`` more) as chunks, each chunk one call of the compiled
``train.run_epochs``: the host sees one round trip per chunk, not per epoch. The chunk
length is timed (aiming at about half a second a chunk, never past the epochs left or a
checkpoint boundary) unless ``epochs_per_chunk`` fixes it; the results are the same bits
either way.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import callbacks as cbs
from nnfun import parallel, train, validation

CHUNK_SECONDS = 0.5  # what an automatic chunk aims at: quick progress, Ctrl-C and callbacks
MAX_CHUNK = 4096  # the most epochs one compiled call runs (its history buffers' length)


def _config_of(net, config=None) -> train.Config:
    if config is None:
        if getattr(net, "compiled", None) is None:
            raise ValueError("config: none given and the model is not compiled; call compile()")
        config = net.compiled
    validation.check_instance("config", config, train.Config, "an nnfun.Config from Config.make")
    return config


def _check_state(net, state, stacked=False) -> None:
    validation.check_instance("state", state, train.TrainState, "a TrainState (init_state)")
    validation.check_params(net, state.params, "state.params", stacked=stacked)


def _check_optimizer_state(state, config, stacked=False) -> train.TrainState:
    if state.opt_state is None:
        if stacked:
            raise ValueError("states.opt_state: None; build the stack with init_many")
        return train.with_optimizer(state, config)
    params = state.params if not stacked else jax.tree.map(lambda a: a[0], state.params)
    fresh = jax.eval_shape(config.optimizer.init, params)
    if jax.tree.structure(fresh) != jax.tree.structure(state.opt_state):
        raise ValueError(
            "state.opt_state: built for another optimizer than config.optimizer; use "
            "nnfun.train.with_optimizer(state, config) to switch optimizers"
        )
    return state


# ---- data ----------------------------------------------------------------------------------
def _sample_weights(name: str, weights, n: int):
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.shape != (n,) or w.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected {n} numbers, one per sample, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name}: expected finite weights >= 0, got min {w.min()}")
    if not np.any(w > 0):
        raise ValueError(f"{name}: expected at least one weight > 0, got all zero")
    return jnp.asarray(w, jnp.float32)


def _class_weights(class_weight, y, n: int):
    """Per-sample weights from ``{class: weight}``: the class of integer labels, of one-hot
    rows (argmax) or of a single 0/1 target."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight: expected a dict {{class: weight}}, got {class_weight!r}")
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(1)
    labels = np.rint(labels.reshape(n)).astype(np.int64)
    bad = [k for k in class_weight if isinstance(k, bool) or not isinstance(k, (int, np.integer))]
    if bad:
        raise TypeError(f"class_weight: expected integer class labels as keys, got {bad!r}")
    missing = sorted(set(np.unique(labels).tolist()) - set(class_weight))
    if missing:
        raise ValueError(f"class_weight: no weight for classes {missing} present in y")
    table = np.zeros(max(max(class_weight), labels.max()) + 1)
    for k, v in class_weight.items():
        table[int(k)] = v
    return table[labels]


def prepare_data(net, config, x, y, *, sample_weight=None, class_weight=None,
                 validation_data=None, validation_split=0.0):  # fmt: skip
    """Checked arrays ``(x, y, w, x_val, y_val, w_val)`` (None where absent); the
    validation split is the last fraction of the samples, taken before any shuffling."""
    x, y = validation.check_data(net, config.loss, x, y)
    n = x.shape[0]
    if jax.process_count() > 1:
        for name, value in (("sample_weight", sample_weight), ("class_weight", class_weight),
                            ("validation_split", validation_split or None)):  # fmt: skip
            if value is not None:
                raise ValueError(
                    f"{name}: not supported with several processes yet; split and weigh each "
                    "process's own rows before parallel.shard_host_data and pass "
                    "validation_data"
                )
    w = _sample_weights("sample_weight", sample_weight, n)
    cw = _class_weights(class_weight, y, n)
    if cw is not None:
        w = jnp.asarray(cw if w is None else np.asarray(w) * cw, jnp.float32)
    validation_split = validation.check_fraction("validation_split", validation_split)
    val = None
    if validation_split and validation_data is None:
        cut = n - int(round(n * validation_split))
        if not 0 < cut < n:
            raise ValueError(
                f"validation_split: expected a fraction leaving samples on both sides, got "
                f"{validation_split} of {n} samples"
            )
        val = (x[cut:], y[cut:], None if w is None else w[cut:])
        x, y, w = x[:cut], y[:cut], None if w is None else w[:cut]
    elif validation_data is not None:
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 3:
            xv, yv = validation.check_validation_data(net, config.loss, validation_data[:2])
            wv = _sample_weights("validation_data[2]", validation_data[2], xv.shape[0])
            val = (xv, yv, wv)
        else:
            val = (*validation.check_validation_data(net, config.loss, validation_data), None)
    return (x, y, w, *(val or (None, None, None)))


# ---- chunks ----------------------------------------------------------------------------------
class _ChunkSizer:
    """How many epochs the next compiled call runs: fixed, or timed to about CHUNK_SECONDS."""

    def __init__(self, fixed: int | None):
        self.fixed = fixed
        self.next = fixed or 1
        self.calls = 0

    def size(self, limit: int) -> int:
        return max(1, min(self.next, limit))

    def observe(self, epochs: int, seconds: float) -> None:
        self.calls += 1
        if self.fixed or epochs == 0:
            return
        if self.calls == 1:  # the first call compiled the program: its time says nothing
            self.next = 2
            return
        wanted = int(CHUNK_SECONDS / max(seconds / epochs, 1e-9))
        self.next = max(1, min(wanted, 8 * epochs, MAX_CHUNK))


def _capacity(fixed: int | None) -> int:
    """History buffers' length: one size whatever the epochs, so one program compiles."""
    return max(fixed or 0, MAX_CHUNK)


class _Interrupt:
    """Ctrl-C during a chunk is held until the chunk ends (then fit returns its state), so
    that every process of a multi-host run stops at the same chunk; a second Ctrl-C raises
    at once. Only the main thread can take signals: elsewhere Ctrl-C raises as usual."""

    def __init__(self):
        self.flag = False

    @contextlib.contextmanager
    def deferred(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def hold(signum, frame):
            if self.flag:
                raise KeyboardInterrupt
            self.flag = True

        previous = signal.signal(signal.SIGINT, hold)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


# ---- progress ------------------------------------------------------------------------------
class _Progress:
    """verbose 0: silent; 1: a progress bar advancing by chunks; 2: one line per epoch."""

    def __init__(self, verbose, epochs: int, initial_epoch: int):
        if verbose == "auto":
            verbose = 1 if sys.stderr.isatty() else 2
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {verbose!r}")
        if not parallel.is_main_process():  # one host reports for all
            verbose = 0
        self.verbose, self.epochs = verbose, epochs
        self.bar = None
        if verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, initial=initial_epoch, desc="fit", unit="epoch")
        self.started = time.perf_counter()

    def epochs_done(self, rows: list[tuple[int, dict]]) -> None:
        if not rows:
            return
        if self.bar is not None:
            self.bar.update(len(rows))
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in rows[-1][1].items()})
        elif self.verbose == 2:
            now = time.perf_counter()
            each = (now - self.started) / len(rows)
            self.started = now
            for epoch, logs in rows:
                values = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                # The chunk's mean time per epoch: a chunk is one compiled call.
                line = f"Epoch {epoch + 1}/{self.epochs} - {each * 1e3:.3g}ms/epoch - {values}"
                print(line, flush=True)

    def say(self, message: str) -> None:
        if self.verbose:
            (self.bar.write if self.bar is not None else print)(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- fit ------------------------------------------------------------------------------------
def fit(
    net,
    x,
    y,
    *,
    config: train.Config | None = None,
    state: train.TrainState | None = None,
    key=None,
    epochs: int = 1,
    initial_epoch: int = 0,
    batch_size: int = 32,
    validation_data=None,
    validation_split: float = 0.0,
    validation_batch_size: int | None = None,
    shuffle: bool = True,
    sample_weight=None,
    class_weight=None,
    early_stopping: cbs.EarlyStopping | None = None,
    callbacks=None,
    track: dict[str, Callable] | None = None,
    checkpoint_dir=None,
    checkpoint_every: int = 1,
    keep_checkpoints: int = 3,
    epochs_per_chunk: int | None = None,
    verbose: int | str = 0,
    mesh=None,
    on_state: Callable[[train.TrainState], None] | None = None,
):
    """Trains ``net`` for the epochs ``initial_epoch .. epochs - 1``; returns ``(state, history)``.

    history maps "loss", each metric and their "val_" versions to per-epoch lists (this
    call's epochs), each ``track`` probe ``fn(params, model_state)`` to its values stacked
    over epochs, and says why training ended early under "stopped" (a non-finite loss or
    gradient, early stopping, Ctrl-C). The state returned is the last finite, completed
    epoch's (the best epoch's under ``EarlyStopping(restore_best_weights=True)``); after
    Ctrl-C it is the last completed chunk's, and history holds that chunk's epochs.
    With ``checkpoint_dir`` the training state, early stopping's memory and the history are
    saved every ``checkpoint_every`` epochs, and a call that finds a checkpoint there
    resumes from the newest intact one (``initial_epoch`` taken from it, so a restarted job
    still ends at ``epochs``). ``sample_weight`` (n,) or ``class_weight`` {class: weight}
    weigh each sample's loss, and BatchNorm's batch statistics too (as frequencies: a
    weight-0 sample is left out exactly; Keras's BatchNorm ignores the weights). With
    ``mesh`` (``nnfun.parallel.data_mesh()``) each batch is
    split over its "data" axis and the parameters are replicated: the same updates.
    ``on_state(state)`` is called after every chunk (the Keras face keeps its weights current
    for callbacks with it).
    """
    config = _config_of(net, config)
    epochs = validation.check_int("epochs", epochs, 0)
    initial_epoch = validation.check_int("initial_epoch", initial_epoch, 0)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    validation_batch_size = validation.check_optional_int(
        "validation_batch_size", validation_batch_size, 1
    )
    checkpoint_every = validation.check_int("checkpoint_every", checkpoint_every, 1)
    keep_checkpoints = validation.check_int("keep_checkpoints", keep_checkpoints, 1)
    epochs_per_chunk = validation.check_optional_int("epochs_per_chunk", epochs_per_chunk, 1)
    track = _check_track(track)
    data = prepare_data(
        net, config, x, y, sample_weight=sample_weight, class_weight=class_weight,
        validation_data=validation_data, validation_split=validation_split,
    )  # fmt: skip
    n = data[0].shape[0]
    validation.check_batchnorm_batches(net, n, batch_size)
    stopping, others = cbs.split(callbacks)
    if early_stopping is not None:
        validation.check_instance("early_stopping", early_stopping, cbs.EarlyStopping,
                                  "an nnfun.EarlyStopping")  # fmt: skip
        if stopping is not None:
            raise ValueError("early_stopping: also given in callbacks; pass it once")
        stopping = early_stopping
    if state is None:
        state = train.init_state(net, config, jax.random.key(0) if key is None else key)
    else:
        if key is not None:
            raise ValueError("key: a state was given too; its key drives training")
        _check_state(net, state)
    state = _check_optimizer_state(state, config)
    names = train.log_names(config, data[3] is not None)
    for monitored in [stopping, *(c for c in others if isinstance(c, cbs.ModelCheckpoint))]:
        if monitored is not None and monitored.monitor not in names:
            raise ValueError(
                f"{type(monitored).__name__}.monitor: expected one of {names}, got "
                f"{monitored.monitor!r}"
            )
    monitor, keep_best, host_best = _monitoring(stopping, others)
    run = train.start_run(state, monitor, keep_best)
    history: dict[str, Any] = {k: [] for k in names if k != "grad_error_leaf"}
    if checkpoint_dir is not None:
        resumed = _resume(checkpoint_dir, run)
        if resumed is not None:
            run, history, initial_epoch = resumed
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
        data = tuple(None if a is None else parallel.place_data(a, mesh) for a in data)
        run = parallel.replicate(run, mesh)
    every_epoch = any(c.needs_every_epoch for c in others) or bool(host_best)
    sizer = _ChunkSizer(1 if every_epoch else epochs_per_chunk)
    capacity = _capacity(sizer.fixed)
    val_batch = validation_batch_size or batch_size
    plan = train.Plan(
        batch_size, bool(shuffle), capacity, val_batch, monitor, keep_best, track, mesh
    )
    program = train.compiled_run(net, config, plan)
    progress = _Progress(verbose, epochs, initial_epoch)
    params = {"epochs": epochs, "steps": train.steps_per_epoch(n, batch_size), "verbose": verbose}
    for c in others:
        c.set_params(params)
        c.on_train_begin()
    warned = [False]
    epoch = initial_epoch
    # Host copies of the run's small numbers, read once per chunk (the same on every process).
    seen = parallel.fetch({"stopped": run.stopped, "best_epoch": run.best_epoch})
    interrupt = _Interrupt()
    try:
        while epoch < epochs and not bool(seen["stopped"]):
            count = sizer.size(min(epochs - epoch, _to_boundary(epoch, checkpoint_every,
                                                                checkpoint_dir)))  # fmt: skip
            for c in others:
                if c.needs_every_epoch:
                    c.on_epoch_begin(epoch)
            started = time.perf_counter()
            with interrupt.deferred():
                new, logs, done, blown = program(run, jnp.asarray(count, jnp.int32), data)
                done, blown = (int(v) for v in parallel.fetch((done, blown)))
                sizer.observe(done, time.perf_counter() - started)
                if blown:  # the rare blow-up: rerun the chunk's finite epochs for their state
                    new = program(run, jnp.asarray(done, jnp.int32), data)[0]
                rows = _rows(logs, done, epoch, names, track, history)
                before = seen["best_epoch"]
                run = new
                epoch += done
                seen = parallel.fetch(
                    {"stopped": run.stopped, "best_epoch": run.best_epoch,
                     "best_value": run.best_value, "epoch": run.state.epoch}
                )  # fmt: skip
            _check_grad_error(net, config, run.state, rows, warned)
            progress.epochs_done(rows)
            if on_state is not None:
                on_state(run.state)
            _after_chunk(others, rows, run, before, seen, host_best)
            if checkpoint_dir is not None and done and epoch % checkpoint_every == 0:
                _save(checkpoint_dir, run, history, epoch, keep_checkpoints)
            if blown:
                history["stopped"] = _blow_up(net, config, plan, run.state, data, epoch)
                # Said whatever the verbosity: training ended before the epochs asked for.
                if parallel.is_main_process():
                    warnings.warn(f"nnfun.fit: {history['stopped']}", RuntimeWarning, stacklevel=2)
                break
            if any(getattr(c.model, "stop_training", False) for c in others):
                history["stopped"] = f"stopped by a callback after epoch {epoch}"
                break
            if parallel.any_process(interrupt.flag):  # one decision for every process
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        history["stopped"] = f"interrupted after epoch {epoch}"
        if parallel.is_main_process():
            print(f"nnfun.fit: {history['stopped']}; returning its state", file=sys.stderr)
    finally:
        progress.close()
    best_epoch = int(seen["best_epoch"])
    if stopping is not None and bool(seen["stopped"]):
        history["stopped"] = (
            f"early stopping at epoch {epoch}: {stopping.monitor} best "
            f"{float(seen['best_value']):.6g} at epoch {best_epoch}"
        )
        if stopping.verbose and parallel.is_main_process():
            print(f"Epoch {epoch}: early stopping", flush=True)
    if stopping is not None and best_epoch >= 0:
        history["best_epoch"] = best_epoch
    state = run.state
    if stopping is not None and stopping.restore_best_weights and best_epoch >= 0:
        state = run.best_state
    history = {k: (_stack(v) if k in dict(track) and v else v) for k, v in history.items()}
    for c in others:
        c.on_train_end({k: v[-1] for k, v in history.items() if isinstance(v, list) and v})
    if on_state is not None:
        on_state(state)
    return state, history


def _stack(chunks: list):
    """A probe's per-chunk pytrees as one pytree of arrays with a leading epoch axis."""
    return jax.tree.map(lambda *a: np.concatenate(a), *chunks)


def _check_track(track) -> tuple[tuple[str, Callable], ...]:
    if track is None:
        return ()
    if not isinstance(track, dict):
        raise TypeError(f"track: expected a dict {{name: fn(params, model_state)}}, got {track!r}")
    for name, fn in track.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"track[{name!r}]: expected a name and a function, got {fn!r}")
        try:
            inspect.signature(fn).bind(None, None)
        except TypeError:
            raise TypeError(
                f"track[{name!r}]: expected a function fn(params, model_state), got one with "
                f"signature {inspect.signature(fn)}"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): let the call decide
            pass
    return tuple(track.items())


def _monitoring(stopping, others):
    """What the program monitors (early stopping's value, else a save-best checkpoint's),
    whether it keeps the best state, and the save-best checkpoints left to the host."""
    best_savers = [c for c in others if isinstance(c, cbs.ModelCheckpoint) and c.save_best_only]
    monitor = stopping.as_monitor() if stopping is not None else None
    if monitor is None and best_savers:
        monitor = best_savers[0].as_monitor()
    in_program = [
        c for c in best_savers if (c.monitor, c.maximise) == (monitor.name, monitor.maximise)
    ]
    keep_best = bool(in_program) or (stopping is not None and stopping.restore_best_weights)
    host = {id(c): None for c in best_savers if c not in in_program}  # best value so far
    return monitor, keep_best, host or None


def _to_boundary(epoch: int, every: int, directory) -> int:
    """Epochs until the next checkpoint: a chunk never runs past one."""
    return every - epoch % every if directory is not None else MAX_CHUNK


class _Rows:
    """A chunk's epochs as (epoch, logs) pairs, each built only when asked for: the host
    keeps whole columns, so thousands of short epochs cost no Python per epoch."""

    def __init__(self, columns: dict[str, list], first_epoch: int):
        self.columns, self.first = columns, first_epoch
        self.count = len(next(iter(columns.values()))) if columns else 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, dict]:
        i = range(self.count)[i]
        return self.first + i, {k: v[i] for k, v in self.columns.items()}

    def __iter__(self):
        return (self[i] for i in range(self.count))


def _rows(logs, done: int, epoch: int, names, track, history) -> _Rows:
    """Appends the chunk's ``done`` epochs to history; returns them as (epoch, logs) rows."""
    logs = parallel.fetch(logs)
    columns = {k: np.asarray(logs[k][:done], np.float64).tolist() for k in names}
    for k, v in columns.items():
        if k != "grad_error_leaf":
            history[k].extend(v)
    for name, _ in track:  # one pytree of arrays per chunk, joined at the end
        history.setdefault(name, []).append(jax.tree.map(lambda a: a[:done], logs[name]))
    history.setdefault("epoch", []).extend(range(epoch, epoch + done))
    return _Rows(columns, epoch)


def _check_grad_error(net, config, state, rows, warned) -> None:
    """grad="checked": warn once, naming the layer and leaf, when an epoch's worst
    disagreement between the manual gradient and jax.grad exceeds the tolerance."""
    if config.grad != "checked" or warned[0]:
        return
    from nnfun import gradcheck

    dtype = config.compute_dtype or jax.tree.leaves(state.params)[0].dtype
    limit = gradcheck.tolerance(jnp.dtype(dtype))
    for epoch, row in rows:
        if row["grad_error"] > limit:
            paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
            path = paths[int(row["grad_error_leaf"])]
            layer, leaf = path[0].idx, path[1].key
            warnings.warn(
                f"grad='checked': the manual gradient of params[{layer}]['{leaf}'] (layer "
                f"{layer}, {net.layers[layer]}) differs from jax.grad by relative error "
                f"{row['grad_error']:.3g} at epoch {epoch + 1} (tolerance {limit:.1g})",
                RuntimeWarning,
                stacklevel=3,
            )
            warned[0] = True
            return


def _after_chunk(others, rows, run, best_before, seen, host_best) -> None:
    """Callbacks' per-epoch work for the chunk's epochs, then the model checkpoints."""
    for c in others:
        for epoch, logs in rows:
            c.on_epoch_end(epoch, {k: v for k, v in logs.items() if k != "grad_error_leaf"})
    if not rows:
        return
    last_epoch, last_logs = rows[-1]
    for c in others:
        if not isinstance(c, cbs.ModelCheckpoint):
            continue
        if not c.save_best_only:
            c.save(run.state, last_epoch, last_logs)
        elif host_best is not None and id(c) in host_best:  # one epoch per chunk here
            value, best = last_logs[c.monitor], host_best[id(c)]
            if best is None or (value > best if c.maximise else value < best):
                host_best[id(c)] = value
                c.save(run.state, last_epoch, last_logs)
        elif int(seen["best_epoch"]) != best_before:  # the program's best changed in the chunk
            offset = int(seen["best_epoch"]) - int(seen["epoch"])  # <= 0: epochs before the end
            epoch, logs = rows[len(rows) - 1 + offset] if -offset < len(rows) else rows[-1]
            c.save(run.best_state, epoch, logs)


def _blow_up(net, config, plan, state, data, epoch: int) -> str:
    """Replays the epoch that turned non-finite, guarded, to name its step and leaf."""
    replay = train.compiled_epoch(net, config, plan.batch_size, plan.shuffle, plan.mesh)
    _, metrics = replay(state, *data[:3])
    finite = np.asarray(metrics["finite"])
    step = int(np.argmin(finite))
    flags = np.asarray(metrics["grads_finite"])[step]
    paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
    bad = [path for path, ok in zip(paths, flags, strict=True) if not ok]
    if bad:  # path = (layer index, leaf name)
        layer, leaf = bad[0][0].idx, bad[0][1].key
        where = (
            f"first non-finite leaf params[{layer}]['{leaf}'] (layer {layer}, "
            f"{net.layers[layer]}, {leaf})"
        )
    else:
        where = "the loss"
    return (
        f"non-finite loss or gradient at epoch {epoch + 1}, step {step + 1} "
        f"(batch size {plan.batch_size}): {where}; kept the state after epoch {epoch}"
    )


# ---- checkpoints ----------------------------------------------------------------------------
def _save(directory, run, history: dict, epoch: int, keep: int) -> None:
    plain = {k: _plain(_stack(v)) if _is_probe(v) else v for k, v in history.items()}
    parallel.save_checkpoint(directory, int(parallel.fetch(run.state.epoch)), run,
                    metadata={"history": plain, "epoch": epoch}, keep=keep)  # fmt: skip


def _is_probe(values) -> bool:
    return isinstance(values, list) and bool(values) and not isinstance(values[0], (int, float))


def _plain(tree):
    """A probe's arrays as JSON: {"__probe__": tree of nested lists, "dtypes": ...}."""
    return {"__probe__": jax.tree.map(lambda a: a.tolist(), tree),
            "dtypes": jax.tree.map(lambda a: a.dtype.name, tree)}  # fmt: skip


def _resume(directory, run):
    """``(run, history, initial_epoch)`` from the newest intact checkpoint, or None."""
    found = parallel.restore_latest_checkpoint(directory, like=run)
    if found is None:
        return None
    run, meta = found
    history = {
        k: [jax.tree.map(lambda dtype, a: np.asarray(a, dtype), v["dtypes"], v["__probe__"])]
        if isinstance(v, dict) and "__probe__" in v
        else v
        for k, v in meta["history"].items()
    }
    return run, history, int(meta["epoch"])


# ---- evaluate / predict -----------------------------------------------------------------------
def evaluate(net, state, x, y, *, config=None, batch_size=None, sample_weight=None) -> list:
    """``[loss, *metrics]`` in evaluation mode over all of (x, y); the loss includes L1/L2
    and is the weighted mean with ``sample_weight``."""
    config = _config_of(net, config)
    _check_state(net, state)
    x, y = validation.check_data(net, config.loss, x, y)
    w = _sample_weights("sample_weight", sample_weight, x.shape[0])
    batch_size = validation.check_optional_int("batch_size", batch_size, 1)
    program = train.compiled_evaluate(net, config, batch_size)
    values = program(state.params, state.model_state, x, y, w)
    return [float(v) for v in parallel.fetch(values)]


def predict(net, state, x, *, batch_size=None, as_numpy=True):
    """Outputs of the network in evaluation mode, (batch, outputs), in batches of
    ``batch_size`` (default: all at once)."""
    _check_state(net, state)
    x = validation.check_x(net, x)
    batch_size = validation.check_optional_int("batch_size", batch_size, 1)
    apply = _apply_eval(net)
    if batch_size is None or batch_size >= x.shape[0]:
        out = apply(state.params, state.model_state, x)
    else:
        out = jnp.concatenate(
            [
                apply(state.params, state.model_state, x[i : i + batch_size])
                for i in range(0, x.shape[0], batch_size)
            ]
        )
    return parallel.fetch(out) if as_numpy else out


_APPLY: dict = {}


def _apply_eval(net):
    if net not in _APPLY:
        _APPLY[net] = jax.jit(lambda p, s, x: net.apply(p, x, state=s))
    return _APPLY[net]


# ---- many models at once --------------------------------------------------------------------
def fit_many(
    net,
    x,
    y,
    states,
    *,
    config=None,
    epochs: int = 1,
    initial_epoch: int = 0,
    batch_size: int = 32,
    validation_data=None,
    shuffle: bool = True,
    sample_weight=None,
    early_stopping: cbs.EarlyStopping | None = None,
    track: dict[str, Callable] | None = None,
    epochs_per_chunk: int | None = None,
    verbose: int | str = 0,
    mesh=None,
):
    """Trains a stack of models (``init_many``/``stack``) as one vmapped program per chunk.

    Returns ``(states, history)``: history[k] has shape (epochs, models), NaN after a
    model's last epoch; ``history["stopped"]`` lists per model why it stopped early (None if
    it did not): early stopping, or a non-finite loss or gradient, after which that model
    keeps its last finite, completed epoch's state while the others train on. Each model
    follows its own ``fit`` (same key, data and epochs): its parameters bit for bit without
    BatchNorm, its logged losses to float32 rounding (vmapped reductions may sum in another
    order), and with BatchNorm everything to float32 rounding.
    """
    config = _config_of(net, config)
    _check_state(net, states, stacked=True)
    states = _check_optimizer_state(states, config, stacked=True)
    epochs = validation.check_int("epochs", epochs, 0)
    initial_epoch = validation.check_int("initial_epoch", initial_epoch, 0)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    epochs_per_chunk = validation.check_optional_int("epochs_per_chunk", epochs_per_chunk, 1)
    track = _check_track(track)
    data = prepare_data(net, config, x, y, sample_weight=sample_weight,
                        validation_data=validation_data)  # fmt: skip
    validation.check_batchnorm_batches(net, data[0].shape[0], batch_size)
    names = train.log_names(config, data[3] is not None)
    if early_stopping is not None and early_stopping.monitor not in names:
        raise ValueError(
            f"early_stopping.monitor: expected one of {names}, got {early_stopping.monitor!r}"
        )
    monitor = None if early_stopping is None else early_stopping.as_monitor()
    keep_best = early_stopping is not None and early_stopping.restore_best_weights
    run = train.start_run(states, monitor, keep_best)
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
        data = tuple(None if a is None else parallel.place_data(a, mesh) for a in data)
        run = parallel.replicate(run, mesh)
    sizer = _ChunkSizer(epochs_per_chunk)
    plan = train.Plan(batch_size, bool(shuffle), _capacity(sizer.fixed), batch_size, monitor,
                      keep_best, track, mesh, keep_finite=True)  # fmt: skip
    program = train.compiled_run(net, config, plan, many=True)
    models = int(jax.tree.leaves(states.step)[0].shape[0])
    blown_at = [None] * models
    rows: dict[str, list] = {}
    progress = _Progress(verbose, epochs, initial_epoch)
    epoch = initial_epoch
    try:
        while epoch < epochs:
            active = ~np.asarray(run.stopped) & np.array([b is None for b in blown_at])
            if not active.any():
                break
            count = sizer.size(epochs - epoch)
            started = time.perf_counter()
            run, logs, done, blown = program(run, jnp.asarray(count, jnp.int32), data)
            done, blown = np.asarray(done), np.asarray(blown)
            sizer.observe(int(done.max()), time.perf_counter() - started)
            logs = jax.device_get(logs)
            span = int(done.max())
            for k, v in logs.items():  # (models, capacity, ...) -> rows of (models, ...)
                for i in range(span):
                    value = np.asarray(v[:, i], np.float64 if k in names else None)
                    if k in names:
                        value = np.where(i < done, value, np.nan)
                    rows.setdefault(k, []).append(value)
            for m in np.flatnonzero(blown):
                blown_at[m] = epoch + int(done[m]) + 1
            # A blown model's run ends at its last finite epoch: mark it so it rests.
            run = run._replace(stopped=jnp.asarray(np.asarray(run.stopped) | blown))
            progress.epochs_done([(epoch + i, {"loss": float(np.nanmean(rows["loss"][-span + i]))})
                                  for i in range(span)])  # fmt: skip
            epoch += span
    except KeyboardInterrupt:
        print(f"nnfun.fit_many: interrupted after epoch {epoch}", file=sys.stderr)
    finally:
        progress.close()
    history: dict[str, Any] = {k: np.stack(v) for k, v in rows.items() if k != "grad_error_leaf"}
    stopped = []
    for m in range(models):
        if blown_at[m] is not None:
            stopped.append(f"non-finite loss or gradient at epoch {blown_at[m]}; kept the state "
                           f"after epoch {blown_at[m] - 1}")  # fmt: skip
        elif early_stopping is not None and bool(np.asarray(run.stopped)[m]):
            stopped.append(f"early stopping: best epoch {int(np.asarray(run.best_epoch)[m])}")
        else:
            stopped.append(None)
    history["stopped"] = stopped
    states = run.state
    if keep_best:
        has_best = jnp.asarray(np.asarray(run.best_epoch) >= 0)
        pick = lambda b, s: jnp.where(has_best.reshape(-1, *[1] * (s.ndim - 1)), b, s)  # noqa: E731
        states = jax.tree.map(pick, run.best_state, run.state)
    return states, history
