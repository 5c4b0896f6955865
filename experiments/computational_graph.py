"""Backprop by hand on the notes' computational graph J(a, b, c) = 3(a + bc).

Question: at (a, b, c) = (5, 3, 2), what are the forward values of the graph's nodes
u = bc, v = a + u and J = 3v, and what are dJ/da, dJ/db and dJ/dc? Do the chain rule by
hand (a backward pass over the graph), jax.grad and finite differences with h = 0.001 agree?

Expected answer (note 002): forward, u = 6, v = 11, J = 33. Backward, nudging v by 0.001
(11 -> 11.001) moves J by 0.003 (33 -> 33.003), so dJ/dv = 3; dv/da = dv/du = 1, so
dJ/da = dJ/du = 3; du/db = c and du/dc = b, so dJ/db = 3 * 1 * 2 = 6 and
dJ/dc = 3 * 1 * 3 = 9. The chain rule and jax.grad give these exactly; the notes' one-sided
difference (J(x + h) - J(x)) / h with h = 0.001 gives them to rounding, in float64. In float32
the same difference is off in the third decimal (33.003 is not representable: the float32
spacing near 33 is 3.8e-6, which dividing by h = 0.001 magnifies to errors of order 1e-3),
which is why finite differences run in float64. The library's gradcheck (central differences,
eps = h) agrees too.
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

from experiments import common
from nnfun import gradcheck, plotting

NAME = "computational_graph"
POINT = {"a": 5.0, "b": 3.0, "c": 2.0}
H = 0.001  # the notes' nudge
EXPECTED_FORWARD = {"u": 6.0, "v": 11.0, "J": 33.0}
EXPECTED_GRAD = {"a": 3.0, "b": 6.0, "c": 9.0, "u": 3.0, "v": 3.0}
FD_TOLERANCE = 1e-3  # |finite difference - expected|, float64


def forward(a, b, c) -> dict:
    """The graph's nodes: u = bc, v = a + u, J = 3v."""
    u = b * c
    v = a + u
    return {"u": u, "v": v, "J": 3 * v}


def J(a, b, c):
    return forward(a, b, c)["J"]


def backward(a, b, c) -> dict:
    """The chain rule node by node, from J back to the inputs (the backward pass)."""
    dJ_dv = 3.0  # J = 3v
    dJ_du = dJ_dv * 1.0  # v = a + u: dv/du = 1
    dJ_da = dJ_dv * 1.0  # dv/da = 1
    dJ_db = dJ_du * c  # u = bc: du/db = c
    dJ_dc = dJ_du * b  # du/dc = b
    return {"a": dJ_da, "b": dJ_db, "c": dJ_dc, "u": dJ_du, "v": dJ_dv}


def node_functions(p: dict) -> dict:
    """J as a function of each node alone, the others held at the point `p`."""
    return {
        "a": lambda x: J(x, p["b"], p["c"]),
        "b": lambda x: J(p["a"], x, p["c"]),
        "c": lambda x: J(p["a"], p["b"], x),
        "u": lambda x: 3 * (p["a"] + x),
        "v": lambda x: 3 * x,
    }


def one_sided(f, x, h, dtype) -> float:
    """The notes' nudge (f(x + h) - f(x)) / h, every number in `dtype`."""
    x, h = dtype(x), dtype(h)
    return float((dtype(f(x + h)) - dtype(f(x))) / h)


def draw_graph(ax, point: dict, values: dict, grads: dict) -> None:
    """Boxes and arrows: forward values in black, backward derivatives in red."""
    where = {"a": (0, 2.2), "b": (0, 1.1), "c": (0, 0), "u": (2.4, 0.55), "v": (4.8, 1.4),
             "J": (7.2, 1.4)}  # fmt: skip
    label = {"a": "a", "b": "b", "c": "c", "u": "u = bc", "v": "v = a + u", "J": "J = 3v"}
    value = {**point, **values}
    for name, (x, y) in where.items():
        box = {"boxstyle": "round,pad=0.5", "fc": "#e8f0fb", "ec": "k"}
        text = f"{label[name]}\n= {value[name]:g}"
        ax.text(x, y, text, ha="center", va="center", fontsize=11, bbox=box)
        derivative = "dJ/dJ = 1" if name == "J" else f"dJ/d{name} = {grads[name]:g}"
        ax.text(x, y - 0.55, derivative, ha="center", va="center", color="tab:red", fontsize=10)
    for start, end in (("a", "v"), ("b", "u"), ("c", "u"), ("u", "v"), ("v", "J")):
        (x0, y0), (x1, y1) = where[start], where[end]
        ax.annotate("", xy=(x1 - 0.75, y1), xytext=(x0 + 0.55, y0),
                    arrowprops={"arrowstyle": "->", "lw": 1.5})  # fmt: skip
    ax.text(3.6, 2.75, "forward: values (black)    backward: derivatives (red)",
            ha="center", fontsize=10)  # fmt: skip
    ax.set(xlim=(-0.8, 8.2), ylim=(-0.9, 3.0), title="J(a, b, c) = 3(a + bc) at (5, 3, 2)")
    ax.axis("off")


