"""Data that does not fit in memory, read batch by batch: Python generators and iterators, a
``PyDataset`` (``__len__``, ``__getitem__``, ``on_epoch_end``), Grain datasets and data
loaders, and NumPy memory-mapped arrays.

A source yields an epoch's batches ``(x, y, sample_weight or None)`` as NumPy arrays, each
checked on the host (shape, dtype, finite values, labels in range) with errors that name the
source and the batch index. Its position (epochs begun, batches taken, Grain's iterator
state) is saved with checkpoints. Shuffling: a memory-mapped array's rows and a PyDataset's
batch order are permuted per epoch with the run's key, exactly as ``fit`` permutes arrays'
rows; Grain shuffles itself; a generator is read as it comes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import jax
import numpy as np

from nnfun import parallel


class PyDataset:
    """Base class of a data set read one batch at a time (Keras's ``PyDataset``).

    Subclasses define ``__len__`` (batches per epoch) and ``__getitem__(i)`` returning batch
    ``i`` as ``(x, y)`` or ``(x, y, sample_weight)`` NumPy arrays, and may define
    ``on_epoch_end`` (called after each epoch). Keras's ``workers``,
    ``use_multiprocessing`` and ``max_queue_size`` are accepted; nnfun reads on one
    background thread.
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):  # fmt: skip
        self.workers, self.use_multiprocessing = workers, use_multiprocessing
        self.max_queue_size = max_queue_size

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__}: define __len__ (batches per epoch)")

    def __getitem__(self, index: int):
        raise NotImplementedError(f"{type(self).__name__}: define __getitem__ (one batch)")

    def on_epoch_end(self) -> None:
        pass


class SourceError(ValueError):
    """A batch a source gave could not be trained on (names the source and the batch)."""


def _is_grain(x) -> bool:
    return type(x).__module__.split(".")[0] == "grain"


def _is_pydataset(x) -> bool:
    if isinstance(x, PyDataset):
        return True
    # keras.utils.PyDataset and look-alikes, not arrays or lists
    return all(hasattr(x, a) for a in ("__len__", "__getitem__", "on_epoch_end"))


def is_stream(x) -> bool:
    """Whether ``x`` is read batch by batch rather than placed on the device whole."""
    if isinstance(x, np.memmap) or _is_grain(x) or _is_pydataset(x):
        return True
    return isinstance(x, Iterator)


