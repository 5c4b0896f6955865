"""Training speed: nnfun against hand-written JAX, Flax, Equinox and PyTorch, side by side.

Workload 1: 784-500-500-10 sigmoid/softmax CE, Adam 1e-3, batch 100, 60,000 samples;
steady-state steps/s over whole epochs (compilation excluded, median of repeats).
Workload 2: width 8192, depth 4, batch 8192, bfloat16 compute: TFLOP/s (6 * batch * weights
per step) next to a measured bf16 matmul peak. Workload 3: 256 nets 64-64-10 on digits,
full batch, 200 steps, vmapped vs one after another. Peak device memory for 1 and 2.
Workload 4: short epochs, whole runs timed: planar 2-4-1 full batch 10,000 epochs, cat
12288-7-1 full batch 2,500 epochs, digits 64-32-10 batch 100 Adam 300 epochs.
Peers that are not installed are skipped with a line saying so; a variant that crashes is
recorded as failed and the script exits 1. Prints a table, writes JSON (after each workload,
so that a run stopped by a time limit keeps the workloads it finished).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nnfun  # noqa: E402
from nnfun import train  # noqa: E402


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` (which must block until its device work is done)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _block(tree):
    return jax.block_until_ready(tree)


def _device_memory() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _program_bytes(jitted, *args) -> int | None:
    """Device memory one compiled program needs: arguments + outputs + temporaries - aliased."""
    try:
        m = jitted.lower(*args).compile().memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:  # not every backend reports it
        return None


# ---- workload 1: the notes' reference network ---------------------------------------------
def mnist_like(n: int, seed: int = 0):
    """Pixels in [0, 1] (n, 784) and labels from a fixed random linear teacher (n,)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784), dtype=np.float32)
    teacher = rng.normal(size=(784, 10)).astype(np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32)
    return x, y


def _init_mlp(key, sizes):
    """Glorot-uniform weights, zero biases: [{"W": (in, out), "b": (out,)}, ...]."""
    params = []
    pairs = zip(sizes, sizes[1:], strict=False)
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), pairs, strict=True):
        lim = np.sqrt(6.0 / (a + b))
        params.append({"W": jax.random.uniform(k, (a, b), jnp.float32, -lim, lim),
                       "b": jnp.zeros(b, jnp.float32)})  # fmt: skip
    return params


def _mlp_loss(params, x, y, hidden=jax.nn.sigmoid, dtype=None):
    """Mean softmax cross-entropy of an MLP; ``dtype`` casts the matmul inputs."""
    for i, p in enumerate(params):
        w = p["W"] if dtype is None else p["W"].astype(dtype)
        x = (x if dtype is None else x.astype(dtype)) @ w
        x = x.astype(jnp.float32) + p["b"]
        if i < len(params) - 1:
            x = hidden(x)
    return jnp.mean(jax.nn.logsumexp(x, -1) - jnp.take_along_axis(x, y[:, None], -1)[:, 0])


_jitted_loss = jax.jit(_mlp_loss)  # one program, not a compile per operation and shape


class Bench:
    """One workload-1 variant: ``epoch()`` trains one epoch and blocks; ``loss()`` evaluates."""

    def __init__(self, epoch, loss, steps, program_bytes=None):
        self.epoch, self.loss, self.steps, self.program_bytes = epoch, loss, steps, program_bytes


def _jax_data(x, y):
    return jnp.asarray(x), jnp.asarray(y)


def _copy(tree):
    # The epoch program donates its input; fit copies its state the same way.
    return jax.tree.map(jnp.copy, tree)


def _epoch_program(net, cfg, batch):
    """nnfun's compiled epoch alone (shuffled, unguarded: fit's fast path), input donated."""
    fn = functools.partial(train.run_epoch, net, cfg, batch, True, guard=False)
    return jax.jit(fn, donate_argnums=0)


def bench_nnfun(x, y, batch, grad, mode="fit"):
    net = nnfun.Sequential([nnfun.Dense(500, "sigmoid", input_dim=784),
                            nnfun.Dense(500, "sigmoid"), nnfun.Dense(10, "softmax")])  # fmt: skip
    cfg = nnfun.Config.make("categorical_crossentropy", "adam", grad=grad, learning_rate=1e-3)
    xd, yd = _jax_data(x, y)
    box = {"state": train.init_state(net, cfg, jax.random.key(0))}
    n = x.shape[0]
    if mode == "fit":

        def epoch():
            state = box["state"]
            box["state"], _ = train.fit(net, xd, yd, config=cfg, state=state, epochs=1,
                                        batch_size=batch)  # fmt: skip
            _block(box["state"])

    elif mode == "program":  # the compiled epoch alone: fit minus its Python-side bookkeeping
        fn = _epoch_program(net, cfg, batch)

        def epoch():
            box["state"], metrics = fn(_copy(box["state"]), xd, yd)
            _block((box["state"], metrics))

    else:  # the same train_step in a plain scan: "flags" keeps the finite flags, "no select"
        # drops them too (unused outputs are dead code); neither keeps the last finite state

        @functools.partial(jax.jit, donate_argnums=0)
        def plain(state, x, y):
            key, perm_key = jax.random.split(state.key)
            order = jax.random.permutation(perm_key, n)[: n // batch * batch].reshape(-1, batch)

            def step(state, idx):
                state, metrics = train.train_step(net, cfg, state, x[idx], y[idx])
                if mode == "flags":
                    return state, (metrics["loss"], metrics["finite"], metrics["grads_finite"])
                return state, metrics["loss"]

            return jax.lax.scan(step, state._replace(key=key), order)

        fn = plain

        def epoch():
            box["state"], losses = fn(box["state"], xd, yd)
            _block(box["state"])

    def loss():
        return train.evaluate(net, box["state"], xd[:2000], yd[:2000], config=cfg)[0]

    steps = train.steps_per_epoch(n, batch) if mode in ("fit", "program") else n // batch
    prog = None
    if mode == "program":
        prog = _program_bytes(_epoch_program(net, cfg, batch), box["state"], xd, yd)
    return Bench(epoch, loss, steps, prog)


def bench_jax_step(x, y, batch):
    xd, yd = _jax_data(x, y)
    tx = optax.adam(1e-3)
    params = _init_mlp(jax.random.key(0), (784, 500, 500, 10))
    box = {"p": params, "o": tx.init(params), "key": jax.random.key(1)}
    steps = x.shape[0] // batch

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, o, xb, yb):
        g = jax.grad(_mlp_loss)(p, xb, yb)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    @jax.jit
    def batches(key, x, y):
        order = jax.random.permutation(key, x.shape[0])[: steps * batch]
        return x[order].reshape(steps, batch, -1), y[order].reshape(steps, batch)

    def epoch():
        box["key"], k = jax.random.split(box["key"])
        xs, ys = batches(k, xd, yd)
        p, o = box["p"], box["o"]
        for i in range(steps):
            p, o = step(p, o, xs[i], ys[i])
        box["p"], box["o"] = _block((p, o))

    return Bench(epoch, lambda: float(_jitted_loss(box["p"], xd[:2000], yd[:2000])), steps)


