"""Training from streams against arrays in memory, side by side (nnfun.sources).

The MNIST-shaped workload (784-500-500-10 sigmoid/softmax CE, Adam 1e-3, batch 100) from
(a) arrays in memory, (b) a memory-mapped .npy file, (c) a PyDataset, (d) a Grain pipeline,
(e) a generator of ready batches. Each variant trains the same samples for ``--epochs``
epochs; the first (compilation) is excluded, the others timed: wall and process CPU seconds
per epoch, and the ratio of arrays' time to each (>= 0.9 meets the target). ``--big N``
instead trains one epoch over a generator of N fresh samples (4,000,000: 12.5 GB if held
whole) in a child process and reports its peak resident memory.

    python experiments/benchmarks/streams.py [--samples 20000] [--epochs 3] [--k 20]
    python experiments/benchmarks/streams.py --big 4000000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nnfun  # noqa: E402
from nnfun import fit as F  # noqa: E402
from nnfun import sources, train  # noqa: E402

BATCH, FEATURES, CLASSES = 100, 784, 10


def mnist_like(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, FEATURES), np.float32)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    return x, y


def model():
    layers = [nnfun.Dense(500, "sigmoid", input_dim=FEATURES), nnfun.Dense(500, "sigmoid"),
              nnfun.Dense(CLASSES, "softmax")]  # fmt: skip
    net = nnfun.Sequential(layers)
    config = nnfun.Config.make("categorical_crossentropy", "adam", learning_rate=1e-3)
    return net, config, train.init_state(net, config, jax.random.key(0))


class Batches(sources.PyDataset):
    """Batch i: rows [i * BATCH, (i + 1) * BATCH) of in-memory arrays."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // BATCH)

    def __getitem__(self, i):
        return self.x[i * BATCH : (i + 1) * BATCH], self.y[i * BATCH : (i + 1) * BATCH]


def timed(label, net, config, state, make_input, epochs, **kw):
    """Seconds per epoch (wall, CPU) after the first, training ``epochs`` epochs."""
    marks = []

    class Mark(nnfun.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            marks.append((time.perf_counter(), time.process_time()))

    x, y, extra = make_input()
    start = (time.perf_counter(), time.process_time())
    state, history = F.fit(net, x, y, config=config, state=state, epochs=epochs,
                           batch_size=BATCH, shuffle=False, callbacks=[Mark()],
                           **extra, **kw)  # fmt: skip
    jax.block_until_ready(state.params)
    marks = [start, *marks]
    wall = (marks[-1][0] - marks[1][0]) / (epochs - 1)
    cpu = (marks[-1][1] - marks[1][1]) / (epochs - 1)
    return {"variant": label, "wall_s": wall, "cpu_s": cpu, "loss": history["loss"][-1],
            "params": state.params}  # fmt: skip


def side_by_side(n: int, epochs: int, k: int) -> list[dict]:
    import grain

    x, y = mnist_like(n)
    net, config, state = model()
    folder = Path(tempfile.mkdtemp())
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    steps = -(-n // BATCH)

    def generator():
        for _ in range(epochs):
            for i in range(steps):
                yield x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]

    stream = {"steps_per_execution": k}
    variants = [
        ("(a) arrays in memory", lambda: (x, y, {"epochs_per_chunk": 1})),
        (
            "(b) memory-mapped .npy",
            lambda: (
                np.load(folder / "x.npy", mmap_mode="r"),
                np.load(folder / "y.npy", mmap_mode="r"),
                stream,
            ),
        ),  # fmt: skip
        ("(c) PyDataset", lambda: (Batches(x, y), None, stream)),
        (
            "(d) Grain",
            lambda: (
                grain.MapDataset.range(n).batch(BATCH).map(lambda i: (x[i], y[i])),
                None,
                stream,
            ),
        ),  # fmt: skip
        ("(e) generator", lambda: (generator(), None, {**stream, "steps_per_epoch": steps})),
    ]
    rows = [timed(label, net, config, state, make, epochs) for label, make in variants]
    ref, ref_params = rows[0], rows[0]["params"]
    for r in rows:
        r["speed_vs_arrays"] = ref["wall_s"] / r["wall_s"]
        r["cpu_vs_arrays"] = ref["cpu_s"] / r["cpu_s"]
        pairs = zip(jax.tree.leaves(r.pop("params")), jax.tree.leaves(ref_params), strict=True)
        r["same_bits"] = all(np.array_equal(a, b) for a, b in pairs)
    return rows


def big(n: int, k: int) -> dict:
    """One epoch over a generator of ``n`` fresh samples; peak resident memory."""
    net, config, state = model()
    steps = n // BATCH

    def generator():
        rng = np.random.default_rng(1)
        for _ in range(steps):
            yield (rng.random((BATCH, FEATURES), np.float32),
                   rng.integers(0, CLASSES, BATCH).astype(np.int32))  # fmt: skip

    start = time.perf_counter()
    state, history = F.fit(net, generator(), None, config=config, state=state, epochs=1,
                           batch_size=BATCH, steps_per_epoch=steps,
                           steps_per_execution=k)  # fmt: skip
    jax.block_until_ready(state.params)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"samples": n, "data_gb_if_whole": n * (FEATURES * 4 + 4) / 1e9,
            "peak_rss_gb": peak_kb * 1024 / 1e9, "seconds": time.perf_counter() - start,
            "loss": history["loss"][-1]}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--k", type=int, default=20, help="steps_per_execution for streams")
    parser.add_argument("--big", type=int, help="one epoch over a generator of this many")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.big:
        result = big(args.big, args.k)
        print(json.dumps(result, indent=1))
    else:
        result = side_by_side(args.samples, args.epochs, args.k)
        print(f"{'variant':26} {'wall s/epoch':>12} {'cpu s/epoch':>11} {'arrays/this':>11} "
              f"{'cpu ratio':>9} {'same bits':>9}")  # fmt: skip
        for r in result:
            print(f"{r['variant']:26} {r['wall_s']:12.3f} {r['cpu_s']:11.3f} "
                  f"{r['speed_vs_arrays']:11.2f} {r['cpu_vs_arrays']:9.2f} "
                  f"{str(r['same_bits']):>9}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
