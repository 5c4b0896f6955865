"""How well does the notes' Keras-style network read handwritten digits?

Question: the network of note 001, written the Keras way (model = Sequential(); model.add(
Dense(500, sigmoid)) twice; Dense(10, softmax); compile with categorical cross-entropy and
Adam; fit with batch 100 for 20 epochs; evaluate; predict), on the bundled 8x8 digits (64
features) and, given ``--mnist-dir``, on the 10,000 MNIST images (784 features) split 80/20
into training and test sets: what test accuracy does it reach, and which digits does it miss?

Expected answer (note 001): stacking fully connected layers is enough to recognise digits:
at least 95% test accuracy on the 8x8 digits and at least 90% on MNIST. The sigmoid hidden
units learn slowly (their derivative is at most 1/4), so the same network with ReLU hidden
units is reported beside it.
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

NAME = "handwriting"
UNITS = 500
BATCH_SIZE = 100
EPOCHS = 20
QUICK_EPOCHS = 5
QUICK_MNIST = 2000  # images used in --quick mode
TARGET = {"digits": 0.95, "mnist": 0.90}  # the ReLU network must reach these
SIGMOID_FLOOR = 0.90  # the sigmoid one learns slower: asserted only to learn well
QUICK_MARGIN = {"relu": 0.05, "sigmoid": 0.3}  # --quick trains for a quarter of the epochs
SHOWN = 24  # misclassified examples in the grid


def keras_model(input_dim: int, activation: str = "sigmoid") -> nnfun.Sequential:
    """The notes' network, built and compiled the Keras way."""
    model = nnfun.Sequential(key=0)  # seed 0, whatever other models the process made
    model.add(nnfun.Dense(input_dim=input_dim, units=UNITS, activation=activation))
    model.add(nnfun.Dense(units=UNITS, activation=activation))
    model.add(nnfun.Dense(units=10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def run(split, name: str, activation: str, epochs: int, seeds: int, out) -> dict:
    """Seed 0 the Keras way (curves, mistakes); ``seeds`` other seeds alike for mean +- std."""
    x_train, y_train, x_test, y_test = split[:4]
    model = keras_model(x_train.shape[1], activation)
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs,
              validation_data=(x_test, y_test), verbose=0)  # fmt: skip
    score = model.evaluate(x_test, y_test)
    result = model.predict(x_test)
    label = f"{name}_{activation}"
    plotting.history(model.history.history, out / f"{label}_history.png", title=label)

    predicted = result.argmax(-1)
    wrong = np.flatnonzero(predicted != y_test)[:SHOWN]
    side = int(round(np.sqrt(x_test.shape[1])))
    if len(wrong):
        plotting.image_grid(
            x_test[wrong].reshape(-1, side, side),
            [f"true {y_test[i]}, said {predicted[i]}" for i in wrong],
            out / f"{label}_mistakes.png",
        )

    # The other seeds one after another, each trained as seed 0 was (the same validation
    # data): seed 0's compiled program serves them all, no second program is compiled.
    keys = jax.random.split(jax.random.key(1), seeds)
    params = []
    for state in nnfun.train.unstack(nnfun.train.init_many(model, model.compiled, keys)):
        state, _ = nnfun.train.fit(
            model, x_train, y_train, state=state, epochs=epochs, batch_size=BATCH_SIZE,
            validation_data=(x_test, y_test),
        )  # fmt: skip
        params.append(state.params)
    xt, yt = jnp.asarray(x_test), jnp.asarray(y_test)
    accs = jax.vmap(lambda p: jnp.mean(jnp.argmax(model.apply(p, xt), -1) == yt))(
        nnfun.train.stack(params)
    )
    return {
        "test_loss": score[0],
        "test_accuracy": score[1],
        "train_accuracy": model.history.history["accuracy"][-1],
        "misclassified": int(np.sum(predicted != y_test)),
        "n_test": len(y_test),
        "seeds_test_accuracy": np.asarray(accs),
    }


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.add_argument("--mnist-dir", type=str, default=None,
                   help="MNIST IDX folder, e.g. ../shared/data/mnist-t10k")  # fmt: skip
    p.add_argument("--mnist-only", action="store_true",
                   help="with --mnist-dir: leave out the 8x8 digits")  # fmt: skip
    args = p.parse_args(argv)
    if args.mnist_only and not args.mnist_dir:
        p.error("--mnist-only: expected --mnist-dir as well, got none")
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    sets = {} if args.mnist_only else {"digits": data.load_digits()}
    if args.mnist_dir:
        mnist = data.load_mnist(args.mnist_dir)
        if args.quick:  # a stratified-enough slice: the split is already shuffled
            n, m = QUICK_MNIST, QUICK_MNIST // 4
            mnist = mnist._replace(x_train=mnist.x_train[:n], y_train=mnist.y_train[:n],
                                   x_test=mnist.x_test[:m], y_test=mnist.y_test[:m])  # fmt: skip
        sets["mnist"] = mnist
    start = time.perf_counter()
    metrics = {"epochs": epochs, "seeds": args.seeds, "batch_size": BATCH_SIZE}
    print(
        f"{'data':<8} {'hidden':<8} {'test acc (seed 0)':>18} {'test acc seeds':>20} {'missed':>8}"
    )
    for name, split in sets.items():
        for activation in ("sigmoid", "relu"):
            r = run(split, name, activation, epochs, args.seeds, args.out)
            metrics[f"{name}_{activation}"] = r
            print(
                f"{name:<8} {activation:<8} {r['test_accuracy']:>18.4f} "
                f"{common.mean_std(r['seeds_test_accuracy']):>20} "
                f"{r['misclassified']:>4}/{r['n_test']}"
            )
    metrics["seconds"] = time.perf_counter() - start
    checks, observed = {}, {}
    for name in sets:
        sig, relu = metrics[f"{name}_sigmoid"], metrics[f"{name}_relu"]
        floor = {"relu": TARGET[name], "sigmoid": SIGMOID_FLOOR}
        if args.quick:
            floor = {k: v - QUICK_MARGIN[k] for k, v in floor.items()}
        for act, r in (("sigmoid", sig), ("relu", relu)):
            checks[f"{name}: {act} network test accuracy >= {floor[act]:.2f}"] = (
                r["test_accuracy"] >= floor[act]
            )
        observed[f"{name}: sigmoid network reaches {TARGET[name]:.2f}"] = (
            sig["test_accuracy"] >= TARGET[name]
        )
    metrics["observed"] = observed
    for claim, seen in observed.items():
        print(f"  [observed: {'yes' if seen else 'no'}] {claim}")
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
