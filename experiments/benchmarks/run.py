"""Training speed: nnfun against hand-written JAX, Flax, Equinox and PyTorch, side by side.

Workload 1: 784-500-500-10 sigmoid/softmax CE, Adam 1e-3, batch 100, 60,000 samples;
steady-state steps/s over whole epochs (compilation excluded, median of repeats).
Workload 2: width 8192, depth 4, batch 8192, bfloat16 compute: TFLOP/s (6 * batch * weights
per step) next to a measured bf16 matmul peak. Workload 3: 256 nets 64-64-10 on digits,
full batch, 200 steps, vmapped vs one after another. Peak device memory for 1 and 2.
Peers that are not installed are skipped with a line saying so. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

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


class Bench:
    """One workload-1 variant: ``epoch()`` trains one epoch and blocks; ``loss()`` evaluates."""

    def __init__(self, epoch, loss, steps, program_bytes=None):
        self.epoch, self.loss, self.steps, self.program_bytes = epoch, loss, steps, program_bytes


def _jax_data(x, y):
    return jnp.asarray(x), jnp.asarray(y)


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
            box["state"], _ = train.fit(
                net, xd, yd, config=cfg, state=state, epochs=int(state.epoch) + 1,
                batch_size=batch, progress=False,
            )  # fmt: skip
            _block(box["state"])

    elif mode == "program":  # the compiled epoch alone: fit minus its Python-side bookkeeping
        fn = train._compiled_epoch(net, cfg, batch, True, False, guard=False)

        def epoch():
            box["state"], metrics = fn(train._copy(box["state"]), xd, yd)
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
        prog = _program_bytes(train._compiled_epoch(net, cfg, batch, True, False, guard=False),
                              box["state"], xd, yd)  # fmt: skip
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

    return Bench(epoch, lambda: float(_mlp_loss(box["p"], xd[:2000], yd[:2000])), steps)


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

    loss = lambda: float(_mlp_loss(box["c"][0], xd[:2000], yd[:2000]))  # noqa: E731
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
        if only and name not in only:
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
        except Exception as e:  # a peer that fails to run is reported, not fatal
            traceback.print_exc()
            benches.pop(name, None)
            rows[name] = {"skipped": f"failed: {type(e).__name__}: {str(e)[:200]}"}
            print(f"  skip {name}: failed ({type(e).__name__})", flush=True)
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
    _block(train._copy(state))
    return _median_time(lambda: _block(train._copy(state)), max(repeats, 5))


# ---- workload 2: a large network in bfloat16 ----------------------------------------------
def workload2(width: int, depth: int, batch: int, repeats: int) -> dict:
    sizes = (width,) * (depth + 1) + (10,)
    # fwd 2, bwd 4 flops per multiply-accumulate
    flops = 6 * batch * sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    rng = np.random.default_rng(0)
    steps = 4
    x = rng.random((steps * batch, width), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch).astype(np.int32)
    rows = {"peak matmul (jax)": _matmul_peak(width, repeats)}
    rows.update(_w2_nnfun(x, y, sizes, batch, steps, flops, repeats))
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


def _w2_nnfun(x, y, sizes, batch, steps, flops, repeats) -> dict:
    layers = [nnfun.Dense(sizes[1], "relu", input_dim=sizes[0])]
    layers += [nnfun.Dense(s, "relu") for s in sizes[2:-1]] + [nnfun.Dense(10, "softmax")]
    net = nnfun.Sequential(layers)
    cfg = nnfun.Config.make("categorical_crossentropy", "adam", compute_dtype="bfloat16")
    xd, yd = _jax_data(x, y)
    box = {"state": train.init_state(net, cfg, jax.random.key(0))}
    fn = train._compiled_epoch(net, cfg, batch, True, False, guard=False)
    prog = _program_bytes(fn, box["state"], xd, yd)

    def epoch():
        state = box["state"]
        box["state"], _ = train.fit(
            net, xd, yd, config=cfg, state=state, epochs=int(state.epoch) + 1, batch_size=batch
        )
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

    many(1)  # compile
    t = time.perf_counter()
    hist = many(steps)
    vmap_s = time.perf_counter() - t

    def one(k, epochs):
        state, h = train.fit(net, x, y, config=cfg, key=k, epochs=epochs, batch_size=n)
        _block(state)
        return h

    one(keys[0], 1)  # compile
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
            if "skipped" in row:
                lines.append(f"{name:44s} skipped: {row['skipped']}")
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
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--workloads", default="1,2,3", help="comma-separated subset of 1,2,3")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "results.json")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per variant")
    p.add_argument("--width", type=int, default=None, help="workload 2 width (default 8192)")
    p.add_argument("--only", default=None, help="workload 1 variants, ';'-separated")
    args = p.parse_args(argv)
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
        "workloads": {},
    }
    print(f"{result['device']} ({result['backend']}), {result['versions']}", flush=True)
    if "1" in which:
        n, batch = (500, 100) if args.quick else (60000, 100)
        only = set(args.only.split(";")) if args.only else None
        result["workloads"]["1"] = workload1(n, batch, repeats, only, args.quick)
        result["workloads"]["1"]["peak_bytes_so_far"] = _device_memory()
    if "2" in which:
        width = args.width or (128 if args.quick else (8192 if accel else 1024))
        result["workloads"]["2"] = workload2(width, 4, width, repeats)
        result["workloads"]["2"]["peak_bytes_so_far"] = _device_memory()
    if "3" in which:
        models, steps, seq = (8, 10, 2) if args.quick else (256, 200, 16)
        result["workloads"]["3"] = workload3(models, steps, seq)
    print(table(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
