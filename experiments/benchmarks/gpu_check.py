"""Correctness on the accelerator: nnfun in float32 (and bfloat16) against NumPy in float64.

Each check is a relative error ||got - ref|| / ||ref|| over every leaf, against a stated
tolerance; a non-finite result never passes.

- Gradients of the notes' network 784-500-500-10 (sigmoid, softmax cross-entropy) on one batch
  of 100, autodiff and manual backprop: the loss and every gradient leaf. At full float32
  precision (tolerance 1e-5) and at JAX's default matmul precision, which on NVIDIA GPUs since
  Ampere is TensorFloat-32 (10-bit mantissa; tolerance 5e-3); with bfloat16 compute, 3e-2.
- Full-batch training with ``fit`` (planar 2-4-1 SGD 1.2, cat 12288-7-1 SGD 0.0075): the
  per-epoch losses and the final weights against NumPy's float64 run of the same steps from
  the same weights (1e-4 at full float32 precision, 1e-2 at the default).

Writes JSON after each check (a run stopped by a time limit keeps those done) and exits 1
when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nnfun  # noqa: E402
from nnfun import train  # noqa: E402

CAT_DIR = ROOT.parent / "shared" / "data" / "catvnoncat"
# (precision, compute dtype) -> tolerance of the gradient check
GRADIENT_TOLERANCES = {
    ("highest", None): 1e-5,
    ("default", None): 5e-3,
    ("default", "bfloat16"): 3e-2,
}
TRAINING_TOLERANCES = {"highest": 1e-4, "default": 1e-2}


# ---- the float64 reference: the course's formulas in NumPy --------------------------------
def _act(name: str, z):
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    return np.tanh(z) if name == "tanh" else np.maximum(z, 0)


def _act_grad(name: str, z):
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-z))
        return s * (1 - s)
    return 1 - np.tanh(z) ** 2 if name == "tanh" else (z > 0).astype(z.dtype)


def reference_loss_and_grads(params, x, y, hidden: str):
    """Mean cross-entropy (binary for one output, softmax for several) of the MLP and its
    gradient, float64: ``(loss, [{"W": dW, "b": db}, ...])``."""
    params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    a, cache = np.asarray(x, np.float64), []
    for i, p in enumerate(params):
        z = a @ p["W"] + p["b"]
        cache.append((a, z))
        a = _act(hidden, z) if i < len(params) - 1 else z
    z, n = a, len(y)
    if z.shape[1] == 1:
        t = np.asarray(y, np.float64)[:, None]
        loss = np.mean(np.logaddexp(0, z) - t * z)
        dz = (1 / (1 + np.exp(-z)) - t) / n
    else:
        top = z.max(1, keepdims=True)
        log_p = z - top - np.log(np.exp(z - top).sum(1, keepdims=True))
        t = np.eye(z.shape[1])[y]
        loss = -np.mean(np.sum(t * log_p, 1))
        dz = (np.exp(log_p) - t) / n
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        a_prev, _ = cache[i]
        grads[i] = {"W": a_prev.T @ dz, "b": dz.sum(0)}
        if i:
            dz = (dz @ params[i]["W"].T) * _act_grad(hidden, cache[i - 1][1])
    return float(loss), grads


def reference_training(params, x, y, hidden: str, learning_rate: float, epochs: int):
    """Full-batch gradient descent in float64: (per-epoch losses before each step, params)."""
    params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    losses = []
    for _ in range(epochs):
        loss, grads = reference_loss_and_grads(params, x, y, hidden)
        losses.append(loss)
        steps = zip(params, grads, strict=True)
        params = [{k: p[k] - learning_rate * g[k] for k in p} for p, g in steps]
    return np.array(losses), params


def glorot_params(sizes, seed: int = 0) -> list[dict]:
    """Glorot-uniform float32 weights and zero biases for layer widths ``sizes`` (drawn by
    NumPy: nnfun's own init runs one small program per array, seconds on a CPU)."""
    rng = np.random.default_rng(seed)
    params = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        lim = np.sqrt(6 / (a + b))
        w = rng.uniform(-lim, lim, (a, b)).astype(np.float32)
        params.append({"W": w, "b": np.zeros(b, np.float32)})
    return params


def relative_error(got, ref) -> float:
    """||got - ref|| / ||ref|| over all leaves of two matching trees; inf when got is not finite."""
    got = [np.asarray(v, np.float64) for v in jax.tree.leaves(got)]
    ref = [np.asarray(v, np.float64) for v in jax.tree.leaves(ref)]
    if len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref, strict=False)):
        raise ValueError("relative_error: got and ref differ in structure or shape")
    if not all(np.isfinite(g).all() for g in got):
        return float("inf")
    diff = np.sqrt(sum(np.sum((g - r) ** 2) for g, r in zip(got, ref, strict=True)))
    return float(diff / np.sqrt(sum(np.sum(r**2) for r in ref)))


def _row(name: str, error: float, tolerance: float, **extra) -> dict:
    passed = bool(np.isfinite(error) and error <= tolerance)
    print(
        f"  {'ok  ' if passed else 'FAIL'} {name:66s} {error:9.2e} (tol {tolerance:.0e})",
        flush=True,
    )
    return {"check": name, "error": error, "tolerance": tolerance, "passed": passed, **extra}


