"""Kills itself inside a checkpoint save, at points spread over the whole save.

``python _checkpoint_worker.py OUT`` traces one save (step 2 over step 1, keep=1: write,
fsync, rename, then retire the old step), then picks kill points from the trace: every event
that is not a write, and the first, middle and last write of each file. For each point k it
forks a child that starts saving step 2 into OUT/k (a copy of a folder holding step 1) and
sends itself SIGKILL just before the k-th event. Prints JSON ``{"events": [...], "runs":
[{"k", "event", "signal", "exit"}, ...]}``; the last run (k = len(events) + 1) completes.

The trees are NumPy arrays and Python scalars, so ``checkpoint.save`` never starts JAX's
runtime and forking is safe (a started runtime has threads a child would lose).
``state(step)`` is the tree saved at ``step``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np

from nnfun import checkpoint

_W = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)


def state(step: int) -> dict:
    """The tree saved at ``step``: every leaf depends on the step."""
    return {
        "params": {"W": _W + step, "b": np.linspace(-1, 1, 64).astype(ml_dtypes.bfloat16) * step},
        "opt_state": {"mu": _W * step, "count": np.int32(step)},
        "counts": np.arange(step, step + 3, dtype=np.uint32),
        "lr": 1e-3 / step,
        "step": step,
    }


def metadata(step: int) -> dict:
    return {"epoch": step, "loss": [1 / (s + 3) for s in range(step)]}


class Recorder:
    """Wraps the file-system calls ``checkpoint.save`` makes: ``on_event(label)`` runs just
    before each one, with labels such as ``"write .tmp-step_00000002-x/arrays.npz"``, ``"fsync
    ."`` or ``"rename .tmp-... -> step_00000002"``, paths relative to ``root``. ``patch`` is
    ``setattr`` or pytest's ``monkeypatch.setattr``."""

    def __init__(self, on_event, root: Path, patch=setattr):
        self.root = Path(root)
        real_open, real_rmtree, real_mkdtemp = open, shutil.rmtree, tempfile.mkdtemp
        real = {name: getattr(os, name) for name in ("fsync", "rename", "replace", "mkdir")}
        rel = self.relative

        class File:  # a binary file whose writes are events
            def __init__(self, path, mode):
                self.path, self.raw = rel(path), real_open(path, mode)

            def write(self, data):
                on_event(f"write {self.path}")
                return self.raw.write(data)

            def __getattr__(self, attr):
                return getattr(self.raw, attr)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.raw.close()

        def opener(path, mode="r", *args, **kwargs):
            on_event(f"open {rel(path)}")
            return File(path, mode)

        def fsync(fd):
            on_event(f"fsync {rel(os.readlink(f'/proc/self/fd/{fd}'))}")
            return real["fsync"](fd)

        def rename(src, dst, **kwargs):
            on_event(f"rename {rel(src)} -> {rel(dst)}")
            return real["rename"](src, dst, **kwargs)

        def replace(src, dst, **kwargs):
            on_event(f"replace {rel(src)} -> {rel(dst)}")
            return real["replace"](src, dst, **kwargs)

        def mkdir(path, *args, **kwargs):
            on_event(f"mkdir {rel(path)}")
            return real["mkdir"](path, *args, **kwargs)

        def rmtree(path, *args, **kwargs):
            on_event(f"rmtree {rel(path)}")
            return real_rmtree(path, *args, **kwargs)

        def mkdtemp(*args, **kwargs):
            on_event("mkdtemp")
            return real_mkdtemp(*args, **kwargs)

        patch(checkpoint, "open", opener)  # shadows the builtin inside nnfun.checkpoint only
        for name, fn in (("fsync", fsync), ("rename", rename), ("replace", replace)):
            patch(os, name, fn)
        patch(os, "mkdir", mkdir)
        patch(shutil, "rmtree", rmtree)
        patch(tempfile, "mkdtemp", mkdtemp)

    def relative(self, path) -> str:
        path = Path(os.path.abspath(path))
        root = Path(os.path.abspath(self.root))
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def kill_points(trace: list[str]) -> list[int]:
    """1-based events to kill at: every non-write, and the first, middle and last write of
    each file; plus len(trace) + 1, a save that completes."""
    points = {k for k, e in enumerate(trace, 1) if not e.startswith("write ")}
    for label in {e for e in trace if e.startswith("write ")}:
        writes = [k for k, e in enumerate(trace, 1) if e == label]
        points |= {writes[0], writes[len(writes) // 2], writes[-1]}
    return sorted(points) + [len(trace) + 1]


def main(out: Path) -> dict:
    events: list[str] = []
    armed = {"on": False, "kill_at": 0}

    def on_event(label):
        if not armed["on"]:
            return
        events.append(label)
        if len(events) == armed["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)

    recorder = Recorder(on_event, out / "trace")
    base = out / "base"
    checkpoint.save(base, 1, state(1), metadata=metadata(1))
    # The trace: every event of saving step 2 over step 1.
    shutil.copytree(base, out / "trace")
    armed["on"] = True
    checkpoint.save(out / "trace", 2, state(2), metadata=metadata(2), keep=1)
    armed["on"] = False
    trace = list(events)
    runs = []
    for k in kill_points(trace):
        directory = out / str(k)
        shutil.copytree(base, directory)
        pid = os.fork()
        if pid == 0:
            events.clear()
            recorder.root = directory
            armed.update(on=True, kill_at=k)
            checkpoint.save(directory, 2, state(2), metadata=metadata(2), keep=1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        runs.append(
            {
                "k": k,
                "event": trace[k - 1] if k <= len(trace) else None,
                "signal": os.WTERMSIG(status) if killed else None,
                "exit": None if killed else os.WEXITSTATUS(status),
            }
        )
    return {"events": trace, "runs": runs}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
