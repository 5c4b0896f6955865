"""Do gradients vanish in the early layers of a deep sigmoid network, and does ReLU fix it?

Question: in a deep fully connected network (8 hidden layers of 32 units, Glorot-uniform
weights, zero biases) trained on the digits, how large is ||dJ/dW_l|| in each layer l at
initialisation and during training, for sigmoid, tanh and ReLU hidden units?

Expected answer (notes 001 and 003): sigmoid's derivative is at most 1/4 and vanishes when
|z| is large, so each sigmoid layer shrinks the back-propagated signal: the layers near the
input get gradients orders of magnitude smaller than those near the output, learn slowly
while the last layers have already converged, and the deep sigmoid network trains much
more slowly. ReLU's derivative is 1 on its active side, so its gradient norms stay of the
same order through the depth. tanh (a rescaled sigmoid with derivative up to 1) lies
between the two.

Gradients come from the hand-written backward pass (``net.manual_grad``) on the whole
training set; training is plain SGD, every seed of an activation in one vmapped program.
(--quick leaves tanh out: the conclusion compares sigmoid with ReLU.)
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

NAME = "vanishing_gradients"
ACTIVATIONS = ("sigmoid", "tanh", "relu")
QUICK_ACTIVATIONS = ("sigmoid", "relu")  # the two the conclusion compares
DEPTH = 8  # hidden layers
WIDTH = 32
INIT = "glorot_uniform"  # Xavier: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
LOSS = "categorical_crossentropy"
LEARNING_RATE = 0.1  # plain SGD
BATCH_SIZE = 32
EPOCHS = 20
QUICK_EPOCHS = 5


def build(activation: str) -> nnfun.Sequential:
    """64 -> DEPTH x Dense(WIDTH, activation) -> Dense(10, softmax)."""
    hidden = [
        nnfun.Dense(WIDTH, activation, input_dim=64 if i == 0 else None, kernel_init=INIT)
        for i in range(DEPTH)
    ]
    return nnfun.Sequential([*hidden, nnfun.Dense(10, "softmax", kernel_init=INIT)])


def run(activation: str, split, seeds: int, epochs: int) -> dict:
    """Trains `seeds` networks at once; gradient norms (epochs + 1, seeds, layers)."""
    net = build(activation)
    config = nnfun.Config.make(
        LOSS, "sgd", ["accuracy"], grad="manual", learning_rate=LEARNING_RATE
    )
    states = nnfun.train.init_many(net, config, jax.random.split(jax.random.key(0), seeds))
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)

    def layer_norms(params):
        grads = net.manual_grad(params, x, y, loss=LOSS)
        return jnp.stack([jnp.linalg.norm(g["W"]) for g in grads])

    def test_accuracy(params):
        return jnp.mean(jnp.argmax(net.apply(params, xt), -1) == yt)

    # Measured inside the compiled training program after every epoch (one program, no
    # host round trip per epoch); the initial norms once before it.
    probes = {
        "grad_norms": lambda params, _: layer_norms(params),
        "test_accuracy": lambda params, _: test_accuracy(params),
    }
    initial = np.asarray(jax.jit(jax.vmap(layer_norms))(states.params))
    states, hist = nnfun.train.fit_many(
        net, x, y, states, config=config, epochs=epochs, batch_size=BATCH_SIZE, track=probes
    )
    norms = np.concatenate([initial[None], hist["grad_norms"]])
    test_acc, train_loss = hist["test_accuracy"], hist["loss"]
    return {
        "grad_norms": norms,  # (epochs + 1, seeds, layers)
        "first_over_last_init": norms[0, :, 0] / norms[0, :, -1],
        "first_over_last_final": norms[-1, :, 0] / norms[-1, :, -1],
        "test_accuracy": np.asarray(test_acc),  # (epochs, seeds)
        "train_loss": np.asarray(train_loss),
    }


def figures(results: dict, out, epochs: int) -> None:
    layers = np.arange(1, DEPTH + 2)
    fig, axes = plotting.figure(len(results))
    for ax, (act, r) in zip(axes, results.items(), strict=True):
        shown = sorted({0, 1, epochs // 2, epochs})
        series = {f"epoch {e}" if e else "init": r["grad_norms"][e] for e in shown}
        plotting.curves(
            ax, series, x=layers, log=True, title=f"{act}: ||dJ/dW_l||", xlabel="layer l"
        )
    plotting.save(fig, out / "gradient_norms.png")
    fig, axes = plotting.figure(2)
    plotting.curves(
        axes[0],
        {a: r["test_accuracy"].T for a, r in results.items()},
        title=f"digits, {DEPTH} hidden layers, SGD {LEARNING_RATE}",
        ylabel="test accuracy",
    )
    plotting.curves(
        axes[1], {a: r["train_loss"].T for a, r in results.items()}, ylabel="train loss", log=True
    )
    plotting.save(fig, out / "training.png")


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    activations = QUICK_ACTIVATIONS if args.quick else ACTIVATIONS
    split = data.load_digits()
    start = time.perf_counter()
    results = {a: run(a, split, args.seeds, epochs) for a in activations}
    figures(results, args.out, epochs)

    print(f"{'activation':<10} {'first/last init':>22} {'first/last final':>22} {'test acc':>18}")
    metrics = {"epochs": epochs, "seeds": args.seeds, "init": INIT, "depth": DEPTH}
    for act, r in results.items():
        print(
            f"{act:<10} {common.mean_std(r['first_over_last_init']):>22} "
            f"{common.mean_std(r['first_over_last_final']):>22} "
            f"{common.mean_std(r['test_accuracy'][-1]):>18}"
        )
        metrics[act] = {
            "first_over_last_init": float(np.mean(r["first_over_last_init"])),
            "first_over_last_final": float(np.mean(r["first_over_last_final"])),
            "grad_norm_per_layer_init": r["grad_norms"][0].mean(0),
            "grad_norm_per_layer_final": r["grad_norms"][-1].mean(0),
            "test_accuracy_final": float(np.mean(r["test_accuracy"][-1])),
            "test_accuracy_final_std": float(np.std(r["test_accuracy"][-1])),
            "test_accuracy_curve": r["test_accuracy"].mean(1),
        }
    metrics["seconds"] = time.perf_counter() - start
    sig, relu = metrics["sigmoid"], metrics["relu"]
    checks = {
        "sigmoid: first-layer gradient norm >= 100x below the last layer's at init": (
            sig["first_over_last_init"] <= 1e-2
        ),
        "relu: first/last gradient norm ratio within 10x at init": (
            0.1 <= relu["first_over_last_init"] <= 10
        ),
        "sigmoid trains slower: test accuracy >= 0.1 below relu's after the same epochs": (
            sig["test_accuracy_final"] <= relu["test_accuracy_final"] - 0.1
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
