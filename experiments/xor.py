"""Can one sigmoid unit learn XOR, and how much hidden layer does it take?

Question: on the four XOR points (0,0) -> 0, (0,1) -> 1, (1,0) -> 1, (1,1) -> 0, trained with
full-batch gradient descent and binary cross-entropy, what accuracy does logistic regression
(a single sigmoid unit, a = sigmoid(x @ w + b)) reach, and what does a network with one hidden
layer of 2, 3, 4 or 8 tanh units (and a sigmoid output) reach? How many of the seeds reach
100%? And do hand-set weights of the notes' 2-2-1 shape (2 inputs, 2 sigmoid hidden units,
1 identity output) compute XOR?

Expected answer (notes 003 and 004): XOR is not linearly separable. A linear model divides
the plane with one straight line, and no line puts (0,1) and (1,0) on one side and (0,0) and
(1,1) on the other: the best it can classify is 3 of 4 points (accuracy <= 0.75), and with
cross-entropy its best loss is ln 2, the loss of answering 0.5 everywhere (by the symmetry of
the four points the convex loss is smallest at w = 0, b = 0). A non-linear hidden layer
re-maps the points so that the output unit can separate them: one hidden layer of tanh units
reaches 100%. (A linear model trained to its optimum answers about 0.5 on every point; which
side of 0.5 each point falls on, and so its accuracy, is then decided by differences of
float32 rounding size: the loss, ln 2, is the telling number.) With only 2 hidden units,
gradient descent often stalls in a poor local minimum for some seeds; wider layers succeed
for every seed.

The notes' forward-propagation example is a 2-2-1 network (W1 = [[4, 4], [4, 4]],
b1 = [3, -3], W2 = [[1], [1]], b2 = 0.1, sigmoid hidden units, identity output). It is there to
show a forward pass, not to solve XOR: both hidden units see x0 + x1 with positive weights, so
its output grows with x0 + x1 and no threshold gives XOR; this is checked. The same shape does
compute XOR with hand-set weights: an "OR" unit sigmoid(20 x0 + 20 x1 - 10) minus an "AND"
unit sigmoid(20 x0 + 20 x1 - 30); this is checked too.
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
from nnfun import data, plotting, program_cache

NAME = "xor"
SEEDS = 20  # default --seeds: models are tiny and vmapped, so many seeds cost little
ACTIVATION = "tanh"
WIDTHS = (2, 3, 4, 8)  # hidden units
QUICK_WIDTHS = (8,)
ALL_SEEDS_WIDTH = 8  # the width at which every seed must reach 100%
LEARNING_RATE = 1.0  # full-batch gradient descent (the notes' w = w - r dJ/dw)
EPOCHS = 1000  # one full-batch step each
QUICK_EPOCHS = 200
LOSS = "binary_crossentropy"
LOSS_SLACK = 1e-5  # float32 rounding allowed below ln 2
NOTES_2_2_1 = [  # the notes' forward-pass example (note 002)
    {"W": [[4.0, 4.0], [4.0, 4.0]], "b": [3.0, -3.0]},
    {"W": [[1.0], [1.0]], "b": [0.1]},
]
HAND_SET_XOR = [  # the same shape: hidden "OR" and "AND" units, output OR - AND
    {"W": [[20.0, 20.0], [20.0, 20.0]], "b": [-10.0, -30.0]},
    {"W": [[1.0], [-1.0]], "b": [0.0]},
]
HAND_SET_TOLERANCE = 1e-3  # |output - target| on every point
FLAT_OUTPUT = 1e-3  # an output spread below this over the plane is drawn as constant


def logistic() -> nnfun.Sequential:
    return nnfun.Sequential([nnfun.Dense(1, "sigmoid", input_dim=2)])


def hidden(width: int, activation: str = ACTIVATION) -> nnfun.Sequential:
    return nnfun.Sequential(
        [nnfun.Dense(width, activation, input_dim=2), nnfun.Dense(1, "sigmoid")]
    )


def two_two_one() -> nnfun.Sequential:
    """The notes' 2-2-1 shape: sigmoid hidden units, identity output."""
    return nnfun.Sequential([nnfun.Dense(2, "sigmoid", input_dim=2), nnfun.Dense(1, None)])


def as_params(values) -> list[dict]:
    return [{k: jnp.asarray(v, jnp.float32) for k, v in layer.items()} for layer in values]