class Source:
    """An epoch's batches from one kind of input; see the module's docstring."""

    name = "x"
    shuffles = False  # permuted with the run's key (memmap rows, PyDataset batches)

    def steps(self) -> int | None:
        """Batches per epoch (None: until the input ends)."""
        raise NotImplementedError

    def batches(self, perm_key=None) -> Iterator[tuple]:
        """One epoch's raw batches, from ``start`` of its position."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        self.epochs_begun = getattr(self, "epochs_begun", 0) + 1

    def position(self) -> dict:
        return {"epochs": getattr(self, "epochs_begun", 0)}

    def restore(self, position: dict) -> None:
        self.epochs_begun = int(position.get("epochs", 0))


class ArraySource(Source):
    """Arrays too large to place whole (``np.memmap``, ``np.load(mmap_mode="r")``), read a
    batch of rows at a time: batches and their order exactly as ``fit`` cuts arrays."""

    shuffles = True

    def __init__(self, x, y, sample_weight, batch_size: int, shuffle: bool, name="x"):
        n = int(np.shape(x)[0])
        for arg, a in (("y", y), ("sample_weight", sample_weight)):
            if a is not None and int(np.shape(a)[0]) != n:
                raise ValueError(f"{arg}: expected {n} samples (as many as {name}), got "
                                 f"shape {np.shape(a)}")  # fmt: skip
        if y is None:
            raise ValueError(f"y: expected targets with the memory-mapped {name}, got None")
        mapped = isinstance(x, np.memmap)
        self.x, self.y, self.w = x, y, sample_weight
        self.name = f"{name} (memory-mapped)" if mapped else name
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle

    def steps(self) -> int:
        return -(-self.n // self.batch_size)

    def batches(self, perm_key=None):
        b, n = self.batch_size, self.n
        order = None
        if perm_key is not None and self.shuffle and b < n:
            # fit's own permutation of the rows; reading sorted rows keeps the disk sequential
            order = np.asarray(parallel.fetch(jax.random.permutation(perm_key, n)))
        for start in range(0, n, b):
            if order is None:
                rows = slice(start, min(start + b, n))
                yield tuple(None if a is None else np.asarray(a[rows])
                            for a in (self.x, self.y, self.w))  # fmt: skip
            else:
                idx = order[start : start + b]
                sort = np.argsort(idx, kind="stable")
                back = np.empty_like(sort)
                back[sort] = np.arange(sort.size)
                yield tuple(None if a is None else np.asarray(a[idx[sort]])[back]
                            for a in (self.x, self.y, self.w))  # fmt: skip


class GeneratorSource(Source):
    """A Python iterator or generator of batches: ``steps_per_epoch`` of them make an epoch
    (None: until it ends, once). It cannot be rewound: a resumed run reads on from wherever
    the iterator given to it stands."""

    def __init__(self, iterator, steps: int | None, name="x"):
        self.it, self.count, self.name = iterator, steps, f"{name} (a generator)"
        self.taken = 0

    def steps(self) -> int | None:
        return self.count

    def batches(self, perm_key=None):
        for i in itertools.count():
            if self.count is not None and i == self.count:
                return
            try:
                batch = next(self.it)
            except StopIteration:
                if self.count is not None:
                    raise SourceError(
                        f"{self.name}: ended after {i} batches of epoch {self.position()['epochs']}"
                        f"; expected steps_per_epoch={self.count} (give more batches, e.g. a "
                        "generator that loops, or a smaller steps_per_epoch)"
                    ) from None
                if i == 0:
                    raise SourceError(f"{self.name}: gave no batches") from None
                return
            self.taken += 1
            yield batch

    def position(self) -> dict:
        return {**super().position(), "batches": self.taken}


class PyDatasetSource(Source):
    """A PyDataset: batch ``i`` is ``dataset[i]``; the order permuted per epoch with the
    run's key under ``shuffle``; ``on_epoch_end`` after each epoch."""

    shuffles = True

    def __init__(self, dataset, steps: int | None, shuffle: bool, name="x"):
        self.ds, self.shuffle, self.name = dataset, shuffle, f"{name} ({type(dataset).__name__})"
        length = len(dataset)
        if length < 1:
            raise ValueError(f"{self.name}: expected at least one batch, got len {length}")
        if steps is not None and steps > length:
            raise ValueError(f"steps_per_epoch: expected at most len({name}) = {length}, got "
                             f"{steps}")  # fmt: skip
        self.count = length if steps is None else steps

    def steps(self) -> int:
        return self.count

    def batches(self, perm_key=None):
        length = len(self.ds)
        order = range(length)
        if perm_key is not None and self.shuffle and length > 1:
            order = np.asarray(parallel.fetch(jax.random.permutation(perm_key, length))).tolist()
        for i in order[: self.count]:
            yield self.ds[int(i)]

    def end_epoch(self) -> None:
        super().end_epoch()
        self.ds.on_epoch_end()


class GrainSource(Source):
    """A Grain ``MapDataset``, ``IterDataset`` or ``DataLoader`` whose elements are batches
    (``.batch(n)``): one iterator read on across epochs (started afresh when a pass ends at
    an epoch's start); its state is the position saved with checkpoints. Grain shuffles."""

    def __init__(self, dataset, steps: int | None, name="x"):
        self.ds, self.name = dataset, f"{name} (Grain {type(dataset).__name__})"
        if steps is None:
            try:
                steps = len(dataset)
            except TypeError:
                raise ValueError(
                    f"steps_per_epoch: {self.name} has no length; give steps_per_epoch"
                ) from None
        self.count, self.it, self.saved = steps, None, None

    def steps(self) -> int:
        return self.count

    def _next(self):
        if self.it is None:
            self.it = iter(self.ds)
            if self.saved is not None:
                self.it.set_state(self.saved)
                self.saved = None
        return next(self.it)

    def batches(self, perm_key=None):
        for i in range(self.count):
            try:
                batch = self._next()
            except StopIteration:
                if i:
                    raise SourceError(
                        f"{self.name}: ended after {i} batches of an epoch; expected "
                        f"steps_per_epoch={self.count} (repeat() the dataset)"
                    ) from None
                self.it = None  # a pass ended with the epoch: a new pass
                batch = self._next()
            yield batch if isinstance(batch, tuple) else _as_tuple(batch, self.name, i)

    def position(self) -> dict:
        state = self.it.get_state() if self.it is not None else self.saved
        return {**super().position(), "grain": _jsonable(state)}

    def restore(self, position: dict) -> None:
        super().restore(position)
        if position.get("grain") is not None:
            self.it, self.saved = None, _from_json(position["grain"])


