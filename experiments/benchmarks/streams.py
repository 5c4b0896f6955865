"""Training from streams against arrays in memory, side by side (nnfun.sources).

The MNIST-shaped workload (784-500-500-10 sigmoid/softmax CE, Adam 1e-3, batch 100) from
(a) arrays in memory, (b) a memory-mapped .npy file, (c) a PyDataset, (d) a Grain pipeline,
(e) a generator of ready batches, unshuffled (so every variant trains the same bits). Each
variant trains one warm-up epoch (compilation), then one epoch per round, round-robin over
``--rounds``; medians of wall and process CPU seconds per epoch, and the ratio of arrays'
time to each (>= 0.9 meets the target). ``--big N``
instead trains one epoch over a generator of N fresh samples (4,000,000: 12.5 GB if held
whole) in a child process and reports its peak resident memory.

    python experiments/benchmarks/streams.py [--samples 20000] [--rounds 5] [--k 20]
    python experiments/benchmarks/streams.py --big 4000000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
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


def one_epoch(net, config, state, make_input):
    """(state, loss, wall s, CPU s) of one fit call training one epoch."""
    x, y, extra = make_input()
    wall, cpu = time.perf_counter(), time.process_time()
    state, history = F.fit(net, x, y, config=config, state=state, epochs=1, batch_size=BATCH,
                           shuffle=False, **extra)  # fmt: skip
    jax.block_until_ready(state.params)
    return state, history["loss"][-1], time.perf_counter() - wall, time.process_time() - cpu


def side_by_side(n: int, rounds: int, k: int) -> list[dict]:
    """Each variant: one warm-up epoch (compilation), then one epoch per round, round-robin
    (a change in machine load hits all alike); medians of wall and CPU seconds."""
    import grain

    x, y = mnist_like(n)
    net, config, state = model()
    folder = Path(tempfile.mkdtemp())
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    steps = -(-n // BATCH)

    def generator():
        for i in range(steps):
            yield x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]

    stream = {"steps_per_execution": k}
    variants = {
        "(a) arrays in memory": lambda: (x, y, {}),
        "(b) memory-mapped .npy": lambda: (
            np.load(folder / "x.npy", mmap_mode="r"),
            np.load(folder / "y.npy", mmap_mode="r"),
            stream,
        ),  # fmt: skip
        "(c) PyDataset": lambda: (Batches(x, y), None, stream),
        "(d) Grain": lambda: (
            grain.MapDataset.range(n).batch(BATCH).map(lambda i: (x[i], y[i])),
            None,
            stream,
        ),  # fmt: skip
        "(e) generator": lambda: (generator(), None, {**stream, "steps_per_epoch": steps}),
    }
    states = {label: one_epoch(net, config, state, make)[0] for label, make in variants.items()}
    times = {label: [] for label in variants}
    losses = {}
    for _ in range(rounds):
        for label, make in variants.items():
            states[label], losses[label], wall, cpu = one_epoch(net, config, states[label], make)
            times[label].append((wall, cpu))
    ref = "(a) arrays in memory"
    rows = []
    for label in variants:
        wall = statistics.median(t[0] for t in times[label])
        cpu = statistics.median(t[1] for t in times[label])
        pairs = zip(jax.tree.leaves(states[label].params), jax.tree.leaves(states[ref].params),
                    strict=True)  # fmt: skip
        rows.append({"variant": label, "wall_s": wall, "cpu_s": cpu, "loss": losses[label],
                     "same_bits": all(np.array_equal(a, b) for a, b in pairs)})  # fmt: skip
    for r in rows:
        r["speed_vs_arrays"] = rows[0]["wall_s"] / r["wall_s"]
        r["cpu_vs_arrays"] = rows[0]["cpu_s"] / r["cpu_s"]
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
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per variant")
    parser.add_argument("--k", type=int, default=20, help="steps_per_execution for streams")
    parser.add_argument("--big", type=int, help="one epoch over a generator of this many")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.big:
        result = big(args.big, args.k)
        print(json.dumps(result, indent=1))
    else:
        result = side_by_side(args.samples, args.rounds, args.k)
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
