"""Does the hand-written backward pass agree with jax.grad everywhere, and what does it cost?

Question: for every activation, loss, regulariser (L1, L2, dropout, BatchNorm in training
and evaluation mode), parametric layer (Maxout, PReLU, RReLU) and depths 1 to 5, how far is
the gradient of the manual backward pass from jax.grad's (worst relative error per leaf,
max|manual - autodiff| / max|autodiff|, in float64), and from central finite differences?
And how many training steps per second does ``fit`` take with the manual gradient compared
with jax.grad, on the digits with a 64-256-256-10 sigmoid network and batches of 100?

Expected answer (notes 000-002): backpropagation is the chain rule applied layer by layer
from the output back (dZ = dA * g'(Z), dW = A_prev^T dZ, db = sum dZ, dA_prev = dZ W^T), so
the hand-written pass computes the same numbers as automatic differentiation, to rounding:
relative errors near 1e-15 in float64, and near the finite-difference error (about 1e-7)
against central differences. Both compile to the same kind of XLA program, so their speeds
should be of the same order; the ratio is measured, not predicted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Run by path, Python puts this script's folder on sys.path, not the root holding `experiments`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

import nnfun
from experiments import common
from nnfun import data

NAME = "manual_vs_autodiff"
TOLERANCE = 1e-9
BATCH, FEATURES, CLASSES = 6, 5, 3
SPEED_NET = (256, 256)
SPEED_ACTIVATION = "sigmoid"
SPEED_BATCH = 100
SPEED_EPOCHS = 20
QUICK_SPEED_EPOCHS = 2
REPEATS = 3  # timed runs per gradient source; the fastest counts
QUICK_REPEATS = 1  # --quick checks that the speed is measured, not how steady it is


def _mlp(hidden, activation, out_units, out_activation, **extra):
    layers = [nnfun.Dense(h, activation) for h in hidden]
    return nnfun.Sequential([*layers, nnfun.Dense(out_units, out_activation)], FEATURES, **extra)


def cases(quick: bool) -> list[tuple[str, str, nnfun.Sequential, str, dict]]:
    """(group, case, network, loss, loss kwargs) for every feature checked."""
    cce = "categorical_crossentropy"
    out = []
    names = [n for n in nnfun.activations.ACTIVATIONS if n not in ("linear", "softmax")]
    for name in names:
        out.append(("activation", name, _mlp((4, 4), name, CLASSES, "softmax"), cce, {}))
    out.append(
        ("activation", "softmax (hidden)", _mlp((4,), "softmax", CLASSES, "softmax"), cce, {})
    )
    losses = {
        "mean_squared_error": ("identity", CLASSES),
        "half_squared_error": ("sigmoid", CLASSES),
        "binary_crossentropy": ("sigmoid", 1),
        "binary_crossentropy_from_logits": ("identity", 1),
        "categorical_crossentropy": ("softmax", CLASSES),
        "categorical_crossentropy_from_logits": ("identity", CLASSES),
    }
    for loss, (act, units) in losses.items():
        out.append(("loss", f"{loss} ({act})", _mlp((4,), "tanh", units, act), loss, {}))
    net = _mlp((4, 4), "tanh", CLASSES, "softmax")
    out.append(("regulariser", "L2 (l2=0.1)", net, cce, {"l2": 0.1}))
    out.append(("regulariser", "L1 (l1=0.1)", net, cce, {"l1": 0.1}))
    D = nnfun.Dense
    drop = nnfun.Sequential([D(4, "tanh"), nnfun.Dropout(0.5), D(CLASSES, "softmax")], FEATURES)
    key = {"key": jax.random.key(3), "train": True}
    out.append(("regulariser", "dropout 0.5 (train, fixed key)", drop, cce, key))
    # tanh before BatchNorm: a bias feeding BatchNorm directly has gradient exactly 0 in
    # training (the batch mean absorbs it), which leaves nothing to compare.
    bn = nnfun.Sequential([D(4, "tanh"), nnfun.BatchNorm(), D(CLASSES, "softmax")], FEATURES)
    out.append(("regulariser", "BatchNorm (train)", bn, cce, {"train": True, "bn": True}))
    out.append(("regulariser", "BatchNorm (eval)", bn, cce, {"bn": True, "train": False}))
    for name, layer in (("Maxout(4, 3)", nnfun.Maxout(4, pieces=3)), ("PReLU", nnfun.PReLU()),
                        ("RReLU (train, fixed key)", nnfun.RReLU())):  # fmt: skip
        first = [layer] if isinstance(layer, nnfun.Maxout) else [D(4), layer]
        net = nnfun.Sequential([*first, D(CLASSES, "softmax")], FEATURES)
        out.append(("layer", name, net, cce, key if "RReLU" in name else {}))
    for depth in range(1, 6):
        net = _mlp((4,) * depth, "tanh", CLASSES, "softmax")
        out.append(("depth", f"{depth} hidden layer{'s' if depth > 1 else ''}", net, cce, {}))
    if quick:  # one of each group
        seen, keep = set(), []
        for case in out:
            if case[0] not in seen or case[1] in ("BatchNorm (train)", "relu"):
                seen.add(case[0])
                keep.append(case)
        out = keep
    return out


def gradient_table(quick: bool) -> list[dict]:
    """One row per case: worst relative error against jax.grad and finite differences."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    rows = []
    for i, (group, name, net, loss, kw) in enumerate(cases(quick)):
        kw = dict(kw)
        if kw.pop("bn", False):
            kw["state"] = net.init_state()
        units = net.layers[-1].units
        y = rng.integers(0, 2 if units == 1 else CLASSES, BATCH).astype(np.int32)
        if units == 1:
            y = y.astype(np.float32)
        params = net.init(jax.random.key(i))
        result = _check(net, params, x, y, loss, kw, finite_diff=not quick)
        fd = result.finite_differences
        rows.append({
            "group": group, "case": name, "loss": loss,
            "autodiff": result.autodiff.worst.rel_error,
            "worst_leaf": result.autodiff.worst.path,
            "finite_differences": None if fd is None else fd.worst.rel_error,
        })  # fmt: skip
    return rows


