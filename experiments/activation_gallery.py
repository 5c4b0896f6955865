"""What does each activation look like, and is each hand-written derivative right?

Question: every activation in nnfun.activations.ACTIVATIONS (and the PReLU, RReLU and Maxout
layers) drawn with its derivative, both from the library's own functions: where is each
derivative largest, and does each hand-written derivative agree with jax.grad? Which value
does the library use where the derivative is undefined (ReLU at z = 0)?

Expected answer (notes 000, 003 and 004): sigmoid(z) = 1 / (1 + e^-z) has the derivative
a (1 - a), which peaks at 0.25 at z = 0 (sigmoid(0) = 0.5) and vanishes for large |z|;
tanh has the derivative 1 - a^2 (1 at z = 0) and is a shifted, rescaled sigmoid,
tanh(z) = 2 sigmoid(2z) - 1; ReLU's derivative is 0 or 1 and does not exist at z = 0, where
either side may be taken since z = 0 exactly is rare (the library takes 0, as jax.nn.relu
does); leaky ReLU keeps a small slope (0.01) for z < 0. PReLU learns that slope, RReLU
draws it at random in training and uses the mean at test time, and Maxout takes the
largest of several affine pieces. Softmax over (z, 0) is sigmoid(z). Every hand-written
derivative equals jax.grad (vmapped over a grid of z, float64) away from the kinks.
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
from nnfun import activations, gradcheck, plotting

NAME = "activation_gallery"
Z_MAX = 5.0  # grid z in [-Z_MAX, Z_MAX], z = 0 on it exactly
STEP = 0.01
QUICK_STEP = 0.05
GRAD_TOLERANCE = 1e-10  # relative, hand-written derivative vs jax.grad in float64
TANH_TOLERANCE = 1e-6  # |tanh(z) - (2 sigmoid(2z) - 1)| in float32
SOFTMAX_TOLERANCE = 1e-6  # |softmax(z, 0)_0 - sigmoid(z)| in float32
SOFTMAX_CLASSES = 4  # logits for the softmax vjp check
MAXOUT = {  # one unit, three pieces: max(-0.5 z - 1, 0.25 z, 1.5 z - 2)
    "W": [[[-0.5, 0.25, 1.5]]],
    "b": [[-1.0, 0.0, -2.0]],
}
RRELU_DRAWS = 3  # training-mode slope draws drawn as points


def grid(step: float) -> np.ndarray:
    """z from -Z_MAX to Z_MAX in `step`s (float64), with z = 0 exactly at the centre."""
    n = round(Z_MAX / step)
    return np.arange(-n, n + 1) * step


def elementwise() -> dict[str, activations.Activation]:
    """The library's element-wise activations, aliases ('linear') dropped."""
    unique = {a.name: a for a in activations.ACTIVATIONS.values()}
    return {name: a for name, a in unique.items() if a.derivative is not None}


def derivative_of(act: activations.Activation):
    """z -> g'(z) from the hand-written derivative(z, a)."""
    return lambda z: act.derivative(z, act.fn(z))


def layer_curves(z: jax.Array, key) -> dict[str, dict]:
    """PReLU, RReLU (evaluation and training draws) and Maxout on a column of z: outputs and
    the hand-written backward's dy/dz, with jax.grad's dy/dz alongside."""
    x = z[:, None]
    ones = jnp.ones_like(x)
    layers = {
        "PReLU (slope 0.25 at init)": (nnfun.PReLU(), nnfun.PReLU().init(key, (1,))),
        "RReLU (evaluation: mean slope)": (nnfun.RReLU(), {}),
        "Maxout (1 unit, 3 pieces)": (
            nnfun.Maxout(1, pieces=3), {k: jnp.asarray(v, z.dtype) for k, v in MAXOUT.items()}
        ),
    }  # fmt: skip
    out = {}
    for label, (layer, params) in layers.items():
        y, _, cache = layer.forward(params, {}, x)
        _, dx = layer.backward(params, cache, ones)

        def one(v, layer=layer, params=params):
            return layer.forward(params, {}, v.reshape(1, 1))[0][0, 0]

        out[label] = {"y": y[:, 0], "dy": dx[:, 0], "jax_grad": jax.vmap(jax.grad(one))(z)}
    draws = [
        nnfun.RReLU().forward({}, {}, x, key=k, train=True)[0][:, 0]
        for k in jax.random.split(key, RRELU_DRAWS)
    ]
    out["RReLU (evaluation: mean slope)"]["train_draws"] = jnp.stack(draws)
    return out


