"""The host loop around the training programs: chunks of epochs, progress, callbacks,
checkpoints, Ctrl-C; and evaluate / predict.

``fit`` runs the epochs ``initial_epoch .. epochs - 1`` (Keras semantics: each call trains
``epochs - initial_epoch`` more) as chunks, each chunk one call of the compiled
``epochs.run_epochs``: the host sees one round trip per chunk, not per epoch. The chunk
length is timed (about half a second a chunk, never past the epochs left or a checkpoint
boundary) unless ``epochs_per_chunk`` fixes it; the results are the same bits either way.
The run's bookkeeping (numbering, best epoch, why it stopped) is one ``RunRecord``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import callbacks as cbs
from nnfun import (
    chunks,
    fit_checkpoints,
    fit_history,
    parallel,
    probes,
    program_cache,
    sources,
    train,
    validation,
)
from nnfun import epochs as programs
from nnfun.batch_hooks import BatchHooks
from nnfun.fit_inputs import prepare_data, sample_weights
from nnfun.progress import Progress
from nnfun.run_record import RunRecord


def config_of(net, config=None) -> train.Config:
    if config is None:
        if getattr(net, "compiled", None) is None:
            raise ValueError("config: none given and the model is not compiled; call compile()")
        config = net.compiled
    validation.check_instance("config", config, train.Config, "an nnfun.Config from Config.make")
    return config


def check_state(net, state, stacked=False) -> None:
    validation.check_instance("state", state, train.TrainState, "a TrainState (init_state)")
    validation.check_params(net, state.params, "state.params", stacked=stacked)


def starting_state(net, config, state, key, stacked=False) -> train.TrainState:
    """The state a run starts from, with ``config``'s optimiser: moments kept, the config's
    hyper-parameters (learning rate) in force; a state of another optimiser is refused."""
    if state is None:
        return train.init_state(net, config, jax.random.key(0) if key is None else key)
    if key is not None:
        raise ValueError("key: a state was given too; its key drives training")
    check_state(net, state, stacked)
    if stacked and state.opt_state is None:
        raise ValueError("states.opt_state: None; build the stack with init_many")
    return train.with_optimizer(state, config, stacked=stacked, switch=False)


class RunHandle:
    """What callbacks see as ``self.model`` under the functional ``fit``: the current
    ``state`` and a ``stop_training`` flag (the Keras face passes the model itself)."""

    def __init__(self, state):
        self.state, self.stop_training = state, False


def _watched(callbacks, names) -> tuple[list, list, object | None]:
    """(monitors, keep-best flags, the EarlyStopping) for the compiled run: early stopping's
    rule first, then each save-best checkpoint's own; every monitored name checked."""
    stopping = next((c for c in callbacks if isinstance(c, cbs.EarlyStopping)), None)
    savers = [c for c in callbacks if isinstance(c, cbs.ModelCheckpoint) and c.save_best_only]
    plateaus = [c for c in callbacks if isinstance(c, cbs.ReduceLROnPlateau)]
    for c in [stopping, *savers, *plateaus]:
        if c is not None and c.monitor not in names:
            raise ValueError(
                f"{type(c).__name__}.monitor: expected one of {names}, got {c.monitor!r}"
            )
    watched = ([stopping] if stopping is not None else []) + savers
    keep = [c.restore_best_weights if c is stopping else True for c in watched]
    return [c.as_monitor() for c in watched], keep, stopping


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
    model=None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    steps_per_execution: int = 1,
    uneven: str = "pad",
):
    """Trains ``net`` for the epochs ``initial_epoch .. epochs - 1``; returns ``(state, history)``.

    history maps "loss", each metric and their "val_" versions to per-epoch lists (this
    call's epochs, Keras's logs: the loss is the mean of the batch losses weighted by batch
    size, each metric its sample-weighted mean), "epoch" to the epochs' numbers (from
    ``initial_epoch``), each ``track`` probe ``fn(params, model_state)`` to its values stacked
    over epochs, "learning_rate" when a callback changes it, "best_epoch" (Keras's number)
    under a monitor, and says why training ended early under "stopped" (a non-finite loss or
    gradient, early stopping, a callback, Ctrl-C). The state returned is the last finite,
    completed epoch's; under ``EarlyStopping(restore_best_weights=True)`` its weights and
    BatchNorm statistics are the best epoch's while the optimiser state, step and key go on
    (Keras). After Ctrl-C it is the last completed chunk's. A given ``state`` continues with
    ``config``'s optimiser and hyper-parameters (its moments kept when the optimiser is the
    same kind). With ``checkpoint_dir`` the training state, the monitors' memory, the record
    and the history are saved every ``checkpoint_every`` epochs, and a call that finds a
    checkpoint there resumes from the newest intact one. ``sample_weight`` (n,) weighs each
    sample's loss (Keras's reduction: sum(w L) / batch size), the metrics and BatchNorm's
    batch statistics (as frequencies; Keras's BatchNorm ignores weights), and is split with
    ``validation_split``; ``class_weight`` {class: weight} weighs the training rows only. With
    ``mesh`` (``nnfun.parallel.data_mesh()``) each batch is split over its "data" axis and the
    parameters are replicated. ``on_state(state)`` is called after every chunk; ``model`` is
    what callbacks see as ``self.model`` (the Keras face passes itself).

    ``x`` may also be a stream read batch by batch (:mod:`nnfun.fit_stream`): a generator of
    ``(x, y[, sample_weight])`` batches (``steps_per_epoch`` of them an epoch), a
    ``PyDataset``, a Grain dataset or loader, or a memory-mapped array (with ``y``);
    ``validation_data`` likewise (``validation_steps``); ``steps_per_execution`` batches
    run per compiled call. On several processes each passes its own share; every process
    takes the most steps any has, its missing rows masked (``uneven="pad"``), or the fewest
    (``"drop"``).
    """
    config = config_of(net, config)
    epochs_ = validation.check_int("epochs", epochs, 0)
    initial_epoch = validation.check_int("initial_epoch", initial_epoch, 0)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    val_batch = validation.check_optional_int("validation_batch_size", validation_batch_size, 1)
    checkpoint_every = validation.check_int("checkpoint_every", checkpoint_every, 1)
    keep_checkpoints = validation.check_int("keep_checkpoints", keep_checkpoints, 1)
    epochs_per_chunk = validation.check_optional_int("epochs_per_chunk", epochs_per_chunk, 1)
    track = probes.check(track)
    feed = None
    if sources.is_stream(x):
        from nnfun.fit_stream import Feed

        feed = Feed(net, config, x, y, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                    validation_data=validation_data, validation_steps=validation_steps,
                    validation_split=validation_split, shuffle=shuffle,
                    sample_weight=sample_weight, class_weight=class_weight,
                    steps_per_execution=steps_per_execution, mesh=mesh,
                    uneven=uneven)  # fmt: skip
        data = feed.data
    else:
        data = prepare_data(
            net, config, x, y, sample_weight=sample_weight, class_weight=class_weight,
            validation_data=validation_data, validation_split=validation_split,
        )  # fmt: skip
        validation.check_batchnorm_batches(net, data[0].shape[0], batch_size)
    callbacks = cbs.as_list(callbacks)
    if feed is None and any(c.needs_every_batch for c in callbacks):
        if jax.process_count() > 1:
            raise ValueError("callbacks: training-batch hooks are not supported on several "
                             "processes yet; use on_epoch_end")  # fmt: skip
        from nnfun.fit_stream import Feed

        feed = Feed.from_arrays(net, config, data, batch_size=batch_size, shuffle=shuffle,
                                steps_per_execution=steps_per_execution, mesh=mesh)  # fmt: skip
        data = feed.data
    if early_stopping is not None:
        validation.check_instance("early_stopping", early_stopping, cbs.EarlyStopping,
                                  "an nnfun.EarlyStopping")  # fmt: skip
        if any(isinstance(c, cbs.EarlyStopping) for c in callbacks):
            raise ValueError("early_stopping: also given in callbacks; pass it once")
        callbacks.append(early_stopping)
    state = starting_state(net, config, state, key)
    names = programs.log_names(config, feed.validates if feed else data[3] is not None)
    monitors, keep_best, stopping = _watched(callbacks, names)
    run = programs.start_run(state, monitors, keep_best)
    record = RunRecord(initial_epoch, epochs_)
    history: dict = {k: [] for k in names if k != "grad_error_leaf"}
    if checkpoint_dir is not None:
        resumed = fit_checkpoints.resume(checkpoint_dir, run, track, epochs_)
        if resumed is not None:
            run, history, record = resumed
            run = run._replace(state=train.with_optimizer(run.state, config, switch=False))
            if feed is not None:
                feed.restore(record.position)
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
        data = tuple(None if a is None else parallel.place_data(a, mesh) for a in data)
        run = parallel.replicate(run, mesh)
    every_epoch = any(c.needs_every_epoch for c in callbacks)
    sizer = chunks.ChunkSizer(1 if every_epoch or feed else epochs_per_chunk)
    left = epochs_ - record.epoch
    capacity = probes.capacity(track, state, chunks.capacity(sizer.fixed, left), left)
    plan = programs.Plan(batch_size, bool(shuffle), capacity, val_batch or batch_size,
                       tuple(monitors), tuple(keep_best), track, mesh)  # fmt: skip
    if feed is not None:
        program, steps = feed.program(plan), feed.steps()
    else:
        program = programs.compiled_run(net, config, plan)
        steps = train.steps_per_epoch(data[0].shape[0], batch_size)
    progress = Progress(verbose, epochs_, record.epoch, steps)
    handle = model if model is not None else RunHandle(run.state)
    if feed is not None and any(c.needs_every_batch for c in callbacks):

        def show_state(state):
            if isinstance(handle, RunHandle):
                handle.state = state
            if on_state is not None:
                on_state(state)

        feed.batch_hooks = BatchHooks(callbacks, handle, show_state, tuple(config.metrics))
    for c in callbacks:
        c.set_model(handle)
        c.set_params({"epochs": epochs_, "steps": steps, "verbose": verbose})
        c.on_train_begin()
    lr_callbacks = [c for c in callbacks if getattr(c, "changes_learning_rate", False)]
    if lr_callbacks:
        history.setdefault("learning_rate", [])
    warned = [False]
    interrupt = chunks.Interrupt()
    stopped = bool(parallel.fetch(run.stopped))
    try:
        while record.running and not stopped:
            boundary = fit_checkpoints.to_boundary(record.epoch, checkpoint_every, checkpoint_dir)
            count = sizer.size(min(record.epochs - record.epoch, boundary, capacity))
            if every_epoch:
                run = _before_epoch(callbacks, lr_callbacks, run, record.epoch)
            lr = train.learning_rate(run.state) if lr_callbacks else None
            started = time.perf_counter()
            with interrupt.deferred():
                before = run
                first = jnp.asarray(record.epoch, jnp.int32)
                run, logs, done, blown = program(run, jnp.asarray(count, jnp.int32), first, data)
                done, blown = (int(v) for v in parallel.fetch((done, blown)))
                sizer.observe(done, time.perf_counter() - started)
                if blown and feed is None:  # the rare blow-up: rerun the finite epochs
                    run = program(before, jnp.asarray(done, jnp.int32), first, data)[0]
                rows = fit_history.append_rows(logs, done, record.epoch, names, track, history)
                record.advance(done)
                if feed is not None:
                    record.position = feed.position()
                memory = parallel.fetch(run.memories)
                stopped = bool(parallel.fetch(run.stopped))
            if stopping is not None:
                record.best(int(memory[0].best_epoch), float(memory[0].best_value))
            _check_grad_error(net, config, run.state, rows, warned)
            if lr_callbacks:
                history["learning_rate"].extend([lr] * done)
                rows.add("learning_rate", lr)
            progress.epochs_done(rows)
            if isinstance(handle, RunHandle):
                handle.state = run.state
            if on_state is not None:
                on_state(run.state)
            if not every_epoch:
                for epoch, _ in rows:
                    for c in callbacks:
                        c.on_epoch_begin(epoch)
            run = _after_epochs(callbacks, lr_callbacks, run, rows)
            _save_models(callbacks, monitors, before, run, rows, memory)
            if checkpoint_dir is not None and done and record.epoch % checkpoint_every == 0:
                fit_checkpoints.save(checkpoint_dir, run, history, record, keep_checkpoints)
            if blown:
                record.stop(
                    program.blow_up
                    if feed
                    else _blow_up(net, config, plan, run.state, data, record.last_epoch)
                )
                # Said whatever the verbosity: training ended before the epochs asked for.
                if parallel.is_main_process():
                    warnings.warn(f"nnfun.fit: {record.stop_reason}", RuntimeWarning, stacklevel=2)
            elif stopped and stopping is not None:
                record.early_stop(stopping.monitor)
            elif getattr(handle, "stop_training", False):
                record.stop(f"stopped by a callback after epoch {record.last_epoch}")
            if parallel.any_process(interrupt.flag):  # one decision for every process
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        record.stop(
            "interrupted before its first epoch ended"
            if record.last_epoch is None
            else f"interrupted after epoch {record.last_epoch}"
        )
        if parallel.is_main_process():
            print(f"nnfun.fit: {record.stop_reason}; returning its state", file=sys.stderr)
    finally:
        progress.close()
    state = _finish(stopping, run, record)
    history = fit_history.finish(history, record, track, stopping)
    for c in callbacks:
        c.on_train_end({k: v[-1] for k, v in history.items() if isinstance(v, list) and v})
    if on_state is not None:
        on_state(state)
    return state, history


