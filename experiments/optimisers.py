"""Do momentum and adaptive learning rates train faster than plain gradient descent?

Question: the same 64-64-10 ReLU/softmax network on the digits, mini-batches of 32, trained
for the same number of epochs by mini-batch gradient descent, momentum, Nesterov momentum,
Adagrad, RMSProp and Adam, each at its usual default learning rate (SGD, momentum, Nesterov
and Adagrad 0.01; RMSProp and Adam 0.001): which reaches the lowest training loss?

Expected answer (note 001): plain gradient descent takes the same small step in every
direction and crawls along flat valleys. Momentum keeps a running velocity, so consistent
gradients add up and oscillations cancel; Adagrad and RMSProp divide each parameter's step
by the root of its (accumulated or moving-average) squared gradients, so rarely-moving
parameters get larger steps; Adam is RMSProp with momentum. Every one of them should end
below plain SGD's loss, and Adam should be among the best.
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

NAME = "optimisers"
OPTIMISERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
HIDDEN = 64
LOSS = "categorical_crossentropy"
BATCH_SIZE = 32
EPOCHS = 60
QUICK_EPOCHS = 15
ADAM_WITHIN = 1.5  # "among the best": final loss within this factor of the best method's


def learning_rate(name: str) -> float:
    """The method's default learning rate (Keras's, the library's), except Adagrad's: Keras's
    0.001 is a tenth of the usual 0.01, so the comparison would be of step sizes, not methods."""
    return 0.01 if name == "adagrad" else nnfun.train.OPTIMIZERS[name][1]


def build() -> nnfun.Sequential:
    """64 -> Dense(64, relu) -> Dense(10, softmax)."""
    return nnfun.Sequential([nnfun.Dense(HIDDEN, "relu", input_dim=64), nnfun.Dense(10, "softmax")])


def run(name: str, split, seeds: int, epochs: int) -> dict:
    """Trains `seeds` models with optimiser `name` in one vmapped program."""
    net = build()
    config = nnfun.Config.make(LOSS, name, ["accuracy"], learning_rate=learning_rate(name))
    # The same key for every optimiser: identical initial weights and batch order.
    states = nnfun.train.init_many(net, config, jax.random.split(jax.random.key(0), seeds))
    states, hist = nnfun.train.fit_many(
        net, split.x_train, split.y_train, states, config=config, epochs=epochs,
        batch_size=BATCH_SIZE,
    )  # fmt: skip
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)
    test_acc = jax.vmap(lambda p: jnp.mean(jnp.argmax(net.apply(p, xt), -1) == yt))
    return {
        "loss": hist["loss"].T,  # (seeds, epochs)
        "accuracy": hist["accuracy"].T,
        "test_accuracy": np.asarray(test_acc(states.params)),
    }


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    split = data.load_digits()
    start = time.perf_counter()
    results = {name: run(name, split, args.seeds, epochs) for name in OPTIMISERS}

    fig, axes = plotting.figure(2)
    plotting.curves(
        axes[0],
        {f"{n} ({learning_rate(n):g})": r["loss"] for n, r in results.items()},
        title=f"digits 64-{HIDDEN}-10, batch {BATCH_SIZE}, {args.seeds} seeds",
        ylabel="training loss",
        log=True,
    )
    plotting.curves(
        axes[1], {n: r["accuracy"] for n, r in results.items()}, ylabel="training accuracy"
    )
    plotting.save(fig, args.out / "loss_curves.png")

    print(f"{'optimiser':<10} {'lr':>7} {'final train loss':>20} {'test accuracy':>18}")
    metrics = {"epochs": epochs, "seeds": args.seeds, "batch_size": BATCH_SIZE}
    for name, r in results.items():
        final = r["loss"][:, -1]
        print(
            f"{name:<10} {learning_rate(name):>7g} {common.mean_std(final):>20} "
            f"{common.mean_std(r['test_accuracy']):>18}"
        )
        metrics[name] = {
            "learning_rate": learning_rate(name),
            "final_loss": float(final.mean()),
            "final_loss_std": float(final.std()),
            "final_train_accuracy": float(r["accuracy"][:, -1].mean()),
            "test_accuracy": float(r["test_accuracy"].mean()),
            "test_accuracy_std": float(r["test_accuracy"].std()),
            "loss_curve": r["loss"].mean(0),
        }
    metrics["seconds"] = time.perf_counter() - start
    sgd = metrics["sgd"]["final_loss"]
    best = min(metrics[n]["final_loss"] for n in OPTIMISERS)
    checks = {
        f"{n} ends below plain SGD's training loss": metrics[n]["final_loss"] < sgd
        for n in OPTIMISERS[1:]
    }
    checks[f"adam among the best: final loss within {ADAM_WITHIN}x of the lowest"] = (
        metrics["adam"]["final_loss"] <= ADAM_WITHIN * best
    )
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
