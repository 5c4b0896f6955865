"""The main job: the notes' reference network on the bundled handwritten digits.

``python -m nnfun [--epochs N] [--out DIR]``: checks the hand-written backprop against
jax.grad (every element) and central finite differences (a sample of elements) in float64,
trains Dense 500 sigmoid x2 + softmax 10 with Adam, batch 100, on the manual gradient (the
last 10% of the training set held out for validation; the last epoch's line scores them),
prints accuracy on the rows trained on and on the test set, and writes plots. Each stage says
what it starts, and how long it took in wall-clock and CPU seconds.
Nothing is downloaded: the digits ship with scikit-learn.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import nnfun
from nnfun import data, fit_inputs, gradcheck
from nnfun.gradcheck import errors


def reference_network(hidden: str = "sigmoid", input_dim: int = 64, key=None) -> nnfun.Sequential:
    """The notes' Keras example: Dense(500) x2 with ``hidden`` units, softmax over 10;
    ``key`` (a PRNG key or a seed) fixes the weights and the training's randomness."""
    model = nnfun.Sequential(key=key)
    model.add(nnfun.Dense(input_dim=input_dim, units=500, activation=hidden))
    model.add(nnfun.Dense(units=500, activation=hidden))
    model.add(nnfun.Dense(units=10, activation="softmax"))
    return model


CHECKED_ELEMENTS = 12  # finite differences: about this many, at least 4 a leaf (6 leaves)
VALIDATION_SPLIT = 0.1


def gradient_check(model, params, x, y, *, elements: int) -> gradcheck.GradCheck:
    """The manual gradient of ``model`` on (x, y) against jax.grad, element by element, and
    against central differences on about ``elements`` sampled ones (at least 4 a leaf), in
    float64. The loss and the manual gradient are jitted: one compiled program each, where
    an eager check would compile every operation on its own."""
    with errors.cpu64():
        params, x = errors.to_cpu64((params, x))
        loss = "categorical_crossentropy"
        loss_fn = jax.jit(lambda p: model.loss(p, x, y, loss=loss))
        manual = jax.jit(lambda p: model.manual_grad(p, x, y, loss=loss))(params)
        return gradcheck.check(loss_fn, params, manual, max_elements=elements)


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(prog="python -m nnfun", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    parser.add_argument("--hidden", default="sigmoid", help="hidden activation (e.g. relu)")
    parser.add_argument("--out", type=Path, default=Path("runs/main"), help="plots go here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = _clock()
    split = data.load_digits(seed=args.seed)
    print(
        f"digits: {len(split.x_train)} train / {len(split.x_test)} test, "
        f"{split.x_train.shape[1]} features, {len(split.class_names)} classes"
    )
    model = reference_network(args.hidden, split.x_train.shape[1], key=args.seed)
    print(model)
    model.compile(
        loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"], grad="manual"
    )
    model.build()  # the initial weights, checked below and then trained

    rows = 32
    print(
        f"checking the manual gradient on {rows} training rows in float64: against jax.grad "
        f"on every element, against central finite differences on a sample ...",
        flush=True,
    )
    start = _clock()
    check = gradient_check(
        model,
        model.state.params,
        split.x_train[:rows],
        split.y_train[:rows],
        elements=CHECKED_ELEMENTS,
    )
    auto, fd = check.autodiff.worst, check.finite_differences
    sampled = sum(leaf.checked for leaf in fd.leaves)
    print(
        f"manual backprop vs jax.grad: worst relative error {auto.rel_error:.1e} ({auto.path}, "
        f"{sum(leaf.checked for leaf in check.autodiff.leaves)} elements); vs finite "
        f"differences {fd.worst.rel_error:.1e} ({sampled} sampled elements); float64, "
        f"{_since(start)}"
    )
    check.assert_ok()

    fit_rows = fit_inputs.split_at(len(split.x_train), VALIDATION_SPLIT)
    print(
        f"training {args.epochs} epochs on {fit_rows} rows ({len(split.x_train) - fit_rows} "
        f"held out for validation), manual gradient, Adam, batch 100 ...",
        flush=True,
    )
    start = _clock()
    history = model.fit(
        split.x_train,
        split.y_train,
        batch_size=100,
        epochs=args.epochs,
        validation_split=VALIDATION_SPLIT,
    )
    print(f"trained {args.epochs} epochs in {_since(start)}, compilation included")
    # The held-out rows' scores are the last epoch's val_ figures.
    parts = {
        "train": (split.x_train[:fit_rows], split.y_train[:fit_rows], "rows trained on"),
        "test": (split.x_test, split.y_test, "test rows"),
    }
    scores = {}
    for part, (x, y, what) in parts.items():
        loss, scores[part] = model.evaluate(x, y)
        print(f"{part:<5} accuracy {scores[part]:.4f}  loss {loss:.4f}  ({len(x)} {what})")

    from nnfun import plotting

    plotting.history(history.history, args.out / "history.png", title="digits")
    predicted = model.predict(split.x_test).argmax(-1)
    all_wrong = np.flatnonzero(predicted != split.y_test)
    wrong = all_wrong[:24]
    plotting.image_grid(
        split.x_test[wrong].reshape(-1, 8, 8),
        [f"{split.y_test[i]} as {predicted[i]}" for i in wrong],
        args.out / "misclassified.png",
        suptitle=f"{len(wrong)} of the {len(all_wrong)} misclassified test digits, "
        "each titled: true digit as predicted digit",
    )
    print(f"plots: {args.out / 'history.png'}, {args.out / 'misclassified.png'}")
    print(f"done in {_since(started)} after the imports ({time.process_time():.1f} s CPU "
          "with them)")  # fmt: skip
    return scores["test"]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> str:
    """Wall time since ``start``, and CPU time (all threads): a busy machine tells them apart."""
    wall, cpu = (now - then for now, then in zip(_clock(), start, strict=True))
    return f"{wall:.1f} s ({cpu:.1f} s CPU)"


if __name__ == "__main__":
    main()
