"""The main job: the notes' reference network on the bundled handwritten digits.

``python -m nnfun [--epochs N] [--out DIR]``: checks the hand-written backprop against
jax.grad and finite differences in float64, trains Dense 500 sigmoid x2 + softmax 10 with
Adam, batch 100, on the manual gradient (10% of the training set held out for
validation), prints train/test accuracy and writes plots.
Nothing is downloaded: the digits ship with scikit-learn.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import nnfun
from nnfun import data, gradcheck


def reference_network(hidden: str = "sigmoid", input_dim: int = 64) -> nnfun.Sequential:
    """The notes' Keras example: Dense(500) x2 with ``hidden`` units, softmax over 10."""
    model = nnfun.Sequential()
    model.add(nnfun.Dense(input_dim=input_dim, units=500, activation=hidden))
    model.add(nnfun.Dense(units=500, activation=hidden))
    model.add(nnfun.Dense(units=10, activation="softmax"))
    return model


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(prog="python -m nnfun", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    parser.add_argument("--hidden", default="sigmoid", help="hidden activation (e.g. relu)")
    parser.add_argument("--out", type=Path, default=Path("runs/main"), help="plots go here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    split = data.load_digits(seed=args.seed)
    print(
        f"digits: {len(split.x_train)} train / {len(split.x_test)} test, "
        f"{split.x_train.shape[1]} features, {len(split.class_names)} classes"
    )
    model = reference_network(args.hidden, split.x_train.shape[1])
    print(model)

    params = model.init(jax.random.key(args.seed))
    check = gradcheck.check_network(
        model, params, split.x_train[:32], split.y_train[:32], loss="categorical_crossentropy"
    )
    print(
        f"manual backprop vs jax.grad: worst relative error {check.autodiff.worst.rel_error:.1e}"
        f" ({check.autodiff.worst.path}); vs finite differences "
        f"{check.finite_differences.worst.rel_error:.1e} (float64)"
    )
    check.assert_ok()

    model.compile(
        loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"], grad="manual"
    )
    start = time.perf_counter()
    history = model.fit(
        split.x_train,
        split.y_train,
        batch_size=100,
        epochs=args.epochs,
        key=jax.random.key(args.seed),
        validation_split=0.1,
    )
    seconds = time.perf_counter() - start
    train_loss, train_acc = model.evaluate(split.x_train, split.y_train)
    test_loss, test_acc = model.evaluate(split.x_test, split.y_test)
    print(f"trained {args.epochs} epochs in {seconds:.1f} s (manual gradient, Adam, batch 100)")
    print(f"train accuracy {train_acc:.4f}  loss {train_loss:.4f}")
    print(f"test  accuracy {test_acc:.4f}  loss {test_loss:.4f}")

    from nnfun import plotting

    plotting.history(history.history, args.out / "history.png", title="digits")
    predicted = model.predict(split.x_test).argmax(-1)
    wrong = np.flatnonzero(predicted != split.y_test)[:24]
    plotting.image_grid(
        split.x_test[wrong].reshape(-1, 8, 8),
        [f"{split.y_test[i]} as {predicted[i]}" for i in wrong],
        args.out / "misclassified.png",
    )
    print(f"plots: {args.out / 'history.png'}, {args.out / 'misclassified.png'}")
    return test_acc


if __name__ == "__main__":
    main()
