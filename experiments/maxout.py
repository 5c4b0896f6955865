"""Maxout: an activation function that the network learns, piecewise linear by construction.

Question: a maxout unit outputs the largest of k linear pieces, a = max_j (w_j . x + b_j).
With chosen weights, does it reproduce ReLU (pieces z and 0), leaky ReLU (z and 0.01 z)
and the absolute value (z and -z) exactly? When a network with one hidden layer of maxout
units (16 units x 3 pieces, then a linear output) learns the 1-D regression y = sin(2x) on
[-3, 3], what is the response of each learned unit over the input, how well does the
network fit, and where does the gradient go in backprop?

Expected answer (note 001): ReLU is a special maxout, and other activations are reached by
choosing w and b; the network learns its own activation, which is piecewise linear: with
one input each hidden unit is the upper envelope of k lines, convex with at most k - 1
kinks, so its second differences on a fine grid vanish except next to those kinks; the
network's output, a weighted sum of 16 such units, is piecewise linear with at most
16 (k - 1) kinks and still follows the smooth curve closely. Backprop sends each sample's
gradient to the winning piece only (the max selects one piece, the others get exactly 0),
which is why the notes warn that a maxout network needs more data: a piece learns only from
the samples it wins, and a piece that wins nowhere never learns. The hand-written backward
pass is checked against jax.grad (and, outside --quick, finite differences) in float64.
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
from nnfun import activations, gradcheck, initializers, plotting

NAME = "maxout"
UNITS = 16
PIECES = 3
INTERVAL = (-3.0, 3.0)
N_TRAIN = 256  # x uniform on INTERVAL, y = sin(2x)
KERNEL_INIT = initializers.normal(1.0)  # piece slopes ~ N(0, 1)
BIAS_INIT = initializers.normal(1.0)  # piece offsets ~ N(0, 1)
LOSS = "mean_squared_error"
LEARNING_RATE = 0.01  # Adam
BATCH_SIZE = 32  # divides N_TRAIN: no remainder step
EPOCHS = 400
QUICK_EPOCHS = 100
GRID = 2001  # points for responses and second differences
MAX_MSE = 0.01  # MSE against sin(2x) on the grid, at most (its variance is about 0.5)
QUICK_MAX_MSE = 0.05
EXACT_TOL = 1e-7


def target(x):
    return np.sin(2 * x)


def build() -> nnfun.Sequential:
    """1 -> Maxout(UNITS x PIECES) -> Dense(1): the pieces start with random slopes and
    offsets, so their crossings (the kinks) start spread over the input, not all at 0."""
    maxout = nnfun.Maxout(UNITS, PIECES, input_dim=1, kernel_init=KERNEL_INIT, bias_init=BIAS_INIT)
    return nnfun.Sequential([maxout, nnfun.Dense(1)])


def maxout_of(pieces_w, pieces_b, x):
    """A single maxout unit with pieces (w_j, b_j) on inputs x (n, d), via nnfun.Maxout."""
    w = jnp.asarray(pieces_w, x.dtype).reshape(x.shape[1], 1, -1)
    b = jnp.asarray(pieces_b, x.dtype).reshape(1, -1)
    layer = nnfun.Maxout(1, w.shape[-1])
    return layer.forward({"W": w, "b": b}, {}, x)[0][:, 0]


def to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def reproductions() -> dict:
    """max(z, 0) == ReLU, max(z, 0.01 z) == leaky ReLU, max(z, -z) == |z|; largest gaps."""

    @jax.jit
    def pairs():
        x = jnp.linspace(-5.0, 5.0, GRID)[:, None]
        one_d = {
            "relu": (maxout_of([1, 0], [0, 0], x), activations.relu.fn(x[:, 0])),
            "leaky_relu": (
                maxout_of([1, 0.01], [0, 0], x),
                activations.leaky_relu(0.01).fn(x[:, 0]),
            ),
            "abs": (maxout_of([1, -1], [0, 0], x), jnp.abs(x[:, 0])),
        }
        # On 2-D inputs: a maxout unit with pieces (w.x + b, 0) against Dense(1, relu).
        key_w, key_b, key_x = jax.random.split(jax.random.key(0), 3)
        w = jax.random.normal(key_w, (2,), jnp.float64)
        b = jax.random.normal(key_b, (), jnp.float64)
        x2 = jax.random.normal(key_x, (1000, 2), jnp.float64)
        w_pieces = jnp.stack([w, jnp.zeros(2)], axis=-1)  # (2 inputs, 2 pieces)
        maxout = maxout_of(w_pieces, jnp.stack([b, 0.0]), x2)
        dense = nnfun.Dense(1, "relu").forward({"W": w[:, None], "b": b[None]}, {}, x2)[0][:, 0]
        return x, one_d | {"relu_2d": (maxout, dense)}

    with jax.enable_x64(True):
        x, found = jax.tree.map(np.asarray, pairs())
    out = {
        name: {"max_abs_diff": float(np.max(np.abs(a - b))), "exact": bool(np.all(a == b))}
        for name, (a, b) in found.items()
    }
    out["curves"] = {k: v[0] for k, v in found.items() if k != "relu_2d"} | {"x": x[:, 0]}
    return out


def kinks(values: np.ndarray) -> tuple[int, np.ndarray]:
    """Kinks of a function sampled on a uniform grid: runs of non-zero second differences.

    A kink strictly between two grid points makes two neighbouring second differences
    non-zero (|slope change| x distance to the kink), one on a grid point makes one; a
    straight piece gives zero up to float64 rounding (~1e-15 x |values|).
    Returns (number of runs, the x-index of each run's centre).
    """
    d2 = values[:-2] - 2 * values[1:-1] + values[2:]
    nonzero = np.abs(d2) > 1e-9 * max(np.max(np.abs(values)), 1.0)
    idx = np.flatnonzero(nonzero) + 1
    if idx.size == 0:
        return 0, idx
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    return len(runs), np.array([int(np.mean(r)) for r in runs])


def responses(net, params, grid):
    """Hidden maxout responses (seeds, grid, units), network outputs (seeds, grid) and
    whether each piece wins anywhere on the grid (seeds, units, pieces) for stacked params,
    in float64."""

    @jax.jit
    @jax.vmap
    def one(p):
        out, _, caches = net.forward(p, grid[:, None])
        winner = caches[0][1]  # (grid, units): the piece each unit takes at each x
        wins = jnp.any(jax.nn.one_hot(winner, PIECES, dtype=bool), axis=0)  # (units, pieces)
        return caches[1][0], out[:, 0], wins  # the output layer's input: the maxout responses

    with jax.enable_x64(True):
        return jax.tree.map(np.asarray, one(to64(params)))


def gradient_check(net, params, x, y, finite_diff: bool) -> gradcheck.GradCheck:
    """Manual backprop vs jax.grad (and finite differences) by nnfun.gradcheck, float64."""
    with jax.enable_x64(True):
        params, x, y = to64((params, x, y))
        loss_fn = jax.jit(lambda p: net.loss(p, x, y, loss=LOSS))
        grads = jax.jit(lambda p: net.manual_grad(p, x, y, loss=LOSS))(params)
        return gradcheck.check(loss_fn, params, grads, finite_diff=finite_diff)


def winner_only(net, params, x, y) -> dict:
    """Per-sample gradients of the maxout weights: losing pieces get exactly 0, by the
    hand-written backward pass and by jax.grad (float64)."""

    @jax.jit
    def per_sample(p, x, y):
        def one(xi, yi):
            xb, yb = xi[None], yi[None]
            manual = net.manual_grad(p, xb, yb, loss=LOSS)[0]
            auto = jax.grad(lambda q: net.loss(q, xb, yb, loss=LOSS))(p)[0]
            return manual, auto

        manual, auto = jax.vmap(one)(x, y)  # dW (n, 1, units, pieces), db (n, units, pieces)
        z = jnp.einsum("ni,iuk->nuk", x, p[0]["W"]) + p[0]["b"]
        losing = jax.nn.one_hot(jnp.argmax(z, -1), PIECES) == 0  # (n, units, pieces)
        return manual, auto, losing

    with jax.enable_x64(True):
        manual, auto, losing = jax.tree.map(np.asarray, per_sample(*to64((params, x, y))))
    out = {}
    for name, g in (("manual", manual), ("autodiff", auto)):
        dw, db = g["W"][:, 0], g["b"]
        out[f"{name}_losing_all_zero"] = bool(np.all(dw[losing] == 0) and np.all(db[losing] == 0))
        out[f"{name}_winning_nonzero_fraction"] = float(np.mean(db[~losing] != 0))
    out["per_sample_max_diff"] = float(max(np.max(np.abs(manual[k] - auto[k])) for k in ("W", "b")))
    return out


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    max_mse = QUICK_MAX_MSE if args.quick else MAX_MSE
    start = time.perf_counter()
    repro = reproductions()

    rng = np.random.default_rng(0)
    x = rng.uniform(*INTERVAL, size=(N_TRAIN, 1)).astype(np.float32)
    y = target(x).astype(np.float32)
    net = build()
    config = nnfun.Config.make(LOSS, "adam", learning_rate=LEARNING_RATE)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    # One compiled program for every seed's init instead of one small one per operation.
    states = jax.jit(lambda k: nnfun.train.init_many(net, config, k))(keys)
    states, hist = nnfun.train.fit_many(
        net, x, y, states, config=config, epochs=epochs, batch_size=BATCH_SIZE
    )
    grid = np.linspace(*INTERVAL, GRID)
    hiddens, outs, wins = responses(net, states.params, grid)
    mse = [float(np.mean((out - target(grid)) ** 2)) for out in outs]
    unit_kinks = np.array([[kinks(hid[:, u])[0] for u in range(UNITS)] for hid in hiddens])
    net_kinks = [kinks(out)[0] for out in outs]
    train_mse = np.asarray(hist["loss"][-1])  # last epoch, per seed
    first = nnfun.train.unstack(states)[0].params
    check = gradient_check(net, first, x, y, finite_diff=not args.quick)
    winners = winner_only(net, first, x, y)

    # Figures: the reproductions, the fit, and the learned units (seed 0).
    fig, axes = plotting.figure(4)
    xs = repro["curves"]["x"]
    for name in ("relu", "leaky_relu", "abs"):
        axes[0].plot(xs, repro["curves"][name], label=f"maxout = {name}")
    axes[0].set(title="maxout with chosen pieces", xlabel="z")
    axes[0].legend(fontsize=8)
    hidden, out = hiddens[0], outs[0]
    axes[1].scatter(x[:, 0], y[:, 0], s=4, color="gray", alpha=0.5, label="training data")
    axes[1].plot(grid, target(grid), color="black", lw=1, ls=":", label="sin(2x)")
    axes[1].plot(grid, out, label=f"network ({net_kinks[0]} kinks)")
    axes[1].set(title=f"{UNITS} maxout units x {PIECES} pieces, MSE {mse[0]:.4f}", xlabel="x")
    axes[1].legend(fontsize=8)
    for u in range(UNITS):
        (line,) = axes[2].plot(grid, hidden[:, u], lw=1)
        where = kinks(hidden[:, u])[1]
        axes[2].plot(grid[where], hidden[where, u], "o", ms=3, color=line.get_color())
    axes[2].set(title="learned units: convex, <= k - 1 kinks (dots)", xlabel="x",
                ylabel="unit response")  # fmt: skip
    for ax in axes[:3]:
        ax.grid(alpha=0.3)
    plotting.curves(axes[3], {"training MSE": hist["loss"].T}, ylabel="MSE", log=True,
                    title=f"training, Adam {LEARNING_RATE}")  # fmt: skip
    plotting.save(fig, args.out / "maxout.png")

    metrics = {
        "epochs": epochs, "seeds": args.seeds, "units": UNITS, "pieces": PIECES,
        "reproductions": {k: v for k, v in repro.items() if k != "curves"},
        "train_mse": train_mse, "grid_mse": mse,
        "unit_kinks": unit_kinks, "max_unit_kinks": int(unit_kinks.max()),
        "network_kinks": net_kinks,
        "pieces_never_winning": float(1 - wins.mean()),
        "gradcheck_autodiff_rel_error": check.autodiff.worst.rel_error,
        "gradcheck_fd_rel_error": (
            None if check.finite_differences is None else check.finite_differences.worst.rel_error
        ),
        "gradcheck_ok": check.ok,
        "winner_only": winners,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    print(
        "reproductions (max |maxout - reference|): "
        + ", ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in metrics["reproductions"].items())
    )
    print(f"{'':<28}{'mean +- std over seeds':>24}")
    print(f"{'MSE vs sin(2x) on the grid':<28}{common.mean_std(mse):>24}")
    print(
        f"{'kinks per hidden unit':<28}{common.mean_std(unit_kinks.ravel()):>24}"
        f"  (max {unit_kinks.max()}, allowed {PIECES - 1})"
    )
    print(f"{'pieces never winning on x':<28}{common.mean_std(1 - wins.mean(axis=(1, 2))):>24}")
    print(
        f"{'kinks of the network output':<28}{common.mean_std(net_kinks):>24}"
        f"  (allowed {UNITS * (PIECES - 1)})"
    )
    print(check)
    checks = {
        f"maxout reproduces ReLU, leaky ReLU and |z| exactly (<= {EXACT_TOL:g}; 1-D: ==)": all(
            v["max_abs_diff"] <= EXACT_TOL for v in metrics["reproductions"].values()
        )
        and all(metrics["reproductions"][k]["exact"] for k in ("relu", "leaky_relu", "abs")),
        f"trained network fits sin(2x): MSE <= {max_mse} (every seed)": max(mse) <= max_mse,
        f"every learned unit is piecewise linear with <= {PIECES - 1} kinks": (
            unit_kinks.max() <= PIECES - 1
        ),
        f"network output piecewise linear with <= {UNITS * (PIECES - 1)} kinks": (
            max(net_kinks) <= UNITS * (PIECES - 1)
        ),
        "manual backprop == jax.grad (1e-7) and finite differences (1e-5; not in --quick), "
        "float64": check.ok,
        "per sample, losing pieces get exactly zero gradient (manual and jax.grad)": (
            winners["manual_losing_all_zero"] and winners["autodiff_losing_all_zero"]
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
