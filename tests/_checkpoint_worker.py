"""Saves checkpoints forever, to be SIGKILLed: ``python _checkpoint_worker.py DIRECTORY FLAG``.

Resumes after the newest step in DIRECTORY, saves one checkpoint, creates the file FLAG, then
saves step after step (keep=2) until killed. ``state(step)`` is what step ``step`` holds.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnfun import checkpoint

_W = jax.random.normal(jax.random.key(1), (1000, 1000))  # ~1M float32 params + Adam: 12 MB
_PARAMS = {"W": _W, "b": jnp.linspace(-1, 1, 1000, dtype=jnp.bfloat16)}
_OPT = optax.adam(1e-3)
_, _OPT_STATE = _OPT.update(_PARAMS, _OPT.init(_PARAMS), _PARAMS)  # non-zero moments


def state(step: int) -> dict:
    """The tree saved at ``step``: big shared arrays plus leaves that depend on the step."""
    return {
        "params": _PARAMS,
        "opt_state": _OPT_STATE,
        "key": jax.random.key(step),
        "step": jnp.int32(step),
        "counts": np.arange(step, step + 3, dtype=np.uint32),
        "lr": 1e-3 / step,
    }


def metadata(step: int) -> dict:
    return {"epoch": step, "loss": [1 / (s + 3) for s in range(step)]}


if __name__ == "__main__":
    directory, flag = Path(sys.argv[1]), Path(sys.argv[2])
    step = (checkpoint.latest_step(directory) or 0) + 1
    checkpoint.save(directory, step, state(step), metadata=metadata(step))
    flag.touch()
    while True:
        step += 1
        checkpoint.save(directory, step, state(step), metadata=metadata(step), keep=2)
