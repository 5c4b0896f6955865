"""The one owner of a training run's bookkeeping.

A ``RunRecord`` is what ``fit`` knows about the run it drives, in Keras's numbering (epochs
count from ``initial_epoch``; the best epoch is that epoch's own number): the first epoch of
this call, the next epoch to run, the best epoch and value of the monitored quantity, the
epoch early stopping stopped at, why the run ended, and the input's position (for streams).
The host loop updates it after each chunk; ``fit``, ``fit_many``, the Keras face, messages,
callbacks and checkpoints read it. Nothing converts between numberings anywhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RunRecord:
    initial_epoch: int  # the first epoch of this call (Keras's ``initial_epoch``)
    epochs: int  # the call ends before this epoch (Keras's ``epochs``)
    epoch: int = -1  # the next epoch to run; initial_epoch at the start
    best_epoch: int | None = None  # the monitored value's best epoch so far
    best_value: float | None = None
    stopped_epoch: int | None = None  # the epoch after which early stopping stopped the run
    stop_reason: str | None = None  # why the run ended before ``epochs`` (None: it did not)
    position: dict = field(default_factory=dict)  # the input's position (streams)

    def __post_init__(self):
        if self.epoch < 0:
            self.epoch = self.initial_epoch

    @property
    def running(self) -> bool:
        return self.epoch < self.epochs and self.stop_reason is None

    @property
    def last_epoch(self) -> int | None:
        return self.epoch - 1 if self.epoch > self.initial_epoch else None

    def advance(self, epochs: int) -> None:
        self.epoch += epochs

    def best(self, epoch: int | None, value: float | None) -> None:
        if epoch is not None and epoch >= 0:
            self.best_epoch, self.best_value = int(epoch), float(value)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def early_stop(self, monitor: str) -> None:
        """Early stopping ended the run after the last epoch run."""
        self.stopped_epoch = self.last_epoch
        self.stop(
            f"early stopping after epoch {self.stopped_epoch}: {monitor} best "
            f"{self.best_value:.6g} at epoch {self.best_epoch}"
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, epochs: int) -> RunRecord:
        """A record resumed from a checkpoint, asked to end before ``epochs``."""
        record = cls(**{**data, "epochs": epochs})
        record.stop_reason = None
        return record