def bench_jax_scan(x, y, batch, unroll=1):
    xd, yd = _jax_data(x, y)
    tx = optax.adam(1e-3)
    params = _init_mlp(jax.random.key(0), (784, 500, 500, 10))
    box = {"c": (params, tx.init(params), jax.random.key(1))}
    steps = x.shape[0] // batch

    @functools.partial(jax.jit, donate_argnums=0)
    def run(carry, x, y):
        p, o, key = carry
        key, k = jax.random.split(key)
        order = jax.random.permutation(k, x.shape[0])[: steps * batch].reshape(steps, batch)

        def step(c, idx):
            p, o = c
            loss, g = jax.value_and_grad(_mlp_loss)(p, x[idx], y[idx])
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        (p, o), losses = jax.lax.scan(step, (p, o), order, unroll=unroll)
        return (p, o, key), losses

    def epoch():
        box["c"], losses = run(box["c"], xd, yd)
        _block(box["c"])

    loss = lambda: float(_jitted_loss(box["c"][0], xd[:2000], yd[:2000]))  # noqa: E731
    return Bench(epoch, loss, steps, _program_bytes(run, box["c"], xd, yd))


def bench_nnx(x, y, batch):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(784, 500, rngs=rngs)
            self.l2 = nnx.Linear(500, 500, rngs=rngs)
            self.l3 = nnx.Linear(500, 10, rngs=rngs)

        def __call__(self, x):
            return self.l3(jax.nn.sigmoid(self.l2(jax.nn.sigmoid(self.l1(x)))))

    model = MLP(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    xd, yd = _jax_data(x, y)
    steps = x.shape[0] // batch

    def ce(logits, yb):
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @nnx.jit
    def step(model, opt, xb, yb):
        loss, grads = nnx.value_and_grad(lambda m: ce(m(xb), yb))(model)
        opt.update(model, grads)
        return loss

    box = {"key": jax.random.key(1)}

    def epoch():
        box["key"], k = jax.random.split(box["key"])
        order = jax.random.permutation(k, x.shape[0])[: steps * batch].reshape(steps, batch)
        xs, ys = xd[order], yd[order]
        for i in range(steps):
            loss = step(model, opt, xs[i], ys[i])
        _block(loss)
        _block(nnx.state(model))

    return Bench(epoch, lambda: float(ce(model(xd[:2000]), yd[:2000])), steps)


def bench_linen(x, y, batch):
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = jax.nn.sigmoid(nn.Dense(500)(x))
            x = jax.nn.sigmoid(nn.Dense(500)(x))
            return nn.Dense(10)(x)

    model, tx = MLP(), optax.adam(1e-3)
    xd, yd = _jax_data(x, y)
    params = model.init(jax.random.key(0), xd[:1])
    box = {"p": params, "o": tx.init(params), "key": jax.random.key(1)}
    steps = x.shape[0] // batch

    def ce(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, o, xb, yb):
        g = jax.grad(ce)(p, xb, yb)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    def epoch():
        box["key"], k = jax.random.split(box["key"])
        order = jax.random.permutation(k, x.shape[0])[: steps * batch].reshape(steps, batch)
        xs, ys = xd[order], yd[order]
        p, o = box["p"], box["o"]
        for i in range(steps):
            p, o = step(p, o, xs[i], ys[i])
        box["p"], box["o"] = _block((p, o))

    return Bench(epoch, lambda: float(ce(box["p"], xd[:2000], yd[:2000])), steps)


def bench_equinox(x, y, batch):
    import equinox as eqx

    model = eqx.nn.MLP(784, 10, 500, 2, activation=jax.nn.sigmoid, key=jax.random.key(0))
    tx = optax.adam(1e-3)
    box = {"m": model, "o": tx.init(eqx.filter(model, eqx.is_array)), "key": jax.random.key(1)}
    xd, yd = _jax_data(x, y)
    steps = x.shape[0] // batch

    def ce(m, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(m)(xb), yb).mean()

    @eqx.filter_jit(donate="all")
    def step(m, o, xb, yb):
        g = eqx.filter_grad(ce)(m, xb, yb)
        u, o = tx.update(g, o, eqx.filter(m, eqx.is_array))
        return eqx.apply_updates(m, u), o

    def epoch():
        box["key"], k = jax.random.split(box["key"])
        order = jax.random.permutation(k, x.shape[0])[: steps * batch].reshape(steps, batch)
        xs, ys = xd[order], yd[order]
        m, o = box["m"], box["o"]
        for i in range(steps):
            m, o = step(m, o, xs[i], ys[i])
        box["m"], box["o"] = _block((m, o))

    return Bench(epoch, lambda: float(ce(box["m"], xd[:2000], yd[:2000])), steps)


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_torch(x, y, batch, compiled=False):
    import torch
    import torch.nn.functional as F

    dev = _torch_device()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.Sigmoid(),
                                torch.nn.Linear(500, 500), torch.nn.Sigmoid(),
                                torch.nn.Linear(500, 10)).to(dev)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).long().to(dev)
    steps = x.shape[0] // batch

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()

    if compiled:
        step = torch.compile(step)

    def epoch():
        order = torch.randperm(x.shape[0], device=dev)[: steps * batch].view(steps, batch)
        xs, ys = xt[order], yt[order]
        for i in range(steps):
            step(xs[i], ys[i])
        _torch_sync()

    def loss():
        with torch.no_grad():
            return float(F.cross_entropy(model(xt[:2000]), yt[:2000]))

    return Bench(epoch, loss, steps)


