"""Training: one jitted step, one compiled program per epoch, fit / evaluate / predict.

``train_step(net, config, state, x, y)`` is a pure function ``(state, batch) -> (state,
metrics)``. ``run_epoch`` shuffles with the state's key, gathers mini-batches on the device
and ``lax.scan``s the step over them; a last partial batch gets one more step of its own
size (nothing is dropped). ``fit`` loops over epochs in Python for the progress bar,
validation, early stopping, checkpoints and Ctrl-C, and ``fit_many`` ``vmap``s whole
epochs over a stack of states so many models train in one program.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnfun import losses, parallel, validation

Array = jax.Array

OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], float]] = {
    # name: (optax factory taking learning_rate, default learning rate)
    "sgd": (optax.sgd, 0.01),
    "gd": (optax.sgd, 0.01),
    "momentum": (functools.partial(optax.sgd, momentum=0.9), 0.01),
    "nesterov": (functools.partial(optax.sgd, momentum=0.9, nesterov=True), 0.01),
    "adagrad": (optax.adagrad, 0.01),
    "rmsprop": (optax.rmsprop, 0.001),
    "adam": (optax.adam, 0.001),
}


def _accuracy(output: Array, y: Array) -> Array:
    """Per-sample hit: argmax for several outputs, output > 0.5 for one sigmoid output."""
    target = losses.targets_like(output, y)
    if output.shape[-1] == 1:
        return ((output[:, 0] > 0.5) == (target[:, 0] > 0.5)).astype(output.dtype)
    return (jnp.argmax(output, -1) == jnp.argmax(target, -1)).astype(output.dtype)


METRICS: dict[str, Callable[[Array, Array], Array]] = {
    # name: per-sample metric (output, y) -> (batch,)
    "accuracy": _accuracy,
    "mae": lambda out, y: jnp.mean(jnp.abs(out - losses.targets_like(out, y)), -1),
    "mse": lambda out, y: jnp.mean((out - losses.targets_like(out, y)) ** 2, -1),
}


def get_optimizer(name: str | optax.GradientTransformation, learning_rate=None):
    """An optax optimiser by name (its learning rate injected so it can vary per model)."""
    if isinstance(name, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError("learning_rate: give it to the optax optimizer you pass, not here")
        return name
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer: expected one of {sorted(OPTIMIZERS)} or an optax "
            f"GradientTransformation, got {name!r}"
        )
    factory, default = OPTIMIZERS[name]
    lr = default if learning_rate is None else learning_rate
    validation.check_learning_rate(lr)
    if callable(lr):  # a schedule
        return factory(learning_rate=lr)
    return optax.inject_hyperparams(factory)(learning_rate=lr)


PRECISIONS = (None, "default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


class Config(NamedTuple):
    """What compile() chooses: loss, optimiser, metrics, gradient source, penalties."""

    loss: losses.Loss
    optimizer: optax.GradientTransformation
    metrics: tuple[str, ...] = ()
    grad: str = "autodiff"  # or "manual": the hand-written backprop
    l1: float = 0.0
    l2: float = 0.0
    compute_dtype: str | None = None  # "bfloat16": low-precision matmuls, float32 params/loss
    precision: str | None = None  # jax.default_matmul_precision for training: "highest", ...

    @classmethod
    def make(
        cls,
        loss,
        optimizer="adam",
        metrics=(),
        *,
        grad="autodiff",
        l1=0.0,
        l2=0.0,
        compute_dtype=None,
        precision=None,
        **opt_kw,
    ) -> Config:
        if isinstance(metrics, str):
            metrics = (metrics,)
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"metrics: expected names from {sorted(METRICS)}, got {m!r}")
        if grad not in ("autodiff", "manual"):
            raise ValueError(f"grad: expected 'autodiff' or 'manual', got {grad!r}")
        for name, value in (("l1", l1), ("l2", l2)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        unknown = set(opt_kw) - {"learning_rate"}
        if unknown:
            raise TypeError(f"compile: unexpected arguments {sorted(unknown)}")
        if compute_dtype is not None:
            compute_dtype = jnp.dtype(compute_dtype).name
            if compute_dtype not in ("float32", "bfloat16", "float16"):
                raise ValueError(
                    f"compute_dtype: expected None, 'float32', 'bfloat16' or 'float16', "
                    f"got {compute_dtype!r}"
                )
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        return cls(
            losses.get(loss),
            get_optimizer(optimizer, **opt_kw),
            tuple(metrics),
            grad,
            l1,
            l2,
            compute_dtype,
            precision,
        )


class TrainState(NamedTuple):
    """Everything training changes: a pytree, so it jits, vmaps and checkpoints."""

    params: list
    opt_state: Any
    model_state: list  # BatchNorm running statistics, [] entries elsewhere
    key: Array  # consumed for shuffling, dropout and RReLU
    step: Array
    epoch: Array


def init_state(net, config: Config, key: Array, params=None) -> TrainState:
    """A fresh TrainState; ``params`` defaults to ``net.init`` with part of ``key``."""
    init_key, train_key = jax.random.split(key)
    if params is None:
        params = net.init(init_key)
    else:
        net.check_params(params)
    return TrainState(
        params,
        config.optimizer.init(params),
        net.init_state(),
        train_key,
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(net, config: Config, state: TrainState, x, y, sample_weight=None):
    """One optimisation step on a batch: ``(state, metrics)``.

    metrics holds the batch ``loss``, each compiled metric's batch mean, ``finite`` (False
    when the loss, a gradient or an updated parameter was non-finite) and ``grads_finite``,
    one flag per leaf (gradient and updated parameter both finite).
    """
    key, step_key = jax.random.split(state.key)
    kwargs = dict(
        loss=config.loss,
        state=state.model_state,
        key=step_key,
        train=True,
        sample_weight=sample_weight,
        l1=config.l1,
        l2=config.l2,
    )
    if config.compute_dtype is not None:
        kwargs["compute_dtype"] = config.compute_dtype
    if config.grad == "manual":
        (value, aux), grads = net.value_and_manual_grad(state.params, x, y, **kwargs)
    else:
        (value, aux), grads = jax.value_and_grad(net.objective, has_aux=True)(
            state.params, x, y, **kwargs
        )
    updates, opt_state = config.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # New params too: a huge step can overflow them even when the gradient is finite.
    finite = jnp.isfinite(value) & _all_finite(grads) & _all_finite(params)
    new = TrainState(params, opt_state, aux.state, key, state.step + 1, state.epoch)
    flags = _leaf_flags(grads) & _leaf_flags(params)
    metrics = {"loss": value, "finite": finite, "grads_finite": flags}
    for name in config.metrics:
        metrics[name] = jnp.mean(METRICS[name](aux.output, y))
    return new, metrics


def _leaf_flags(tree) -> Array:
    """One bool per leaf: is every element finite (names the culprit after a blow-up)."""
    leaves = jax.tree.leaves(tree)
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]) if leaves else jnp.ones(0, bool)


def _epoch_batches(n: int, batch_size: int) -> tuple[int, int]:
    return divmod(n, batch_size)


def run_epoch(
    net,
    config: Config,
    batch_size: int,
    shuffle: bool,
    state: TrainState,
    x,
    y,
    mesh=None,
    guard: bool = True,
):
    """One epoch as one program: ``(state, metrics)`` with per-batch metric arrays.

    Shuffles with the state's key, scans the step over the full batches, then takes one
    step on the remainder. With ``guard`` steps after a non-finite one are skipped (metrics
    say which, leaf by leaf). Without it the steps run unchecked and ``metrics["finite"]``
    only says whether each loss and the final parameters are finite: the fast path, which
    ``fit`` replays guarded on the rare epoch that blows up.
    With a ``mesh`` every batch that divides over its "data" axis is split across devices.
    """
    n = x.shape[0]
    full, rest = _epoch_batches(n, batch_size)
    key, perm_key = jax.random.split(state.key)
    order = jax.random.permutation(perm_key, n) if shuffle else jnp.arange(n)
    state = state._replace(key=key)

    def step(carry, idx):
        state, healthy = carry
        xb, yb = x[idx], y[idx]
        if mesh is not None and idx.shape[0] % parallel.data_size(mesh) == 0:
            xb, yb = parallel.constrain_batch((xb, yb), mesh)
        new, metrics = train_step(net, config, state, xb, yb)
        if not guard:  # the unused finite flags are dead code to the compiler
            return (new, healthy), {k: metrics[k] for k in ("loss", *config.metrics)}
        healthy = healthy & metrics["finite"]
        # Keep the last finite state: one select over the state, no host round trip.
        state = jax.tree.map(lambda a, b: jnp.where(healthy, a, b), new, state)
        return (state, healthy), {**metrics, "finite": healthy}

    carry = (state, jnp.asarray(True))
    parts = []
    if full:
        carry, metrics = jax.lax.scan(step, carry, order[: full * batch_size].reshape(full, -1))
        parts.append(metrics)
    if rest:
        carry, metrics = step(carry, order[full * batch_size :])
        parts.append(jax.tree.map(lambda a: a[None], metrics))
    metrics = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
    state = carry[0]
    if not guard:  # a non-finite gradient always reaches the parameters or the loss
        metrics["finite"] = jnp.isfinite(metrics["loss"]) & _all_finite(state.params)
    return state._replace(epoch=state.epoch + 1), metrics


@functools.lru_cache(maxsize=64)
def _compiled_epoch(
    net, config: Config, batch_size: int, shuffle: bool, many: bool, mesh=None, guard=True
):
    fn = functools.partial(run_epoch, net, config, batch_size, shuffle, mesh=mesh, guard=guard)
    if many:
        fn = jax.vmap(fn, in_axes=(0, None, None))
    jitted = jax.jit(fn, donate_argnums=0)
    if config.precision is None:
        return jitted

    def with_precision(*args):  # the precision is part of jit's cache key: set it per call
        with jax.default_matmul_precision(config.precision):
            return jitted(*args)

    return with_precision


def _batch_weights(n: int, batch_size: int) -> np.ndarray:
    full, rest = _epoch_batches(n, batch_size)
    return np.array([batch_size] * full + ([rest] if rest else []), np.float64)


def _summarise(metrics: dict, n: int, batch_size: int, names: Sequence[str]) -> dict:
    """Sample-weighted epoch means of the per-batch metrics (skipped steps excluded)."""
    finite = np.asarray(metrics["finite"])
    w = _batch_weights(n, batch_size) * finite
    total = max(w.sum(), 1.0)
    return {k: float(np.sum(np.asarray(metrics[k]) * w) / total) for k in ("loss", *names)}


def evaluate(net, state: TrainState, x, y, *, config: Config | None = None, batch_size=None):
    """[loss, *metrics] in evaluation mode over all of (x, y); loss includes L1/L2."""
    config = _config_of(net, config)
    _check_state(net, state)
    x, y = validation.check_data(net, config.loss, x, y)
    batch_size = validation.check_optional_int("batch_size", batch_size, 1)
    n = x.shape[0]
    size = n if batch_size is None else batch_size
    totals = None
    for i in range(0, n, size):
        values = _evaluate_batch(net, config, state.params, state.model_state, x[i : i + size],
                                 y[i : i + size])  # fmt: skip
        part = np.asarray(values, np.float64) * min(size, n - i)
        totals = part if totals is None else totals + part
    totals = totals / n
    totals[0] += float(net.penalty(state.params, l1=config.l1, l2=config.l2))
    return [float(v) for v in totals]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate_batch(net, config, params, model_state, x, y):
    value, aux = net.objective(params, x, y, loss=config.loss, state=model_state)
    return jnp.stack([value] + [jnp.mean(METRICS[m](aux.output, y)) for m in config.metrics])


@functools.partial(jax.jit, static_argnums=0)
def _apply_eval(net, params, model_state, x):
    return net.apply(params, x, state=model_state)


def predict(net, state: TrainState, x, *, batch_size=None, as_numpy=True):
    """Outputs of the trained network in evaluation mode, (batch, outputs)."""
    _check_state(net, state)
    x = validation.check_x(net, x)
    batch_size = validation.check_optional_int("batch_size", batch_size, 1)
    if batch_size is None or batch_size >= x.shape[0]:
        out = _apply_eval(net, state.params, state.model_state, x)
    else:
        out = jnp.concatenate(
            [
                _apply_eval(net, state.params, state.model_state, x[i : i + batch_size])
                for i in range(0, x.shape[0], batch_size)
            ]
        )
    return np.asarray(out) if as_numpy else out


def _config_of(net, config=None) -> Config:
    if config is None:
        if getattr(net, "compiled", None) is None:
            raise ValueError("config: none given and the model is not compiled; call compile()")
        config = net.compiled
    validation.check_instance("config", config, Config, "an nnfun.Config from Config.make(...)")
    return config


def _check_state(net, state, stacked=False) -> None:
    validation.check_instance("state", state, TrainState, "a TrainState (train.init_state)")
    validation.check_params(net, state.params, "state.params", stacked=stacked)


class EarlyStopping(NamedTuple):
    """Stops when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs,
    then restores the best epoch's parameters."""

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    mode: str = "auto"  # "min", "max", or "auto": max for accuracy-like names

    def better(self, value: float, best: float) -> bool:
        maximise = self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)
        return value > best + self.min_delta if maximise else value < best - self.min_delta


