"""Convnet training speed: nnfun's fit (autodiff and hand-written gradients) against a
hand-written JAX epoch (one ``lax.scan``, and one jitted call a step), Flax NNX, Equinox and
PyTorch eager where installed. On XLA's CPU backend a convolution's kernel gradient runs
about 20x slower inside a loop than outside one, so the hand-written scan is slow there;
nnfun's convolutions are written tap by tap (see nnfun/conv.py) and do not suffer from it.

Workload: keras.io's MNIST convnet without its dropout (Conv2D(32, 3, relu) -> MaxPooling2D
-> Conv2D(64, 3, relu) -> MaxPooling2D -> Flatten -> Dense(10, softmax)), Adam 1e-3, batch
128, float32, on MNIST-shaped random images (the speed does not depend on the pixels).
Steady-state steps/s over whole epochs (compilation excluded: one warm-up epoch, then the
median of repeats, the variants interleaved). Peers that are not installed are skipped with
a line saying so. Prints a table with each variant's ratio to the scan, writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nnfun  # noqa: E402
from nnfun import train  # noqa: E402

BATCH = 128
LEARNING_RATE = 1e-3


def model() -> nnfun.Sequential:
    return nnfun.Sequential(
        [
            nnfun.Input(shape=(28, 28, 1)),
            nnfun.Conv2D(32, 3, activation="relu"),
            nnfun.MaxPooling2D(2),
            nnfun.Conv2D(64, 3, activation="relu"),
            nnfun.MaxPooling2D(2),
            nnfun.Flatten(),
            nnfun.Dense(10, "softmax"),
        ]
    )


def bench_nnfun(x, y, grad):
    net = model()
    cfg = nnfun.Config.make("sparse_categorical_crossentropy", "adam", grad=grad,
                            learning_rate=LEARNING_RATE)  # fmt: skip
    box = {"state": train.init_state(net, cfg, jax.random.key(0))}

    def epoch():
        box["state"], _ = train.fit(net, x, y, config=cfg, state=box["state"], epochs=1,
                                    batch_size=BATCH)  # fmt: skip
        jax.block_until_ready(box["state"])

    return epoch


def _forward(p, x):
    dn = ("NHWC", "HWIO", "NHWC")
    for k in ("c1", "c2"):
        x = jax.nn.relu(lax.conv_general_dilated(x, p[k]["W"], (1, 1), "VALID",
                                                 dimension_numbers=dn) + p[k]["b"])  # fmt: skip
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return x.reshape(x.shape[0], -1) @ p["d"]["W"] + p["d"]["b"]


def _hand_written():
    """The same model written directly in JAX: parameters, optax Adam and the loss."""
    keys = jax.random.split(jax.random.key(0), 3)
    glorot = jax.nn.initializers.glorot_uniform()
    params = {
        "c1": {"W": glorot(keys[0], (3, 3, 1, 32)), "b": jnp.zeros(32)},
        "c2": {"W": glorot(keys[1], (3, 3, 32, 64)), "b": jnp.zeros(64)},
        "d": {"W": glorot(keys[2], (1600, 10)), "b": jnp.zeros(10)},
    }
    tx = optax.adam(LEARNING_RATE)

    def step(c, xb, yb):
        p, o = c
        value, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(_forward(p, xb), yb).mean()
        )(p)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), value

    return (params, tx.init(params)), step


def bench_scan(x, y):
    """The hand-written model, one ``lax.scan`` over the batches an epoch."""
    c, step = _hand_written()
    steps = x.shape[0] // BATCH

    @functools.partial(jax.jit, donate_argnums=0)
    def run(carry, x, y):
        c, key = carry
        key, k = jax.random.split(key)
        order = jax.random.permutation(k, x.shape[0])[: steps * BATCH].reshape(steps, BATCH)
        c, values = lax.scan(lambda c, idx: step(c, x[idx], y[idx]), c, order)
        return (c, key), values

    box = {"c": (c, jax.random.key(1))}

    def epoch():
        box["c"], _ = run(box["c"], x, y)
        jax.block_until_ready(box["c"])

    return epoch


def bench_jit_steps(x, y):
    """The hand-written model, one jitted call a step from a Python loop (as Keras, Flax
    and Equinox users train): no loop inside the program."""
    c, step = _hand_written()
    steps = x.shape[0] // BATCH
    jitted = jax.jit(step, donate_argnums=0)
    box = {"c": c, "key": jax.random.key(1)}

    def epoch():
        box["key"], k = jax.random.split(box["key"])
        order = jax.random.permutation(k, x.shape[0])[: steps * BATCH].reshape(steps, BATCH)
        for idx in order:
            box["c"], _ = jitted(box["c"], x[idx], y[idx])
        jax.block_until_ready(box["c"])

    return epoch


VARIANTS = {
    "nnfun fit (autodiff)": lambda x, y: bench_nnfun(x, y, "autodiff"),
    "nnfun fit (manual)": lambda x, y: bench_nnfun(x, y, "manual"),
    "jax scan": bench_scan,
    "jax jit per step": bench_jit_steps,
}
PEERS = {"flax nnx": "flax", "equinox": "equinox", "pytorch eager": "torch"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny epochs, one repeat (for tests)")
    p.add_argument("--samples", type=int, default=6016)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    n, repeats = (256, 1) if args.quick else (args.samples, args.repeats)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((n, 28, 28, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    steps = n // BATCH
    epochs = {name: make(x, y) for name, make in VARIANTS.items()}
    for epoch in epochs.values():
        epoch()  # compiles
    # Repeats interleave the variants, so that a change in the machine's load hits them alike.
    times = {name: [] for name in epochs}
    for _ in range(repeats):
        for name, epoch in epochs.items():
            t = time.perf_counter()
            epoch()
            times[name].append(time.perf_counter() - t)
    rows = {name: {"steps_per_s": steps / statistics.median(t)} for name, t in times.items()}
    missing = [f"{name} skipped: {module} is not installed" for name, module in PEERS.items()
               if importlib.util.find_spec(module) is None]  # fmt: skip
    if len(missing) < len(PEERS):
        missing.append("installed peers are not written yet: see experiments/benchmarks/README.md")
    scan, per_step = rows["jax scan"]["steps_per_s"], rows["jax jit per step"]["steps_per_s"]
    print(f"convnet epoch, {n} samples, batch {BATCH}, {jax.devices()[0].platform}")
    print(f"{'variant':<24}{'steps/s':>10}{'x scan':>10}{'x jit step':>12}")
    for name, row in rows.items():
        row["ratio_to_scan"] = row["steps_per_s"] / scan
        row["ratio_to_jit_step"] = row["steps_per_s"] / per_step
        print(f"{name:<24}{row['steps_per_s']:>10.2f}{row['ratio_to_scan']:>10.2f}"
              f"{row['ratio_to_jit_step']:>12.2f}")  # fmt: skip
    manual = rows["nnfun fit (manual)"]["steps_per_s"] / rows["nnfun fit (autodiff)"]["steps_per_s"]
    print(f"manual / autodiff gradient: {manual:.2f}x")
    for line in missing:
        print(line)
    result = {
        "samples": n, "batch": BATCH, "repeats": repeats, "rows": rows,
        "manual_over_autodiff": manual, "skipped": missing,
        "device": jax.devices()[0].device_kind, "machine": platform.machine(),
        "jax": jax.__version__,
    }  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
