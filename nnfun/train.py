"""Training programs: pure functions of a training state that jit, vmap and shard.

``train_step`` is one optimisation step ``(state, batch) -> (state, metrics)``;
``run_epoch`` one epoch (shuffle with the state's key, ``lax.scan`` the step over the full
batches, one more step on the remainder: nothing is dropped); ``evaluate_arrays`` the loss
and metrics in evaluation mode. A chunk of epochs as one program is :mod:`nnfun.epochs`, the
host loop around it (chunks, progress, callbacks, checkpoints, Ctrl-C) :mod:`nnfun.fit`;
``fit``, ``fit_many``, ``evaluate`` and ``predict`` are reachable here too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnfun import losses, optimizers, parallel, program_cache, validation
from nnfun.metrics import check as check_metric
from nnfun.metrics import get as get_metric

Array = jax.Array

OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], float]] = {
    # name: (optax factory taking learning_rate, Keras's default learning rate)
    name: (functools.partial(optimizers.keras_rule, base, **preset),
           optimizers.default_learning_rate(name))
    for name in optimizers.NAMES
    for base, preset in [optimizers.ALIASES.get(name, (name, {}))]
}  # fmt: skip
GRADS = ("autodiff", "manual", "checked")


def get_optimizer(name, learning_rate=None) -> optax.GradientTransformation:
    """An optimiser by Keras's name or as an ``nnfun.optimizers`` object (Keras's update
    rules, the learning rate injected so that it can vary per model and per epoch), or an
    optax transformation as given."""
    if isinstance(name, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError("learning_rate: give it to the optax optimizer you pass, not here")
        return name
    if isinstance(name, optimizers.Optimizer):
        if learning_rate is not None:
            raise ValueError(
                f"learning_rate: give it to {type(name).__name__}(learning_rate=...), not here"
            )
        return name.transformation()
    optimizer = optimizers.from_name(name)
    if learning_rate is not None:
        validation.check_learning_rate(learning_rate)
    return optimizer.transformation(learning_rate)


def _optimizer_name(optimizer) -> str | None:
    """What a saved model records: the name, or an object's name when only its rate differs
    from Keras's defaults; None when JSON cannot say it."""
    if isinstance(optimizer, str):
        return optimizer
    if isinstance(optimizer, optimizers.Optimizer) and optimizer.is_default:
        return optimizer.name
    return None


