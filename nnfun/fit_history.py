"""The history ``fit`` returns, built chunk by chunk: each chunk's epochs as rows of logs
(built only when asked for: thousands of short epochs cost no Python per epoch), probes
stacked over epochs, and the run record's numbers."""

from __future__ import annotations

import jax
import numpy as np

from nnfun import parallel


class Rows:
    """A chunk's epochs as (epoch, logs) pairs, Keras's numbers from ``first``."""

    def __init__(self, columns: dict[str, list], first_epoch: int):
        self.columns, self.first = columns, first_epoch
        self.count = len(next(iter(columns.values()))) if columns else 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, dict]:
        i = range(self.count)[i]
        return self.first + i, {k: v[i] for k, v in self.columns.items()}

    def __iter__(self):
        return (self[i] for i in range(self.count))

    def add(self, name: str, value) -> None:
        """A log the host knows for every epoch of the chunk (the learning rate)."""
        self.columns[name] = [value] * self.count


def append_rows(logs, done: int, epoch: int, names, track, history) -> Rows:
    """Appends the chunk's ``done`` epochs (numbered from ``epoch``) to history; returns them
    as rows. Logs are Python floats of the training dtype's precision."""
    logs = parallel.fetch(logs)
    columns = {k: np.asarray(logs[k][:done]).astype(np.float64).tolist() for k in names}
    for k, v in columns.items():
        if k != "grad_error_leaf":
            history[k].extend(v)
    for name, _ in track:  # one pytree of arrays per chunk, joined at the end
        history.setdefault(name, []).append(jax.tree.map(lambda a: a[:done], logs[name]))
    history.setdefault("epoch", []).extend(range(epoch, epoch + done))
    return Rows(columns, epoch)


def stack(chunks: list):
    """A probe's per-chunk pytrees as one pytree of arrays with a leading epoch axis."""
    return jax.tree.map(lambda *a: np.concatenate(a), *chunks)


def finish(history: dict, record, track, stopping) -> dict:
    """The history fit returns: probes stacked, the record's stop reason and best epoch."""
    names = dict(track)
    history = {k: (stack(v) if k in names and v else v) for k, v in history.items()}
    history["epoch"] = history.get("epoch", [])
    if record.stop_reason is not None:
        history["stopped"] = record.stop_reason
    if stopping is not None and record.best_epoch is not None:
        history["best_epoch"] = record.best_epoch
    return history
