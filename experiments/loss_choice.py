"""Why a sigmoid output is trained with cross-entropy rather than the squared error.

Question: a 2-16-1 network (tanh hidden units, one sigmoid output unit) on the two moons,
started confidently wrong: the output bias is set so that a = sigmoid(z) = 0.999 for every
sample, which is wrong for the half of the data whose target is 0. How large is the
gradient of the loss with respect to the output's pre-activation z at that start, under the
mean squared error J = (a - y)^2 and under binary cross-entropy
J = -[y log a + (1 - y) log(1 - a)], and how many epochs of plain gradient descent does
each need to escape the wrong start?

Expected answer (note 004, with the backprop equations of notes 000 and 002): the chain
rule through the sigmoid gives dJ/dz = 2 (a - y) a (1 - a) for the squared error, and the
factor a (1 - a) = sigmoid'(z) vanishes when the output saturates near 0 or 1: at a = 0.999
with y = 0 the gradient is about 0.002 although the answer is as wrong as it can be, so
the partial derivatives nearly vanish just when training starts. Cross-entropy's log
cancels that factor: dJ/dz = a - y, about 1, the larger the more wrong. Its initial
gradient is several hundred times larger and it reaches a good accuracy in far fewer epochs.

Gradients at the start come twice: from the library's hand-written losses (the squared
error's derivative times sigmoid'(z); the fused sigmoid + cross-entropy gradient a - y) and
from jax.grad; they must agree. Training is plain SGD, because an adaptive optimiser such
as Adam rescales every gradient to a similar step size and would hide the difference.
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
from nnfun import activations, data, losses, plotting

NAME = "loss_choice"
LOSSES = {"mse": "mean_squared_error", "cross-entropy": "binary_crossentropy"}
N_TRAIN = 400  # moons (noise 0.2) for training; another draw of the same size for testing
NOISE = 0.2
HIDDEN = 16
ACTIVATION = "tanh"
START_LOGIT = 7.0  # output bias at the start: sigmoid(7) = 0.99909 for every sample
OUTPUT_SCALE = 0.01  # output weights start at Glorot x this, so z stays near START_LOGIT
LEARNING_RATE = 1.0  # plain SGD
BATCH_SIZE = 40  # divides N_TRAIN: no remainder step (a second step to compile)
TARGET_ACCURACY = 0.85  # "escaped": training accuracy (evaluation mode) at least this
EPOCHS = 150
QUICK_EPOCHS = 10
MIN_RATIO = 100.0  # cross-entropy's initial |dJ/dz| over the squared error's, at least


def build() -> nnfun.Sequential:
    return nnfun.Sequential(
        [nnfun.Dense(HIDDEN, ACTIVATION, input_dim=2), nnfun.Dense(1, "sigmoid")]
    )


def wrong_start(states: nnfun.TrainState) -> nnfun.TrainState:
    """Output weights shrunk and the output bias at START_LOGIT: a = 0.999 for every x."""
    hidden, out = states.params
    out = {"W": out["W"] * OUTPUT_SCALE, "b": jnp.full_like(out["b"], START_LOGIT)}
    return states._replace(params=[hidden, out])  # SGD's state does not depend on params


def dz_by_hand(loss: str, z, y):
    """Per-sample dL/dz from the hand-written pieces: (batch, 1)."""
    if loss == "binary_crossentropy":  # the fused gradient: a - y
        return losses.binary_crossentropy_from_logits.grad(z, y)
    a = activations.sigmoid.fn(z)  # dL/da times sigmoid'(z) = a (1 - a)
    return activations.sigmoid.vjp(z, a, losses.get(loss).grad(a, y))


def dz_by_autodiff(loss: str, z, y):
    """Per-sample dL/dz by jax.grad of L(sigmoid(z), y) written from the forward pieces."""
    fn = losses.get(loss).fn

    def one(zi, yi):
        return fn(activations.sigmoid.fn(zi)[None], yi[None])[0]

    return jax.vmap(jax.grad(one))(z, y)


def at_start(net, params, x, y):
    """Gradient sizes at the wrong start, per loss: per-sample |dL/dz| on the wrong samples
    (hand-written and jax.grad) and |dJ/db| of the output bias (manual backprop, jax.grad)."""
    _, _, caches = net.forward(params, x)
    z = caches[-1][1]
    t = y[:, None].astype(z.dtype)
    wrong = (y == 0).astype(z.dtype)[:, None]
    out = {"output": jnp.sum(activations.sigmoid.fn(z) * wrong) / jnp.sum(wrong)}
    for label, loss in LOSSES.items():
        hand, auto = dz_by_hand(loss, z, t), dz_by_autodiff(loss, z, t)
        manual = net.manual_grad(params, x, y, loss=loss)[-1]["b"][0]
        reference = jax.grad(lambda p, loss=loss: net.loss(p, x, y, loss=loss))(params)[-1]["b"][0]
        out[label] = {
            "dz_wrong_hand": jnp.sum(jnp.abs(hand) * wrong) / jnp.sum(wrong),
            "dz_wrong_autodiff": jnp.sum(jnp.abs(auto) * wrong) / jnp.sum(wrong),
            "dz_max_rel_diff": jnp.max(jnp.abs(hand - auto)) / jnp.max(jnp.abs(auto)),
            "db_manual": jnp.abs(manual),
            "db_autodiff": jnp.abs(reference),
        }
    return out


def initial_states(net, seeds: int) -> nnfun.TrainState:
    """Every seed's wrong start, for both losses: plain SGD's state does not depend on them."""
    config = nnfun.Config.make("mse", "sgd", learning_rate=LEARNING_RATE)
    keys = jax.random.split(jax.random.key(0), seeds)
    # One compiled program for every seed's init instead of one small one per operation.
    return jax.jit(lambda k: wrong_start(nnfun.train.init_many(net, config, k)))(keys)


def measurer(net, x, y, xt, yt):
    """One model's measure: params -> [train accuracy, test accuracy, train BCE]."""

    def measure(params):
        a, at = net.apply(params, x)[:, 0], net.apply(params, xt)[:, 0]
        bce = net.loss(params, x, y, loss="binary_crossentropy")
        return jnp.stack([jnp.mean((a > 0.5) == y), jnp.mean((at > 0.5) == yt), bce])

    return measure


