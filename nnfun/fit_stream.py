"""``fit`` / ``evaluate`` / ``predict`` on streams (:mod:`nnfun.sources`): each epoch read
batch by batch, K batches per compiled call (:mod:`nnfun.train_steps`), the next K read,
checked and placed on a background thread (:mod:`nnfun.prefetch`).

``fit``'s host loop drives a ``StreamProgram`` as it drives the compiled chunk of epochs
(same signature, one epoch a call), so history, validation, probes, monitors, callbacks and
checkpoints work unchanged. Same batches in the same order give the same bits as arrays:
the steps are ``train.train_step``, the epoch's logs and monitors ``epochs.close_epoch``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import epochs as programs
from nnfun import parallel, prefetch, program_cache, sources, train, train_steps, validation
from nnfun.fit_inputs import sample_weights


class Feed:
    """What a streamed ``fit`` trains and validates on."""

    def __init__(self, net, config, x, y, *, batch_size, steps_per_epoch, validation_data,
                 validation_steps, validation_split, shuffle, sample_weight, class_weight,
                 steps_per_execution, mesh, uneven="pad"):  # fmt: skip
        if validation_split:
            raise ValueError("validation_split: not supported when x is a stream; pass "
                             "validation_data")  # fmt: skip
        if class_weight is not None:
            raise ValueError("class_weight: not supported when x is a stream; give each "
                             "batch its sample weights")  # fmt: skip
        if uneven not in ("pad", "drop"):
            raise ValueError(f"uneven: expected 'pad' or 'drop', got {uneven!r}")
        steps = validation.check_optional_int("steps_per_epoch", steps_per_epoch, 1)
        self.k = validation.check_int("steps_per_execution", steps_per_execution, 1)
        self.source = sources.open_source(x, y, sample_weight, batch_size=batch_size,
                                          steps=steps, shuffle=bool(shuffle))  # fmt: skip
        self.net, self.config, self.mesh, self.uneven = net, config, mesh, uneven
        self._global_steps = None
        if jax.process_count() > 1:
            if mesh is None:
                raise ValueError("mesh: required for a stream on several processes "
                                 "(nnfun.parallel.data_mesh())")  # fmt: skip
            if batch_size % jax.process_count():
                raise ValueError(f"batch_size: the global batch; expected a multiple of the "
                                 f"{jax.process_count()} processes, got {batch_size}")  # fmt: skip
        self.val_source = None
        self.data = (None, None, None, None, None, None)
        if validation_data is not None and _is_stream_validation(validation_data):
            if jax.process_count() > 1:
                raise ValueError("validation_data: a stream is not supported on several "
                                 "processes yet; pass global arrays (shard_host_data)")  # fmt: skip
            vx = validation_data if sources.is_stream(validation_data) else validation_data[0]
            vy = None if sources.is_stream(validation_data) else validation_data[1]
            self.val_source = sources.open_source(vx, vy, batch_size=batch_size,
                                                  steps=validation_steps, shuffle=False,
                                                  name="validation_data")  # fmt: skip
        elif validation_data is not None:
            self.data = (None, None, None, *_validation_arrays(net, config, validation_data))
        self.checker = sources.BatchChecker(net, config.loss, self.source.name)
        self.batch_hooks = None  # BatchHooks when a callback has training-batch hooks

    @classmethod
    def from_arrays(cls, net, config, data, *, batch_size, shuffle, steps_per_execution, mesh):
        """A feed over arrays already prepared by ``fit`` (split, weighted): the same batches
        in the same order as the compiled epoch, read a group of steps at a time."""
        x, y, w = data[:3]
        source = sources.ArraySource(x, y, w, batch_size, bool(shuffle))
        feed = cls(net, config, source, None, batch_size=batch_size, steps_per_epoch=None,
                   validation_data=None, validation_steps=None, validation_split=0.0,
                   shuffle=shuffle, sample_weight=None, class_weight=None,
                   steps_per_execution=steps_per_execution, mesh=mesh)  # fmt: skip
        feed.data = (None, None, None, *data[3:])
        return feed

    def global_steps(self) -> int:
        """Steps of an epoch on every process: the most batches a process has
        (``uneven="pad"``, missing rows masked) or the fewest (``"drop"``)."""
        if self._global_steps is None:
            from jax.experimental import multihost_utils

            local = self.source.steps()
            if local is None:
                raise ValueError(f"steps_per_epoch: required for {self.source.name} on "
                                 f"{jax.process_count()} processes")  # fmt: skip
            every = np.asarray(multihost_utils.process_allgather(np.int64(local))).ravel()
            self._global_steps = int(every.max() if self.uneven == "pad" else every.min())
        return self._global_steps

    @property
    def validates(self) -> bool:
        return self.val_source is not None or self.data[3] is not None

    def steps(self) -> int | None:
        return self.source.steps()

    def position(self) -> dict:
        return self.source.position()

    def restore(self, position: dict) -> None:
        if position:
            self.source.restore(position)

    def program(self, plan: programs.Plan) -> StreamProgram:
        return StreamProgram(self, plan)


def _is_stream_validation(data) -> bool:
    if sources.is_stream(data):
        return True
    return isinstance(data, (tuple, list)) and len(data) >= 1 and sources.is_stream(data[0])


def _validation_arrays(net, config, data):
    """(x_val, y_val, w_val) checked as fit checks them."""
    if isinstance(data, (tuple, list)) and len(data) == 3:
        xv, yv = validation.check_validation_data(net, config.loss, data[:2])
        return xv, yv, sample_weights("validation_data[2]", data[2], xv.shape[0])
    return (*validation.check_validation_data(net, config.loss, data), None)


class StreamProgram:
    """``program(run, count, first_epoch, data) -> (run, logs, done, blown)`` as
    ``epochs.compiled_run``, reading one epoch of the stream per epoch. On a blow-up ``run``
    is already the last finite epoch's (nothing to replay: a stream cannot be reread);
    ``blow_up`` then says where."""

    def __init__(self, feed: Feed, plan: programs.Plan):
        self.feed, self.plan = feed, plan
        self.steps = train_steps.compiled_steps(feed.net, feed.config, feed.mesh)
        self.close = _compiled_close(feed.net, feed.config, plan)
        self.blow_up: str | None = None

    def __call__(self, run, count, first_epoch, data):
        feed, rows, done, blown = self.feed, [], 0, False
        for i in range(int(count)):
            epoch = int(first_epoch) + i
            state, metrics, first_bad = self._train_epoch(run.state, epoch)
            val = None
            if feed.val_source is not None:  # a streamed validation set, read on the host
                val = jnp.asarray(stream_evaluate(feed.net, feed.config, state, feed.val_source))
            new, row, finite = self.close(data, run, state, metrics, jnp.asarray(epoch), val)
            rows.append(row)
            if not bool(parallel.fetch(finite)):
                blown = True
                kept = f"the state after epoch {epoch - 1}" if epoch else "the starting state"
                self.blow_up = (f"non-finite loss or gradient at epoch {epoch}, step "
                                f"{first_bad + 1} (batch size {self.plan.batch_size}): kept "
                                f"{kept}")  # fmt: skip
                break
            run, done = new, done + 1
            if bool(parallel.fetch(run.stopped)):
                break
        logs = jax.tree.map(lambda *r: jnp.stack(r), *rows)
        return run, logs, jnp.asarray(done), jnp.asarray(blown)

    def _train_epoch(self, state, epoch: int):
        """One epoch from the stream: ``(state, per-batch metrics, first non-finite step)``."""
        feed = self.feed
        perm_key = None
        if feed.source.shuffles and self.plan.shuffle and _shuffled(feed.source):
            key, perm_key = jax.random.split(state.key)  # run_epoch's split, bit for bit
            state = state._replace(key=key)
        checked = (
            (i, feed.checker(batch, i, epoch))
            for i, batch in _indexed(feed.source, epoch, perm_key)
        )
        rows = None
        if jax.process_count() > 1:  # the same steps of the same rows on every process
            rows = self.plan.batch_size // jax.process_count()
            checked = _filled(checked, feed.global_steps(), feed.checker, rows)
        groups = prefetch.Prefetcher(prefetch.groups(checked, feed.k, rows), feed.mesh)
        parts, step, hooks = [], 0, feed.batch_hooks
        try:
            for g in groups:
                if hooks is not None:
                    hooks.begin(step)
                state, metrics = self.steps(state, g.x, g.y, g.w, g.mask, jnp.int32(g.count))
                parts.append(jax.tree.map(lambda a, c=g.count: a[:c], metrics))
                # Keras 3's number for the group's end: its first step + K - 1 (a shorter
                # last group included)
                if hooks is not None and hooks.end(step + feed.k - 1, state, parts):
                    break  # a hook set stop_training: the epoch ends here, as in Keras
                step += g.count
        finally:  # an error or Ctrl-C here: the reading thread stops too
            groups.close()
        feed.source.end_epoch()
        metrics = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
        losses = metrics["loss"]
        metrics["finite"] = jnp.isfinite(losses) & train._all_finite(state.params)
        bad = np.flatnonzero(~np.isfinite(np.asarray(parallel.fetch(losses))))
        return state._replace(epoch=state.epoch + 1), metrics, int(bad[0]) if bad.size else 0


def _shuffled(source) -> bool:
    """run_epoch permutes only when there is more than one batch."""
    if isinstance(source, sources.ArraySource):
        return source.batch_size < source.n
    return source.steps() > 1


def _indexed(source, epoch, perm_key=None):
    """The epoch's batches with their index; an error inside the source names both."""
    it = source.batches(perm_key)
    i = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except sources.SourceError:
            raise
        except Exception as e:
            raise sources.SourceError(
                f"{source.name}, batch {i} of epoch {epoch}: {type(e).__name__}: {e}"
            ) from e
        yield i, batch
        i += 1