def _before_epoch(callbacks, lr_callbacks, run, epoch: int):
    """Per-epoch hooks before an epoch (the chunk is that one epoch)."""
    for c in callbacks:
        c.on_epoch_begin(epoch)
    for c in lr_callbacks:
        if isinstance(c, cbs.LearningRateScheduler):
            lr = c.learning_rate_before(epoch, train.learning_rate(run.state))
            run = run._replace(state=train.with_learning_rate(run.state, lr))
    return run


def _after_epochs(callbacks, lr_callbacks, run, rows):
    """Each callback's ``on_epoch_end`` for every epoch of the chunk; a plateau's new rate."""
    for epoch, logs in rows:
        logs = {k: v for k, v in logs.items() if k != "grad_error_leaf"}
        for c in lr_callbacks:
            if isinstance(c, cbs.ReduceLROnPlateau):
                lr = c.learning_rate_after(epoch, train.learning_rate(run.state), logs)
                run = run._replace(state=train.with_learning_rate(run.state, lr))
        for c in callbacks:
            c.on_epoch_end(epoch, logs)
    return run


def _save_models(callbacks, monitors, before, run, rows, memory) -> None:
    """ModelCheckpoint: the last epoch's model, or a save-best one's best epoch's when it
    changed during the chunk (each checkpoint by its own rule)."""
    if not len(rows):
        return
    savers = iter(range(len(monitors) - sum(m.patience is None for m in monitors), len(monitors)))
    for c in callbacks:
        if not isinstance(c, cbs.ModelCheckpoint):
            continue
        if not c.save_best_only:
            c.save(run.state, *rows[-1])
            continue
        i = next(savers)
        best = int(memory[i].best_epoch)
        if best != int(parallel.fetch(before.memories[i].best_epoch)) and best >= rows.first:
            c.save(run.best_states[i], *rows[best - rows.first])