def _as_tuple(batch, name, index):
    if isinstance(batch, dict) and "x" in batch:
        return (batch["x"], batch.get("y"), batch.get("sample_weight"))
    if isinstance(batch, list):
        return tuple(batch)
    raise SourceError(f"{name}, batch {index}: expected (x, y) or (x, y, sample_weight) or a "
                      f"dict with 'x' and 'y', got {type(batch).__name__}")  # fmt: skip


def _jsonable(state):
    """Grain's iterator state (a dict, possibly with bytes) as JSON."""
    if isinstance(state, bytes):
        return {"__bytes__": state.hex()}
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_jsonable(v) for v in state]
    if isinstance(state, np.generic):
        return state.item()
    return state


def _from_json(state):
    if isinstance(state, dict):
        if set(state) == {"__bytes__"}:
            return bytes.fromhex(state["__bytes__"])
        return {k: _from_json(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_from_json(v) for v in state]
    return state


def open_source(x, y=None, sample_weight=None, *, batch_size=32, steps=None, shuffle=True,
                name="x") -> Source:  # fmt: skip
    """The Source reading ``x`` (y and sample_weight only with a memory-mapped x)."""
    if isinstance(x, Source):
        return x
    if isinstance(x, np.memmap):
        return ArraySource(x, y, sample_weight, batch_size, shuffle, name)
    for arg, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise ValueError(f"{arg}: expected None when {name} is a {type(x).__name__} (its "
                             "batches carry their targets and weights)")  # fmt: skip
    if _is_grain(x):
        return GrainSource(x, steps, name)
    if _is_pydataset(x):
        return PyDatasetSource(x, steps, shuffle, name)
    return GeneratorSource(x, steps, name)


# ---- each batch checked on the host, with the source and batch index ----------------------
class BatchChecker:
    """Checks every batch of a source against the network and against the first batch."""

    def __init__(self, net, loss, name: str):
        self.net, self.loss, self.name = net, loss, name
        self.first = None
        out = net.shapes()[-1]
        self.classes = out[-1] if len(out) == 1 and out[-1] > 1 else None

    def __call__(self, batch, index: int, epoch: int):
        where = f"{self.name}, batch {index} of epoch {epoch}"
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise SourceError(f"{where}: expected (x, y) or (x, y, sample_weight), got "
                              f"{_describe(batch)}")  # fmt: skip
        x, y, w = (*batch, None)[:3]
        x, y = np.asarray(x), np.asarray(y)
        w = None if w is None else np.asarray(w, np.float32)
        if self.first is None:
            self._check_first(x, y, where)
        fx, fy = self.first
        if x.shape[1:] != fx.shape[1:] or x.dtype != fx.dtype:
            raise SourceError(f"{where}: x has shape {x.shape} and dtype {x.dtype}; the first "
                              f"batch had (batch, {', '.join(map(str, fx.shape[1:]))}) "
                              f"{fx.dtype}")  # fmt: skip
        if y.shape[1:] != fy.shape[1:] or y.dtype != fy.dtype or y.shape[0] != x.shape[0]:
            first = ", ".join(map(str, fy.shape[1:]))
            raise SourceError(f"{where}: y has shape {y.shape} and dtype {y.dtype} for "
                              f"{x.shape[0]} rows of x; the first batch's y had "
                              f"(batch, {first}) {fy.dtype}")  # fmt: skip
        if x.shape[0] == 0:
            raise SourceError(f"{where}: an empty batch (x of shape {x.shape})")
        if w is not None and w.shape != (x.shape[0],):
            raise SourceError(f"{where}: sample_weight of shape {w.shape}; expected "
                              f"({x.shape[0]},)")  # fmt: skip
        for arg, a in (("x", x), ("y", y), ("sample_weight", w)):
            if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all():
                raise SourceError(f"{where}: {arg} has non-finite values")
        if w is not None and (w < 0).any():
            raise SourceError(f"{where}: sample_weight has negative values")
        if self.classes is not None and y.ndim == 1 and y.size:
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.classes:
                raise SourceError(f"{where}: expected class labels in [0, {self.classes}), "
                                  f"got values in [{low}, {high}]")  # fmt: skip
        return x, y, w

    def _check_first(self, x, y, where):
        from nnfun import validation

        try:  # the array checks fit applies to arrays, on the first batch's shapes
            validation.check_data(self.net, self.loss, x[:1], y[:1], names=("x", "y"))
        except (ValueError, TypeError) as e:
            raise SourceError(f"{where}: {e}") from None
        self.first = (x[:1], y[:1])


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__
