"""How does the weight initialisation decide whether a network trains at all?

Question: a network with two hidden tanh layers of 32 units, trained with Adam on the 2-D
planar flower and on the digits, starting from all-zero weights, small random weights
(N(0, 1) x 0.01), large random weights (N(0, 1) x 10), the uniform rule
U(-1/sqrt(d), 1/sqrt(d)) with d the fan-in, Xavier (Glorot uniform) and He (normal): what
is the initial cost, how saturated are the hidden units at the start, and what train and
test accuracy does each reach? Biases start at zero throughout.

Expected answer (notes 000 and 003): with equal initial weights every unit of a layer
computes the same thing forward and receives the same gradient backward, so the units stay
identical for ever and the layer is worth one unit; zero weights with tanh (tanh(0) = 0)
even block every weight gradient, leaving the network at chance. Random weights break the
symmetry, but they must be small: large weights give large |z|, where sigmoid and tanh are
flat, so the derivatives are tiny, learning is slow and the initial cost is huge. A scale
tied to the fan-in (uniform +-1/sqrt(d), Xavier, He) trains well. A sigmoid network started
from zeros shows the symmetry on its own: its weights do move, yet its units stay equal,
in exact arithmetic for ever; in float32 only until training has amplified the rounding
differences between its units (measured: equal to 1e-6 after 25 epochs on the flower, apart
by epoch 150), and it still ends far below a random start.
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
from nnfun import data, initializers, plotting

NAME = "initialisation"
INITS = {  # label -> initializer name in nnfun.initializers
    "zeros": "zeros",
    "small x0.01": "normal",
    "large x10": "large_normal",
    "uniform 1/sqrt(d)": "uniform_fan_in",
    "xavier": "glorot_uniform",
    "he": "he_normal",
}
ACTIVATION = "tanh"
SYMMETRY_ACTIVATION = "sigmoid"  # the zero-init run whose weights move yet stay symmetric
HIDDEN = (32, 32)
# Units that are equal in exact arithmetic may differ by rounding: a matmul need not sum every
# output column in the same order. Random inits differ by O(1) relative to max|W|. The sigmoid
# network's symmetric point is unstable: training amplifies those 1e-7 differences until, after
# about a hundred epochs, the units come apart. So symmetry is checked over the first
# QUICK_EPOCHS and its final spread is reported, not checked.
SYMMETRY_TOLERANCE = 1e-4
SATURATED = 5.0  # |z| above which tanh'(z) < 2e-4 (sigmoid'(z) < 7e-3)
LOSS = "categorical_crossentropy"
LEARNING_RATE = 0.01  # Adam
BATCH_SIZE = 32
FLOWER_SAMPLES = 400
TEST_FRACTION = 0.2
EPOCHS = {"flower": 150, "digits": 30}
QUICK_EPOCHS = {"flower": 25, "digits": 5}


def build(n_in: int, n_out: int, activation: str) -> nnfun.Sequential:
    hidden = [
        nnfun.Dense(u, activation, input_dim=n_in if i == 0 else None) for i, u in enumerate(HIDDEN)
    ]
    return nnfun.Sequential([*hidden, nnfun.Dense(n_out, "softmax")])


def init_params(net: nnfun.Sequential, init: str, key) -> list[dict]:
    """Every Dense weight from `init`, biases zero (the network's own kernel_init unused)."""
    keys = jax.random.split(key, len(net.layers))
    shapes = net.shapes()
    return [
        {"W": initializers.get(init)(k, (shape[0], layer.units)), "b": jnp.zeros(layer.units)}
        for layer, k, shape in zip(net.layers, keys, shapes, strict=False)
    ]


def flower_split(seed: int = 0):
    """The planar flower shuffled and split into train and test."""
    x, y = data.planar_flower(FLOWER_SAMPLES, seed=seed)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(len(x) * (1 - TEST_FRACTION))
    return data.Split(x[:cut], y[:cut], x[cut:], y[cut:], ("petal 0", "petal 1"))


def run(split, inits: dict, activation: str, seeds: int, epochs: int, early: int) -> dict:
    """Trains len(inits) x seeds models in one vmapped program; per-init statistics, also
    after the first ``early`` epochs (keys ending in "_early")."""
    n_out = int(split.y_train.max()) + 1
    net = build(split.x_train.shape[1], n_out, activation)
    config = nnfun.Config.make(LOSS, "adam", ["accuracy"], learning_rate=LEARNING_RATE)
    keys = jax.random.split(jax.random.key(0), seeds)
    states = nnfun.train.stack([
        nnfun.train.init_state(net, config, k, params=init_params(net, init, k))
        for init in inits.values() for k in keys
    ])  # fmt: skip
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)

    def stats(params):
        """(loss, saturated fraction) for the initial state, then the measurements after."""
        _, _, caches = net.forward(params, x)
        z = jnp.concatenate([c[1].ravel() for c in caches[:-1]])
        w1, w2 = params[0]["W"], params[1]["W"]
        initial = net.loss(params, x, y, loss=LOSS), jnp.mean(jnp.abs(z) > SATURATED)
        after = (
            jnp.mean(jnp.argmax(net.apply(params, x), -1) == y),
            jnp.mean(jnp.argmax(net.apply(params, xt), -1) == yt),
            jnp.max(jnp.abs(w1 - w1[:, :1])),  # largest difference between hidden units
            jnp.max(jnp.abs(w2 - w2[:, :1])),
            jnp.max(jnp.abs(w1)),
            jnp.max(jnp.abs(w2)),
        )
        return initial, after

    # One compiled program for the initial state and both later measurements.
    measure = jax.jit(jax.vmap(stats))
    loss0, saturated = measure(states.params)[0]
    names = (
        "train_accuracy", "test_accuracy", "w1_column_spread", "w2_column_spread", "w1_max",
        "w2_max",
    )  # fmt: skip
    shape = (len(inits), seeds)
    curves, result = [], {}
    for part, n_epochs in (("early", min(early, epochs)), ("", epochs - min(early, epochs))):
        if n_epochs:
            states, hist = nnfun.train.fit_many(
                net, x, y, states, config=config, epochs=n_epochs, batch_size=BATCH_SIZE
            )
            curves.append(hist["accuracy"])
        values = measure(states.params)[1]
        suffix = f"_{part}" if part else ""
        result |= {
            n + suffix: np.asarray(v).reshape(shape) for n, v in zip(names, values, strict=True)
        }
    hist = {"accuracy": np.concatenate(curves)}
    result["initial_loss"] = np.asarray(loss0).reshape(shape)
    result["saturated_at_init"] = np.asarray(saturated).reshape(shape)
    result["accuracy_curve"] = hist["accuracy"].T.reshape(*shape, epochs)
    return {label: {k: v[i] for k, v in result.items()} for i, label in enumerate(inits)}


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    splits = {"flower": flower_split(), "digits": data.load_digits()}
    start = time.perf_counter()
    metrics: dict = {"epochs": epochs, "seeds": args.seeds, "activation": ACTIVATION}
    fig, axes = plotting.figure(len(splits))
    for ax, (name, split) in zip(axes, splits.items(), strict=True):
        early = QUICK_EPOCHS[name]
        results = run(split, INITS, ACTIVATION, args.seeds, epochs[name], early)
        symmetric = run(
            split, {"zeros": "zeros"}, SYMMETRY_ACTIVATION, args.seeds, epochs[name], early
        )
        results[f"zeros ({SYMMETRY_ACTIVATION})"] = symmetric["zeros"]
        chance = float(np.max(np.bincount(split.y_test)) / len(split.y_test))
        plotting.curves(
            ax, {k: r["accuracy_curve"] for k, r in results.items()},
            title=f"{name}: {ACTIVATION} hidden layers, Adam {LEARNING_RATE}",
            ylabel="training accuracy",
        )  # fmt: skip
        print(f"\n{name} (chance = majority class = {chance:.3f})")
        print(f"{'init':<18} {'initial loss':>18} {'|z|>5 at init':>14} {'train acc':>18} "
              f"{'test acc':>18} {'W1 col spread':>13}")  # fmt: skip
        table = {"chance": chance}
        for label, r in results.items():
            print(
                f"{label:<18} {common.mean_std(r['initial_loss']):>18} "
                f"{r['saturated_at_init'].mean():>14.3f} "
                f"{common.mean_std(r['train_accuracy']):>18} "
                f"{common.mean_std(r['test_accuracy']):>18} {r['w1_column_spread'].max():>13.3g}"
            )
            table[label] = {k: float(v.mean()) for k, v in r.items() if k != "accuracy_curve"}
            table[label]["test_accuracy_std"] = float(r["test_accuracy"].std())
            table[label]["w1_column_spread"] = float(r["w1_column_spread"].max())
            table[label]["w2_column_spread"] = float(r["w2_column_spread"].max())
            for i in (1, 2):
                table[label][f"w{i}_column_spread_early"] = float(
                    r[f"w{i}_column_spread_early"].max()
                )
        table["symmetry_epochs"] = early
        metrics[name] = table
    plotting.save(fig, args.out / "accuracy_curves.png")
    metrics["seconds"] = time.perf_counter() - start

    checks = {}
    for name in splits:
        t = metrics[name]
        zero, sym = t["zeros"], t[f"zeros ({SYMMETRY_ACTIVATION})"]
        checks |= {
            f"{name}: zero init keeps every hidden unit identical ({ACTIVATION} and "
            f"{SYMMETRY_ACTIVATION}, to float32 rounding, over {t['symmetry_epochs']} "
            "epochs)": all(
                r[f"w{i}_column_spread_early"] <= SYMMETRY_TOLERANCE * r[f"w{i}_max_early"]
                for r in (zero, sym)
                for i in (1, 2)
            ),
            f"{name}: {ACTIVATION} zero init: the weights never move, units equal exactly": (
                zero["w1_max"] == 0.0 == zero["w1_column_spread"]
            ),
            f"{name}: {SYMMETRY_ACTIVATION} zero init: W1 moved away from 0 yet stayed "
            "symmetric": sym["w1_max"] > 0,
            f"{name}: {ACTIVATION} zero init stays near chance (test acc <= chance + 0.05)": (
                zero["test_accuracy"] <= t["chance"] + 0.05
            ),
            f"{name}: x10 init: initial loss >= 10x that of x0.01": (
                t["large x10"]["initial_loss"] >= 10 * t["small x0.01"]["initial_loss"]
            ),
            f"{name}: x10 init: more than half of the hidden |z| > {SATURATED:g} at init": (
                t["large x10"]["saturated_at_init"] > 0.5
            ),
            f"{name}: xavier and he beat zeros by >= 0.3 test accuracy": all(
                t[k]["test_accuracy"] >= zero["test_accuracy"] + 0.3 for k in ("xavier", "he")
            ),
        }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
