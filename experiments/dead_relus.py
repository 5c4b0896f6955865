"""Do ReLU units die at large learning rates, and do the leaky variants escape?

Question: after training a 3 x 64 network on the digits with Adam at learning rates from
0.001 to 0.3, what fraction of hidden units never activate on any training sample
(pre-activation z <= 0 for all of them), and how do leaky ReLU (slope 0.01), PReLU
(learned slope, ``Dense(identity) + PReLU``) and randomized ReLU (slope ~ U[1/8, 1/3] in
training, ``Dense(identity) + RReLU``) compare?

Expected answer (note 003): ReLU passes no gradient where z < 0, so a unit pushed to
negative z on every sample gets zero gradient for good: it is dead. With a large learning
rate a large share of the units dies irreversibly and training fails. The leaky variants
keep a small slope on the negative side, so their negative-only units still receive
gradient and can recover; PReLU learns the slope, RReLU draws it at random.

For the leaky variants "dead" means the same thing (negative on every sample) although
such units still pass gradient; the experiment measures that gradient with the
hand-written backward pass, and how many units negative-only after the first epoch are
active again at the end.
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
from nnfun import data, plotting

NAME = "dead_relus"
VARIANTS = ("relu", "leaky_relu", "prelu", "rrelu")
LEARNING_RATES = (0.001, 0.01, 0.03, 0.1, 0.3)  # Adam
QUICK_LEARNING_RATES = (0.001, 0.3)
HIDDEN = (64, 64, 64)
LOSS = "categorical_crossentropy"
BATCH_SIZE = 32
EPOCHS = 20
QUICK_EPOCHS = 2
COLLAPSED = 0.5  # training accuracy below this counts as a failed run


def build(variant: str) -> nnfun.Sequential:
    """64 -> 3 x (Dense + the variant's rectifier) -> Dense(10, softmax)."""
    layers = []
    for i, units in enumerate(HIDDEN):
        kw = {"input_dim": 64} if i == 0 else {}
        if variant in ("relu", "leaky_relu"):
            layers.append(nnfun.Dense(units, variant, **kw))
        else:
            rectifier = nnfun.PReLU() if variant == "prelu" else nnfun.RReLU()
            layers += [nnfun.Dense(units, "identity", **kw), rectifier]
    return nnfun.Sequential([*layers, nnfun.Dense(10, "softmax")])


def run(variant: str, split, seeds: int, rates, epochs: int) -> dict:
    """Trains len(rates) x seeds models in one vmapped program; per-unit statistics."""
    net = build(variant)
    config = nnfun.Config.make(LOSS, "adam", ["accuracy"])
    lrs = np.repeat(rates, seeds)
    states = nnfun.train.init_many(
        net, config, jax.random.split(jax.random.key(0), len(lrs)), learning_rates=lrs
    )
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)
    hidden = [i for i, layer in enumerate(net.layers[:-1]) if isinstance(layer, nnfun.Dense)]

    def dead_mask(params):
        """(units,) True where z <= 0 on every training sample, all hidden layers."""
        _, _, caches = net.forward(params, x)
        return jnp.concatenate([jnp.all(caches[i][1] <= 0, axis=0) for i in hidden])

    def stats(params):
        dead = dead_mask(params)
        # Evaluation mode (RReLU uses its mean slope): the gradient a dead unit would get.
        grads = net.manual_grad(params, x, y, loss=LOSS)
        column_norm = jnp.concatenate([jnp.linalg.norm(grads[i]["W"], axis=0) for i in hidden])
        count = jnp.sum(dead)
        has_grad = jnp.where(count > 0, jnp.sum(dead & (column_norm > 0)) / count, jnp.nan)
        out = net.apply(params, x)
        train_acc = jnp.mean(jnp.argmax(out, -1) == y)
        test_acc = jnp.mean(jnp.argmax(net.apply(params, xt), -1) == yt)
        return dead, has_grad, train_acc, test_acc

    # The dead units after every epoch, probed inside the one compiled training program;
    # before it, from the same compiled statistics as after it.
    stats_many = jax.jit(jax.vmap(stats))
    initial = np.asarray(stats_many(states.params)[0])
    states, hist = nnfun.train.fit_many(
        net, x, y, states, config=config, epochs=epochs, batch_size=BATCH_SIZE,
        track={"dead": lambda params, _: dead_mask(params)},
    )  # fmt: skip
    dead_curve = [initial, *np.asarray(hist["dead"])]
    dead, has_grad, train_acc, test_acc = map(np.asarray, stats_many(states.params))
    after_first = dead_curve[1]
    revived = (after_first & ~dead).sum(1) / np.maximum(after_first.sum(1), 1)

    def per_rate(v):  # (models, ...) -> (rates, seeds, ...)
        return np.asarray(v).reshape(len(rates), seeds, *np.shape(v)[1:])

    return {
        "dead_init": per_rate(dead_curve[0].mean(1)),
        "dead": per_rate(dead.mean(1)),
        "dead_curve": per_rate(np.stack(dead_curve, 1).mean(2)),  # (rates, seeds, epochs + 1)
        "dead_units_with_gradient": per_rate(has_grad),
        "revived": per_rate(revived),
        "train_accuracy": per_rate(train_acc),
        "test_accuracy": per_rate(test_acc),
    }


