"""Without non-linear activations, a deep network is one affine layer.

Question: a stack of 5 Dense layers with the identity activation: is its output the same as
that of the single affine layer x @ W + b with W = W1 W2 W3 W4 W5 and
b = (((b1 W2 + b2) W3 + b3) W4 + b4) W5 + b5? And trained on XOR (binary cross-entropy,
sigmoid output unit), does such a deep linear network do any better than logistic regression,
while one hidden layer of tanh units separates XOR?

Expected answer (notes 000, 003 and 004): with g(z) = z, z2 = (x W1 + b1) W2 + b2 =
x (W1 W2) + (b1 W2 + b2), again of the form x W + b, and so on through every layer: the
depth adds nothing, "the multi-layer network loses the point of having layers". The outputs
agree to float32 rounding (relative 1e-6; float64 to 1e-12). So on XOR the deep linear
network is logistic regression in disguise: the trained network collapses to one sigmoid unit
with the same outputs, it cannot separate XOR (accuracy <= 0.75) and its loss stays at ln 2
at best, like logistic regression's; a tanh hidden layer reaches 100%. (--quick leaves
logistic regression out: the xor experiment trains it.)
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
from experiments import xor as xor_experiment
from nnfun import data, plotting

NAME = "linear_collapse"
SEEDS = 10  # default --seeds (vmapped)
IN, HIDDEN, OUT = 4, 16, 3  # the composition test: 4 -> 16 -> 16 -> 16 -> 16 -> 3
DEPTH = 5  # Dense layers
BATCH = 256
BIAS_SCALE = 0.5  # biases drawn N(0, 0.5^2) so that the bias composition is tested too
FLOAT32_TOLERANCE = 1e-6  # relative: max|deep - affine| / max|deep|
FLOAT64_TOLERANCE = 1e-12
XOR_HIDDEN = 8  # width of the deep linear layers and of the tanh layer on XOR
EPOCHS = 1000  # full-batch gradient descent, as in the xor experiment
QUICK_EPOCHS = 200
LEARNING_RATE = 0.5  # all three models; at 1.0 the deep linear net diverges (NaN loss)
TRAINED_TOLERANCE = 1e-5  # |deep linear net's output - its collapsed unit's|, float32


def deep_linear(n_in: int, width: int, n_out: int, output: str | None = None):
    """DEPTH Dense layers with the identity activation (`output` on the last one)."""
    layers = [nnfun.Dense(width, None, input_dim=n_in)]
    layers += [nnfun.Dense(width, None) for _ in range(DEPTH - 2)]
    return nnfun.Sequential([*layers, nnfun.Dense(n_out, output)])


def collapse(params: list[dict]) -> dict:
    """One affine layer equal to a stack of identity-activation Dense layers:
    W = W1 W2 ... Wn, b = (...(b1 W2 + b2) W3 + ...) Wn + bn."""
    w, b = params[0]["W"], params[0]["b"]
    for p in params[1:]:
        w, b = w @ p["W"], b @ p["W"] + p["b"]
    return {"W": w, "b": b}


def compare(dtype) -> dict:
    """A random deep linear network against its collapsed single layer, in `dtype`.

    Weights and biases come from NumPy (Glorot-sized weights, N(0, BIAS_SCALE^2) biases):
    any values will do, and a jitted init would spend seconds compiling random-bit kernels.
    """
    net = deep_linear(IN, HIDDEN, OUT)
    single = nnfun.Sequential([nnfun.Dense(OUT, None, input_dim=IN)])
    rng = np.random.default_rng(0)
    shapes = net.shapes()
    params = [
        {"W": rng.uniform(-1, 1, (n_in, n_out)) * np.sqrt(6 / (n_in + n_out)),
         "b": BIAS_SCALE * rng.normal(size=n_out)}
        for (n_in,), (n_out,) in zip(shapes[:-1], shapes[1:], strict=True)
    ]  # fmt: skip
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    x = jnp.asarray(rng.normal(size=(BATCH, IN)), dtype)
    both = jax.jit(lambda p, x: (net.apply(p, x), single.apply([collapse(p)], x)))
    deep, one = (np.asarray(v) for v in both(params, x))
    return {
        "dtype": jnp.dtype(dtype).name,
        "max_abs_difference": float(np.max(np.abs(deep - one))),
        "relative_error": float(np.max(np.abs(deep - one)) / np.max(np.abs(deep))),
        "max_abs_output": float(np.max(np.abs(deep))),
    }


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.set_defaults(seeds=SEEDS)
    args = p.parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    start = time.perf_counter()

    exact = {"float32": compare(jnp.float32)}
    with jax.enable_x64(True):
        exact["float64"] = compare(jnp.float64)

    nets = {
        "logistic regression": xor_experiment.logistic(),
        f"deep linear ({DEPTH} layers)": deep_linear(2, XOR_HIDDEN, 1, "sigmoid"),
        f"{XOR_HIDDEN} tanh hidden": xor_experiment.hidden(XOR_HIDDEN, "tanh"),
    }
    if args.quick:  # one compiled program less; the xor experiment trains logistic regression
        del nets["logistic regression"]
    results = {
        label: xor_experiment.train(net, args.seeds, epochs, LEARNING_RATE)
        for label, net in nets.items()
    }
    deep_label = f"deep linear ({DEPTH} layers)"
    x, y = data.xor()
    unit = xor_experiment.logistic()

    @jax.jit
    @jax.vmap
    def collapsed_unit(params):
        one = collapse(params)
        return one, unit.apply([one], x)[:, 0]

    collapsed, unit_out = collapsed_unit(results[deep_label]["params"])
    trained_gap = float(np.max(np.abs(np.asarray(unit_out) - results[deep_label]["outputs"])))
    seconds = time.perf_counter() - start

    print(f"{DEPTH} identity Dense layers {IN}->{HIDDEN}->...->{OUT} vs one affine layer "
          f"(batch {BATCH}):")  # fmt: skip
    for r in exact.values():
        print(f"  {r['dtype']}: max |deep - affine| = {r['max_abs_difference']:.3g}, "
              f"relative {r['relative_error']:.3g}")  # fmt: skip
    print(f"XOR, {args.seeds} seeds, {epochs} epochs of gradient descent (lr {LEARNING_RATE}):")
    print(f"{'model':<24} {'accuracy':>16} {'seeds at 100%':>14} {'final loss':>20}")
    metrics: dict = {
        "composition": exact, "seeds": args.seeds, "epochs": epochs,
        "learning_rate": LEARNING_RATE, "ln2": float(np.log(2)),
        "trained_deep_linear_vs_collapsed_unit": trained_gap,
    }  # fmt: skip
    for label, r in results.items():
        perfect = int(np.sum(r["accuracy"] == 1.0))
        print(
            f"{label:<24} {common.mean_std(r['accuracy']):>16} {perfect:>11}/{args.seeds:<2} "
            f"{common.mean_std(r['loss']):>20}"
        )
        metrics[label] = {
            "accuracy": r["accuracy"], "max_accuracy": float(r["accuracy"].max()),
            "seeds_at_100": perfect, "loss": r["loss"], "min_loss": float(r["loss"].min()),
            "max_loss": float(r["loss"].max()),
        }  # fmt: skip
    print(f"trained deep linear net vs its collapsed single sigmoid unit: max |difference| "
          f"= {trained_gap:.3g}")  # fmt: skip
    metrics["seconds"] = seconds

    fig, axes = plotting.figure(len(nets) + 1, size=(4.2, 3.6))
    panels = [
        *[(k, nets[k], None) for k in ("logistic regression",) if k in nets],
        (deep_label, nets[deep_label], None),
        (f"{deep_label} collapsed to one unit", unit, collapsed),
        (f"{XOR_HIDDEN} tanh hidden", nets[f"{XOR_HIDDEN} tanh hidden"], None),
    ]
    for ax, (label, net, params) in zip(axes, panels, strict=True):
        source = results[deep_label if params is not None else label]
        params = [collapsed] if params is not None else source["params"]
        first = jax.tree.map(lambda a: a[0], params)
        xor_experiment.draw_boundary(ax, net, first, f"{label}\nseed 0: acc "
                                     f"{source['accuracy'][0]:.2f}")  # fmt: skip
    plotting.save(fig, args.out / "decision_boundaries.png")

    slack = xor_experiment.LOSS_SLACK
    linear = [k for k in ("logistic regression", deep_label) if k in nets]
    checks = {
        f"float32: deep identity network = one affine layer to {FLOAT32_TOLERANCE:g} "
        "(relative)": exact["float32"]["relative_error"] <= FLOAT32_TOLERANCE,
        f"float64: the same to {FLOAT64_TOLERANCE:g}": (
            exact["float64"]["relative_error"] <= FLOAT64_TOLERANCE
        ),
        f"trained deep linear net = its collapsed sigmoid unit to {TRAINED_TOLERANCE:g}": (
            trained_gap <= TRAINED_TOLERANCE
        ),
        f"XOR: {' and '.join(linear)}: accuracy <= 0.75 for every seed": all(
            metrics[k]["max_accuracy"] <= 0.75 for k in linear
        ),
        f"XOR: {' and '.join(linear)}: final loss >= ln 2 for every seed": all(
            metrics[k]["min_loss"] >= np.log(2) - slack for k in linear
        ),
        f"XOR: {XOR_HIDDEN} tanh hidden units reach 100% for every seed": (
            metrics[f"{XOR_HIDDEN} tanh hidden"]["seeds_at_100"] == args.seeds
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