WORKLOAD1 = {
    # name: (builder(x, y, batch), peer package or None)
    "nnfun fit (autodiff)": (lambda *a: bench_nnfun(*a, "autodiff"), None),
    "nnfun fit (manual)": (lambda *a: bench_nnfun(*a, "manual"), None),
    # The manual gradient refereed by jax.grad at every step inside the program.
    "nnfun fit (checked)": (lambda *a: bench_nnfun(*a, "checked"), None),
    "nnfun epoch program (autodiff)": (lambda *a: bench_nnfun(*a, "autodiff", "program"), None),
    "nnfun step, plain scan (no finite select)": (
        lambda *a: bench_nnfun(*a, "autodiff", "no select"),
        None,
    ),
    "nnfun step + finite flags, plain scan": (
        lambda *a: bench_nnfun(*a, "autodiff", "flags"),
        None,
    ),
    "jax jit per step": (bench_jax_step, None),
    "jax scan": (bench_jax_scan, None),
    "jax scan unroll=4": (lambda *a: bench_jax_scan(*a, unroll=4), None),
    "flax nnx (nnx.jit)": (bench_nnx, "flax"),
    "flax linen": (bench_linen, "flax"),
    "equinox (filter_jit)": (bench_equinox, "equinox"),
    "pytorch eager": (bench_torch, "torch"),
    "torch.compile": (lambda *a: bench_torch(*a, compiled=True), "torch"),
}


def workload1(n: int, batch: int, repeats: int, only=None, quick=False) -> dict:
    """Builds and warms every variant, then times them round-robin (variant after variant,
    ``repeats`` rounds) so that a change in machine load hits all of them alike."""
    x, y = mnist_like(n)
    rows, benches = {}, {}
    for name, (build, package) in WORKLOAD1.items():
        if only is not None and name not in only:
            continue
        if quick and name == "torch.compile":
            print(f"  skip {name}: compiling takes minutes; not in --quick", flush=True)
            rows[name] = {"skipped": "not in --quick"}
            continue
        if package and _version(package) is None:
            print(f"  skip {name}: {package} is not installed", flush=True)
            rows[name] = {"skipped": f"{package} not installed"}
            continue
        try:
            benches[name] = build(x, y, batch)
            benches[name].epoch()  # compile and warm up
        except Exception as e:  # reported, and the run exits 1 (the smoke test fails on it)
            traceback.print_exc()
            benches.pop(name, None)
            rows[name] = {"failed": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"  FAILED {name}: {type(e).__name__}", flush=True)
    times = {name: [] for name in benches}
    for _ in range(repeats):
        for name, bench in benches.items():
            times[name].append(_median_time(bench.epoch, 1))
    for name, bench in benches.items():
        seconds = statistics.median(times[name])
        rows[name] = {
            "steps_per_s": bench.steps / seconds,
            "epoch_s": seconds,
            "epoch_s_all": times[name],
            "steps_per_epoch": bench.steps,
            "final_loss": float(bench.loss()),
            "program_bytes": bench.program_bytes,
        }
        print(f"  {name:44s} {bench.steps / seconds:10.1f} steps/s", flush=True)
    rows = {name: rows[name] for name in WORKLOAD1 if name in rows}  # the table's order
    copy = _copy_cost(n, batch, repeats)
    return {"n": n, "batch": batch, "variants": rows, "state_copy_s": copy}


def _copy_cost(n, batch, repeats) -> float:
    """Seconds of fit's per-epoch state copy (it keeps the caller's state valid)."""
    net = nnfun.Sequential([nnfun.Dense(500, "sigmoid", input_dim=784),
                            nnfun.Dense(500, "sigmoid"), nnfun.Dense(10, "softmax")])  # fmt: skip
    cfg = nnfun.Config.make("categorical_crossentropy", "adam")
    state = train.init_state(net, cfg, jax.random.key(0))
    _block(_copy(state))
    return _median_time(lambda: _block(_copy(state)), max(repeats, 5))


# ---- workload 2: a large network in bfloat16 ----------------------------------------------
def workload2(width: int, depth: int, batch: int, repeats: int, quick: bool = False) -> dict:
    sizes = (width,) * (depth + 1) + (10,)
    # fwd 2, bwd 4 flops per multiply-accumulate
    flops = 6 * batch * sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    rng = np.random.default_rng(0)
    steps = 4
    x = rng.random((steps * batch, width), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch).astype(np.int32)
    rows = {"peak matmul (jax)": _matmul_peak(width, repeats)}
    rows.update(_w2_nnfun(x, y, sizes, batch, steps, flops, repeats, quick))
    rows.update(_w2_jax(x, y, sizes, batch, steps, flops, repeats))
    if _version("torch") is None:
        print("  skip pytorch bf16: torch is not installed", flush=True)
        rows["pytorch (autocast bf16)"] = {"skipped": "torch not installed"}
    else:
        rows.update(_w2_torch(x, y, sizes, batch, steps, flops, repeats))
    for name, row in rows.items():
        if "tflops" in row:
            print(f"  {name:44s} {row['tflops']:10.1f} TFLOP/s", flush=True)
    return {"width": width, "depth": depth, "batch": batch, "flops_per_step": flops, **rows}


def _matmul_peak(n: int, repeats: int) -> dict:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: a @ b)
    _block(mm(a, b))
    reps = 10
    seconds = _median_time(lambda: _block([mm(a, b) for _ in range(reps)]), repeats) / reps
    return {"tflops": 2 * n**3 / seconds / 1e12, "seconds": seconds}


def _w2_nnfun(x, y, sizes, batch, steps, flops, repeats, quick=False) -> dict:
    layers = [nnfun.Dense(sizes[1], "relu", input_dim=sizes[0])]
    layers += [nnfun.Dense(s, "relu") for s in sizes[2:-1]] + [nnfun.Dense(10, "softmax")]
    net = nnfun.Sequential(layers)
    cfg = nnfun.Config.make("categorical_crossentropy", "adam", compute_dtype="bfloat16")
    xd, yd = _jax_data(x, y)
    box = {"state": train.init_state(net, cfg, jax.random.key(0))}
    prog = None  # --quick: not measured (a compile of its own; its failures read as None)
    if not quick:
        prog = _program_bytes(_epoch_program(net, cfg, batch), box["state"], xd, yd)

    def epoch():
        state = box["state"]
        box["state"], _ = train.fit(net, xd, yd, config=cfg, state=state, epochs=1,
                                    batch_size=batch)  # fmt: skip
        _block(box["state"])

    epoch()
    seconds = _median_time(epoch, repeats) / steps
    return {"nnfun fit (bf16)": {"tflops": flops / seconds / 1e12, "step_s": seconds,
                                 "program_bytes": prog}}  # fmt: skip


