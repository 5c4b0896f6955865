"""A chunk of epochs as one compiled program: ``run_epochs``, a ``lax.while_loop`` over
epochs (each one ``train.run_epoch``) with each epoch's logs, validation, probes, the
non-finite check and the monitored values (early stopping, save-best checkpoints) inside, so
the host sees one round trip per chunk. Epochs carry Keras's numbers: the chunk is told the
number of its first epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nnfun import monitor as monitoring
from nnfun import program_cache, train
from nnfun.monitor import Monitor

Array = jax.Array


class Run(NamedTuple):
    """What a run of epochs carries from one epoch (and one chunk) to the next: the training
    state and, per monitored value, its memory and (when kept) its best epoch's state."""

    state: train.TrainState
    memories: tuple[monitoring.Memory, ...]
    best_states: tuple[train.TrainState | None, ...]
    stopped: Array  # a monitor with a patience asked to stop


class Plan(NamedTuple):
    """The static choices of a run of epochs (part of the compiled program's identity)."""

    batch_size: int
    shuffle: bool
    capacity: int  # the most epochs one call runs: the history buffers' length
    val_batch_size: int | None = None
    monitors: tuple[Monitor, ...] = ()
    keep_best: tuple[bool, ...] = ()  # per monitor: keep its best epoch's state
    track: tuple[tuple[str, Callable], ...] = ()
    mesh: Any = None
    # Keep the last finite epoch's state in the loop (fit_many, where the other models train
    # on); fit instead replays the chunk up to it on the rare blow-up, saving a select a epoch.
    keep_finite: bool = False