def _filled(checked, steps: int, checker, rows: int):
    """This process's batches, then batches of masked rows until the steps every process
    takes (a process whose share ran out still joins each step's collectives)."""
    taken = 0
    for i, batch in checked:
        if taken == steps:
            return
        if batch[0].shape[0] > rows:
            raise sources.SourceError(
                f"{checker.name}, batch {i}: {batch[0].shape[0]} rows; with "
                f"{jax.process_count()} processes each reads at most batch_size / processes "
                f"= {rows} rows a step"
            )
        taken += 1
        yield i, batch
    fx, fy = checker.first
    for i in range(taken, steps):
        empty = (np.zeros((0, *fx.shape[1:]), fx.dtype), np.zeros((0, *fy.shape[1:]), fy.dtype))
        yield i, (*empty, None)


@program_cache.by_structure
def _compiled_close(net, config, plan):
    fn = functools.partial(programs.close_epoch, net, config, plan)
    return train.with_precision(jax.jit(fn), config.precision)


# ---- evaluate / predict ---------------------------------------------------------------------
def stream_evaluate(net, config, state, source) -> list:
    """``[loss, *metrics]`` over a stream, as Keras: batch values weighted by the batches'
    rows (loss) and sample weights (metrics)."""
    program = train.compiled_evaluate(net, config, None)
    checker = sources.BatchChecker(net, config.loss, source.name)
    sums, rows, weights = None, 0.0, 0.0
    for i, batch in _indexed(source, 0):
        x, y, w = checker(batch, i, 0)
        values = np.asarray(parallel.fetch(program(state.params, state.model_state, x, y,
                                                   None if w is None else jnp.asarray(w))),
                            np.float64)  # fmt: skip
        n, total = x.shape[0], float(x.shape[0] if w is None else w.sum())
        part = np.concatenate([values[:1] * n, values[1:] * total])
        sums = part if sums is None else sums + part
        rows, weights = rows + n, weights + total
    source.end_epoch()
    return [sums[0] / rows, *(sums[1:] / max(weights, np.finfo(np.float64).tiny))]