def _precision(name: str):
    """``jax.default_matmul_precision(name)``, or nothing for JAX's own default."""
    return contextlib.nullcontext() if name == "default" else jax.default_matmul_precision(name)


# ---- the checks ----------------------------------------------------------------------------
def gradient_checks(width: int, settings=tuple(GRADIENT_TOLERANCES)) -> Iterator[dict]:
    """The notes' network (hidden ``width``) on one batch: autodiff and manual gradients, for
    each (precision, compute dtype) of ``settings``."""
    rng = np.random.default_rng(0)
    x = rng.random((100, 784), dtype=np.float32)
    y = rng.integers(0, 10, 100).astype(np.int32)
    net = nnfun.Sequential(
        [
            nnfun.Dense(width, "sigmoid", input_dim=784),
            nnfun.Dense(width, "sigmoid"),
            nnfun.Dense(10, "softmax"),
        ]
    )
    params = glorot_params((784, width, width, 10))
    ref_loss, ref_grads = reference_loss_and_grads(params, x, y, "sigmoid")
    for precision, dtype in settings:
        tol = GRADIENT_TOLERANCES[precision, dtype]
        kw = {"loss": "categorical_crossentropy", "compute_dtype": dtype}
        programs = {
            "autodiff": jax.jit(jax.value_and_grad(functools.partial(net.loss, **kw))),
            "manual": jax.jit(functools.partial(net.value_and_manual_grad, **kw)),
        }
        for grad, fn in programs.items():
            with _precision(precision):
                value, grads = fn(params, jnp.asarray(x), jnp.asarray(y))
            value = value[0] if isinstance(value, tuple) else value
            loss_err = relative_error(value, ref_loss)
            grad_err = relative_error(grads, ref_grads)
            name = f"784-{width}-{width}-10 {grad} gradient, {dtype or 'float32'}, {precision}"
            yield _row(name, max(loss_err, grad_err), tol, loss_error=loss_err, grad_error=grad_err)


def _cat_data(cat_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    if cat_dir.is_dir():
        split = nnfun.data.load_cat(cat_dir)
        return split.x_train, split.y_train, f"cat vs non-cat, {cat_dir}"
    rng = np.random.default_rng(0)
    x = rng.random((209, 12288), dtype=np.float32)
    return x, rng.integers(0, 2, 209).astype(np.int32), "random data of the cat set's shape"


def training_checks(epochs: dict[str, int], precisions, cat_dir: Path) -> Iterator[dict]:
    """``fit`` for ``epochs[regime]`` full-batch epochs against the float64 NumPy run."""
    regimes = {
        "planar": ((2, 4, 1), "tanh", 1.2, (*nnfun.data.planar_flower(400), "planar flower")),
        "cat": ((12288, 7, 1), "relu", 0.0075, _cat_data(cat_dir)),
    }
    for regime, count in epochs.items():
        sizes, hidden, lr, (x, y, source) = regimes[regime]
        net = nnfun.Sequential(
            [nnfun.Dense(sizes[1], hidden, input_dim=sizes[0]), nnfun.Dense(1, "sigmoid")]
        )
        params = glorot_params(sizes)
        ref_losses, ref_params = reference_training(params, x, y, hidden, lr, count)
        for precision in precisions:
            chosen = None if precision == "default" else precision
            cfg = nnfun.Config.make(
                "binary_crossentropy", "sgd", learning_rate=lr, precision=chosen
            )
            state = train.init_state(net, cfg, jax.random.key(1), params)
            state, hist = train.fit(
                net,
                jnp.asarray(x),
                jnp.asarray(y),
                config=cfg,
                state=state,
                epochs=count,
                batch_size=len(y),
            )
            loss_err = relative_error(np.asarray(hist["loss"]), ref_losses)
            param_err = relative_error(state.params, ref_params)
            name = f"fit {regime} {sizes}, {count} epochs, {precision}"
            tol = TRAINING_TOLERANCES[precision]
            errors = {"loss_error": loss_err, "param_error": param_err}
            yield _row(name, max(loss_err, param_err), tol, **errors, data=source)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--cat-dir", type=Path, default=CAT_DIR, help="the cat HDF5 files' folder")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "check.json")
    args = p.parse_args(argv)
    print(f"correctness on {jax.devices()[0].device_kind} ({jax.default_backend()})", flush=True)
    if args.quick:  # the same steps at the least cost: one setting, one short fit
        checks = itertools.chain(
            gradient_checks(8, [("highest", None)]),
            training_checks({"planar": 10}, ("default",), args.cat_dir),
        )
    else:
        checks = itertools.chain(
            gradient_checks(500),
            training_checks({"planar": 1000, "cat": 300}, ("highest", "default"), args.cat_dir),
        )
    result = {"device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in checks:  # written after each check: a run stopped by a time limit keeps them
        rows.append(row)
        result |= {"checks": rows, "passed": all(r["passed"] for r in rows)}
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
