"""Does batch normalisation let a deep network train at learning rates where it fails without?

Question: a network of 8 hidden ReLU layers (64 units) trained on the digits with plain SGD
at learning rates 0.01 to 2, with and without BatchNorm between each Dense and its ReLU
(``Dense(identity) -> BatchNorm -> ReLU``): how many epochs does it take to reach 90% test
accuracy, if it ever does?

Expected answer (note 003): batch normalisation fixes every layer's input distribution to
zero mean and unit variance per batch (then rescales it with the learned gamma and beta),
which speeds up convergence and makes training much less sensitive to hand-tuned settings
such as the learning rate. So the BN network reaches the target at large learning rates
where the plain one diverges or stalls, and needs no more epochs than the plain network at
the plain network's own best learning rate.
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

NAME = "batch_norm"
DEPTH = 8
WIDTH = 64
ACTIVATION = "relu"
LEARNING_RATES = (0.01, 0.1, 0.3, 1.0, 2.0)  # plain SGD
QUICK_LEARNING_RATES = (0.1, 1.0)  # plain fails at 1.0 already; BN reaches the target by epoch 3
TARGET = 0.9  # test accuracy
BN_MOMENTUM = 0.9  # running statistics for evaluation
LOSS = "categorical_crossentropy"
BATCH_SIZE = 32
EPOCHS = 20
QUICK_EPOCHS = 4


def build(batch_norm: bool) -> nnfun.Sequential:
    """64 -> DEPTH x [Dense -> (BatchNorm ->) ReLU] -> Dense(10, softmax)."""
    layers = []
    for i in range(DEPTH):
        kw = {"input_dim": 64} if i == 0 else {}
        if batch_norm:
            layers += [
                nnfun.Dense(WIDTH, "identity", **kw),
                nnfun.BatchNorm(momentum=BN_MOMENTUM),
                nnfun.Activation(ACTIVATION),
            ]
        else:
            layers.append(nnfun.Dense(WIDTH, ACTIVATION, **kw))
    return nnfun.Sequential([*layers, nnfun.Dense(10, "softmax")])


def run(batch_norm: bool, split, seeds: int, rates, epochs: int) -> np.ndarray:
    """Test accuracy after each epoch, (epochs, rates, seeds); all models in one program."""
    net = build(batch_norm)
    config = nnfun.Config.make(LOSS, "sgd", ["accuracy"])
    lrs = np.repeat(rates, seeds)
    states = nnfun.train.init_many(
        net, config, jax.random.split(jax.random.key(0), len(lrs)), learning_rates=lrs
    )
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)

    def test_accuracy(params, model_state):  # evaluation mode: BN's running statistics
        out = net.apply(params, xt, state=model_state)
        return jnp.mean(jnp.argmax(out, -1) == yt)

    # Probed after every epoch inside the one compiled training program.
    _, hist = nnfun.train.fit_many(
        net, split.x_train, split.y_train, states, config=config, epochs=epochs,
        batch_size=BATCH_SIZE, track={"test_accuracy": test_accuracy},
    )  # fmt: skip
    return np.asarray(hist["test_accuracy"]).reshape(epochs, len(rates), seeds)


def epochs_to_target(curve: np.ndarray) -> int | None:
    """First epoch (1-based) at which the seed-mean accuracy reaches TARGET; None if never."""
    hit = np.flatnonzero(curve >= TARGET)
    return int(hit[0]) + 1 if hit.size else None


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    rates = QUICK_LEARNING_RATES if args.quick else LEARNING_RATES
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    split = data.load_digits()
    start = time.perf_counter()
    curves = {name: run(bn, split, args.seeds, rates, epochs)
              for name, bn in (("plain", False), ("batchnorm", True))}  # fmt: skip

    fig, axes = plotting.figure(len(rates))
    for ax, (i, lr) in zip(axes, enumerate(rates), strict=True):
        plotting.curves(ax, {n: c[:, i].T for n, c in curves.items()}, title=f"SGD lr {lr:g}",
                        ylabel="test accuracy")  # fmt: skip
        ax.axhline(TARGET, color="gray", linestyle=":")
        ax.set_ylim(0, 1)
    plotting.save(fig, args.out / "accuracy_per_lr.png")

    metrics = {"epochs": epochs, "seeds": args.seeds, "target": TARGET, "learning_rates": rates}
    print(f"epochs to {TARGET:.0%} test accuracy (seed mean), final accuracy mean +- std")
    print(f"{'lr':>6} {'plain':>8} {'batchnorm':>10} {'plain acc':>18} {'batchnorm acc':>18}")
    for name, c in curves.items():
        metrics[name] = {
            "epochs_to_target": [epochs_to_target(c[:, i].mean(1)) for i in range(len(rates))],
            "final_accuracy": c[-1].mean(1),
            "final_accuracy_std": c[-1].std(1),
            "accuracy_curve": c.mean(2).T,  # (rates, epochs)
        }
    plain, bn = metrics["plain"], metrics["batchnorm"]
    for i, lr in enumerate(rates):
        p, b = plain["epochs_to_target"][i], bn["epochs_to_target"][i]
        print(
            f"{lr:>6g} {p or 'never':>8} {b or 'never':>10} "
            f"{common.mean_std(curves['plain'][-1, i]):>18} "
            f"{common.mean_std(curves['batchnorm'][-1, i]):>18}"
        )
    metrics["seconds"] = time.perf_counter() - start

    # Plain's best lr: the fastest to the target, else the highest final accuracy.
    reached = [i for i, e in enumerate(plain["epochs_to_target"]) if e is not None]
    best = (
        min(reached, key=lambda i: plain["epochs_to_target"][i])
        if reached
        else int(np.argmax(plain["final_accuracy"]))
    )
    metrics["plain_best_lr"] = rates[best]
    plain_best, bn_best = plain["epochs_to_target"][best], bn["epochs_to_target"][best]
    top = len(rates) - 1
    checks = {
        f"at the largest lr ({rates[top]:g}) batchnorm reaches {TARGET:.0%} and plain does not": (
            bn["epochs_to_target"][top] is not None and plain["epochs_to_target"][top] is None
        ),
        "batchnorm needs no more epochs than plain at plain's best lr": (
            bn_best is not None and (plain_best is None or bn_best <= plain_best)
        ),
        "batchnorm reaches the target at more learning rates than plain": (
            sum(e is not None for e in bn["epochs_to_target"]) > len(reached)
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
