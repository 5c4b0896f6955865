"""``fit_many``: a stack of models trained as one vmapped program per chunk of epochs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import callbacks as cbs
from nnfun import chunks, parallel, probes, validation
from nnfun import epochs as programs
from nnfun.fit import _check_grad_error, config_of, starting_state
from nnfun.fit_history import Rows
from nnfun.fit_inputs import prepare_data
from nnfun.progress import Progress


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
    model's last epoch (probes too, where their dtype has NaN); ``history["stopped"]`` lists
    per model why it stopped early (None if it did not): early stopping, or a non-finite loss
    or gradient, after which that model keeps its last finite, completed epoch's state while
    the others train on; ``history["best_epoch"]`` lists each model's best epoch under early
    stopping (Keras's numbers). Each model follows its own ``fit`` (same key, data and
    epochs): its parameters bit for bit without BatchNorm, its logged losses to float32
    rounding (vmapped reductions may sum in another order), and with BatchNorm everything to
    float32 rounding. With ``grad="checked"`` the first epoch over the tolerance warns,
    naming the model, layer and leaf.
    """
    config = config_of(net, config)
    states = starting_state(net, config, states, None, stacked=True)
    epochs_ = validation.check_int("epochs", epochs, 0)
    epoch = validation.check_int("initial_epoch", initial_epoch, 0)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    epochs_per_chunk = validation.check_optional_int("epochs_per_chunk", epochs_per_chunk, 1)
    track = probes.check(track)
    data = prepare_data(net, config, x, y, sample_weight=sample_weight,
                        validation_data=validation_data)  # fmt: skip
    validation.check_batchnorm_batches(net, data[0].shape[0], batch_size)
    names = programs.log_names(config, data[3] is not None)
    if early_stopping is not None and early_stopping.monitor not in names:
        raise ValueError(
            f"early_stopping.monitor: expected one of {names}, got {early_stopping.monitor!r}"
        )
    monitors = () if early_stopping is None else (early_stopping.as_monitor(),)
    keep = early_stopping is not None and early_stopping.restore_best_weights
    run = programs.start_run(states, monitors, (keep,) if monitors else ())
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
        data = tuple(None if a is None else parallel.place_data(a, mesh) for a in data)
        run = parallel.replicate(run, mesh)
    sizer = chunks.ChunkSizer(epochs_per_chunk)
    one = jax.tree.map(lambda a: a[0], states)
    capacity = probes.capacity(track, one, chunks.capacity(sizer.fixed, epochs_ - epoch),
                               (epochs_ - epoch) * int(states.step.shape[0]))  # fmt: skip
    plan = programs.Plan(batch_size, bool(shuffle), capacity, batch_size, monitors,
                       (keep,) if monitors else (), track, mesh, keep_finite=True)  # fmt: skip
    program = programs.compiled_run(net, config, plan, many=True)
    models = int(states.step.shape[0])
    blown_at = [None] * models
    rows: dict[str, list] = {}
    warned = [False] * models
    progress = Progress(verbose, epochs_, epoch)
    try:
        while epoch < epochs_:
            active = ~np.asarray(run.stopped) & np.array([b is None for b in blown_at])
            if not active.any():
                break
            count = sizer.size(min(epochs_ - epoch, capacity))
            started = time.perf_counter()
            run, logs, done, blown = program(run, jnp.asarray(count, jnp.int32),
                                             jnp.asarray(epoch, jnp.int32), data)  # fmt: skip
            done, blown = np.asarray(done), np.asarray(blown)
            sizer.observe(int(done.max()), time.perf_counter() - started)
            logs = jax.device_get(logs)
            span = int(done.max())
            for k, v in logs.items():  # (models, capacity, ...) -> rows of (models, ...)
                for i in range(span):
                    rows.setdefault(k, []).append(
                        _after_stop(np.asarray(v[:, i]), i < done, k in names)
                    )
            for m in np.flatnonzero(blown):
                blown_at[m] = epoch + int(done[m])
            # A blown model's run ends at its last finite epoch: mark it so it rests.
            # Placed as before: another placement (a sharded run's replicated flags, or a
            # single device's uncommitted ones) would compile the chunk program again.
            stopped = np.asarray(run.stopped) | blown
            stopped = jnp.asarray(stopped) if mesh is None else parallel.replicate(stopped, mesh)
            run = run._replace(stopped=stopped)
            for m in range(models):
                if config.grad == "checked" and not warned[m]:
                    columns = {k: [float(logs[k][m, i]) for i in range(int(done[m]))]
                               for k in ("grad_error", "grad_error_leaf")}  # fmt: skip
                    flag = [False]
                    _check_grad_error(net, config, one, Rows(columns, epoch), flag, model=m)
                    warned[m] = flag[0]
            progress.epochs_done(Rows({"loss": [float(np.nanmean(rows["loss"][-span + i]))
                                                for i in range(span)]}, epoch))  # fmt: skip
            epoch += span
    except KeyboardInterrupt:
        print(f"nnfun.fit_many: interrupted after epoch {epoch - 1}", file=sys.stderr)
    finally:
        progress.close()
    history: dict[str, Any] = {k: np.stack(v) for k, v in rows.items() if k != "grad_error_leaf"}
    stopped, best = [], []
    memory = run.memories[0] if monitors else None
    for m in range(models):
        best.append(None if memory is None or int(memory.best_epoch[m]) < 0
                    else int(memory.best_epoch[m]))  # fmt: skip
        if blown_at[m] is not None:
            stopped.append(f"non-finite loss or gradient at epoch {blown_at[m]}; kept the state "
                           f"after epoch {blown_at[m] - 1}")  # fmt: skip
        elif early_stopping is not None and bool(np.asarray(run.stopped)[m]):
            stopped.append(f"early stopping: {early_stopping.monitor} best at epoch {best[m]}")
        else:
            stopped.append(None)
    history["stopped"] = stopped
    if monitors:
        history["best_epoch"] = best
    states = run.state
    if keep:  # the best epoch's weights and statistics; optimiser, step and key go on
        has_best = jnp.asarray(np.asarray(memory.best_epoch) >= 0)
        pick = lambda b, s: jnp.where(has_best.reshape(-1, *[1] * (s.ndim - 1)), b, s)  # noqa: E731
        best_state = run.best_states[0]
        states = states._replace(params=jax.tree.map(pick, best_state.params, states.params),
                                 model_state=jax.tree.map(pick, best_state.model_state,
                                                          states.model_state))  # fmt: skip
    return states, history


def _after_stop(values: np.ndarray, ran: np.ndarray, log: bool) -> np.ndarray:
    """One epoch's values of every model (logs as float64, probes in their own dtype); NaN
    for models that had stopped (integer probes, which have no NaN, keep the buffer's 0)."""
    if log:
        values = values.astype(np.float64)
    if not np.issubdtype(values.dtype, np.floating):
        return values
    return np.where(ran.reshape(-1, *[1] * (values.ndim - 1)), values, np.nan)