def _blow_up(net, config, plan, state, data, epoch: int) -> str:
    """Replays the epoch that turned non-finite, guarded, to name its step and leaf."""
    replay = train.compiled_epoch(net, config, plan.batch_size, plan.shuffle, plan.mesh)
    _, metrics = replay(state, *data[:3])
    finite = np.asarray(metrics["finite"])
    step = int(np.argmin(finite))
    flags = np.asarray(metrics["grads_finite"])[step]
    paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
    bad = [path for path, ok in zip(paths, flags, strict=True) if not ok]
    where = "the loss"
    if bad:  # path = (layer index, leaf name)
        layer, leaf = bad[0][0].idx, bad[0][1].key
        where = (f"first non-finite leaf params[{layer}]['{leaf}'] (layer {layer}, "
                 f"{net.layers[layer]}, {leaf})")  # fmt: skip
    kept = "the starting state" if epoch is None else f"the state after epoch {epoch}"
    failed = 0 if epoch is None else epoch + 1
    return (f"non-finite loss or gradient at epoch {failed}, step {step + 1} (batch size "
            f"{plan.batch_size}): {where}; kept {kept}")  # fmt: skip


def _finish(stopping, run, record) -> train.TrainState:
    """The state fit returns, and EarlyStopping's Keras attributes and messages."""
    state = run.state
    if stopping is None:
        return state
    stopping.stopped_epoch = record.stopped_epoch or 0
    stopping.best_epoch = record.best_epoch if record.best_epoch is not None else 0
    stopping.best = record.best_value
    main = parallel.is_main_process()
    if stopping.verbose and main and stopping.stopped_epoch > 0:
        print(f"Epoch {stopping.stopped_epoch + 1}: early stopping", flush=True)
    if stopping.restore_best_weights and record.best_epoch is not None:
        best = run.best_states[0]
        state = state._replace(params=best.params, model_state=best.model_state)
        if stopping.verbose and main:
            print(f"Restoring model weights from the end of the best epoch: "
                  f"{record.best_epoch + 1}.", flush=True)  # fmt: skip
    return state