@jax.jit
def curves(z: jax.Array, key) -> dict:
    """Everything drawn, in float32 and one compiled program: each g and hand-written g' on
    the grid, g'(0) by hand and by jax.grad, the tanh and softmax identities, the layers."""
    acts = elementwise()
    zero = jnp.zeros((), z.dtype)
    pair = jnp.stack([z, jnp.zeros_like(z)], axis=1)
    soft = activations.softmax.fn(pair)
    sigmoid = activations.sigmoid.fn
    return {
        "g": {name: a.fn(z) for name, a in acts.items()},
        "dg": {name: derivative_of(a)(z) for name, a in acts.items()},
        "dg_at_0": {name: derivative_of(a)(zero) for name, a in acts.items()},
        "jax_grad_at_0": {name: jax.grad(a.fn)(zero) for name, a in acts.items()},
        "jax_nn_at_0": {
            "relu": jax.grad(jax.nn.relu)(zero), "leaky_relu": jax.grad(jax.nn.leaky_relu)(zero)
        },
        "tanh_gap": jnp.max(jnp.abs(activations.tanh.fn(z) - (2 * sigmoid(2 * z) - 1))),
        "softmax_0": soft[:, 0],
        "softmax_gap": jnp.max(jnp.abs(soft[:, 0] - sigmoid(z))),
        # d softmax_0 / d z_0: the vjp with cotangent e_0, equal to s0 (1 - s0).
        "softmax_0_derivative": activations.softmax.vjp(
            pair, soft, jnp.zeros_like(pair).at[:, 0].set(1.0)
        )[:, 0],
        "layers": layer_curves(z, key),
    }  # fmt: skip


