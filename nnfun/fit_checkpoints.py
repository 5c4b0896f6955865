"""``fit(..., checkpoint_dir=...)``: the run (training state and monitors' memory), its
record and its history saved every few epochs, and resumed from the newest intact one.

Probes are saved as their leaves; on resuming, their structure (a tuple, a dict, ...) comes
from the probe functions themselves, so any pytree a probe returns survives a resume.
"""

from __future__ import annotations

import jax
import numpy as np

from nnfun import parallel
from nnfun.fit_history import stack
from nnfun.run_record import RunRecord


def to_boundary(epoch: int, every: int, directory) -> int:
    """Epochs until the next checkpoint: a chunk never runs past one."""
    return every - epoch % every if directory is not None else 1 << 30


def save(directory, run, history: dict, record: RunRecord, keep: int) -> None:
    plain = {k: _plain(stack(v)) if _is_probe(v) else v for k, v in history.items()}
    metadata = {"history": plain, "record": record.to_json()}
    parallel.save_checkpoint(directory, record.epoch, run, metadata=metadata, keep=keep)


def resume(directory, run, track, epochs: int):
    """``(run, history, record)`` from the newest intact checkpoint, or None."""
    found = parallel.restore_latest_checkpoint(directory, like=run)
    if found is None:
        return None
    run, meta = found
    if "record" not in meta:
        raise ValueError(
            f"checkpoint_dir: {directory} holds a checkpoint written by another version of "
            "nnfun (no run record); start a new directory"
        )
    shapes = {name: jax.eval_shape(fn, run.state.params, run.state.model_state)
              for name, fn in track}  # fmt: skip
    history = {}
    for k, v in meta["history"].items():
        if isinstance(v, dict) and "__probe__" in v:
            if k not in shapes:
                raise ValueError(f"track: the checkpoint in {directory} has a probe {k!r} that "
                                 "this run does not track")  # fmt: skip
            v = [_restored(shapes[k], v)]
        history[k] = v
    return run, history, RunRecord.from_json(meta["record"], epochs)


def _is_probe(values) -> bool:
    return isinstance(values, list) and bool(values) and not isinstance(values[0], (int, float))


def _plain(tree) -> dict:
    """A probe's stacked arrays as JSON: its leaves as nested lists, and their dtypes."""
    leaves = jax.tree.leaves(tree)
    return {"__probe__": [a.tolist() for a in leaves], "dtypes": [a.dtype.name for a in leaves]}


def _restored(shape, saved: dict):
    """The saved leaves in the probe's own structure (``shape``: one epoch's value)."""
    treedef = jax.tree.structure(shape)
    leaves = [np.asarray(a, dtype) for a, dtype in zip(saved["__probe__"], saved["dtypes"],
                                                       strict=True)]  # fmt: skip
    if treedef.num_leaves != len(leaves):
        raise ValueError(f"track: a saved probe has {len(leaves)} leaves, the probe now "
                         f"returns {treedef.num_leaves}")  # fmt: skip
    return jax.tree.unflatten(treedef, leaves)
