"""What ``fit`` shows while it runs: nothing (verbose 0), a progress bar advancing by chunks
of epochs (1), or one line per epoch on stdout (2), with times written as Keras writes them
(``Epoch 3/100 - 52ms - 4ms/step - loss: 0.4321``)."""

from __future__ import annotations

import sys
import time

from nnfun import parallel


def readable(seconds: float, unit: str = "") -> str:
    """``2s``, ``12ms``, ``40us`` (per ``unit`` when given), as Keras's progress bar."""
    per = f"/{unit}" if unit else ""
    if seconds >= 1:
        return f"{seconds:.0f}s{per}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms{per}"
    return f"{seconds * 1e6:.0f}us{per}"


class Progress:
    """verbose 0: silent; 1: a progress bar advancing by chunks; 2: one line per epoch."""

    def __init__(self, verbose, epochs: int, initial_epoch: int, steps: int | None = None):
        if verbose == "auto":
            verbose = 1 if sys.stderr.isatty() else 2
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {verbose!r}")
        if not parallel.is_main_process():  # one host reports for all
            verbose = 0
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.bar = None
        if verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, initial=initial_epoch, desc="fit", unit="epoch")
        self.started = time.perf_counter()

    def epochs_done(self, rows) -> None:
        """``rows``: the chunk's (epoch, logs) pairs, Keras's epoch numbers."""
        if not len(rows):
            return
        if self.bar is not None:
            self.bar.update(len(rows))
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in rows[-1][1].items()})
        elif self.verbose == 2:
            now = time.perf_counter()
            each = (now - self.started) / len(rows)  # a chunk is one compiled call: its mean
            self.started = now
            step = f" - {readable(each / self.steps, 'step')}" if self.steps else ""
            for epoch, logs in rows:
                values = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{self.epochs} - {readable(each)}{step} - {values}",
                      flush=True)  # fmt: skip

    def say(self, message: str) -> None:
        if self.verbose:
            (self.bar.write if self.bar is not None else print)(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