def derivative_check(z: np.ndarray) -> gradcheck.Report:
    """Each hand-written g' against jax.grad of g (vmapped over z) and softmax's vjp against
    jax.vjp, in float64; an activation with a kink is compared on z without 0."""
    acts = elementwise()
    with jax.enable_x64(True):

        @jax.jit
        def both(z, away, logits, cotangent):
            manual, reference = {}, {}
            for name, a in acts.items():
                where = away if a.kink else z
                manual[name] = derivative_of(a)(where)
                reference[name] = jax.vmap(jax.grad(a.fn))(where)
            soft = activations.softmax
            manual["softmax vjp"] = soft.vjp(logits, soft.fn(logits), cotangent)
            reference["softmax vjp"] = jax.vjp(soft.fn, logits)[1](cotangent)[0]
            return manual, reference

        rng = np.random.default_rng(0)
        logits, cotangent = rng.normal(size=(2, 8, SOFTMAX_CLASSES))
        manual, reference = both(z, z[z != 0], logits, cotangent)
        return gradcheck.compare(manual, reference, tol=GRAD_TOLERANCE, name="jax.grad")


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)  # --seeds is unused: nothing trains
    step = QUICK_STEP if args.quick else STEP
    start = time.perf_counter()
    z64 = grid(step)
    z = jnp.asarray(z64, jnp.float32)
    zs = np.asarray(z)
    acts = elementwise()
    c = jax.tree.map(np.asarray, curves(z, jax.random.key(0)))
    report = derivative_check(z64)
    grad_errors = {leaf.path.strip("[]'"): leaf.rel_error for leaf in report.leaves}
    at_zero = {
        name: {"library": float(c["dg_at_0"][name]),
               "jax_grad_of_library_fn": float(c["jax_grad_at_0"][name])}
        for name in acts
    }  # fmt: skip
    for name, value in c["jax_nn_at_0"].items():
        at_zero[name]["jax_nn"] = float(value)
    rows = [
        (name, float(dg.max()), float(zs[int(np.argmax(dg))]), grad_errors[name])
        for name, dg in c["dg"].items()
    ]
    layers = c["layers"]
    layer_errors = {
        label: float(np.max(np.abs(v["dy"] - v["jax_grad"])[zs != 0]))
        for label, v in layers.items()
    }
    tanh_gap, softmax_gap = float(c["tanh_gap"]), float(c["softmax_gap"])
    dsig = c["dg"]["sigmoid"]
    seconds = time.perf_counter() - start

    print(f"grid: z in [-{Z_MAX:g}, {Z_MAX:g}] step {step:g} ({z.size} points, float32)")
    print(f"{'activation':<12} {'max g`':>10} {'first argmax':>12} {'vs jax.grad':>12} "
          f"{'g`(0) lib':>10} {'jax.grad(0)':>12}")  # fmt: skip
    for name, peak, where, err in rows:
        print(
            f"{name:<12} {peak:>10.4g} {where:>12.2f} {err:>12.2e} "
            f"{at_zero[name]['library']:>10.4g} {at_zero[name]['jax_grad_of_library_fn']:>12.4g}"
        )
    print(f"softmax vjp vs jax.vjp: {grad_errors['softmax vjp']:.2e}")
    for label, err in layer_errors.items():
        print(f"{label:<32} backward dx vs jax.grad (z != 0): {err:.2e}")
    print(f"max |tanh(z) - (2 sigmoid(2z) - 1)| = {tanh_gap:.2e}; "
          f"max |softmax(z, 0)_0 - sigmoid(z)| = {softmax_gap:.2e}")  # fmt: skip
    print(f"ReLU'(0): library {at_zero['relu']['library']:g}, jax.nn.relu "
          f"{at_zero['relu']['jax_nn']:g}; leaky ReLU'(0): library "
          f"{at_zero['leaky_relu']['library']:g}, jax.nn.leaky_relu "
          f"{at_zero['leaky_relu']['jax_nn']:g}")  # fmt: skip

    panels = [*acts, "softmax", *layers]
    cols = 4
    fig, axes = plotting.figure(cols, -(-len(panels) // cols), size=(3.6, 2.9))
    zs = np.asarray(z)
    for ax, name in zip(axes, panels, strict=False):
        if name in acts:
            g, dg = c["g"][name], c["dg"][name]
            kink = acts[name].kink
            title = f"{name}: g'(0) taken as {at_zero[name]['library']:g}" if kink else name
        elif name == "softmax":
            g, dg = c["softmax_0"], c["softmax_0_derivative"]
            title = "softmax(z, 0)[0] = sigmoid(z)"
        else:
            g, dg = layers[name]["y"], layers[name]["dy"]
            title = name
            for i, draw in enumerate(layers[name].get("train_draws", ())):
                ax.plot(zs[::4], np.asarray(draw)[::4], ".", ms=2, color="gray",
                        label="training draws" if i == 0 else None)  # fmt: skip
        ax.plot(zs, np.asarray(g), label="g(z)")
        ax.plot(zs, np.asarray(dg), "--", label="g'(z) (hand-written)")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylim(-2.2, 3.2)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[panels.index("RReLU (evaluation: mean slope)")].legend(fontsize=7, loc="upper left")
    for ax in axes[len(panels) :]:
        ax.axis("off")
    plotting.save(fig, args.out / "activations.png")

    metrics = {
        "grid": {"z_max": Z_MAX, "step": step, "points": int(z.size)},
        "sigmoid_derivative_max": float(dsig.max()),
        "sigmoid_derivative_argmax_z": float(zs[int(np.argmax(dsig))]),
        "sigmoid_at_0": float(c["g"]["sigmoid"][zs == 0][0]),
        "tanh_derivative_max": float(c["dg"]["tanh"].max()),
        "tanh_vs_2sigmoid2z_minus_1": tanh_gap,
        "softmax_z0_vs_sigmoid": softmax_gap,
        "grad_rel_error": grad_errors,
        "softmax_vjp_rel_error": grad_errors["softmax vjp"],
        "layer_backward_vs_jax_grad": layer_errors,
        "derivative_at_0": at_zero,
        "kinks": {name: a.kink for name, a in acts.items() if a.kink},
        "relu_derivative_values": sorted(set(c["dg"]["relu"].tolist())),
        "seconds": seconds,
    }
    checks = {
        "sigmoid' peaks at exactly 0.25, at z = 0": (
            metrics["sigmoid_derivative_max"] == 0.25
            and metrics["sigmoid_derivative_argmax_z"] == 0.0
        ),
        f"tanh(z) = 2 sigmoid(2z) - 1 to {TANH_TOLERANCE:g} (float32)": (
            tanh_gap <= TANH_TOLERANCE
        ),
        "tanh' peaks at 1 (z = 0)": metrics["tanh_derivative_max"] == 1.0,
        f"every hand-written derivative (and softmax's vjp) = jax.grad to {GRAD_TOLERANCE:g} "
        "(float64, kinks excluded)": report.ok,
        f"softmax(z, 0)_0 = sigmoid(z) to {SOFTMAX_TOLERANCE:g}": (
            softmax_gap <= SOFTMAX_TOLERANCE
        ),
        "PReLU, RReLU, Maxout backward = jax.grad away from z = 0": all(
            e <= 1e-6 for e in layer_errors.values()
        ),
        "ReLU' takes only the values 0 and 1": metrics["relu_derivative_values"] == [0.0, 1.0],
        "ReLU'(0) = 0, as jax.nn.relu takes it": (
            at_zero["relu"]["library"] == 0.0 == at_zero["relu"]["jax_nn"]
        ),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
