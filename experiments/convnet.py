"""Experiment 19: what convolution buys over dense layers on handwritten digits.

Question: on scikit-learn's 8x8 digits, a dense network (Flatten -> Dense(32, relu) ->
Dense(10)) and a small convolutional one (Conv2D(8, 3) -> MaxPooling2D -> Conv2D(16, 3) ->
MaxPooling2D -> Flatten -> Dense(10)) are trained alike. How many parameters does each need,
how accurate is each on the test digits, and on the same digits shifted by one or two
pixels? What do the first layer's filters look like? And does keras.io's MNIST convnet,
run with only its imports changed, reach its accuracy on real MNIST (``--data``)?

Expected answer: a convolution shares one small kernel across every position, so the conv
net needs fewer parameters for the same accuracy; its features are computed the same way
everywhere and max pooling forgives small moves, so it loses less accuracy on shifted
digits than the dense net, which has learned one weight per pixel position (it has never
seen a digit one pixel off). The first-layer filters are small stroke and edge detectors.
On MNIST (10,000 test-set images: trained on 80%, tested on the other 20%) the keras.io
convnet reaches at least 97% accuracy. The conv net's hand-written gradient is checked
against jax.grad in float64.
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
from experiments import common, keras_convnet
from nnfun import gradcheck, plotting

NAME = "convnet"
EPOCHS, QUICK_EPOCHS = 40, 7
QUICK_TRAIN = 704  # training digits in --quick (of 1437): 11 batches, no partial batch to compile
BATCH_SIZE = 64
LEARNING_RATE = 0.005  # Adam
SHIFTS = (0, 1, 2)  # pixels, in each of the four directions
MNIST_EPOCHS = 15  # keras.io's
MNIST_TARGET = 0.97
DATA = common.ROOT.parent / "shared" / "data" / "mnist-t10k"


def dense_net() -> nnfun.Sequential:
    return nnfun.Sequential(
        [nnfun.Input(shape=(8, 8, 1)), nnfun.Flatten(), nnfun.Dense(32, "relu"),
         nnfun.Dense(10, "softmax")]
    )  # fmt: skip


def conv_net() -> nnfun.Sequential:
    return nnfun.Sequential(
        [
            nnfun.Input(shape=(8, 8, 1)),
            nnfun.Conv2D(8, 3, padding="same", activation="relu"),
            nnfun.MaxPooling2D(2),
            nnfun.Conv2D(16, 3, padding="same", activation="relu"),
            nnfun.MaxPooling2D(2),
            nnfun.Flatten(),
            nnfun.Dense(10, "softmax"),
        ]
    )


def shifted(x: np.ndarray, pixels: int) -> list[np.ndarray]:
    """x (n, 8, 8, 1) moved by ``pixels`` up, down, left and right, zeros filling in."""
    if pixels == 0:
        return [x]
    out = []
    for axis in (1, 2):
        for sign in (1, -1):
            moved = np.roll(x, sign * pixels, axis=axis)
            index = [slice(None)] * 4
            index[axis] = slice(0, pixels) if sign > 0 else slice(-pixels, None)
            moved[tuple(index)] = 0
            out.append(moved)
    return out


def train(net, x, y, seeds: int, epochs: int):
    """Trains one model per seed at once; returns the stacked states and the history."""
    config = nnfun.Config.make(
        "sparse_categorical_crossentropy", "adam", learning_rate=LEARNING_RATE
    )
    states = jax.jit(lambda k: nnfun.train.init_many(net, config, k))(
        jax.random.split(jax.random.key(0), seeds)
    )
    return nnfun.train.fit_many(
        net, x, y, states, config=config, epochs=epochs, batch_size=BATCH_SIZE
    )


def accuracies(net, params, x, y) -> np.ndarray:
    """Accuracy per seed on every shift: (len(SHIFTS), seeds), averaged over directions."""
    predict = jax.jit(jax.vmap(lambda p, v: jnp.argmax(net.apply(p, v), -1), (0, None)))
    return np.array(
        [
            np.mean(
                [np.mean(np.asarray(predict(params, v)) == y, axis=1) for v in shifted(x, s)], 0
            )
            for s in SHIFTS
        ]
    )


def gradient_check(net, params, x, y) -> float:
    """Largest relative error of the manual gradient against jax.grad, float64 (one program)."""
    with jax.enable_x64(True):
        loss = "sparse_categorical_crossentropy"

        @jax.jit
        def error(p, x):  # the cast and the comparison inside: no op-by-op dispatch in float64
            p, x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (p, x))
            auto = jax.grad(lambda q: net.loss(q, x, y, loss=loss))(p)
            return jnp.max(gradcheck.leaf_errors(net.manual_grad(p, x, y, loss=loss), auto))

        return float(error(params, x))


def mnist(data: Path, epochs: int) -> dict:
    """keras.io's convnet (experiments/keras_convnet.py) on the MNIST files in ``data``."""
    split = nnfun.data.load_mnist(data, test_fraction=0.2, seed=0)
    prepare = lambda x: x.reshape(-1, 28, 28, 1)  # noqa: E731
    one_hot = lambda y: nnfun.data.one_hot(y, 10)  # noqa: E731
    nnfun.set_random_seed(0)
    start = time.perf_counter()
    _, history, score = keras_convnet.run(
        nnfun, nnfun, prepare(split.x_train), one_hot(split.y_train),
        prepare(split.x_test), one_hot(split.y_test), epochs=epochs, verbose=2,
    )  # fmt: skip
    return {
        "train_images": len(split.x_train), "test_images": len(split.x_test), "epochs": epochs,
        "test_loss": score[0], "test_accuracy": score[1],
        "val_accuracy": history.history["val_accuracy"], "seconds": time.perf_counter() - start,
    }  # fmt: skip


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.add_argument("--mnist", action="store_true", help="also run keras.io's convnet on MNIST")
    p.add_argument("--data", type=Path, default=DATA, help="folder of the MNIST IDX files")
    p.add_argument("--mnist-epochs", type=int, default=MNIST_EPOCHS)
    args = p.parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    start = time.perf_counter()
    split = nnfun.data.load_digits()
    x_train, x_test = (v.reshape(-1, 8, 8, 1) for v in (split.x_train, split.x_test))
    y_train = split.y_train
    if args.quick:
        x_train, y_train = x_train[:QUICK_TRAIN], y_train[:QUICK_TRAIN]
    nets = {"dense": dense_net(), "conv": conv_net()}
    results, first_params = {}, {}
    for name, net in nets.items():
        states, hist = train(net, x_train, y_train, args.seeds, epochs)
        acc = accuracies(net, states.params, x_test, split.y_test)
        first_params[name] = nnfun.train.unstack(states)[0].params
        results[name] = {
            "params": sum(int(np.size(a)) for a in jax.tree.leaves(first_params[name])),
            "train_loss": np.asarray(hist["loss"][-1]),
            **{f"accuracy_shift_{s}": acc[i] for i, s in enumerate(SHIFTS)},
        }
    conv_params = first_params["conv"]
    grad_error = gradient_check(nets["conv"], conv_params, x_train[:32], y_train[:32])
    filters = np.asarray(conv_params[0]["W"])[..., 0, :]  # (3, 3, 8)
    # An edge or stroke detector weighs some pixels against others: its weights sum to much
    # less than their absolute values do (a blob detector's sum equals its absolute sum).
    contrast = np.abs(filters.sum((0, 1))) / np.abs(filters).sum((0, 1))

    fig, axes = plotting.figure(3)
    for name in nets:
        means = [results[name][f"accuracy_shift_{s}"].mean() for s in SHIFTS]
        axes[0].plot(SHIFTS, means, "o-", label=f"{name} ({results[name]['params']:,} params)")
    axes[0].set(title="test accuracy on shifted digits", xlabel="shift (pixels)",
                ylabel="accuracy", xticks=SHIFTS)  # fmt: skip
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    tiles = np.zeros((2 * 4, 4 * 4)) * np.nan
    for f in range(filters.shape[-1]):
        r, c = divmod(f, 4)
        tiles[r * 4 : r * 4 + 3, c * 4 : c * 4 + 3] = (
            filters[..., f] / np.abs(filters[..., f]).max()
        )
    axes[1].imshow(tiles, cmap="RdBu_r", vmin=-1, vmax=1)
    axes[1].set(title="first-layer filters (3x3, seed 0)", xticks=[], yticks=[])
    axes[2].imshow(x_test[0, ..., 0], cmap="gray_r")
    axes[2].set(title="a test digit", xticks=[], yticks=[])
    plotting.save(fig, args.out / "convnet.png")

    metrics = {
        "epochs": epochs, "seeds": args.seeds, **results, "conv_grad_rel_error": grad_error,
        "filter_sum_over_abs_sum": contrast, "seconds": time.perf_counter() - start,
    }  # fmt: skip
    print(f"{'':<8}{'params':>8}" + "".join(f"{f'shift {s}':>18}" for s in SHIFTS))
    for name, r in results.items():
        cells = "".join(f"{common.mean_std(r[f'accuracy_shift_{s}']):>18}" for s in SHIFTS)
        print(f"{name:<8}{r['params']:>8,}{cells}")
    print(f"conv net: manual gradient vs jax.grad, largest relative error {grad_error:.1e}")
    dense, conv = results["dense"], results["conv"]
    floor = 0.85 if args.quick else 0.95
    checks = {
        "the conv net has fewer parameters than the dense net": conv["params"] < dense["params"],
        f"both reach {floor} test accuracy (every seed)": min(
            dense["accuracy_shift_0"].min(), conv["accuracy_shift_0"].min()
        )
        >= floor,
        "the conv net is as accurate unshifted (mean within 0.02 or better)": (
            conv["accuracy_shift_0"].mean() >= dense["accuracy_shift_0"].mean() - 0.02
        ),
        "shifted by 1 and by 2 pixels, the conv net is more accurate (every seed)": all(
            (conv[f"accuracy_shift_{s}"] > dense[f"accuracy_shift_{s}"]).all() for s in (1, 2)
        ),
        "most first-layer filters weigh pixels against each other (|sum| < half of sum |w|)": (
            float(np.mean(contrast < 0.5)) >= 0.5
        ),
        "manual gradient == jax.grad (float64, 1e-10)": grad_error < 1e-10,
    }
    if args.mnist:
        metrics["mnist"] = mnist(args.data, args.mnist_epochs)
        acc = metrics["mnist"]["test_accuracy"]
        print(f"MNIST, keras.io's convnet: test accuracy {acc:.4f}")
        checks[f"keras.io's convnet reaches {MNIST_TARGET} on MNIST"] = acc >= MNIST_TARGET
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