def evaluate(net, config, state, x, y=None, *, batch_size=None, steps=None, sample_weight=None):
    source = sources.open_source(x, y, sample_weight, batch_size=batch_size or 32,
                                 steps=steps, shuffle=False)  # fmt: skip
    return [float(v) for v in stream_evaluate(net, config, state, source)]


def predict(net, state, x, apply, *, batch_size=None, steps=None):
    """Outputs batch by batch; a batch may be ``x`` alone or ``(x, ...)``."""
    if isinstance(x, np.memmap):
        n, b = x.shape[0], batch_size or 32
        parts = (np.asarray(x[i : i + b]) for i in range(0, n, b))
    else:
        source = sources.open_source(x, batch_size=batch_size or 32, steps=steps,
                                     shuffle=False)  # fmt: skip
        parts = (b[0] if isinstance(b, (tuple, list)) else b
                 for _, b in _indexed(_Raw(source), 0))  # fmt: skip
    outs = []
    for i, xb in enumerate(parts):
        xb = np.asarray(xb)
        if xb.shape[1:] != tuple(net.input_shape):
            want = ", ".join(map(str, net.input_shape))
            raise sources.SourceError(f"x, batch {i}: expected shape (batch, {want}), got "
                                      f"{xb.shape}")  # fmt: skip
        outs.append(np.asarray(parallel.fetch(apply(state.params, state.model_state, xb))))
    return np.concatenate(outs)


class _Raw:
    """A source's batches as they come (predict's batches may lack targets)."""

    def __init__(self, source):
        self.source, self.name = source, source.name

    def batches(self, perm_key=None):
        return self.source.batches(perm_key)
