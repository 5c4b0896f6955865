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

With --course-init the networks start exactly as the course starts them: NumPy's legacy
generator after np.random.seed(1) draws, layer by layer, W = randn(n_l, n_{l-1}) * 0.01 (2-layer)
or / sqrt(n_{l-1}) (L-layer), biases 0; one run each. That run should reproduce the course's
published costs and test accuracies (0.72 and 0.80).
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
TRAIN_MIN, COST_FALL = 0.95, 0.5  # final cost < COST_FALL * initial
# 600 iterations fit the training set but do not yet generalise (test 0.58 measured)
QUICK_TRAIN_MIN, QUICK_COST_FALL = 0.75, 0.8


# --course-init: the course's published numbers (its printed costs, then its accuracies)
COURSE_COST = {  # cost at iterations 0 and 100
    "2-layer": (0.693049735659989, 0.646432095342885),
    "L-layer": (0.771749, 0.672053),
}
COURSE_TEST_ACCURACY = {"2-layer": 0.72, "L-layer": 0.80}
COURSE_COST_TOL = 1e-5  # float32 here, float64 there; the L-layer costs are printed to 6 digits
COURSE_ACCURACY_TOL = 0.02  # one test image of 50
COURSE_QUICK_ITERATIONS = 101  # enough for the costs at iterations 0 and 100


def course_params(sizes: list[int]) -> list[dict]:
    """The course's initial weights for layer sizes [12288, ..., 1], as nnfun Dense params.

    NumPy's legacy generator seeded with 1 draws W_l = randn(n_l, n_{l-1}), scaled by 0.01
    for the 2-layer network and by 1 / sqrt(n_{l-1}) for deeper ones; the course's W is
    (out, in), nnfun's is (in, out), hence the transpose. Biases start at 0.
    """
    rng = np.random.RandomState(1)  # the same stream as np.random.seed(1); np.random.randn
    params = []
    for fan_in, fan_out in zip(sizes, sizes[1:], strict=False):
        w = rng.randn(fan_out, fan_in)
        w = w * 0.01 if len(sizes) == 3 else w / np.sqrt(fan_in)
        params.append({"W": jnp.asarray(w.T, jnp.float32), "b": jnp.zeros(fan_out, jnp.float32)})
    return params


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


def run(hidden, split, seeds: int, iterations: int, course: bool = False) -> dict:
    """Trains `seeds` networks at once (one with `course`, from the course's weights), one
    full-batch step per epoch; manual gradients."""
    net = build(hidden)
    config = nnfun.Config.make(LOSS, "gd", grad="manual", learning_rate=LEARNING_RATE)
    if course:
        params = course_params([12288, *hidden, 1])
        states = nnfun.train.stack([nnfun.train.init_state(net, config, jax.random.key(0), params)])
    else:
        states = nnfun.train.init_many(net, config, jax.random.split(jax.random.key(0), seeds))
    n = len(split.y_train)
    states, hist = nnfun.train.fit_many(
        net, split.x_train, split.y_train, states, config=config, epochs=iterations, batch_size=n
    )

    # One compiled forward pass per input shape, not an eager op per layer and shape.
    apply = jax.jit(jax.vmap(lambda p, x: net.apply(p, x)[:, 0], in_axes=(0, None)))

    def accuracy(x, y):
        probs = np.asarray(apply(states.params, x))
        return np.mean((probs > 0.5) == y[None], axis=1), probs

    test_acc, probs = accuracy(split.x_test, split.y_test)
    return {
        "cost": hist["loss"].T,  # (seeds, iterations): cost before each step
        "train_accuracy": accuracy(split.x_train, split.y_train)[0],  # after the last step
        "test_accuracy": test_acc,
        "probs": probs,
    }


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help="folder with train_catvnoncat.h5 and test_catvnoncat.h5")  # fmt: skip
    p.add_argument("--course-init", action="store_true",
                   help="start from the course's NumPy weights (one run each) and compare "
                        "with its published costs and accuracies")  # fmt: skip
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        need = "train_catvnoncat.h5 and test_catvnoncat.h5"
        print(f"{NAME}: data folder {args.data_dir} not found; it should hold {need} "
              "(pass --data-dir)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    split = data.load_cat(args.data_dir)
    course = args.course_init
    if course:
        iterations = COURSE_QUICK_ITERATIONS if args.quick else ITERATIONS
    else:
        iterations = QUICK_ITERATIONS if args.quick else ITERATIONS
    seeds = 1 if course else args.seeds
    start = time.perf_counter()
    results = {name: run(h, split, seeds, iterations, course) for name, h in NETWORKS.items()}

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

    # The accuracy of answering the test set's majority class ("cat", 33 of 50) every time.
    baseline = float(max(split.y_test.mean(), 1 - split.y_test.mean()))
    print(f"{'network':<10} {'train accuracy':>18} {'test accuracy':>18} {'final cost':>18}")
    metrics = {"iterations": iterations, "seeds": seeds, "learning_rate": LEARNING_RATE,
               "course_init": course, "majority_class_test_accuracy": baseline}  # fmt: skip
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
            "initial_cost": float(r["cost"][:, 0].mean()),
            "final_cost": float(r["cost"][:, -1].mean()),
            "cost_every_100": r["cost"].mean(0)[::100],
        }
    metrics["seconds"] = time.perf_counter() - start
    checks = _course_checks(metrics, args.quick) if course else _checks(metrics, args.quick)
    two, deep = metrics["2-layer"], metrics["L-layer"]
    metrics["observed"] = {
        "the L-layer network generalises at least as well as the 2-layer one": (
            deep["test_accuracy"] >= two["test_accuracy"]
        )
    }
    for claim, seen in metrics["observed"].items():
        print(f"  [observed: {'yes' if seen else 'no'}] {claim}")
    return common.finish(args.out, metrics, checks)


def _checks(metrics: dict, quick: bool) -> dict[str, bool]:
    """The costs fall, the training set is fitted, the test set beats the majority answer."""
    train_min, fall = (QUICK_TRAIN_MIN, QUICK_COST_FALL) if quick else (TRAIN_MIN, COST_FALL)
    baseline = metrics["majority_class_test_accuracy"]
    checks = {}
    for name in NETWORKS:
        m = metrics[name]
        checks[f"{name}: final cost < {fall} x initial cost"] = (
            m["final_cost"] < fall * m["initial_cost"]
        )
        checks[f"{name}: train accuracy > {train_min}"] = m["train_accuracy"] > train_min
        if not quick:  # the quick run stops before the test accuracy rises above it
            checks[f"{name}: test accuracy > always 'cat' ({baseline:.2f})"] = (
                m["test_accuracy"] > baseline
            )
    return checks


def _course_checks(metrics: dict, quick: bool) -> dict[str, bool]:
    """The course's printed costs at iterations 0 and 100; after the whole run its accuracies."""
    checks = {}
    for name in NETWORKS:
        m = metrics[name]
        for i, (iteration, want) in enumerate(zip((0, 100), COURSE_COST[name], strict=True)):
            got = m["cost_every_100"][i]
            checks[f"{name}: cost at iteration {iteration} {got:.6f} = the course's {want:.6f}"] = (
                abs(got - want) < COURSE_COST_TOL
            )
        if not quick:
            want, got = COURSE_TEST_ACCURACY[name], m["test_accuracy"]
            checks[f"{name}: test accuracy {got:.2f} = the course's {want:.2f}"] = (
                abs(got - want) <= COURSE_ACCURACY_TOL + 1e-9
            )
    return checks


if __name__ == "__main__":
    common.exit_code(main())