def _w2_jax(x, y, sizes, batch, steps, flops, repeats) -> dict:
    relu_loss = functools.partial(_mlp_loss, hidden=jax.nn.relu, dtype=jnp.bfloat16)
    tx = optax.adam(1e-3)
    params = _init_mlp(jax.random.key(0), sizes)
    xd, yd = _jax_data(x, y)
    box = {"c": (params, tx.init(params))}

    @functools.partial(jax.jit, donate_argnums=0)
    def run(c, x, y):
        def step(c, i):
            p, o = c
            xb = jax.lax.dynamic_slice_in_dim(x, i * batch, batch)
            yb = jax.lax.dynamic_slice_in_dim(y, i * batch, batch)
            g = jax.grad(relu_loss)(p, xb, yb)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        return jax.lax.scan(step, c, jnp.arange(steps))[0]

    prog = _program_bytes(run, box["c"], xd, yd)

    def epoch():
        box["c"] = _block(run(box["c"], xd, yd))

    epoch()
    seconds = _median_time(epoch, repeats) / steps
    return {"jax scan (bf16)": {"tflops": flops / seconds / 1e12, "step_s": seconds,
                                "program_bytes": prog}}  # fmt: skip


def _w2_torch(x, y, sizes, batch, steps, flops, repeats) -> dict:
    import torch
    import torch.nn.functional as F

    dev = _torch_device()
    mods = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        mods.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).long().to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def epoch():
        for i in range(steps):
            xb, yb = xt[i * batch : (i + 1) * batch], yt[i * batch : (i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xb).float(), yb)
            loss.backward()
            opt.step()
        _torch_sync()

    epoch()
    seconds = _median_time(epoch, repeats) / steps
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    return {"pytorch (autocast bf16)": {"tflops": flops / seconds / 1e12, "step_s": seconds,
                                        "peak_bytes": peak}}  # fmt: skip


# ---- workload 3: many small models ---------------------------------------------------------
def workload3(models: int, steps: int, sequential_models: int) -> dict:
    split = nnfun.data.load_digits()
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    net = nnfun.Sequential([nnfun.Dense(64, "relu", input_dim=64), nnfun.Dense(10, "softmax")])
    cfg = nnfun.Config.make("categorical_crossentropy", "adam")
    n = x.shape[0]
    keys = jax.random.split(jax.random.key(0), models)

    def many(epochs):
        states = train.init_many(net, cfg, keys)
        states, hist = train.fit_many(net, x, y, states, config=cfg, epochs=epochs, batch_size=n)
        _block(states)
        return hist

    many(steps)  # compile: the timed run's program (its history buffers hold ``steps``)
    t = time.perf_counter()
    hist = many(steps)
    vmap_s = time.perf_counter() - t

    def one(k, epochs):
        state, h = train.fit(net, x, y, config=cfg, key=k, epochs=epochs, batch_size=n)
        _block(state)
        return h

    one(keys[0], steps)  # compile, the same program as the timed runs
    t = time.perf_counter()
    solo = [one(k, steps) for k in keys[:sequential_models]]
    seq_s = (time.perf_counter() - t) / sequential_models * models
    # Each vmapped model follows its own solo trajectory.
    agree = max(abs(solo[i]["loss"][-1] - float(hist["loss"][-1, i])) for i in range(len(solo)))
    ratio = seq_s / vmap_s
    print(
        f"  vmap {models} models x {steps} steps: {vmap_s:.2f} s; one after another "
        f"{seq_s:.2f} s (from {sequential_models} timed); vmap {ratio:.1f}x",
        flush=True,
    )
    return {"models": models, "steps": steps, "vmap_s": vmap_s, "sequential_s": seq_s,
            "sequential_models_timed": sequential_models, "vmap_over_sequential": ratio,
            "max_final_loss_diff": agree}  # fmt: skip


# ---- workload 4: short epochs, the notes' own training runs --------------------------------
class Short(NamedTuple):
    """One short-epoch regime: a small network trained for many short epochs."""

    sizes: tuple[int, ...]  # layer widths, input first
    hidden: str  # hidden activation: "tanh" or "relu"
    batch: int | None  # None: full batch (one gradient-descent step per epoch)
    optimizer: str  # "sgd" or "adam"
    learning_rate: float
    epochs: int
    quick_epochs: int


SHORT = {
    "planar": Short((2, 4, 1), "tanh", None, "sgd", 1.2, 10_000, 100),
    "cat": Short((12288, 7, 1), "relu", None, "sgd", 0.0075, 2_500, 3),
    "digits": Short((64, 32, 10), "relu", 100, "adam", 1e-3, 300, 2),
}
CAT_DIR = ROOT.parent / "shared" / "data" / "catvnoncat"


def _short_data(name: str, cat_dir: Path = CAT_DIR) -> tuple[np.ndarray, np.ndarray, str]:
    """x (n, features) float32, y (n,) int32 and where they came from."""
    if name == "planar":
        return (*nnfun.data.planar_flower(400), "planar flower, 400 points")
    if name == "digits":
        split = nnfun.data.load_digits()
        return split.x_train, split.y_train, "8x8 digits, 1437 training images"
    if cat_dir.is_dir():
        split = nnfun.data.load_cat(cat_dir)
        return split.x_train, split.y_train, f"cat vs non-cat, {cat_dir}"
    rng = np.random.default_rng(0)  # the same shapes when the course's files are absent
    x = rng.random((209, 12288), dtype=np.float32)
    return x, rng.integers(0, 2, 209).astype(np.int32), "random data of the cat set's shape"


def _short_params(spec: Short) -> list[dict]:
    """Shared initial params [{"W": (in, out), "b": (out,)}]: Glorot uniform, seed 0."""
    return _init_mlp(jax.random.key(0), spec.sizes)


def _short_loss(params, x, y, hidden: str):
    """Mean binary (one output) or softmax (several) cross-entropy of the MLP on (x, y)."""
    act = jnp.tanh if hidden == "tanh" else jax.nn.relu
    for p in params[:-1]:
        x = act(x @ p["W"] + p["b"])
    z = x @ params[-1]["W"] + params[-1]["b"]
    if z.shape[-1] == 1:  # log-sigmoid form: -y log a - (1 - y) log(1 - a), a = sigmoid(z)
        z = z[:, 0]
        return jnp.mean(jax.nn.softplus(z) - y * z)
    return jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, y[:, None], -1)[:, 0])


# The final loss each variant reports: one program, not a compile per operation and shape
# (the training programs keep calling the plain function).
_final_loss = jax.jit(_short_loss, static_argnums=3)


def _short_optax(spec: Short) -> optax.GradientTransformation:
    return (optax.sgd if spec.optimizer == "sgd" else optax.adam)(spec.learning_rate)