PRECISIONS = (None, "default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


class Config(NamedTuple):
    """What compile() chooses: loss, optimiser, metrics, gradient source, penalties."""

    loss: losses.Loss
    optimizer: optax.GradientTransformation
    metrics: tuple[str, ...] = ()
    grad: str = "autodiff"  # "manual": the hand-written backprop; "checked": manual, refereed
    l1: float = 0.0
    l2: float = 0.0
    compute_dtype: str | None = None  # "bfloat16": low-precision matmuls, float32 params/loss
    precision: str | None = None  # jax.default_matmul_precision for training: "highest", ...
    check_every: int = 1  # grad="checked": compare with jax.grad every this many steps
    optimizer_name: str | None = None  # the name given, None for an optax transformation

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
        check_every=1,
        learning_rate=None,
    ) -> Config:
        if isinstance(metrics, str):
            metrics = (metrics,)
        for m in metrics:
            check_metric(m)
        if grad not in GRADS:
            raise ValueError(f"grad: expected one of {GRADS}, got {grad!r}")
        for name, value in (("l1", l1), ("l2", l2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        check_every = validation.check_int("check_every", check_every, 1)
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
            get_optimizer(optimizer, learning_rate),
            tuple(metrics),
            grad,
            float(l1),
            float(l2),
            compute_dtype,
            precision,
            check_every,
            _optimizer_name(optimizer),
        )


class TrainState(NamedTuple):
    """Everything training changes: a pytree, so it jits, vmaps and checkpoints."""

    params: list
    opt_state: Any  # None until an optimiser is chosen (an uncompiled model)
    model_state: list  # BatchNorm running statistics, [] entries elsewhere
    key: Array  # consumed for shuffling, dropout and RReLU
    step: Array
    epoch: Array


def as_key(name: str, key) -> Array:
    """A PRNG key from a typed key, a raw uint32 key or an int seed; TypeError otherwise."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return key
    elif np.shape(key) == (2,) and np.asarray(key).dtype == np.uint32:
        return jnp.asarray(key)
    raise TypeError(
        f"{name}: expected a PRNG key (jax.random.key(n)) or an int seed, got "
        f"{type(key).__name__} {getattr(key, 'dtype', '')}{np.shape(key)}".rstrip()
    )


def init_state(net, config: Config | None, key: Array, params=None) -> TrainState:
    """A fresh TrainState; ``params`` defaults to ``net.init`` with part of ``key``."""
    key = as_key("key", key)
    init_key, train_key = jax.random.split(key)
    if params is None:
        params = net.init(init_key)
    else:
        net.check_params(params)
    return TrainState(
        params,
        None if config is None else config.optimizer.init(params),
        net.init_state(),
        train_key,
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


_OTHER_OPTIMIZER = (
    "state.opt_state: built for another optimizer than config.optimizer; use "
    "nnfun.train.with_optimizer(state, config) to switch optimizers"
)


def with_optimizer(
    state: TrainState, config: Config, stacked: bool = False, switch: bool = True
) -> TrainState:
    """``state`` ready for ``config``'s optimiser: its moments kept when the optimiser is the
    same kind (same state structure and shapes), with the config's hyper-parameters (learning
    rate) in force; a fresh optimiser state when it changed (re-compiling after training), or
    a ValueError when ``switch`` is False (a run continuing from a given state).
    With ``stacked`` the state is a stack of models (``init_many``), whose per-model
    hyper-parameters are kept."""
    params = state.params if not stacked else jax.tree.map(lambda a: a[0], state.params)
    old = state.opt_state
    if stacked:
        fresh = jax.eval_shape(config.optimizer.init, params)
        if jax.tree.structure(fresh) != jax.tree.structure(old):
            raise ValueError(_OTHER_OPTIMIZER)
        return state
    fresh = config.optimizer.init(params)
    if old is None:
        return state._replace(opt_state=fresh)
    same = jax.tree.structure(old) == jax.tree.structure(fresh) and all(
        np.shape(a) == np.shape(b) and jnp.result_type(a) == jnp.result_type(b)
        for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(fresh), strict=True)
    )
    if not same:
        if not switch:
            raise ValueError(_OTHER_OPTIMIZER)
        return state._replace(opt_state=fresh)
    hyper = getattr(fresh, "hyperparams", None)
    if hyper is not None and hasattr(old, "hyperparams"):
        old = old._replace(hyperparams=hyper)
    return state._replace(opt_state=old)


def _hyperparams(state: TrainState) -> dict:
    hyper = getattr(state.opt_state, "hyperparams", None)
    if hyper is None or "learning_rate" not in hyper:
        raise ValueError(
            "learning_rate: the optimizer's learning rate is not a hyper-parameter of its "
            "state; give the optimizer by name (or build it with optax.inject_hyperparams) "
            "to change it between epochs"
        )
    return hyper


def learning_rate(state: TrainState) -> float:
    """The learning rate the next step uses (an injected hyper-parameter)."""
    return float(np.asarray(parallel.fetch(_hyperparams(state)["learning_rate"])))


def with_learning_rate(state: TrainState, value: float) -> TrainState:
    """``state`` with the learning rate ``value`` from its next step on (no recompiling: the
    rate is an argument of the compiled program, not a constant in it)."""
    hyper = dict(_hyperparams(state))
    old = hyper["learning_rate"]
    hyper["learning_rate"] = jnp.asarray(value, old.dtype)
    if getattr(old, "sharding", None) is not None and not isinstance(old, np.ndarray):
        hyper["learning_rate"] = jax.device_put(hyper["learning_rate"], old.sharding)
    return state._replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def _all_finite(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def _leaf_flags(tree) -> Array:
    """One bool per leaf: is every element finite (names the culprit after a blow-up)."""
    leaves = jax.tree.leaves(tree)
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]) if leaves else jnp.ones(0, bool)


def train_step(net, config: Config, state: TrainState, x, y, sample_weight=None, mask=None):
    """One optimisation step on a batch: ``(state, metrics)``.

    ``mask`` (batch,) marks the real rows of a padded batch. metrics holds the batch
    ``loss`` (Keras's reduction: sum(w L) over the real rows' count), ``size`` (that count),
    ``weight`` (the real rows' total sample weight), each compiled metric's sample-weighted
    batch mean, ``finite`` (False
    when the loss, a gradient or an updated parameter was non-finite), ``grads_finite``, one
    flag per leaf, and with ``grad="checked"`` ``grad_error``: the relative error of each
    leaf's manual gradient against ``jax.grad`` (0 on steps not checked).
    """
    if any(layer.stochastic for layer in net.layers):
        key, step_key = jax.random.split(state.key)
    else:  # nothing random in the step: keep the key (a split per step costs tiny networks)
        key, step_key = state.key, None
    kwargs = dict(
        loss=config.loss,
        state=state.model_state,
        key=step_key,
        train=True,
        sample_weight=sample_weight,
        mask=mask,
        l1=config.l1,
        l2=config.l2,
    )
    if config.compute_dtype is not None:
        kwargs["compute_dtype"] = config.compute_dtype
    extra = {}
    if config.grad == "autodiff":
        (value, aux), grads = jax.value_and_grad(net.objective, has_aux=True)(
            state.params, x, y, **kwargs
        )
    else:
        (value, aux), grads = net.value_and_manual_grad(state.params, x, y, **kwargs)
    if config.grad == "checked":
        extra["grad_error"] = _checked(net, state, x, y, kwargs, grads, config.check_every)
    updates, opt_state = config.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # New params too: a huge step can overflow them even when the gradient is finite.
    finite = jnp.isfinite(value) & _all_finite(grads) & _all_finite(params)
    new = TrainState(params, opt_state, aux.state, key, state.step + 1, state.epoch)
    flags = _leaf_flags(grads) & _leaf_flags(params)
    out = {"loss": value, "finite": finite, "grads_finite": flags, **extra}
    w = _row_weights(sample_weight, mask, x.shape[0], value.dtype)
    out["size"] = jnp.asarray(x.shape[0], value.dtype) if mask is None else jnp.sum(mask)
    out["size"] = out["size"].astype(value.dtype)
    out["weight"] = jnp.sum(w)
    for name in config.metrics:
        hits = get_metric(name, config.loss)(aux.output, y).astype(value.dtype)
        out[name] = jnp.sum(w * hits) / jnp.maximum(out["weight"], jnp.finfo(value.dtype).tiny)
    return new, out


def _row_weights(sample_weight, mask, batch: int, dtype):
    """Each row's weight in the metrics: w * m (1 for a real row when neither is given)."""
    w = jnp.ones((batch,), dtype) if sample_weight is None else sample_weight.astype(dtype)
    return w if mask is None else w * mask.astype(dtype)


def _checked(net, state, x, y, kwargs, grads, every: int) -> Array:
    """Per-leaf error of the manual gradient against jax.grad (same key, same masks)."""
    from nnfun import gradcheck

    def referee():
        ref = jax.grad(lambda p: net.objective(p, x, y, **kwargs)[0])(state.params)
        return gradcheck.leaf_errors(grads, ref).astype(jnp.float32)

    n = len(jax.tree.leaves(grads))
    if every == 1:
        return referee()
    return jax.lax.cond(state.step % every == 0, referee, lambda: jnp.zeros(n, jnp.float32))


def _batches(n: int, batch_size: int) -> tuple[int, int]:
    """(full batches, size of the last partial batch or 0)."""
    return divmod(n, batch_size)


def batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """The size of every batch of an epoch, the last partial one included."""
    full, rest = _batches(n, batch_size)
    return np.array([batch_size] * full + ([rest] if rest else []), np.int64)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch: every sample is used, the last batch may be smaller."""
    return math.ceil(n / batch_size)


def run_epoch(
    net,
    config: Config,
    batch_size: int,
    shuffle: bool,
    state: TrainState,
    x,
    y,
    sample_weight=None,
    mesh=None,
    guard: bool = True,
):
    """One epoch as one program: ``(state, metrics)`` with per-batch metric arrays.

    Shuffles with the state's key and scans the step over the batches; the last partial
    batch is padded to the batch size and its padding rows masked out of the loss, the
    metrics and BatchNorm's statistics, so the program holds one step, not a second one at
    the remainder's shape (a full batch, batch_size >= n, takes no permutation or gather).
    With ``guard`` steps after a non-finite one are skipped (metrics say which, leaf by
    leaf). Without it the steps run unchecked and ``metrics["finite"]`` only says whether
    each loss and the final parameters are finite: the fast path, which ``fit`` replays
    guarded on the rare epoch that blows up. With a ``mesh`` every batch that divides over
    its "data" axis is split across devices.
    """
    n = x.shape[0]
    full, rest = _batches(n, batch_size)
    whole = batch_size >= n  # one batch: every epoch sees the same samples, in any order
    if shuffle and not whole:
        key, perm_key = jax.random.split(state.key)
        state = state._replace(key=key)

    def step(carry, batch):
        state, healthy = carry
        idx, mask = batch
        if idx is None:
            xb, yb, wb = x, y, sample_weight
        else:
            xb, yb = x[idx], y[idx]
            wb = None if sample_weight is None else sample_weight[idx]
        if mesh is not None and xb.shape[0] % parallel.data_size(mesh) == 0:
            xb, yb = parallel.constrain_batch((xb, yb), mesh)
        new, metrics = train_step(net, config, state, xb, yb, wb, mask)
        if not guard:  # the unused finite flags are dead code to the compiler
            keep = ("loss", "size", "weight", "grad_error", *config.metrics)
            return (new, healthy), {k: metrics[k] for k in keep if k in metrics}
        healthy = healthy & metrics["finite"]
        # Keep the last finite state: one select over the state, no host round trip.
        state = jax.tree.map(lambda a, b: jnp.where(healthy, a, b), new, state)
        return (state, healthy), {**metrics, "finite": healthy}

    carry = (state, jnp.asarray(True))
    if whole:
        carry, metrics = step(carry, (None, None))
        metrics = jax.tree.map(lambda a: a[None], metrics)
    else:
        order = jax.random.permutation(perm_key, n) if shuffle else jnp.arange(n)  # noqa: F821
        steps = full + (rest > 0)
        # The last partial batch is padded (with row 0) and masked: one step in the program,
        # not a second copy of it at the partial batch's shape.
        pad = steps * batch_size - n
        batches = jnp.concatenate([order, jnp.zeros(pad, order.dtype)]).reshape(steps, -1)
        masks = None if not pad else (jnp.arange(steps * batch_size) < n).reshape(steps, -1)
        carry, metrics = jax.lax.scan(step, carry, (batches, masks))
    state = carry[0]
    if not guard:  # a non-finite gradient always reaches the parameters or the loss
        metrics["finite"] = jnp.isfinite(metrics["loss"]) & _all_finite(state.params)
    return state._replace(epoch=state.epoch + 1), metrics


def evaluate_arrays(net, config: Config, params, model_state, x, y, sample_weight=None, *,
                    batch_size: int | None = None, mask=None) -> Array:  # fmt: skip
    """``[J, *metrics]`` in evaluation mode over all of ``(x, y)``, in batches of
    ``batch_size`` (default: all at once), as Keras computes them: J = sum(w L) / (real rows)
    plus L1/L2, each metric its sample-weighted mean; ``mask`` (n,) marks the real rows.
    Pure: runs inside the training program too."""
    n = x.shape[0]
    size = n if batch_size is None else min(batch_size, n)
    full, rest = _batches(n, size)
    fns = [get_metric(m, config.loss) for m in config.metrics]

    def batch(xb, yb, wb, mb):
        # J with its penalty per batch, times the batch's rows: the sum over batches / rows
        # counts the penalty once (Keras's loss tracker weighs each batch by its size).
        value, aux = net.objective(params, xb, yb, loss=config.loss, state=model_state,
                                   sample_weight=wb, mask=mb, l1=config.l1,
                                   l2=config.l2)  # fmt: skip
        rows = jnp.asarray(xb.shape[0], value.dtype) if mb is None else jnp.sum(mb)
        w = _row_weights(wb, mb, xb.shape[0], value.dtype)
        hits = [jnp.sum(w * f(aux.output, yb).astype(value.dtype)) for f in fns]
        return jnp.stack([value * rows, *hits]), jnp.stack([rows, jnp.sum(w)]).astype(value.dtype)

    def scanned(total, i):
        sl = lambda a: None if a is None else jax.lax.dynamic_slice_in_dim(a, i * size, size)  # noqa: E731
        part, counts = batch(sl(x), sl(y), sl(sample_weight), sl(mask))
        return (total[0] + part, total[1] + counts), None

    cut = lambda a, part: None if a is None else part(a)  # noqa: E731
    first = jax.eval_shape(lambda: batch(x[:1], y[:1], cut(sample_weight, lambda a: a[:1]),
                                         cut(mask, lambda a: a[:1])))  # fmt: skip
    total = tuple(jnp.zeros(f.shape, f.dtype) for f in first)
    if full:
        total, _ = jax.lax.scan(scanned, total, jnp.arange(full))
    if rest:
        tail = lambda a: a[full * size :]  # noqa: E731
        part, counts = batch(tail(x), tail(y), cut(sample_weight, tail), cut(mask, tail))
        total = (total[0] + part, total[1] + counts)
    sums, (rows, weight) = total
    tiny = jnp.finfo(sums.dtype).tiny
    return jnp.concatenate([(sums[0] / rows)[None], sums[1:] / jnp.maximum(weight, tiny)])


@program_cache.by_structure
def compiled_epoch(net, config: Config, batch_size: int, shuffle: bool, mesh=None, many=False):
    """One guarded epoch, jitted: replays an epoch that blew up to name the step and leaf."""
    fn = functools.partial(run_epoch, net, config, batch_size, shuffle, mesh=mesh, guard=True)
    if many:
        fn = jax.vmap(fn, in_axes=(0, None, None, None))
    return with_precision(jax.jit(fn), config.precision)


@program_cache.by_structure
def compiled_evaluate(net, config: Config, batch_size: int | None):
    fn = functools.partial(evaluate_arrays, net, config, batch_size=batch_size)
    return with_precision(jax.jit(fn), config.precision)


def with_precision(jitted, precision):
    if precision is None:
        return jitted

    def with_precision(*args):  # the precision is part of jit's cache key: set it per call
        with jax.default_matmul_precision(precision):
            return jitted(*args)

    return with_precision


# ---- many models at once ---------------------------------------------------------------
def stack(states):
    """Stacks states leaf by leaf along a new leading model axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack(states) -> list:
    """The inverse of ``stack``."""
    count = jax.tree.leaves(states)[0].shape[0]
    return [jax.tree.map(lambda a, i=i: a[i], states) for i in range(count)]


def init_many(net, config: Config, keys, learning_rates=None) -> TrainState:
    """A stack of states, one per key (PRNG keys, or ints used as seeds); optionally one
    learning rate per model."""
    keys = [as_key(f"keys[{i}]", k) for i, k in enumerate(keys)]
    states = stack([init_state(net, config, k) for k in keys])
    if learning_rates is not None:
        hyper = getattr(states.opt_state, "hyperparams", None)
        if hyper is None or "learning_rate" not in hyper:
            raise ValueError(
                "learning_rates: the optimizer must be given by name (or built with "
                "optax.inject_hyperparams) for per-model learning rates"
            )
        lr = jnp.asarray(learning_rates, jnp.result_type(float))
        if lr.shape != (len(keys),):
            raise ValueError(f"learning_rates: expected shape ({len(keys)},), got {lr.shape}")
        hyper = {**hyper, "learning_rate": lr.astype(hyper["learning_rate"].dtype)}
        states = states._replace(opt_state=states.opt_state._replace(hyperparams=hyper))
    return states


def __getattr__(name: str):
    """The host loop, reachable as ``nnfun.train.fit(...)`` without an import circle: it is
    imported from :mod:`nnfun.fit` on first use."""
    if name in ("fit", "fit_many", "evaluate", "predict"):
        from nnfun import fit as host

        return getattr(host, name)
    raise AttributeError(f"module 'nnfun.train' has no attribute {name!r}")