def _check_grad_error(net, config, state, rows, warned, model: int | None = None) -> None:
    """grad="checked": warn once, naming the layer and leaf (and the model of a stack), when
    an epoch's worst disagreement between the manual gradient and jax.grad exceeds the
    tolerance."""
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
            which = "" if model is None else f"model {model}: "
            warnings.warn(
                f"grad='checked': {which}the manual gradient of params[{layer}]['{leaf}'] "
                f"(layer {layer}, {net.layers[layer]}) differs from jax.grad by relative error "
                f"{row['grad_error']:.3g} at epoch {epoch} (tolerance {limit:.1g})",
                RuntimeWarning,
                stacklevel=3,
            )
            warned[0] = True
            return


# ---- evaluate / predict -----------------------------------------------------------------------
def evaluate(net, state, x, y=None, *, config=None, batch_size=None, sample_weight=None,
             steps=None) -> list:  # fmt: skip
    """``[loss, *metrics]`` in evaluation mode over all of (x, y), as Keras: the loss is
    sum(w L) / n plus L1/L2, each metric its sample-weighted mean. ``x`` may be a stream
    (as for ``fit``; ``steps`` batches of it)."""
    config = config_of(net, config)
    check_state(net, state)
    if sources.is_stream(x):
        from nnfun import fit_stream

        return fit_stream.evaluate(net, config, state, x, y, batch_size=batch_size,
                                   steps=steps, sample_weight=sample_weight)  # fmt: skip
    x, y = validation.check_data(net, config.loss, x, y)
    w = sample_weights("sample_weight", sample_weight, x.shape[0])
    batch_size = validation.check_optional_int("batch_size", batch_size, 1)
    program = train.compiled_evaluate(net, config, batch_size)
    values = program(state.params, state.model_state, x, y, w)
    return [float(v) for v in parallel.fetch(values)]


def predict(net, state, x, *, batch_size=None, as_numpy=True, steps=None):
    """Outputs of the network in evaluation mode, (batch, outputs), in batches of
    ``batch_size`` (default: all at once); ``x`` may be a stream (``steps`` batches)."""
    check_state(net, state)
    if sources.is_stream(x):
        from nnfun import fit_stream

        return fit_stream.predict(net, state, x, _apply_eval(net), batch_size=batch_size,
                                  steps=steps)  # fmt: skip
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


@program_cache.by_structure
def _apply_eval(net):
    return jax.jit(lambda p, s, x: net.apply(p, x, state=s))


def __getattr__(name: str):
    if name == "fit_many":  # its own module; reachable here as before
        from nnfun.fit_many import fit_many

        return fit_many
    raise AttributeError(f"module 'nnfun.fit' has no attribute {name!r}")