class ShortRun:
    """One variant: ``run()`` trains all epochs from the shared initial params and blocks;
    ``loss()`` is the training loss of the params the last run ended with."""

    def __init__(self, run, loss):
        self.run, self.loss = run, loss


def short_nnfun(spec: Short, x, y, grad: str, track: bool = False) -> ShortRun:
    """nnfun ``fit`` as a user calls it: one call for the whole run."""
    act = spec.hidden
    binary = spec.sizes[-1] == 1
    layers = [nnfun.Dense(spec.sizes[1], act, input_dim=spec.sizes[0])]
    layers += [nnfun.Dense(s, act) for s in spec.sizes[2:-1]]
    net = nnfun.Sequential(
        [*layers, nnfun.Dense(spec.sizes[-1], "sigmoid" if binary else "softmax")]
    )
    loss = "binary_crossentropy" if binary else "categorical_crossentropy"
    cfg = nnfun.Config.make(loss, spec.optimizer, grad=grad, learning_rate=spec.learning_rate)
    xd, yd = _jax_data(x, y)
    params0 = _short_params(spec)
    batch = spec.batch or x.shape[0]
    kwargs = {}
    if track:
        # Two per-epoch probes computed inside the compiled run, fn(params, model_state): each
        # layer's weight norm and the training accuracy.
        def accuracy(params, model_state):
            out = net.apply(params, xd, state=model_state)
            hit = (out[:, 0] > 0.5) == (yd > 0) if out.shape[-1] == 1 else jnp.argmax(out, -1) == yd
            return jnp.mean(hit)

        kwargs["track"] = {
            "weight_norms": lambda params, model_state: [jnp.linalg.norm(p["W"]) for p in params],
            "train_accuracy": accuracy,
        }
    box = {}

    def run():
        state = train.init_state(net, cfg, jax.random.key(1), jax.tree.map(jnp.copy, params0))
        box["state"], hist = train.fit(net, xd, yd, config=cfg, state=state, epochs=spec.epochs,
                                       batch_size=batch, **kwargs)  # fmt: skip
        if track:  # each probe's leaves are stacked over epochs
            probes = [hist[name] for name in kwargs["track"]]
            got = {np.shape(leaf)[0] for leaf in jax.tree.leaves(probes)}
            if got != {spec.epochs}:
                raise RuntimeError(f"track: {sorted(got)} entries for {spec.epochs} epochs")
        _block(box["state"])

    return ShortRun(run, lambda: _final_loss(box["state"].params, xd, yd, spec.hidden))


def _short_epoch_fn(spec: Short, tx, n: int):
    """The hand-written ``step(p, o, xb, yb) -> (p, o)`` and ``epoch(p, o, key, x, y) ->
    (p, o, key)``: every sample once per epoch, a last smaller batch included."""
    loss = functools.partial(_short_loss, hidden=spec.hidden)

    def step(p, o, xb, yb):
        g = jax.grad(loss)(p, xb, yb)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    def epoch(p, o, key, x, y):
        if spec.batch is None or spec.batch >= n:
            return (*step(p, o, x, y), key)
        key, k = jax.random.split(key)
        order = jax.random.permutation(k, n)
        full = n // spec.batch * spec.batch
        (p, o), _ = jax.lax.scan(lambda c, idx: (step(*c, x[idx], y[idx]), None), (p, o),
                                 order[:full].reshape(-1, spec.batch))  # fmt: skip
        if full < n:
            p, o = step(p, o, x[order[full:]], y[order[full:]])
        return p, o, key

    return step, epoch


def short_jax_scan(spec: Short, x, y) -> ShortRun:
    """Hand-written: all epochs in one jitted program (a scan over epochs)."""
    tx, xd, yd = _short_optax(spec), *_jax_data(x, y)
    _, epoch = _short_epoch_fn(spec, tx, x.shape[0])

    @jax.jit
    def whole_run(p, x, y):
        def body(c, _):
            return epoch(*c, x, y), None

        return jax.lax.scan(body, (p, tx.init(p), jax.random.key(1)), None, length=spec.epochs)[0]

    params0, box = _short_params(spec), {}

    def run():
        box["p"] = _block(whole_run(params0, xd, yd)[0])

    return ShortRun(run, lambda: _final_loss(box["p"], xd, yd, spec.hidden))


def short_jax_step(spec: Short, x, y) -> ShortRun:
    """Hand-written: a jitted step called from a Python loop (full batch), or a jitted
    shuffle then one jitted step per mini-batch."""
    tx, xd, yd = _short_optax(spec), *_jax_data(x, y)
    n = x.shape[0]
    step, _ = _short_epoch_fn(spec, tx, n)
    step = jax.jit(step, donate_argnums=(0, 1))
    batch = spec.batch or n

    @jax.jit
    def shuffled(key, x, y):
        order = jax.random.permutation(key, n)
        return x[order], y[order]

    params0, box = _short_params(spec), {}

    def run():
        p = jax.tree.map(jnp.copy, params0)
        o, key = tx.init(p), jax.random.key(1)
        for _ in range(spec.epochs):
            if spec.batch is None:
                p, o = step(p, o, xd, yd)
                continue
            key, k = jax.random.split(key)
            xs, ys = shuffled(k, xd, yd)
            for i in range(0, n, batch):
                p, o = step(p, o, xs[i : i + batch], ys[i : i + batch])
        box["p"] = _block(p)

    return ShortRun(run, lambda: _final_loss(box["p"], xd, yd, spec.hidden))


