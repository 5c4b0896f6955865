"""K training steps as one compiled program (Keras's ``steps_per_execution``): a stacked
super-batch ``(K, batch, ...)`` looped over inside the program, the first ``count`` steps
run (the epoch's last group may have fewer real steps than K; the others are skipped, not
run on zeros). Per-step metrics come back as (K,) arrays, zeros past ``count``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nnfun import parallel, program_cache, train

KEEP = ("loss", "size", "weight", "grad_error")


def run_steps(net, config: train.Config, mesh, state, xs, ys, ws, ms, count):
    """``(state, metrics)`` after steps ``0 .. count - 1`` of the super-batch."""
    k = xs.shape[0]
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731

    def step(i, state):
        x, y = xs[i], ys[i]
        if mesh is not None and x.shape[0] % parallel.data_size(mesh) == 0:
            x, y = parallel.constrain_batch((x, y), mesh)
        return train.train_step(net, config, state, x, y, pick(ws, i), pick(ms, i))

    names = [*(n for n in KEEP if n != "grad_error"), *config.metrics]
    if config.grad == "checked":
        names.append("grad_error")
    shapes = jax.eval_shape(lambda: step(0, state)[1])
    buffers = {n: jnp.zeros((k, *shapes[n].shape), shapes[n].dtype) for n in names}

    def body(carry):
        i, state, buffers = carry
        state, metrics = step(i, state)
        buffers = {n: b.at[i].set(metrics[n]) for n, b in buffers.items()}
        return i + 1, state, buffers

    _, state, buffers = jax.lax.while_loop(
        lambda c: c[0] < count, body, (jnp.zeros((), jnp.int32), state, buffers)
    )
    return state, buffers


@program_cache.by_structure
def compiled_steps(net, config: train.Config, mesh=None):
    """``run_steps`` jitted (not donated: an epoch's starting state is what a blow-up keeps)."""
    fn = functools.partial(run_steps, net, config, mesh)
    return train.with_precision(jax.jit(fn), config.precision)