def _check(net, params, x, y, loss, kw, finite_diff: bool):
    """The manual gradient against jax.grad (and central differences) in float64 on the CPU,
    training mode unless ``kw`` says otherwise: gradcheck.check on the network's loss, the
    loss and the manual pass each compiled once (gradcheck.check_network would add a
    layer-by-layer check, run op by op, that the table does not report); without finite
    differences, gradcheck.compare on both gradients computed by one program."""

    def wide(a):
        return np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating) else a

    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        params, x, y = jax.tree.map(wide, params), wide(x), wide(y)
        kw = {"train": True, **kw}
        if "state" in kw:
            kw["state"] = jax.tree.map(wide, kw["state"])
        loss_fn = jax.jit(lambda p: net.loss(p, x, y, loss=loss, **kw))
        manual = jax.jit(lambda p: net.manual_grad(p, x, y, loss=loss, **kw))
        if finite_diff:
            return nnfun.gradcheck.check(loss_fn, params, manual(params))
        # Without finite differences both gradients come from one program (one compile, not
        # three: jax.grad of the jitted loss compiles a forward and a backward program).
        grads, auto = jax.jit(lambda p: (manual(p), jax.grad(loss_fn)(p)))(params)
        return nnfun.gradcheck.GradCheck(nnfun.gradcheck.compare(grads, auto, name="jax.grad"))


def markdown(rows: list[dict]) -> str:
    lines = [
        "| group | case | loss | manual vs jax.grad | worst leaf | manual vs finite diff. |",
        "| --- | --- | --- | ---: | --- | ---: |",
    ]
    for r in rows:
        fd = "-" if r["finite_differences"] is None else f"{r['finite_differences']:.1e}"
        lines.append(
            f"| {r['group']} | {r['case']} | {r['loss']} | {r['autodiff']:.1e} | "
            f"`{r['worst_leaf']}` | {fd} |"
        )
    return "\n".join(lines) + "\n"


def steps_per_second(grad: str, split, epochs: int, repeats: int) -> tuple[float, float]:
    """Training steps per second of ``fit``, measured after compilation (best of
    ``repeats``), and the training loss of the last epoch."""
    net = nnfun.Sequential(
        [nnfun.Dense(h, SPEED_ACTIVATION) for h in SPEED_NET] + [nnfun.Dense(10, "softmax")], 64
    )
    config = nnfun.Config.make("categorical_crossentropy", "adam", grad=grad)
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    state, _ = nnfun.train.fit(net, x, y, config=config, epochs=epochs, batch_size=SPEED_BATCH,
                               epochs_per_chunk=epochs)  # fmt: skip  # compiles the program
    best = 0.0
    for _ in range(repeats):
        jax.block_until_ready(state)
        start = time.perf_counter()
        state, history = nnfun.train.fit(net, x, y, config=config, state=state,
                                         batch_size=SPEED_BATCH, epochs=epochs,
                                         epochs_per_chunk=epochs)  # fmt: skip
        jax.block_until_ready(state)
        steps = epochs * nnfun.train.steps_per_epoch(len(y), SPEED_BATCH)
        best = max(best, steps / (time.perf_counter() - start))
    return best, history["loss"][-1]


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    start = time.perf_counter()
    rows = gradient_table(args.quick)
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table)

    epochs, repeats = (QUICK_SPEED_EPOCHS, QUICK_REPEATS) if args.quick else (SPEED_EPOCHS, REPEATS)
    split = data.load_digits()
    runs = {g: steps_per_second(g, split, epochs, repeats) for g in ("manual", "autodiff")}
    speed = {grad: run[0] for grad, run in runs.items()}
    final_loss = {grad: run[1] for grad, run in runs.items()}
    ratio = speed["manual"] / speed["autodiff"]
    print(f"{'gradient':<10} {'steps/s':>10}")
    for grad, value in speed.items():
        print(f"{grad:<10} {value:>10.1f}")
    print(f"manual / autodiff speed ratio: {ratio:.3f}")

    worst = max(r["autodiff"] for r in rows)
    fds = [r["finite_differences"] for r in rows if r["finite_differences"] is not None]
    metrics = {
        "cases": len(rows),
        "worst_rel_error_autodiff": worst,
        "worst_rel_error_finite_differences": max(fds) if fds else None,
        "rows": rows,
        "speed_network": [64, *SPEED_NET, 10],
        "speed_batch_size": SPEED_BATCH,
        "speed_epochs": epochs,
        "steps_per_second": speed,
        "manual_over_autodiff": ratio,
        "final_training_loss": final_loss,
        "seconds": time.perf_counter() - start,
    }
    checks = {
        f"manual gradient matches jax.grad: worst relative error < {TOLERANCE:g}": (
            worst < TOLERANCE
        ),
        # Two trainings from the same key, one per gradient source: float32 rounding apart.
        "manual and autodiff training reach the same loss (relative difference < 1e-3)": bool(
            abs(final_loss["manual"] - final_loss["autodiff"]) < 1e-3 * final_loss["autodiff"]
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