def short_numpy(spec: Short, x, y) -> ShortRun:
    """The course's way: NumPy, samples as columns, the backward pass written out, float32."""
    xt = np.ascontiguousarray(x.T)  # (features, n)
    n, classes = x.shape[0], spec.sizes[-1]
    target = y[None].astype(np.float32) if classes == 1 else np.eye(classes, dtype=np.float32)[y].T
    params0 = [(np.asarray(p["W"]).T.copy(), np.asarray(p["b"])[:, None].copy())
               for p in _short_params(spec)]  # fmt: skip
    batch = spec.batch or n
    lr, b1, b2, eps = spec.learning_rate, 0.9, 0.999, 1e-8  # optax.adam's defaults
    box = {}

    def forward(params, a):
        cache = []
        for i, (w, b) in enumerate(params):
            z = w @ a + b
            cache.append((a, z))
            if i < len(params) - 1:
                a = np.tanh(z) if spec.hidden == "tanh" else np.maximum(z, 0)
            elif classes == 1:
                a = 1 / (1 + np.exp(-z))
            else:
                e = np.exp(z - z.max(0))
                a = e / e.sum(0)
        return a, cache

    def grads(params, a_in, t):
        a, cache = forward(params, a_in)
        dz = (a - t) / a_in.shape[1]  # sigmoid + binary CE and softmax + CE: dL/dz = a - y
        out = []
        for i in reversed(range(len(params))):
            a_prev, _ = cache[i]
            out.append((dz @ a_prev.T, dz.sum(1, keepdims=True)))
            if i:
                da = params[i][0].T @ dz
                z_prev = cache[i - 1][1]
                dz = da * (1 - np.tanh(z_prev) ** 2) if spec.hidden == "tanh" else da * (z_prev > 0)
        return out[::-1]

    def adam(value, grad, first, second, j, t):
        first[j] = b1 * first[j] + (1 - b1) * grad
        second[j] = b2 * second[j] + (1 - b2) * grad * grad
        return value - lr * first[j] / (1 - b1**t) / (np.sqrt(second[j] / (1 - b2**t)) + eps)

    def run():
        params = [[w.copy(), b.copy()] for w, b in params0]
        first = [[np.zeros_like(v) for v in layer] for layer in params]
        second = [[np.zeros_like(v) for v in layer] for layer in params]
        rng, t = np.random.default_rng(1), 0
        for _ in range(spec.epochs):
            order = rng.permutation(n) if batch < n else None
            for i in range(0, n, batch):
                idx = slice(None) if order is None else order[i : i + batch]
                t += 1
                for k, layer_grads in enumerate(grads(params, xt[:, idx], target[:, idx])):
                    for j, g in enumerate(layer_grads):
                        if spec.optimizer == "sgd":
                            params[k][j] = params[k][j] - lr * g
                        else:
                            params[k][j] = adam(params[k][j], g, first[k], second[k], j, t)
        box["p"] = [{"W": jnp.asarray(w.T), "b": jnp.asarray(b[:, 0])} for w, b in params]

    xd, yd = _jax_data(x, y)
    return ShortRun(run, lambda: _final_loss(box["p"], xd, yd, spec.hidden))


def short_torch(spec: Short, x, y) -> ShortRun:
    """PyTorch eager, the shared initial weights, one Python-level step per batch."""
    import torch
    import torch.nn.functional as F

    dev = _torch_device()
    act = torch.nn.Tanh if spec.hidden == "tanh" else torch.nn.ReLU
    params0 = _short_params(spec)
    xt = torch.from_numpy(np.array(x)).to(dev)  # a writable copy: the loaders' arrays are not
    yt = torch.from_numpy(np.array(y)).to(dev)
    n, batch = x.shape[0], spec.batch or x.shape[0]

    def loss_of(model, xb, yb):
        z = model(xb)
        if z.shape[-1] == 1:
            return F.binary_cross_entropy_with_logits(z[:, 0], yb.float())
        return F.cross_entropy(z, yb.long())

    box = {}

    def run():
        mods = []
        for i, p in enumerate(params0):
            lin = torch.nn.Linear(*p["W"].shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.asarray(p["W"]).T.copy()))
                lin.bias.copy_(torch.from_numpy(np.asarray(p["b"])))
            mods += [lin] if i == len(params0) - 1 else [lin, act()]
        model = torch.nn.Sequential(*mods).to(dev)
        opt = (torch.optim.SGD if spec.optimizer == "sgd" else torch.optim.Adam)(
            model.parameters(), lr=spec.learning_rate
        )
        for _ in range(spec.epochs):
            order = torch.randperm(n, device=dev) if batch < n else None
            for i in range(0, n, batch):
                idx = slice(None) if order is None else order[i : i + batch]
                xb, yb = xt[idx], yt[idx]
                opt.zero_grad(set_to_none=True)
                loss_of(model, xb, yb).backward()
                opt.step()
        _torch_sync()
        box["model"] = model

    def loss():
        with torch.no_grad():
            return float(loss_of(box["model"], xt, yt))

    return ShortRun(run, loss)


def short_nnx(spec: Short, x, y) -> ShortRun:
    """Flax NNX, ``nnx.jit`` step from a Python loop (its own initial weights)."""
    from flax import nnx

    act = jnp.tanh if spec.hidden == "tanh" else jax.nn.relu
    xd, yd = _jax_data(x, y)
    n, batch = x.shape[0], spec.batch or x.shape[0]

    class MLP(nnx.Module):
        def __init__(self, rngs):
            pairs = zip(spec.sizes, spec.sizes[1:], strict=False)
            layers = [nnx.Linear(a, b, rngs=rngs) for a, b in pairs]
            self.layers = nnx.List(layers) if hasattr(nnx, "List") else layers

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = act(layer(x))
            return self.layers[-1](x)

    def loss_of(model, xb, yb):
        z = model(xb)
        if z.shape[-1] == 1:
            return jnp.mean(optax.sigmoid_binary_cross_entropy(z[:, 0], yb.astype(jnp.float32)))
        return optax.softmax_cross_entropy_with_integer_labels(z, yb).mean()

    @nnx.jit
    def step(model, opt, xb, yb):
        grads = nnx.grad(loss_of)(model, xb, yb)
        opt.update(model, grads)

    box = {}

    def run():
        model = MLP(nnx.Rngs(0))
        opt = nnx.Optimizer(model, _short_optax(spec), wrt=nnx.Param)
        key = jax.random.key(1)
        for _ in range(spec.epochs):
            if batch >= n:
                step(model, opt, xd, yd)
                continue
            key, k = jax.random.split(key)
            order = jax.random.permutation(k, n)
            xs, ys = xd[order], yd[order]
            for i in range(0, n, batch):
                step(model, opt, xs[i : i + batch], ys[i : i + batch])
        _block(nnx.state(model))
        box["model"] = model

    return ShortRun(run, lambda: float(loss_of(box["model"], xd, yd)))


