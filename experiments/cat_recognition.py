"""Can a small fully connected network tell cats from non-cats, and does depth help?

Question: the course's cat project: 64x64x3 photographs flattened to 12288 features (209
training images, 50 test), a 2-layer network 12288-7-1 and an L-layer network
12288-20-7-5-1 (ReLU hidden units, sigmoid output, binary cross-entropy), both trained by
full-batch gradient descent (learning rate 0.0075, 2500 iterations) with the hand-written
backward pass: how well do they fit the training set and how well do they generalise?

Expected answer (note 002 and the course): both networks learn the training set almost
perfectly; the deeper one generalises better (the course reports about 72% test accuracy
for the 2-layer network and 80% for the L-layer one). With 209 images the test accuracy of
either is far from perfect and varies with the initial weights.
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

NAME = "cat_recognition"
DATA_DIR = common.ROOT.parent / "shared" / "data" / "catvnoncat"
NETWORKS = {"2-layer": (7,), "L-layer": (20, 7, 5)}
LOSS = "binary_crossentropy"
LEARNING_RATE = 0.0075  # plain gradient descent, full batch
ITERATIONS = 2500
QUICK_ITERATIONS = 600
TRAIN_MIN, TEST_MIN, COST_FALL = 0.95, 0.65, 0.5  # final cost < COST_FALL * initial
# 600 iterations fit the training set but do not yet generalise (test 0.58 measured)
QUICK_TRAIN_MIN, QUICK_TEST_MIN, QUICK_COST_FALL = 0.75, 0.5, 0.8


def course_init(key, shape, dtype=jnp.float32):
    """W ~ N(0, 1) / sqrt(fan_in): the course's initialisation of its L-layer network."""
    return jax.random.normal(key, shape, dtype) / jnp.sqrt(shape[0]).astype(dtype)


def build(hidden: tuple[int, ...]) -> nnfun.Sequential:
    """12288 -> Dense(h, relu) for h in hidden -> Dense(1, sigmoid).

    The 2-layer network starts from N(0, 1) * 0.01 weights as in the course; deeper ones
    from N(0, 1) / sqrt(fan_in), which the course uses because 0.01 stalls them.
    """
    init = "normal" if len(hidden) == 1 else course_init
    layers = [nnfun.Dense(h, "relu", kernel_init=init) for h in hidden]
    return nnfun.Sequential([*layers, nnfun.Dense(1, "sigmoid", kernel_init=init)], 12288)


def run(hidden, split, seeds: int, iterations: int) -> dict:
    """Trains `seeds` networks at once, one full-batch step per epoch; manual gradients."""
    net = build(hidden)
    config = nnfun.Config.make(LOSS, "gd", ["accuracy"], grad="manual", learning_rate=LEARNING_RATE)
    states = nnfun.train.init_many(net, config, jax.random.split(jax.random.key(0), seeds))
    n = len(split.y_train)
    states, hist = nnfun.train.fit_many(
        net, split.x_train, split.y_train, states, config=config, epochs=iterations, batch_size=n
    )
    xt = jnp.asarray(split.x_test)
    probs = np.asarray(jax.vmap(lambda p: net.apply(p, xt)[:, 0])(states.params))
    test_acc = np.mean((probs > 0.5) == split.y_test[None], axis=1)
    return {
        "cost": hist["loss"].T,  # (seeds, iterations): cost before each step
        "train_accuracy": hist["accuracy"][-1],  # on the batch before the last step
        "test_accuracy": test_acc,
        "probs": probs,
    }


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help="folder with train_catvnoncat.h5 and test_catvnoncat.h5")  # fmt: skip
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        need = "train_catvnoncat.h5 and test_catvnoncat.h5"
        print(f"{NAME}: data folder {args.data_dir} not found; it should hold {need} "
              "(pass --data-dir)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    split = data.load_cat(args.data_dir)
    iterations = QUICK_ITERATIONS if args.quick else ITERATIONS
    start = time.perf_counter()
    results = {name: run(h, split, args.seeds, iterations) for name, h in NETWORKS.items()}

    fig, axes = plotting.figure(1)
    plotting.curves(
        axes[0], {name: r["cost"] for name, r in results.items()}, xlabel="iteration",
        ylabel="cost", title=f"cat vs non-cat, gradient descent {LEARNING_RATE}",
    )  # fmt: skip
    plotting.save(fig, args.out / "cost.png")
    deep = results["L-layer"]["probs"][0]
    shown = np.arange(min(24, len(deep)))
    images = split.x_test[shown].reshape(-1, 64, 64, 3)
    titles = [
        f"{'cat' if deep[i] > 0.5 else 'non-cat'} {deep[i]:.2f}"
        + ("" if (deep[i] > 0.5) == split.y_test[i] else " (wrong)")
        for i in shown
    ]
    plotting.image_grid(images, titles, args.out / "predictions.png")

    print(f"{'network':<10} {'train accuracy':>18} {'test accuracy':>18} {'final cost':>18}")
    metrics = {"iterations": iterations, "seeds": args.seeds, "learning_rate": LEARNING_RATE}
    for name, r in results.items():
        print(
            f"{name:<10} {common.mean_std(r['train_accuracy']):>18} "
            f"{common.mean_std(r['test_accuracy']):>18} {common.mean_std(r['cost'][:, -1]):>18}"
        )
        metrics[name] = {
            "layers": [12288, *NETWORKS[name], 1],
            "train_accuracy": float(r["train_accuracy"].mean()),
            "test_accuracy": float(r["test_accuracy"].mean()),
            "test_accuracy_per_seed": r["test_accuracy"],
            "final_cost": float(r["cost"][:, -1].mean()),
            "cost_every_100": r["cost"].mean(0)[::100],
        }
    metrics["seconds"] = time.perf_counter() - start
    train_min, test_min, fall = (
        (QUICK_TRAIN_MIN, QUICK_TEST_MIN, QUICK_COST_FALL)
        if args.quick
        else (TRAIN_MIN, TEST_MIN, COST_FALL)
    )
    two, deep = metrics["2-layer"], metrics["L-layer"]
    checks = {}
    for name in NETWORKS:
        checks[f"{name}: final cost < {fall} x initial cost"] = metrics[name][
            "final_cost"
        ] < fall * float(results[name]["cost"][:, 0].mean())
        checks[f"{name}: train accuracy > {train_min}"] = (
            metrics[name]["train_accuracy"] > train_min
        )
        checks[f"{name}: test accuracy > {test_min}"] = metrics[name]["test_accuracy"] > test_min
    metrics["observed"] = {
        "the L-layer network generalises at least as well as the 2-layer one": (
            deep["test_accuracy"] >= two["test_accuracy"]
        )
    }
    for claim, seen in metrics["observed"].items():
        print(f"  [observed: {'yes' if seen else 'no'}] {claim}")
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