def main(argv=None) -> bool:
    # --quick and --seeds change nothing: the whole experiment is a handful of numbers.
    args = common.parser(NAME, __doc__).parse_args(argv)
    start = time.perf_counter()
    a, b, c = POINT["a"], POINT["b"], POINT["c"]
    values = {k: float(v) for k, v in forward(a, b, c).items()}
    manual = backward(a, b, c)

    nodes = {**POINT, **values}  # every node's forward value
    at32 = {k: jnp.float32(v) for k, v in nodes.items()}
    auto = {name: float(jax.grad(f)(at32[name])) for name, f in node_functions(at32).items()}
    f64 = node_functions(POINT)
    fd64 = {name: one_sided(f, nodes[name], H, np.float64) for name, f in f64.items()}
    fd32 = {name: one_sided(f, nodes[name], H, np.float32) for name, f in f64.items()}

    def loss_fn(p):
        return J(p["a"], p["b"], p["c"])

    with jax.enable_x64(True):  # the library's gradcheck: jax.grad and central differences
        params = {k: jnp.float64(v) for k, v in POINT.items()}
        grads = {k: jnp.float64(manual[k]) for k in POINT}
        check = gradcheck.check(loss_fn, params, grads, eps=H, fd_tol=1e-9)
        central, _, _ = gradcheck.finite_differences(loss_fn, params, eps=H)
    central = {k: float(v) for k, v in central.items()}
    seconds = time.perf_counter() - start

    print(f"forward at (a, b, c) = ({a:g}, {b:g}, {c:g}): u = bc = {values['u']:g}, "
          f"v = a + u = {values['v']:g}, J = 3v = {values['J']:g}")  # fmt: skip
    print(f"{'dJ/d':<5} {'manual':>7} {'jax.grad':>9} {'one-sided h=0.001 f64':>22} "
          f"{'central h=0.001 f64':>20} {'one-sided f32':>14}")  # fmt: skip
    for name in EXPECTED_GRAD:
        print(
            f"{name:<5} {manual[name]:>7g} {auto[name]:>9g} {fd64[name]:>22.12f} "
            f"{(f'{central[name]:.12f}' if name in central else '-'):>20} {fd32[name]:>14.6f}"
        )

    fig, axes = plotting.figure(1, size=(9.5, 4.2))
    draw_graph(axes[0], POINT, values, manual)
    plotting.save(fig, args.out / "graph.png")

    metrics = {
        "point": POINT, "h": H, "forward": values, "manual": manual, "jax_grad": auto,
        "one_sided_fd_float64": fd64, "central_fd_float64": central,
        "one_sided_fd_float32": fd32,
        "one_sided_fd_float32_max_error": max(abs(fd32[k] - EXPECTED_GRAD[k]) for k in fd32),
        "gradcheck_vs_jax_grad": check.autodiff.worst.rel_error,
        "gradcheck_vs_central_fd": check.finite_differences.worst.rel_error,
        "seconds": seconds,
    }  # fmt: skip
    inputs = tuple(POINT)
    checks = {
        "forward: u = 6, v = 11, J = 33": values == EXPECTED_FORWARD,
        "manual chain rule: dJ/da = 3, dJ/db = 6, dJ/dc = 9 (and dJ/du = dJ/dv = 3) exactly": (
            manual == EXPECTED_GRAD
        ),
        "jax.grad gives the same exactly (float32)": auto == EXPECTED_GRAD,
        f"one-sided difference, h = {H:g}, float64: within {FD_TOLERANCE:g}": all(
            abs(fd64[k] - EXPECTED_GRAD[k]) <= FD_TOLERANCE for k in fd64
        ),
        f"central difference, h = {H:g}, float64: within {FD_TOLERANCE:g}": all(
            abs(central[k] - EXPECTED_GRAD[k]) <= FD_TOLERANCE for k in inputs
        ),
        "gradcheck: manual vs jax.grad and central differences agree": check.ok,
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