def run(net, label: str, states, measure, x, y, epochs: int) -> dict:
    """Trains the stack of networks with one loss from the wrong start; per-epoch curves."""
    config = nnfun.Config.make(LOSSES[label], "sgd", learning_rate=LEARNING_RATE)
    # After every epoch, measured inside the one compiled training program.
    initial = np.asarray(jax.jit(jax.vmap(measure))(states.params))
    states, hist = nnfun.train.fit_many(
        net, x, y, states, config=config, epochs=epochs, batch_size=BATCH_SIZE,
        track={"measure": lambda params, _: measure(params)},
    )  # fmt: skip
    curve = np.concatenate([initial[None], np.asarray(hist["measure"])])  # (epochs + 1, seeds, 3)
    curve = curve.swapaxes(0, 1)  # (seeds, epochs + 1, [train acc, test acc, train BCE])
    reached = curve[:, :, 0] >= TARGET_ACCURACY
    to_target = [int(np.argmax(r)) if r.any() else None for r in reached]
    return {"curve": curve, "epochs_to_target": to_target}


def start_gradients(net, params, x, y) -> dict:
    """at_start for every seed's wrong start (the very params training starts from), in one
    vmapped program, in float64 as every gradient check: float32 loses 1 - a near a = 1."""
    with jax.enable_x64(True):
        params, x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x))
        fn = jax.jit(jax.vmap(lambda p: at_start(net, p, x, y)))
        return jax.tree.map(np.asarray, fn(params))