@program_cache.by_structure  # compiled once per network structure (linear_collapse's too)
def evaluation(net: nnfun.Sequential):
    """A stack of `net`s' accuracy, loss and outputs on XOR, as one jitted function."""
    x, y = data.xor()

    def evaluate(params):
        out = net.apply(params, x)[:, 0]
        return jnp.mean((out > 0.5) == y), net.loss(params, x, y, loss=LOSS), out

    return jax.jit(jax.vmap(evaluate))


@program_cache.by_structure
def compiled_apply(net: nnfun.Sequential):
    """``net.apply`` jitted, once per network structure."""
    return jax.jit(net.apply)


def train(
    net: nnfun.Sequential,
    seeds: int,
    epochs: int,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
) -> dict:
    """Trains `seeds` copies of `net` on XOR at once (vmapped); per-seed results."""
    x, y = data.xor()
    # The rate in each model's state, not in the config: the compiled program serves any rate
    # (linear_collapse trains the same networks at another).
    config = nnfun.Config.make(LOSS, "gd", ["accuracy"])
    keys = jax.random.split(jax.random.key(seed), seeds)
    states = nnfun.train.init_many(net, config, keys, learning_rates=[learning_rate] * seeds)
    states, hist = nnfun.train.fit_many(
        net, x, y, states, config=config, epochs=epochs, batch_size=len(x)
    )
    accuracy, loss, outputs = evaluation(net)(states.params)
    return {
        "accuracy": np.asarray(accuracy),
        "loss": np.asarray(loss),
        "outputs": np.asarray(outputs),
        "loss_curve": hist["loss"].T,
        "params": states.params,
    }


