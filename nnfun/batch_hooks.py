"""Keras's training-batch hooks, called between groups of compiled steps.

A callback whose class defines ``on_train_batch_begin/end`` (or ``on_batch_begin/end``) makes
``fit`` read its arrays a group of ``steps_per_execution`` steps at a time (the streamed path,
:mod:`nnfun.fit_stream`): the same batches in the same order, with the hooks between groups.
As in Keras, ``on_train_batch_begin`` gets the group's first step and ``on_train_batch_end``
its last, with the epoch's running loss and metrics; ``self.model`` holds the weights after
the group, and ``self.model.stop_training = True`` ends the epoch and the run there.
"""

from __future__ import annotations

import numpy as np

from nnfun import parallel


class BatchHooks:
    def __init__(self, callbacks, handle, show_state, metrics: tuple[str, ...]):
        self.callbacks = [c for c in callbacks if c.needs_every_batch]
        self.handle, self.show_state, self.metrics = handle, show_state, metrics

    def begin(self, step: int) -> None:
        for c in self.callbacks:
            c.on_train_batch_begin(step)

    def end(self, step: int, state, parts: list[dict]) -> bool:
        """Calls ``on_train_batch_end``; True when a hook asked to stop training."""
        self.show_state(state)
        logs = running_logs(parts, self.metrics)
        for c in self.callbacks:
            c.on_train_batch_end(step, dict(logs))
        return bool(getattr(self.handle, "stop_training", False))


def running_logs(parts: list[dict], metrics: tuple[str, ...]) -> dict[str, float]:
    """The epoch's logs so far, as the epoch's own: the loss weighted by batch sizes, each
    metric by the batches' sample weights."""
    got = parallel.fetch([{k: p[k] for k in ("loss", "size", "weight", *metrics)} for p in parts])
    cat = {k: np.concatenate([np.asarray(p[k], np.float64) for p in got]) for k in got[0]}

    def mean(values, weights):
        return float(np.sum(values * weights) / max(np.sum(weights), np.finfo(float).tiny))

    logs = {"loss": mean(cat["loss"], cat["size"])}
    logs.update({k: mean(cat[k], cat["weight"]) for k in metrics})
    return logs