def short_equinox(spec: Short, x, y) -> ShortRun:
    """Equinox, ``filter_jit`` step from a Python loop (its own initial weights)."""
    import equinox as eqx

    act = jnp.tanh if spec.hidden == "tanh" else jax.nn.relu
    tx, (xd, yd) = _short_optax(spec), _jax_data(x, y)
    n, batch = x.shape[0], spec.batch or x.shape[0]
    depth = len(spec.sizes) - 2

    def loss_of(model, xb, yb):
        z = jax.vmap(model)(xb)
        if z.shape[-1] == 1:
            return jnp.mean(optax.sigmoid_binary_cross_entropy(z[:, 0], yb.astype(jnp.float32)))
        return optax.softmax_cross_entropy_with_integer_labels(z, yb).mean()

    @eqx.filter_jit(donate="all")
    def step(model, o, xb, yb):
        g = eqx.filter_grad(loss_of)(model, xb, yb)
        u, o = tx.update(g, o, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, u), o

    box = {}

    def run():
        model = eqx.nn.MLP(spec.sizes[0], spec.sizes[-1], spec.sizes[1], depth, activation=act,
                           key=jax.random.key(0))  # fmt: skip
        o, key = tx.init(eqx.filter(model, eqx.is_array)), jax.random.key(1)
        for _ in range(spec.epochs):
            if batch >= n:
                model, o = step(model, o, xd, yd)
                continue
            key, k = jax.random.split(key)
            order = jax.random.permutation(k, n)
            xs, ys = xd[order], yd[order]
            for i in range(0, n, batch):
                model, o = step(model, o, xs[i : i + batch], ys[i : i + batch])
        box["model"] = _block(model)

    return ShortRun(run, lambda: float(loss_of(box["model"], xd, yd)))


SHORT_VARIANTS = {
    # name: (builder(spec, x, y), peer package or None)
    "nnfun fit (autodiff)": (lambda *a: short_nnfun(*a, "autodiff"), None),
    "nnfun fit (manual)": (lambda *a: short_nnfun(*a, "manual"), None),
    # fit with two per-epoch probes, fit(..., track={"name": fn(params, model_state)}); it runs
    # once fit accepts track (until then it is skipped with a line saying so). Target: at most
    # 15% slower than "nnfun fit (autodiff)" on digits.
    "nnfun fit + 2 track probes": (lambda *a: short_nnfun(*a, "autodiff", track=True), None),
    "jax scan, whole run": (short_jax_scan, None),
    "jax jit step, Python loop": (short_jax_step, None),
    "numpy loop": (short_numpy, None),
    "flax nnx (nnx.jit)": (short_nnx, "flax"),
    "equinox (filter_jit)": (short_equinox, "equinox"),
    "pytorch eager": (short_torch, "torch"),
}
# Variants that return to Python every epoch: their time grows linearly with the epochs, so
# --loop-epochs may time fewer epochs and scale (on an accelerator a Python loop of 10,000
# epochs takes minutes).
LOOP_VARIANTS = {
    "jax jit step, Python loop",
    "numpy loop",
    "flax nnx (nnx.jit)",
    "equinox (filter_jit)",
    "pytorch eager",
}


def _fit_tracks() -> bool:
    return "track" in inspect.signature(train.fit).parameters


def workload4(repeats: int, quick: bool, only=None, regimes=None, loop_epochs=None,
              cat_dir: Path = CAT_DIR) -> dict:  # fmt: skip
    """Each regime: builds every variant, runs it twice (compiling), then times whole runs
    round-robin, ``repeats`` rounds, median. Ratios: ``x_jax_scan`` = the scan's time / this
    variant's (speed relative to the hand-written whole-run scan), ``fit_speedup`` = this
    variant's time / nnfun fit's (autodiff). With ``loop_epochs`` the Python-loop variants
    run at most that many epochs and their times are scaled to the whole run (``epochs_run``
    says how many ran; their ``final_loss`` is after those epochs)."""
    out = {}
    for regime, spec in SHORT.items():
        if regimes and regime not in regimes:
            continue
        if quick:
            spec = spec._replace(epochs=spec.quick_epochs)
        x, y, source = _short_data(regime, cat_dir)
        print(f"  {regime}: {spec.sizes}, {spec.epochs} epochs, {source}", flush=True)
        rows, runs, ran = {}, {}, {}  # ran: the epochs each variant runs
        for name, (build, package) in SHORT_VARIANTS.items():
            if only is not None and name not in only:
                continue
            if package and _version(package) is None:
                rows[name] = {"skipped": f"{package} not installed"}
            elif "track" in name and not _fit_tracks():
                rows[name] = {"skipped": "nnfun fit has no track= yet"}
            if name in rows:
                print(f"    skip {name}: {rows[name]['skipped']}", flush=True)
                continue
            try:
                ran[name] = spec.epochs
                if loop_epochs and name in LOOP_VARIANTS:
                    ran[name] = min(spec.epochs, loop_epochs)
                runs[name] = build(spec._replace(epochs=ran[name]), x, y)
                # Twice: fit picks its chunk lengths by timing, and a length first chosen in
                # the second run would otherwise compile inside a timed one.
                for _ in range(2):
                    runs[name].run()
            except Exception as e:  # reported as a failure (the smoke test fails on it)
                traceback.print_exc()
                runs.pop(name, None)
                rows[name] = {"failed": f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"    FAILED {name}: {type(e).__name__}", flush=True)
        times = {name: [] for name in runs}
        for _ in range(repeats):
            for name, r in runs.items():  # scaled to all epochs where fewer ran
                times[name].append(_median_time(r.run, 1) * spec.epochs / ran[name])
        seconds = {name: statistics.median(t) for name, t in times.items()}
        scan, fit = seconds.get("jax scan, whole run"), seconds.get("nnfun fit (autodiff)")
        for name, r in runs.items():
            s = seconds[name]
            rows[name] = {
                "run_s": s,
                "run_s_all": times[name],
                "epochs_per_s": spec.epochs / s,
                "x_jax_scan": scan / s if scan else None,
                "fit_speedup": s / fit if fit else None,
                "final_loss": float(r.loss()),
                "epochs_run": ran[name],
            }
            print(f"    {name:36s} {s:9.3f} s  {spec.epochs / s:10.1f} epochs/s", flush=True)
        rows = {name: rows[name] for name in SHORT_VARIANTS if name in rows}  # the table's order
        out[regime] = {**spec._asdict(), "data": source, "variants": rows}
    return out