def gradient_figure(ax) -> None:
    """|dL/dz| against z for target y = 0 under both losses (hand-written formulas)."""
    z = np.linspace(-10, 10, 401)[:, None]
    curves = jax.jit(lambda z: {k: dz_by_hand(v, z, jnp.zeros_like(z)) for k, v in LOSSES.items()})
    for label, dz in curves(z).items():
        ax.plot(z[:, 0], np.abs(np.asarray(dz))[:, 0], label=label)
    ax.axvline(START_LOGIT, color="gray", ls=":", label=f"start z = {START_LOGIT:g}")
    ax.set(yscale="log", xlabel="z (output pre-activation)", ylabel="|dL/dz| for target 0",
           title="gradient at the sigmoid output")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    x, y = (jnp.asarray(a) for a in data.moons(N_TRAIN, NOISE, seed=0))
    xt, yt = (jnp.asarray(a) for a in data.moons(N_TRAIN, NOISE, seed=1))
    start = time.perf_counter()
    net = build()
    states = initial_states(net, args.seeds)
    at_init = start_gradients(net, states.params, x, y)
    measure = measurer(net, x, y, xt, yt)
    results = {label: run(net, label, states, measure, x, y, epochs) for label in LOSSES}

    fig, axes = plotting.figure(3)
    gradient_figure(axes[0])
    for ax, column, ylabel in ((axes[1], 0, "training accuracy"), (axes[2], 2, "training BCE")):
        plotting.curves(
            ax, {k: r["curve"][:, :, column] for k, r in results.items()},
            x=np.arange(epochs + 1), ylabel=ylabel,
            title=f"from a = {float(jax.nn.sigmoid(START_LOGIT)):.4f}, SGD {LEARNING_RATE}",
        )  # fmt: skip
    axes[1].axhline(TARGET_ACCURACY, color="gray", ls=":", lw=1)
    plotting.save(fig, args.out / "loss_choice.png")

    metrics: dict = {
        "epochs": epochs, "seeds": args.seeds, "start_logit": START_LOGIT,
        "learning_rate": LEARNING_RATE, "target_accuracy": TARGET_ACCURACY,
    }  # fmt: skip
    print(f"start: a = sigmoid(z) ~ {float(at_init['output'].mean()):.5f} "
          "on the samples with target 0")  # fmt: skip
    head = ("|dL/dz| wrong", "|dJ/db_out|", f"epochs to {TARGET_ACCURACY}", "train acc",
            "test acc", "train BCE")  # fmt: skip
    print(f"{'loss':<14}" + "".join(f"{h:>21}" for h in head))
    for label, r in results.items():
        s = at_init[label]
        final = r["curve"][:, -1]
        reached = [e for e in r["epochs_to_target"] if e is not None]
        epochs_cell = common.mean_std(reached) if len(reached) == args.seeds else (
            f"{len(reached)}/{args.seeds} in {epochs}"
        )  # fmt: skip
        cells = (common.mean_std(s["dz_wrong_hand"]), common.mean_std(s["db_manual"]),
                 epochs_cell, *(common.mean_std(final[:, i]) for i in range(3)))  # fmt: skip
        print(f"{label:<14}" + "".join(f" {c:>20}" for c in cells))
        metrics[label] = {
            "dz_wrong_start": float(s["dz_wrong_hand"].mean()),
            "dz_wrong_start_autodiff": float(s["dz_wrong_autodiff"].mean()),
            "dz_hand_vs_autodiff_rel_error": float(s["dz_max_rel_diff"].max()),
            "db_out_start": float(s["db_manual"].mean()),
            "db_out_start_autodiff": float(s["db_autodiff"].mean()),
            "db_manual_vs_autodiff_rel_error": float(
                np.max(np.abs(s["db_manual"] - s["db_autodiff"]) / s["db_autodiff"])
            ),
            "epochs_to_target": r["epochs_to_target"],
            "train_accuracy": float(final[:, 0].mean()),
            "test_accuracy": float(final[:, 1].mean()),
            "train_bce": float(final[:, 2].mean()),
            "accuracy_curve": r["curve"][:, :, 0].mean(0),
        }
    metrics["start_output"] = float(at_init["output"].mean())
    mse, ce = metrics["mse"], metrics["cross-entropy"]
    metrics["dz_ratio"] = ce["dz_wrong_start"] / mse["dz_wrong_start"]
    metrics["db_ratio"] = ce["db_out_start"] / mse["db_out_start"]
    metrics["seconds"] = time.perf_counter() - start
    print(f"cross-entropy / mse at the start: |dL/dz| x{metrics['dz_ratio']:.0f}, "
          f"|dJ/db_out| x{metrics['db_ratio']:.0f}")  # fmt: skip

    pairs = zip(ce["epochs_to_target"], mse["epochs_to_target"], strict=True)
    checks = {
        "start is confidently wrong (a > 0.99 where y = 0)": metrics["start_output"] > 0.99,
        "hand-written dL/dz equals jax.grad's (float64, rel err < 1e-9)": all(
            metrics[k]["dz_hand_vs_autodiff_rel_error"] < 1e-9 for k in LOSSES
        ),
        "manual backprop dJ/db_out equals jax.grad's (float64, rel err < 1e-9)": all(
            metrics[k]["db_manual_vs_autodiff_rel_error"] < 1e-9 for k in LOSSES
        ),
        f"cross-entropy's initial |dL/dz| >= {MIN_RATIO:g}x the squared error's": (
            metrics["dz_ratio"] >= MIN_RATIO
        ),
        f"cross-entropy's initial |dJ/db_out| >= {MIN_RATIO:g}x the squared error's": (
            metrics["db_ratio"] >= MIN_RATIO
        ),
        f"cross-entropy reaches accuracy {TARGET_ACCURACY} in fewer epochs than mse "
        "(every seed)": all(c is not None and (m is None or c < m) for c, m in pairs),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
