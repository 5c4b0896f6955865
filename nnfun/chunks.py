"""How the host loop cuts a run into chunks of epochs (one compiled call each) and holds
Ctrl-C until a chunk ends."""

from __future__ import annotations

import contextlib
import signal
import threading

CHUNK_SECONDS = 0.5  # what an automatic chunk aims at: quick progress, Ctrl-C and callbacks
MAX_CHUNK = 4096  # the most epochs one compiled call runs


class ChunkSizer:
    """How many epochs the next compiled call runs: fixed, or timed to about CHUNK_SECONDS."""

    def __init__(self, fixed: int | None):
        self.fixed = fixed
        self.next = fixed or 1
        self.calls = 0

    def size(self, limit: int) -> int:
        return max(1, min(self.next, limit))

    def observe(self, epochs: int, seconds: float) -> None:
        self.calls += 1
        if self.fixed or epochs == 0:
            return
        if self.calls == 1:  # the first call compiled the program: its time says nothing
            self.next = 2
            return
        wanted = int(CHUNK_SECONDS / max(seconds / epochs, 1e-9))
        self.next = max(1, min(wanted, 8 * epochs, MAX_CHUNK))


MIN_CAPACITY = 16  # runs of up to 16 epochs share one program (a row of logs: a few scalars)


def capacity(fixed: int | None, epochs: int) -> int:
    """The history buffers' length: a fixed chunk's epochs, or else the epochs this call
    runs, rounded up to a power of two, at least MIN_CAPACITY (few distinct programs: a run
    one epoch per call shares its program with short runs), at most MAX_CHUNK unless a fixed
    chunk is longer."""
    wanted = 1 << max(0, (fixed or epochs) - 1).bit_length()
    return max(fixed or 0, min(MAX_CHUNK, max(MIN_CAPACITY, wanted)))


class Interrupt:
    """Ctrl-C during a chunk is held until the chunk ends (then fit returns its state), so
    that every process of a multi-host run stops at the same chunk; a second Ctrl-C raises
    at once. Only the main thread can take signals: elsewhere Ctrl-C raises as usual."""

    def __init__(self):
        self.flag = False

    @contextlib.contextmanager
    def deferred(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def hold(signum, frame):
            if self.flag:
                raise KeyboardInterrupt
            self.flag = True

        previous = signal.signal(signal.SIGINT, hold)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