def figures(results: dict, rates, out) -> None:
    fig, axes = plotting.figure(2)
    plotting.curves(
        axes[0],
        {v: r["dead"].T for v, r in results.items()},
        x=rates,
        title="units negative on every training sample",
        xlabel="Adam learning rate (measured at the markers)",
        ylabel="fraction of hidden units",
        marker="o",
    )
    plotting.curves(
        axes[1],
        {v: r["train_accuracy"].T for v, r in results.items()},
        x=rates,
        title="after training",
        xlabel="Adam learning rate (measured at the markers)",
        ylabel="training accuracy",
        marker="o",
    )
    for ax in axes:
        ax.set_xscale("log")
    plotting.save(fig, out / "dead_units.png")
    fig, axes = plotting.figure(len(results))
    for ax, (variant, r) in zip(axes, results.items(), strict=True):
        series = {f"lr {lr:g}": r["dead_curve"][i] for i, lr in enumerate(rates)}
        plotting.curves(ax, series, x=np.arange(r["dead_curve"].shape[-1]), title=variant,
                        ylabel="dead fraction", marker="o")  # fmt: skip
    plotting.save(fig, out / "dead_during_training.png")


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    rates = QUICK_LEARNING_RATES if args.quick else LEARNING_RATES
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    split = data.load_digits()
    start = time.perf_counter()
    results = {v: run(v, split, args.seeds, rates, epochs) for v in VARIANTS}
    figures(results, rates, args.out)

    print(f"{'variant':<11} {'lr':>6} {'dead at init':>15} {'dead after':>15} "
          f"{'with gradient':>13} {'revived':>7} {'train acc':>15}")  # fmt: skip
    metrics = {"epochs": epochs, "seeds": args.seeds, "learning_rates": rates}
    for variant, r in results.items():
        for i, lr in enumerate(rates):
            print(
                f"{variant:<11} {lr:>6g} {common.mean_std(r['dead_init'][i], 3):>15} "
                f"{common.mean_std(r['dead'][i], 3):>15} "
                f"{np.nanmean(r['dead_units_with_gradient'][i]):>13.2f} "
                f"{r['revived'][i].mean():>7.2f} {common.mean_std(r['train_accuracy'][i], 3):>15}"
            )
        # nan where no unit of any seed was negative-only (no gradient to measure).
        metrics[variant] = {k: np.nanmean(v, 1) for k, v in r.items() if k != "dead_curve"}
        metrics[variant] |= {
            "dead_std": r["dead"].std(1),
            "train_accuracy_std": r["train_accuracy"].std(1),
        }
    metrics["seconds"] = time.perf_counter() - start

    relu = metrics["relu"]
    collapsed = relu["train_accuracy"] < COLLAPSED
    metrics["relu_collapsed_at"] = [lr for lr, c in zip(rates, collapsed, strict=True) if c]

    def rescued(variant):
        acc = metrics[variant]["train_accuracy"]
        return bool(collapsed.any()) and bool(
            np.all(acc[collapsed] >= relu["train_accuracy"][collapsed] + 0.3)
        )

    relu_dead = relu["dead"]
    with_grad = {v: metrics[v]["dead_units_with_gradient"] for v in VARIANTS}
    with_grad = {v: g[~np.isnan(g)] for v, g in with_grad.items()}
    checks = {
        "relu: dead fraction grows with the learning rate (largest >= smallest + 0.3)": (
            relu_dead[-1] >= relu_dead[0] + 0.3
        ),
        f"relu: training collapses (accuracy < {COLLAPSED}) at the largest learning rate": (
            bool(collapsed[-1])
        ),
        "relu: dead units get exactly zero weight gradient": bool(np.all(with_grad["relu"] == 0)),
        "leaky/PReLU/RReLU: every negative-only unit still gets a non-zero gradient": all(
            np.all(with_grad[v] == 1) for v in ("leaky_relu", "prelu", "rrelu")
        ),
        "PReLU and RReLU keep training (accuracy >= relu's + 0.3) where relu collapses": (
            rescued("prelu") and rescued("rrelu")
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