def fit(
    net,
    x,
    y,
    *,
    config: Config | None = None,
    state: TrainState | None = None,
    key: Array | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data=None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    early_stopping: EarlyStopping | None = None,
    checkpoint_dir=None,
    checkpoint_every: int = 1,
    keep_checkpoints: int = 3,
    progress: bool | None = None,
    mesh=None,
):
    """Trains ``net`` and returns ``(state, history)``.

    history maps "loss", each metric, and "val_" versions to per-epoch lists; after a
    non-finite loss or gradient, an early stop or Ctrl-C it also says why under "stopped".
    The state returned is always the last finite, completed epoch's (or the best one's
    under early stopping). With ``checkpoint_dir`` the state and history are saved every
    ``checkpoint_every`` epochs and training resumes from the newest checkpoint there.
    With ``mesh`` (``nnfun.parallel.data_mesh()``) each batch is split over its "data" axis
    and the parameters are replicated: data-parallel training, the same updates.
    """
    config = _config_of(net, config)
    x, y = validation.check_data(net, config.loss, x, y)
    epochs = validation.check_int("epochs", epochs, 0)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    checkpoint_every = validation.check_int("checkpoint_every", checkpoint_every, 1)
    keep_checkpoints = validation.check_int("keep_checkpoints", keep_checkpoints, 1)
    validation_split = validation.check_fraction("validation_split", validation_split)
    if key is not None:
        validation.check_key("key", key)
    if state is not None:
        _check_state(net, state)
    if validation_split and validation_data is None:
        cut = x.shape[0] - int(round(x.shape[0] * validation_split))
        if not 0 < cut < x.shape[0]:
            raise ValueError(
                f"validation_split: expected a fraction leaving samples on both sides, got "
                f"{validation_split} of {x.shape[0]} samples"
            )
        x, y, validation_data = x[:cut], y[:cut], (x[cut:], y[cut:])
    if validation_data is not None:
        validation_data = validation.check_validation_data(net, config.loss, validation_data)
    validation.check_batchnorm_batches(net, x.shape[0], batch_size)
    if state is None:
        state = init_state(net, config, jax.random.key(0) if key is None else key)
    history: dict[str, Any] = {}
    if checkpoint_dir is not None:
        state, history = _resume(checkpoint_dir, state, history)
    names = config.metrics
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
        x, y = parallel.place_data(x, mesh), parallel.place_data(y, mesh)
        state = parallel.replicate(state, mesh)
    compiled = functools.partial(_compiled_epoch, net, config, int(batch_size), bool(shuffle))
    epoch_fn = compiled(False, mesh, guard=False)
    n = x.shape[0]
    best, since = (None, None), 0  # (value, state), epochs without improvement
    start = int(state.epoch)
    bar = _progress(range(start, epochs), progress)
    done = state  # the last epoch whose history is recorded: what Ctrl-C returns
    try:
        for epoch in bar:
            new_state, metrics = epoch_fn(_copy(state), x, y)
            if not bool(np.all(np.asarray(metrics["finite"]))):
                # Rare: replay the epoch guarded for the last finite state and the culprit.
                new_state, metrics = compiled(False, mesh)(_copy(state), x, y)
            summary = _summarise(metrics, n, batch_size, names)
            if not bool(np.all(np.asarray(metrics["finite"]))):
                history["stopped"] = _blow_up(net, state, metrics, epoch, batch_size)
                state = new_state
                break
            state = new_state
            if validation_data is not None:
                values = evaluate(net, state, *validation_data, config=config)
                summary.update(
                    {f"val_{k}": v for k, v in zip(("loss", *names), values, strict=True)}
                )
            for k, v in summary.items():
                history.setdefault(k, []).append(v)
            done = state
            _show(bar, summary)
            if checkpoint_dir is not None and (epoch + 1) % checkpoint_every == 0:
                _save(checkpoint_dir, state, history, keep_checkpoints)
            if early_stopping is not None:
                value = summary.get(early_stopping.monitor)
                if value is None:
                    raise ValueError(
                        f"early_stopping.monitor: expected one of {sorted(summary)}, "
                        f"got {early_stopping.monitor!r}"
                    )
                if best[0] is None or early_stopping.better(value, best[0]):
                    best, since = (value, state), 0
                else:
                    since += 1
                    if since >= early_stopping.patience:
                        history["stopped"] = (
                            f"early stopping at epoch {epoch + 1}: {early_stopping.monitor} "
                            f"best {best[0]:.6g} at epoch {int(best[1].epoch)}"
                        )
                        break
    except KeyboardInterrupt:
        state = done
        history["stopped"] = f"interrupted after epoch {int(state.epoch)}"
        print(f"nnfun.fit: {history['stopped']}; returning its state", file=sys.stderr)
    if early_stopping is not None and best[1] is not None:
        history["best_epoch"] = int(best[1].epoch)
        state = best[1]
    return state, history