# ---- report --------------------------------------------------------------------------------
def table(result: dict) -> str:
    lines = []
    w1 = result["workloads"].get("1")
    if w1:
        rows = w1["variants"]
        ref = {k: rows.get(k, {}).get("steps_per_s") for k in ("jax scan", "nnfun fit (autodiff)")}
        lines.append(f"workload 1: 784-500-500-10, batch {w1['batch']}, {w1['n']} samples")
        lines.append(f"{'variant':44s} {'steps/s':>10s} {'x jax scan':>10s} {'fit x it':>9s}")
        for name, row in rows.items():
            if "steps_per_s" not in row:
                lines.append(f"{name:44s} {_not_run(row)}")
                continue
            sps = row["steps_per_s"]
            r1 = sps / ref["jax scan"] if ref["jax scan"] else float("nan")
            r2 = ref["nnfun fit (autodiff)"] / sps if ref["nnfun fit (autodiff)"] else float("nan")
            lines.append(f"{name:44s} {sps:10.1f} {r1:10.3f} {r2:9.2f}")
        lines.append(f"fit's per-epoch state copy: {w1['state_copy_s'] * 1e3:.3f} ms")
    w2 = result["workloads"].get("2")
    if w2:
        lines.append(f"workload 2: width {w2['width']}, depth {w2['depth']}, batch {w2['batch']}")
        base = w2.get("jax scan (bf16)", {}).get("tflops")
        for name, row in w2.items():
            if isinstance(row, dict) and "tflops" in row:
                ratio = row["tflops"] / base if base else float("nan")
                lines.append(f"{name:44s} {row['tflops']:8.1f} TFLOP/s {ratio:6.3f}x jax")
    w3 = result["workloads"].get("3")
    if w3:
        lines.append(f"workload 3: {w3['models']} models x {w3['steps']} steps: vmap "
                     f"{w3['vmap_over_sequential']:.1f}x one after another")  # fmt: skip
    for regime, w4 in result["workloads"].get("4", {}).items():
        batch = w4["batch"] or "full"
        lines.append(f"workload 4, {regime}: {w4['sizes']}, {w4['epochs']} epochs, batch {batch}, "
                     f"{w4['optimizer']} {w4['learning_rate']}")  # fmt: skip
        lines.append(f"{'variant':44s} {'run s':>10s} {'x jax scan':>10s} {'fit x it':>9s}")
        for name, row in w4["variants"].items():
            if "run_s" not in row:
                lines.append(f"{name:44s} {_not_run(row)}")
                continue
            ratios = [row[k] if row[k] is not None else float("nan")
                      for k in ("x_jax_scan", "fit_speedup")]  # fmt: skip
            lines.append(f"{name:44s} {row['run_s']:10.3f} {ratios[0]:10.3f} {ratios[1]:9.2f}")
    return "\n".join(lines)


def _not_run(row: dict) -> str:
    return f"FAILED: {row['failed']}" if "failed" in row else f"skipped: {row['skipped']}"


def failures(result: dict) -> list[str]:
    """Names of the variants that crashed, as "workload/variant"."""
    found = []
    for key, workload in result["workloads"].items():
        groups = workload.items() if key == "4" else [(key, workload)]
        for group, rows in groups:
            for name, row in (rows.get("variants") or {}).items():
                if "failed" in row:
                    found.append(f"{group}/{name}")
    return found


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--workloads", default="1,2,3,4", help="comma-separated subset of 1,2,3,4")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "results.json")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per variant")
    p.add_argument("--width", type=int, default=None, help="workload 2 width (default 8192)")
    p.add_argument("--only", default=None, help="workload 1 and 4 variants, ';'-separated")
    p.add_argument("--regimes", default=None, help="workload 4 regimes: planar,cat,digits")
    p.add_argument("--skip", default="", help="workload 1 and 4 variants left out, ';'-separated")
    loops = "workload 4: Python-loop variants time at most this many epochs, scaled"
    p.add_argument("--loop-epochs", type=int, default=None, help=loops)
    p.add_argument("--cat-dir", type=Path, default=CAT_DIR, help="the cat HDF5 files' folder")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(";")))
    named = skip | set(args.only.split(";") if args.only else ())
    if named - set(WORKLOAD1) - set(SHORT_VARIANTS):
        unknown = sorted(named - set(WORKLOAD1) - set(SHORT_VARIANTS))
        p.error(f"--only/--skip: expected variants of workloads 1 and 4, got unknown {unknown}")
    which = set(args.workloads.split(","))
    accel = jax.default_backend() != "cpu"
    repeats = args.repeats or (1 if args.quick else 5)
    result = {
        "date": datetime.date.today().isoformat(),
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "versions": {
            k: _version(k) for k in ("jax", "jaxlib", "optax", "flax", "equinox", "torch", "numpy")
        },  # fmt: skip
        "quick": args.quick,
        "env": {k: os.environ.get(k) for k in ENV_RECORDED},
        "matmul_precision": getattr(jax.config, "jax_default_matmul_precision", None),
        "workloads": {},
    }
    print(f"{result['device']} ({result['backend']}), {result['versions']}", flush=True)
    if "1" in which:
        n, batch = (500, 100) if args.quick else (60000, 100)
        only = (set(args.only.split(";")) if args.only else set(WORKLOAD1)) - skip
        result["workloads"]["1"] = workload1(n, batch, repeats, only, args.quick)
        result["workloads"]["1"]["peak_bytes_so_far"] = _device_memory()
        _write(result, args.out)
    if "2" in which:
        width = args.width or (128 if args.quick else (8192 if accel else 1024))
        depth = 2 if args.quick else 4  # --quick: the same steps, fewer layers to compile
        result["workloads"]["2"] = workload2(width, depth, width, repeats, args.quick)
        result["workloads"]["2"]["peak_bytes_so_far"] = _device_memory()
        _write(result, args.out)
    if "3" in which:
        models, steps, seq = (8, 10, 2) if args.quick else (256, 200, 16)
        result["workloads"]["3"] = workload3(models, steps, seq)
        result["workloads"]["3"]["peak_bytes_so_far"] = _device_memory()
        _write(result, args.out)
    if "4" in which:
        only = (set(args.only.split(";")) if args.only else set(SHORT_VARIANTS)) - skip
        regimes = args.regimes.split(",") if args.regimes else list(SHORT)
        result["workloads"]["4"] = {}
        for regime in regimes:  # one at a time, written after each
            result["workloads"]["4"] |= workload4(repeats, args.quick, only, {regime},
                                                  args.loop_epochs, args.cat_dir)  # fmt: skip
            if regime in result["workloads"]["4"]:
                result["workloads"]["4"][regime]["peak_bytes_so_far"] = _device_memory()
            _write(result, args.out)
    print(table(result), flush=True)
    _write(result, args.out)
    print(f"wrote {args.out}")
    return result


ENV_RECORDED = ("XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE")


def _write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    crashed = failures(main())
    if crashed:
        print(f"FAILED variants: {', '.join(crashed)}", file=sys.stderr)
    sys.exit(1 if crashed else 0)
