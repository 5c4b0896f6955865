"""Super-batches of K steps, assembled and placed on the devices on a background thread while
the devices run the previous ones.

A group stacks up to K consecutive batches of the same rows into ``(K, batch, ...)`` arrays
and says how many of its K steps are real (the epoch's last group may have fewer). A batch
of other rows (the epoch's last, smaller one) travels alone as a group of one: one more
compiled shape, not a dropped batch. At most ``depth`` groups wait in the queue, so host
memory is bounded by ``depth + 2`` groups, whatever the data set's size.

On several processes each process passes its own rows; ``place`` builds the global arrays
with ``jax.make_array_from_process_local_data`` (rows split over the mesh's "data" axis).
"""

from __future__ import annotations

import queue
import threading
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nnfun import parallel


class Group(NamedTuple):
    """``count`` real steps of stacked batches (x, y, sample weight or None, mask or None),
    and the index of its first batch in the epoch."""

    x: object
    y: object
    w: object
    mask: object
    count: int
    first: int


_END = object()


def stacked_sharding(mesh) -> NamedSharding:
    """(steps, batch, ...): the batch axis split over "data"."""
    return NamedSharding(mesh, P(None, parallel.AXIS))


def place(arrays, mesh=None):
    """Host arrays (steps, rows, ...) onto the devices: whole on the default device, or split
    over ``mesh`` (on several processes, each passing its own rows)."""
    if mesh is None:
        return jax.device_put(arrays)
    sharding = stacked_sharding(mesh)
    if jax.process_count() == 1:
        if arrays[0].shape[1] % parallel.data_size(mesh):  # a last batch that does not split
            sharding = parallel.replicated(mesh)
        return jax.device_put(arrays, sharding)

    def glob(a):
        shape = (a.shape[0], a.shape[1] * jax.process_count(), *a.shape[2:])
        return jax.make_array_from_process_local_data(sharding, a, shape)

    return jax.tree.map(glob, arrays)


def groups(batches, k: int, rows_per_step: int | None = None):
    """Host groups from an iterator of ``(index, (x, y, w))``: runs of up to ``k`` batches
    of the same rows stacked. With ``rows_per_step`` (several processes) every batch is
    padded to that many rows with masked rows, and every group carries a mask. In one
    process a batch shorter than the epoch's first (the last partial one) is padded to its
    rows and masked, as ``train.run_epoch`` steps it: the same step program and the same
    bits, not a second program at the short batch's shape."""
    run: list = []
    rows = None  # the epoch's first batch's rows (one process)

    def flush():
        parts = [b for _, b in run]
        if any(len(p) == 4 for p in parts):  # a padded batch: the others' rows all count
            parts = [p if len(p) == 4 else (*p, np.ones(p[0].shape[0], np.float32)) for p in parts]
        stacked = [None if parts[0][j] is None else _stack([p[j] for p in parts], k)
                   for j in range(len(parts[0]))]  # fmt: skip
        xs, ys, ws, ms = (*stacked, None)[:4]
        count, first = len(run), run[0][0]
        run.clear()
        return xs, ys, ws, ms, count, first

    for index, batch in batches:
        if rows_per_step is not None:
            batch = _padded(batch, rows_per_step)
        else:
            rows = rows or batch[0].shape[0]
            if batch[0].shape[0] < rows:
                batch = _padded(batch, rows, weigh=False)
        if run and (batch[0].shape[0] != run[0][1][0].shape[0]
                    or (batch[2] is None) != (run[0][1][2] is None)):  # fmt: skip
            yield flush()
        run.append((index, batch))
        if len(run) == k:
            yield flush()
    if run:
        yield flush()


def _stack(arrays, k: int):
    """(k, ...) from up to k arrays; missing steps are zeros (never run)."""
    out = np.zeros((k, *arrays[0].shape), arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def _padded(batch, rows: int, weigh: bool = True):
    """The batch padded to ``rows`` with zero rows, and its mask; ``weigh``: weights of 1
    where none are given (several processes: every process the same arrays)."""
    x, y, w = batch
    n = x.shape[0]
    if n > rows:
        raise ValueError(f"a batch of {n} rows; each process's batches must have at most {rows}")
    w = np.ones(n, np.float32) if w is None and weigh else w
    mask = np.zeros(rows, np.float32)
    mask[:n] = 1

    def pad(a):
        return (
            None if a is None else np.concatenate([a, np.zeros((rows - n, *a.shape[1:]), a.dtype)])
        )

    return pad(x), pad(y), pad(w), mask


class Prefetcher:
    """Iterates the placed groups of ``host_groups`` (an iterator), produced ``depth`` ahead
    on a background thread; an error there is raised here, in order."""

    def __init__(self, host_groups, mesh=None, depth: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(host_groups, mesh), daemon=True)
        self.thread.start()

    def _fill(self, host_groups, mesh):
        try:
            for xs, ys, ws, ms, count, first in host_groups:
                placed = place((xs, ys, ws, ms), mesh)
                if not self._put(Group(*placed, count, first)):
                    return
            self._put(_END)
        except BaseException as e:  # raised on the consumer's thread
            self._put(e)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        try:
            while True:
                item = self.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