def draw_boundary(ax, net: nnfun.Sequential, params, title: str, probability: bool = True):
    """The network's output over the plane, its 0.5 contour and the XOR points.

    ``probability``: the output is a sigmoid's, coloured on a fixed 0..1 scale; otherwise
    the colours follow the output's range and no threshold is drawn.
    """
    x, y = data.xor()
    grid = np.linspace(-0.5, 1.5, 161, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)
    out = np.asarray(compiled_apply(net)(params, np.stack([gx.ravel(), gy.ravel()], 1)))[:, 0]
    out = out.reshape(gx.shape)
    levels = np.linspace(0.0, 1.0, 21) if probability else 20
    filled = ax.contourf(gx, gy, out, levels=levels, cmap="RdBu_r", alpha=0.8)
    spread = float(out.max() - out.min())
    if probability and spread < FLAT_OUTPUT:  # a 0.5 contour would trace rounding noise
        text = (
            f"a = {out.mean():.3f} everywhere\n(spread {spread:.1g}): which side\n"
            "of 0.5 a point falls on,\nhence the accuracy, is rounding"
        )
        box = {"fc": "white", "alpha": 0.8}
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, bbox=box)
    elif probability and out.min() < 0.5 < out.max():
        ax.contour(gx, gy, out, levels=[0.5], colors="k", linewidths=2)
    ax.figure.colorbar(filled, ax=ax, fraction=0.046)
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=120, vmin=0, vmax=1)
    ax.set(title=title, xlabel="x0", ylabel="x1", aspect="equal")


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.set_defaults(seeds=SEEDS)
    args = p.parse_args(argv)
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    x, y = data.xor()
    start = time.perf_counter()

    nets = {"logistic regression": logistic()}
    nets |= {f"{w} {ACTIVATION} hidden": hidden(w) for w in widths}
    results = {label: train(net, args.seeds, epochs) for label, net in nets.items()}

    notes_net = two_two_one()
    forward = compiled_apply(notes_net)
    notes_out = np.asarray(forward(as_params(NOTES_2_2_1), x))[:, 0]
    hand_out = np.asarray(forward(as_params(HAND_SET_XOR), x))[:, 0]
    seconds = time.perf_counter() - start

    metrics: dict = {
        "seeds": args.seeds, "epochs": epochs, "learning_rate": LEARNING_RATE,
        "optimizer": "full-batch gradient descent", "ln2": float(np.log(2)),
    }  # fmt: skip
    print(f"XOR, {args.seeds} seeds, {epochs} epochs of gradient descent (lr {LEARNING_RATE})")
    print(f"{'model':<22} {'accuracy':>16} {'seeds at 100%':>14} {'final loss':>18} "
          f"{'max |a - 0.5|':>13}")  # fmt: skip
    for label, r in results.items():
        perfect = int(np.sum(r["accuracy"] == 1.0))
        print(
            f"{label:<22} {common.mean_std(r['accuracy']):>16} {perfect:>11}/{args.seeds:<2} "
            f"{common.mean_std(r['loss']):>18} {np.max(np.abs(r['outputs'] - 0.5)):>13.3g}"
        )
        metrics[label] = {
            "accuracy": r["accuracy"], "mean_accuracy": float(r["accuracy"].mean()),
            "max_accuracy": float(r["accuracy"].max()), "seeds_at_100": perfect,
            "loss": r["loss"], "min_loss": float(r["loss"].min()),
            "max_abs_output_minus_half": float(np.max(np.abs(r["outputs"] - 0.5))),
        }  # fmt: skip
    metrics["notes_2_2_1_outputs"] = notes_out
    metrics["hand_set_xor_outputs"] = hand_out
    metrics["seconds"] = seconds
    print(f"notes' 2-2-1 example on (0,0) (0,1) (1,0) (1,1): {np.round(notes_out, 4)}")
    print(f"hand-set 2-2-1 XOR weights:                    {np.round(hand_out, 5)}")

    wide = f"{ALL_SEEDS_WIDTH} {ACTIVATION} hidden"
    narrow = f"{min(widths)} {ACTIVATION} hidden"
    panels = [("logistic regression", 0, logistic()), (wide, 0, hidden(ALL_SEEDS_WIDTH))]
    for outcome in (True, False):  # the narrow layer: its first success, its first failure
        found = np.flatnonzero((results[narrow]["accuracy"] == 1.0) == outcome)
        if found.size and narrow != wide:
            panels.append((narrow, int(found[0]), hidden(min(widths))))
    count = len(panels) + 2  # and the two hand-set 2-2-1 networks
    cols = 2 if count == 4 else 3
    fig, axes = plotting.figure(cols, -(-count // cols), size=(4.2, 3.6))
    for ax, (label, seed, net) in zip(axes, panels, strict=False):
        params = jax.tree.map(lambda a, s=seed: a[s], results[label]["params"])
        r = results[label]
        if np.max(np.abs(r["outputs"][seed] - 0.5)) < FLAT_OUTPUT:  # no side of 0.5: no acc
            title = f"{label}, seed {seed}: loss {r['loss'][seed]:.4f} (ln 2)"
        else:
            title = f"{label}, seed {seed}: acc {r['accuracy'][seed]:.2f}"
        draw_boundary(ax, net, params, title)
    notes_title = "notes' 2-2-1 example (identity output)"
    rest = axes[len(panels) :]
    draw_boundary(rest[0], notes_net, as_params(NOTES_2_2_1), notes_title, probability=False)
    draw_boundary(rest[1], notes_net, as_params(HAND_SET_XOR), "hand-set 2-2-1 XOR weights")
    for ax in rest[2:]:
        fig.delaxes(ax)
    plotting.save(fig, args.out / "decision_boundaries.png")

    curves, cax = plotting.figure(1)
    plotting.curves(
        cax[0], {k: r["loss_curve"] for k, r in results.items()},
        title="XOR: training loss (mean +- std over seeds)", ylabel="binary cross-entropy",
        log=True,
    )  # fmt: skip
    cax[0].axhline(np.log(2), color="gray", ls="--", lw=1)
    plotting.save(curves, args.out / "loss_curves.png")

    lr = metrics["logistic regression"]
    order = np.argsort(x[:, 0] + x[:, 1], kind="stable")  # (0,0), (0,1), (1,0), (1,1)
    checks = {
        "logistic regression: accuracy <= 0.75 for every seed": lr["max_accuracy"] <= 0.75,
        "logistic regression: final loss >= ln 2 for every seed (no better than 0.5 "
        "everywhere)": lr["min_loss"] >= np.log(2) - LOSS_SLACK,
        f"{wide}: every seed reaches 100%": metrics[wide]["seeds_at_100"] == args.seeds,
        f"{wide}: final loss < 0.1 for every seed": float(np.max(metrics[wide]["loss"])) < 0.1,
        "notes' 2-2-1 example: output grows with x0 + x1 (so it is not XOR)": bool(
            np.all(np.diff(notes_out[order][[0, 1, 3]]) > 0) and notes_out[1] == notes_out[2]
        ),
        f"hand-set 2-2-1 weights: XOR within {HAND_SET_TOLERANCE:g} on every point": bool(
            np.max(np.abs(hand_out - y)) < HAND_SET_TOLERANCE
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
