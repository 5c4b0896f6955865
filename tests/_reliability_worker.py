"""Training run for the subprocess tests:
``python _reliability_worker.py MODE OUT [KILL_AT [TRAIN_OUT]]``.

MODE ``train``: fit the fixed tiny problem and write the final params and losses to OUT (npz).
MODE ``checkpoint``: fit with a checkpoint every epoch into the folder OUT and SIGKILL this
process at the KILL_AT-th line executed inside ``nnfun.checkpoint`` during the second save;
with TRAIN_OUT, first the ``train`` run, written there (one process start for both tests).
"""

import functools
import os
import signal
import sys

import jax
import numpy as np

import nnfun
from nnfun import train
from nnfun.layers import BatchNorm, Dense, Dropout

EPOCHS = 4


@functools.cache  # one network object, so the compiled epoch is reused within a process
def problem():
    """A tiny fixed problem with every source of randomness: init, shuffling, dropout."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 0.5).astype(np.int32)
    net = nnfun.Sequential(
        [Dense(16, "relu", input_dim=5), BatchNorm(), Dropout(0.2), Dense(3, "softmax")]
    )
    config = nnfun.Config.make("categorical_crossentropy", "adam", metrics=["accuracy"])
    return net, config, x, y


def fit(epochs=EPOCHS, **kw):
    net, config, x, y = problem()
    return train.fit(net, x, y, config=config, key=jax.random.key(11), epochs=epochs,
                     batch_size=8, **kw)  # fmt: skip


def kill_inside_second_save(kill_at: int) -> None:
    """Counts line events in nnfun/checkpoint.py from the second save on; SIGKILL at kill_at."""
    from nnfun import checkpoint

    target, saves, lines = os.path.abspath(checkpoint.__file__), [0], [0]
    original = checkpoint.save

    def tracer(frame, event, arg):
        if os.path.abspath(frame.f_code.co_filename) != target:
            return None  # do not trace other files line by line
        if event == "line":
            lines[0] += 1
            if lines[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return tracer

    def save(*args, **kwargs):
        saves[0] += 1
        if saves[0] == 2:
            sys.settrace(tracer)
        try:
            return original(*args, **kwargs)
        finally:
            sys.settrace(None)
            if saves[0] == 2:
                print(f"LINES {lines[0]}", flush=True)  # lines executed by a whole save

    checkpoint.save = save


def train_and_write(out: str) -> None:
    """The ``train`` mode: the final params and the losses of ``fit()``, as npz."""
    state, hist = fit()
    leaves = jax.tree.leaves(state.params)
    np.savez(out, loss=np.array(hist["loss"]), **{f"leaf{i}": a for i, a in enumerate(leaves)})


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "train":
        train_and_write(out)
    elif mode == "checkpoint":
        if len(sys.argv) > 4:
            train_and_write(sys.argv[4])
        kill_inside_second_save(int(sys.argv[3]))
        fit(checkpoint_dir=out, checkpoint_every=1, keep_checkpoints=2)
    else:
        raise SystemExit(f"mode: expected 'train' or 'checkpoint', got {mode!r}")