def _copy(state: TrainState) -> TrainState:
    # The compiled epoch donates its input buffers; keep ours alive for the caller.
    return jax.tree.map(jnp.copy, state)


def _blow_up(net, state: TrainState, metrics, epoch: int, batch_size: int) -> str:
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
        f"(batch size {batch_size}): {where}; kept the last finite state"
    )


def _progress(epochs: range, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return epochs
    from tqdm.auto import tqdm

    return tqdm(epochs, desc="fit", unit="epoch")


def _show(bar, summary: dict) -> None:
    if hasattr(bar, "set_postfix"):
        bar.set_postfix({k: f"{v:.4f}" for k, v in summary.items()})


def _save(directory, state: TrainState, history: dict, keep: int) -> None:
    from nnfun import checkpoint

    checkpoint.save(directory, int(state.epoch), state, metadata=history, keep=keep)


def _resume(directory, state: TrainState, history: dict):
    from nnfun import checkpoint

    if checkpoint.latest_step(directory) is None:
        return state, history
    return checkpoint.restore(directory, like=state)


# ---- many models at once ---------------------------------------------------------------
def stack(states: Sequence[TrainState]) -> TrainState:
    """Stacks states leaf by leaf along a new leading model axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack(states: TrainState) -> list[TrainState]:
    """The inverse of ``stack``."""
    count = jax.tree.leaves(states)[0].shape[0]
    return [jax.tree.map(lambda a, i=i: a[i], states) for i in range(count)]


def init_many(net, config: Config, keys: Array, learning_rates=None) -> TrainState:
    """A stack of states, one per key; optionally one learning rate per model."""
    states = stack([init_state(net, config, k) for k in keys])
    if learning_rates is not None:
        hyper = getattr(states.opt_state, "hyperparams", None)
        if hyper is None or "learning_rate" not in hyper:
            raise ValueError(
                "learning_rates: the optimizer must be given by name (or built with "
                "optax.inject_hyperparams) for per-model learning rates"
            )
        lr = jnp.asarray(learning_rates, hyper["learning_rate"].dtype)
        if lr.shape != (len(keys),):
            raise ValueError(f"learning_rates: expected shape ({len(keys)},), got {lr.shape}")
        hyper = {**hyper, "learning_rate": lr}
        states = states._replace(opt_state=states.opt_state._replace(hyperparams=hyper))
    return states


def fit_many(net, x, y, states: TrainState, *, config=None, epochs=1, batch_size=32, mesh=None):
    """Trains a stack of models (``init_many``/``stack``) in one vmapped program per epoch.

    Returns ``(states, history)`` with history[k] of shape (epochs, models). Each model
    follows exactly the trajectory of its own ``fit``; ``mesh`` splits batches as in ``fit``.
    """
    config = _config_of(net, config)
    _check_state(net, states, stacked=True)
    x, y = validation.check_data(net, config.loss, x, y)
    epochs = validation.check_int("epochs", epochs, 0)
    batch_size = validation.check_int("batch_size", batch_size, 1)
    validation.check_batchnorm_batches(net, x.shape[0], batch_size)
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
        x, y = parallel.place_data(x, mesh), parallel.place_data(y, mesh)
        states = parallel.replicate(states, mesh)
    epoch_fn = _compiled_epoch(net, config, batch_size, True, True, mesh)
    n = x.shape[0]
    history: dict[str, list] = {}
    for _ in range(epochs):
        states, metrics = epoch_fn(_copy(states), x, y)
        w = _batch_weights(n, batch_size)
        for k in ("loss", *config.metrics):
            history.setdefault(k, []).append(np.asarray(metrics[k]) @ w / w.sum())
    return states, {k: np.stack(v) for k, v in history.items()}


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch: every sample is used, the last batch may be smaller."""
    return math.ceil(n / batch_size)