def start_run(state: train.TrainState, monitors=(), keep_best=()) -> Run:
    """A Run beginning at ``state``, every monitor's memory fresh (as Keras at the start of
    each ``fit``)."""
    lead = jnp.shape(state.step)  # () for one model, (models,) for a stack
    keep_best = tuple(keep_best) or (False,) * len(monitors)
    floats = [a for a in jax.tree.leaves(state.params) if jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = floats[0].dtype if floats else jnp.float32  # the logs' dtype
    return Run(
        state,
        tuple(monitoring.start(m, lead, dtype) for m in monitors),
        tuple(jax.tree.map(jnp.copy, state) if k else None for k in keep_best),
        jnp.zeros(lead, bool),
    )


def log_names(config: train.Config, validation: bool) -> list[str]:
    """The per-epoch scalar log names in order: loss, metrics, val_ versions, grad_error."""
    names = ["loss", *config.metrics]
    if validation:
        names += [f"val_{k}" for k in ("loss", *config.metrics)]
    if config.grad == "checked":
        names += ["grad_error", "grad_error_leaf"]
    return names


def _record(net, config, plan, data, state, batch_metrics, val=None):
    """One epoch's logs as Keras computes them: the loss is the mean of the batch losses
    weighted by the batches' sizes, each metric the sample-weighted mean over the epoch."""
    x, y, sw, xv, yv, swv = data
    names = log_names(config, xv is not None or val is not None)
    mean = lambda v, w: jnp.sum(v * w) / jnp.maximum(jnp.sum(w), jnp.finfo(v.dtype).tiny)  # noqa: E731
    row = {"loss": mean(batch_metrics["loss"], batch_metrics["size"])}
    row.update({k: mean(batch_metrics[k], batch_metrics["weight"]) for k in config.metrics})
    if val is not None:
        row.update({f"val_{k}": v for k, v in zip(("loss", *config.metrics), val, strict=True)})
    elif xv is not None:
        values = train.evaluate_arrays(net, config, state.params, state.model_state, xv, yv,
                                       swv, batch_size=plan.val_batch_size)  # fmt: skip
        for k, v in zip(("loss", *config.metrics), values, strict=True):
            row[f"val_{k}"] = v
    if config.grad == "checked":
        errors = batch_metrics["grad_error"]  # (steps, leaves)
        worst = jnp.max(errors, axis=0)
        row["grad_error"] = jnp.max(worst)
        row["grad_error_leaf"] = jnp.argmax(worst)
    dtype = batch_metrics["loss"].dtype  # the training dtype: float64 training logs float64
    row = {k: row[k].astype(dtype) for k in names}
    for name, fn in plan.track:
        row[name] = fn(state.params, state.model_state)
    return row


def run_epochs(net, config: train.Config, plan: Plan, run: Run, count, first_epoch, data):
    """Up to ``count`` (<= plan.capacity) epochs as one program, numbered from
    ``first_epoch``.

    ``data`` is ``(x, y, sample_weight, x_val, y_val, val_weight)`` (None where absent).
    Returns ``(run, logs, done, blown)``: logs maps each log name (and each probe of
    ``plan.track``) to a buffer with one row per epoch of which the first ``done`` are
    filled; the loop ends early when a monitor says stop or an epoch turns non-finite
    (``blown``). Then ``run`` is the last finite, completed epoch's with ``plan.keep_finite``;
    without it, the failed epoch's (rerun ``done`` epochs from the same start to get it).
    """
    x, y, sw = data[:3]

    def epoch_of(run):
        return train.run_epoch(net, config, plan.batch_size, plan.shuffle, run.state, x, y, sw,
                               mesh=plan.mesh, guard=False)  # fmt: skip

    def body(carry):
        i, run, logs, halted, _ = carry
        new, row, finite = close_epoch(net, config, plan, data, run, *epoch_of(run),
                                       first_epoch + i)  # fmt: skip
        run = _select(finite, new, run) if plan.keep_finite else new
        logs = jax.tree.map(lambda buf, v: buf.at[i].set(v), logs, row)
        return i + finite.astype(jnp.int32), run, logs, halted | ~finite | run.stopped, ~finite

    shapes = jax.eval_shape(lambda: _row_of_one_step(net, config, plan, data, run.state))
    logs = jax.tree.map(lambda s: jnp.zeros((plan.capacity, *s.shape), s.dtype), shapes)
    carry = (jnp.zeros((), jnp.int32), run, logs, run.stopped, jnp.zeros_like(run.stopped))
    done, run, logs, _, blown = jax.lax.while_loop(lambda c: (c[0] < count) & ~c[3], body, carry)
    return run, logs, done, blown


def _row_of_one_step(net, config, plan: Plan, data, state):
    """A logs row shaped as an epoch's, from one training step: the shapes and dtypes of the
    logs buffers without tracing a whole epoch (or its validation) a second time."""
    x, y, sw = (a if a is None else a[: plan.batch_size] for a in data[:3])
    state, metrics = train.train_step(net, config, state, x, y, sw)
    val = None if data[3] is None else [metrics["loss"]] * (1 + len(config.metrics))
    return _record(net, config, plan, data, state, jax.tree.map(lambda a: a[None], metrics), val)


def close_epoch(net, config, plan: Plan, data, run: Run, state, batch_metrics, epoch,
                val=None):  # fmt: skip
    """After an epoch's steps (``state``, per-batch metrics): ``(run, row, finite)``, the
    epoch's logs row, each monitor's memory and best state updated. ``val``: the validation
    values when computed elsewhere (a streamed validation set)."""
    finite = jnp.all(batch_metrics["finite"])
    row = _record(net, config, plan, data, state, batch_metrics, val)
    memories, best_states, stop = [], [], jnp.zeros_like(run.stopped)
    for m, memory, best, keep in zip(plan.monitors, run.memories, run.best_states,
                                     plan.keep_best, strict=True):  # fmt: skip
        memory, improved, stops = monitoring.update(m, memory, row[m.name], epoch)
        memories.append(memory)
        best_states.append(_select(improved, state, best) if keep else None)
        stop = stop | stops
    return Run(state, tuple(memories), tuple(best_states), run.stopped | stop), row, finite


def _select(flag, new, old):
    if old is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


@program_cache.by_structure
def compiled_run(net, config: train.Config, plan: Plan, many: bool = False):
    """``run_epochs`` jitted (vmapped over a stack of runs with ``many``), under the
    config's matmul precision."""
    fn = functools.partial(run_epochs, net, config, plan)
    if many:
        fn = jax.vmap(fn, in_axes=(0, None, None, None))
    # Not donated: the caller keeps the chunk's starting run (what Ctrl-C returns, and the
    # start of a replay after a blow-up) at no more memory than a copy would take.
    return train.with_precision(jax.jit(fn), config.precision)
