"""Loss landscapes: which losses are convex, what contours say, and what the learning rate does.

Question: is the loss of linear regression (mean squared error) and of logistic regression
(binary cross-entropy) convex in the parameters, on a real data set, and is a small neural
network's loss not? Does a single sigmoid unit trained with the squared error keep the
convexity that cross-entropy gives it? On a contour plot of a two-weight slice of logistic
regression, is the gradient perpendicular to the contour lines, pointing away from the
minimum, with denser contours where the loss is steeper? And how does plain gradient descent
move over those contours for a too-small, a good and a too-large learning rate?

Expected answer (notes 004 and 002): the squared error of a linear model and the
cross-entropy of logistic regression are convex, a neural network's loss is not. Convexity is
measured, not assumed: the Hessian (jax.hessian, float64) is positive semi-definite at every
point of a grid over all the parameters, and on random lines the loss lies below its chords.
For a 2-2-1 tanh network on XOR a certificate shows the opposite: swapping the two hidden
units maps a minimum to a second minimum of exactly the same loss, and the straight line
between them rises above both (a convex function would stay below the chord), with a
negative Hessian eigenvalue on the way. One weight of a sigmoid unit on the notes' sample
(x, y) = (1, 0) is enough to see the loss matter: the squared error J = sigmoid(w)^2 has
J'' = 2 s^2 (1 - s)(2 - 3 s) (s = sigmoid(w)), negative for w > ln 2, while cross-entropy
J = softplus(w) has J'' = s (1 - s) > 0.

Contours: on the (w1, w2) plane the loss is lowest at the centre; along a contour
f(w1, w2) = c the implicit-function slope is dw2/dw1 = -f_w1 / f_w2, so the gradient
(f_w1, f_w2) is normal to the contour and points away from the minimum (the direction of
increase); the steeper the loss the denser the contours, spacing ~ dc / |grad f|. Each is
measured independently of the formula: the tangent from points found on the level set itself,
the spacing from the loss values along the gradient.

Learning rate (notes 002): w <- w - r dJ/dw; a rate that is too large makes the iterates jump
from side to side across the valley, one that is too small descends very slowly (the notes
name 0.01 as a usual start). Near the minimum the loss is a quadratic with Hessian H, and the
error along an eigenvector of H with eigenvalue l is multiplied by (1 - r l) each step: with
L the largest eigenvalue, r < 1/L approaches without oscillation, 1/L < r < 2/L oscillates
along the steepest direction but converges, and r > 2/L cannot converge (|1 - r L| > 1).
Measured: sign changes of the step along the steepest eigenvector, iterations to reach a loss
level, and convergence against r / (2/L) over a sweep, also on the quadratic loss of linear
regression, where the iterates diverge without bound above 2/L. Two refinements of the notes
follow from the same algebra and are reported, not hidden: in an elongated valley
(L / mu well above 1, mu the smallest eigenvalue) the fastest rate for a quadratic is
2 / (L + mu), close to 2/L, so a rate that oscillates may still need fewer iterations than
1/L; "too large" costs convergence only above 2/L. And 0.01 is not a scale-free choice: what
counts is r L, so 0.01 is fast for a steep loss and very slow for a flat one such as this.

Data: scikit-learn's bundled breast-cancer (569 tumours; logistic regression on two
standardised features) and diabetes (442 patients; linear regression of the standardised
disease progression on two standardised features) data sets.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Run by path, Python puts this script's folder on sys.path, not the root holding `experiments`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from sklearn import datasets  # noqa: E402

import nnfun  # noqa: E402
from experiments import common  # noqa: E402
from nnfun import data, plotting  # noqa: E402

NAME = "loss_landscape"
SEEDS = 8  # XOR networks trained at once; each one that solves XOR gives a certificate
CLASSIFICATION_FEATURES = ("mean area", "mean fractal dimension")  # breast cancer
REGRESSION_FEATURES = ("bmi", "s5")  # diabetes
NEWTON_STEPS = 30  # float64 Newton iterations to the convex models' minima
GRID_HALF_WIDTH = 3.0  # parameter grids span the minimum +- this in every coordinate
GRID_POINTS, QUICK_GRID_POINTS = 9, 5  # per axis of the convex models' 3-D parameter grids
LINES, QUICK_LINES = 64, 16  # random chords per model
LINE_POINTS = 41
CONVEX_SLACK = 1e-12  # float64 rounding allowed: eigenvalues >= -slack max|eig|, chord gaps
XOR_L2 = 1e-2  # l2/2 sum W^2 gives the XOR network's loss true (finite) minima
XOR_LEARNING_RATE = 1.0
XOR_GD_STEPS = 6000  # full-batch steps; |grad| < MINIMUM_GRADIENT at the end
MINIMUM_GRADIENT = 1e-8  # |grad| below this (and a positive definite Hessian): a minimum
CHORD_MARGIN = 0.1  # the XOR loss must rise at least this far above the chord
ONE_WEIGHT = np.linspace(-6.0, 6.0, 1201)  # w of sigmoid(w x) on the notes' sample (1, 0)
SLICE_GRID, QUICK_SLICE_GRID = 101, 41  # loss values per axis of the contour figure
TANGENT_SAMPLES, QUICK_TANGENT_SAMPLES = 96, 24
TANGENT_RADIUS = 1e-3  # circle (x R) on which the level set is found around each point
TANGENT_ANGLES = 720
MAX_ANGLE_ERROR = 1.0  # degrees off 90 between gradient and measured contour tangent
SPACING_LEVELS = 20  # contour spacing measured for the level step (f_max - f_min) / this
SPACING_CORRELATION = -0.9  # Spearman rank correlation of spacing with |grad|, at most
GD_STEPS = 5000
LEVEL_FRACTION = 1e-6  # "reached": f - f* below this fraction of the start's f - f*
RATE_FACTORS = {  # learning rate as a multiple of 2/L (L: the largest Hessian eigenvalue)
    "too small": 0.02,
    "good (1/L)": 0.5,
    "too large": 0.95,
    "above 2/L": 1.05,
}
SWEEP = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 0.95, 0.98, 1.02, 1.05, 1.2, 1.5)
NOTES_RATE = 0.01
NEAR, NEAR_STEPS = 1e-6, 200  # start this far from the minimum; distance after these steps
CONVERGED = 1e-6  # final distance to the minimum below this fraction of the start's
DIVERGED = 1e6  # linear regression: final distance above this multiple of the start's
START_ANGLE = np.deg2rad(25.0)  # start direction from the flat eigenvector towards the steep


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """Two standardised breast-cancer features ``(569, 2)`` and labels (1 = benign) ``(569,)``."""
    d = datasets.load_breast_cancer()
    columns = [list(d.feature_names).index(f) for f in CLASSIFICATION_FEATURES]
    return _standardised(d.data[:, columns]), d.target.astype(np.int32)


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    """Two standardised diabetes features ``(442, 2)`` and the standardised target ``(442,)``."""
    d = datasets.load_diabetes()
    columns = [list(d.feature_names).index(f) for f in REGRESSION_FEATURES]
    return _standardised(d.data[:, columns]), _standardised(d.target)


def logistic() -> nnfun.Sequential:
    return nnfun.Sequential([nnfun.Dense(1, "sigmoid", input_dim=2)])


def linear() -> nnfun.Sequential:
    return nnfun.Sequential([nnfun.Dense(1, None, input_dim=2)])


def xor_network() -> nnfun.Sequential:
    return nnfun.Sequential([nnfun.Dense(2, "tanh", input_dim=2), nnfun.Dense(1, "sigmoid")])


def flat_loss(net, x, y, loss: str, **kwargs):
    """J(theta) of ``net`` over the flat vector theta of all its parameters (float64)."""
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), dtype=jnp.float64))
    like = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)  # no eager dispatch
    _, unravel = ravel_pytree(like)
    x = jnp.asarray(x, jnp.float64)
    return lambda theta: net.loss(unravel(theta), x, y, loss=loss, **kwargs), unravel


def newton_minimum(f, dim: int, steps: int = NEWTON_STEPS):
    """theta* of a convex f by Newton's method from 0: theta <- theta - H^-1 grad."""

    def step(theta, _):
        return theta - jnp.linalg.solve(jax.hessian(f)(theta), jax.grad(f)(theta)), None

    return jax.lax.scan(step, jnp.zeros(dim, jnp.float64), None, length=steps)[0]


def grid_points(centre, half_width: float, n: int) -> jnp.ndarray:
    """Every point of an n^d grid over centre +- half_width: ``(n^d, d)``."""
    axes = [jnp.linspace(-half_width, half_width, n)] * centre.shape[0]
    mesh = jnp.meshgrid(*axes, indexing="ij")
    return centre + jnp.stack([m.ravel() for m in mesh], 1)


def chord_gaps(f, a, b, points: int = LINE_POINTS):
    """f on the segment a -> b minus the chord: ``(points,)``, <= 0 everywhere if f is convex."""
    t = jnp.linspace(0.0, 1.0, points)
    on_line = jax.vmap(lambda s: f(a + s * (b - a)))(t)
    return on_line - ((1 - t) * f(a) + t * f(b))


def convexity(f, centre, grid: int, lines: int, key) -> dict:
    """Hessian eigenvalues over a grid around ``centre`` and chord gaps on random lines."""
    points = grid_points(centre, GRID_HALF_WIDTH, grid)
    eigenvalues = jax.vmap(lambda p: jnp.linalg.eigvalsh(jax.hessian(f)(p)))(points)
    ends = centre + jax.random.uniform(
        key, (2, lines, centre.shape[0]), jnp.float64, -GRID_HALF_WIDTH, GRID_HALF_WIDTH
    )
    gaps = jax.vmap(lambda a, b: chord_gaps(f, a, b))(ends[0], ends[1])
    return {"eigenvalues": eigenvalues, "gaps": gaps, "points": points.shape[0]}


def convexity_summary(result: dict) -> dict:
    eig = np.asarray(result["eigenvalues"])
    gaps = np.asarray(result["gaps"])
    scale = np.max(np.abs(eig))
    return {
        "grid_points": int(result["points"]),
        "min_eigenvalue": float(eig.min()),
        "max_eigenvalue": float(eig.max()),
        "min_eigenvalue_relative": float(eig.min() / scale),
        "psd_everywhere": bool(eig.min() >= -CONVEX_SLACK * scale),
        "lines": int(gaps.shape[0]),
        "max_chord_gap": float(gaps.max()),
        "below_chords": bool(gaps.max() <= CONVEX_SLACK * max(1.0, float(np.abs(gaps).max()))),
    }


# ---- the XOR network: two minima related by swapping the hidden units ---------------------
def swap_hidden(params):
    """The same function with the two hidden units exchanged (columns of W1, rows of W2)."""
    hidden, out = params
    return [
        {"W": hidden["W"][:, ::-1], "b": hidden["b"][::-1]},
        {"W": out["W"][::-1, :], "b": out["b"]},
    ]


def xor_minima(seeds: int, gd_steps: int) -> dict:
    """Trains ``seeds`` 2-2-1 tanh networks on XOR (BCE + l2, float64, full-batch gradient
    descent), then measures each end point against its hidden-unit swap along the line
    between them (loss, chord, smallest Hessian eigenvalue)."""
    net = xor_network()
    t = jnp.linspace(0, 1, LINE_POINTS)  # odd count: t = 0.5, the midpoint, is on it
    middle = LINE_POINTS // 2

    def certify(start, x, y):
        f, unravel = flat_loss(net, x, y, "binary_crossentropy", l2=XOR_L2)
        plain, _ = flat_loss(net, x, y, "binary_crossentropy")
        grad, hess = jax.grad(f), jax.hessian(f)
        theta = jax.lax.fori_loop(0, gd_steps, lambda _, w: w - XOR_LEARNING_RATE * grad(w), start)
        swapped = ravel_pytree(swap_hidden(unravel(theta)))[0]
        direction = (swapped - theta) / jnp.linalg.norm(swapped - theta)
        line = theta + t[:, None] * (swapped - theta)
        hessians = jax.vmap(hess)(line)
        eigenvalues = jnp.linalg.eigvalsh(hessians)[:, 0]
        out = net.apply(unravel(theta), x)[:, 0]
        return {
            "loss": f(theta),
            "swapped_loss": f(swapped),
            "gradient_norm": jnp.linalg.norm(grad(theta)),
            "min_eigenvalue": eigenvalues[0],
            "distance": jnp.linalg.norm(swapped - theta),
            "accuracy": jnp.mean((out > 0.5) == y),
            "line_loss": jax.vmap(f)(line),
            "gaps": chord_gaps(f, theta, swapped),
            "plain_gaps": chord_gaps(plain, theta, swapped),
            "middle_min_eigenvalue": eigenvalues[middle],
            "middle_curvature_along_line": direction @ hessians[middle] @ direction,
            "line_min_eigenvalues": eigenvalues,
        }

    def run(key, x, y):  # the data as arguments: traced, so validated once, not per trace
        keys = jax.random.split(key, seeds)
        starts = jax.vmap(lambda k: ravel_pytree(net.init(k, dtype=jnp.float64))[0])(keys)
        return jax.vmap(lambda s: certify(s, x, y))(starts)

    x, y = data.xor()
    return jax.tree.map(np.asarray, jax.jit(run)(jax.random.key(0), x.astype(np.float64), y))


# ---- one weight: sigmoid + squared error against sigmoid + cross-entropy ------------------
def one_weight() -> dict:
    """J(w) and J''(w) of one sigmoid unit (bias 0) on the notes' sample x = 1, y = 0."""
    net = nnfun.Sequential([nnfun.Dense(1, "sigmoid", input_dim=1)])
    named = {"mse": "mean_squared_error", "cross-entropy": "binary_crossentropy"}

    def curves(w, x, y):
        out = {}
        for label, loss in named.items():

            def j(v, loss=loss):
                params = [{"W": jnp.reshape(v, (1, 1)), "b": jnp.zeros((1,), jnp.float64)}]
                return net.loss(params, x, y, loss=loss)

            out[label] = {"J": jax.vmap(j)(w), "J2": jax.vmap(jax.hessian(j))(w)}
        return out

    sample = np.ones((1, 1)), np.zeros((1,), np.int32)  # the notes' x = 1, y = 0
    return jax.tree.map(np.asarray, jax.jit(curves)(ONE_WEIGHT, *sample))


# ---- the contour slice: two weights of logistic regression, bias at its optimum ----------
def level_tangents(f2, points, radius: float):
    """Contour tangents measured from the level set: on a circle of ``radius`` around each
    point, the two places where f returns to the point's value; unit vectors ``(n, 2)``."""
    phi = jnp.linspace(0.0, 2 * jnp.pi, TANGENT_ANGLES, endpoint=False)
    ring = radius * jnp.stack([jnp.cos(phi), jnp.sin(phi)], 1)

    def one(p):
        d = jax.vmap(lambda r: f2(p + r))(ring) - f2(p)
        d_next = jnp.roll(d, -1)
        crossing = (d > 0) != (d_next > 0)
        # linear interpolation of the angle inside each crossing interval
        frac = d / jnp.where(d == d_next, 1.0, d - d_next)
        angle = phi + frac * (2 * jnp.pi / TANGENT_ANGLES)
        first = jnp.argmax(crossing)
        second = TANGENT_ANGLES - 1 - jnp.argmax(crossing[::-1])
        a, b = angle[first], angle[second]
        chord = jnp.array([jnp.cos(b) - jnp.cos(a), jnp.sin(b) - jnp.sin(a)])
        return chord / jnp.linalg.norm(chord), jnp.sum(crossing)

    return jax.vmap(one)(points)


def level_spacing(f2, points, gradients, step: float):
    """Distance along the unit gradient from each point to the contour one level ``step``
    higher, found by bisection on the loss values: ``(n,)``."""

    def one(p, g):
        norm = jnp.linalg.norm(g)
        unit, target = g / norm, f2(p) + step
        # f convex: f(p + s u) >= f(p) + s |g|, so the root lies in [0, step / |g|]
        hi = step / norm

        def bisect(_, bounds):
            lo, hi = bounds
            mid = (lo + hi) / 2
            above = f2(p + mid * unit) >= target
            return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

        lo, hi = jax.lax.fori_loop(0, 60, bisect, (0.0, hi))
        return (lo + hi) / 2

    return jax.vmap(one)(points, gradients)


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v)).astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected in continuous measurements)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def angle_between(u, v) -> np.ndarray:
    """Angles in degrees between rows of u and v."""
    cos = np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def gradient_descent(f2, starts, rates, steps: int):
    """w <- w - r grad f from each (start, rate) pair at once: paths ``(k, steps + 1, 2)``
    and their losses ``(k, steps + 1)``."""
    value_and_grad = jax.value_and_grad(f2)

    def path(start, rate):
        def step(w, _):
            value, grad = value_and_grad(w)
            return w - rate * grad, (w, value)

        end, (ws, values) = jax.lax.scan(step, start, None, length=steps)
        return jnp.concatenate([ws, end[None]]), jnp.append(values, f2(end))

    return jax.vmap(path)(starts, rates)


def path_summary(path: np.ndarray, losses: np.ndarray, minimum, f_min: float, steep) -> dict:
    """Iterations to the loss level, sign changes of the step along the steepest direction,
    and the final distance to the minimum of one gradient-descent path."""
    gap = losses - f_min
    level = LEVEL_FRACTION * gap[0]
    reached = np.flatnonzero(np.isfinite(gap) & (gap <= level))
    first = int(reached[0]) if reached.size else None
    along = (path[1:] - path[:-1]) @ steep
    counted = along[: first if first else len(along)]  # after the level: rounding noise
    counted = counted[np.isfinite(counted)]
    reversals = int(np.sum(np.sign(counted[1:]) != np.sign(counted[:-1])))
    distance = np.linalg.norm(path - minimum, axis=1)
    return {
        "iterations_to_level": first,
        "sign_changes_along_steepest": reversals,
        "steps_counted": max(len(counted) - 1, 0),
        "reversal_fraction": reversals / max(len(counted) - 1, 1),
        "final_distance_ratio": float(distance[-1] / distance[0]),
        "loss_gap": gap,
    }


def contour_measurements(f2, centre, offsets, n: int):
    """The slice on an n x n grid around ``centre``, and at ``centre + offsets``: gradients,
    contour tangents measured on the level set, spacing to the next contour level."""
    axis = jnp.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, n)
    g1, g2 = jnp.meshgrid(centre[0] + axis, centre[1] + axis)
    values = jax.vmap(f2)(jnp.stack([g1.ravel(), g2.ravel()], 1)).reshape(g1.shape)
    points = centre + offsets
    gradients = jax.vmap(jax.grad(f2))(points)
    tangents, crossings = level_tangents(f2, points, TANGENT_RADIUS * GRID_HALF_WIDTH)
    step = (values.max() - values.min()) / SPACING_LEVELS
    arrows_at = jnp.stack([g1[:: n // 9, :: n // 9].ravel(), g2[:: n // 9, :: n // 9].ravel()], 1)
    return {
        "grid": (g1, g2, values),
        "gradients": gradients,
        "tangents": tangents,
        "crossings": crossings,
        "level_step": step,
        "spacing": level_spacing(f2, points, gradients, step),
        "arrows": (arrows_at, jax.vmap(jax.grad(f2))(arrows_at)),
    }


def slice_study(theta, quick: bool) -> dict:
    """Logistic regression's (w1, w2) slice through its minimum ``theta`` = [w1, w2, b]:
    the contour measurements and the learning-rate paths."""
    theta = np.asarray(theta)

    centre = theta[:2]
    # points sampled in the window, away from the centre where the gradient vanishes
    rng = np.random.default_rng(0)
    samples = QUICK_TANGENT_SAMPLES if quick else TANGENT_SAMPLES
    offsets = rng.uniform(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, (4 * samples, 2))
    offsets = offsets[np.linalg.norm(offsets, axis=1) > 0.1 * GRID_HALF_WIDTH][:samples]
    n = QUICK_SLICE_GRID if quick else SLICE_GRID
    factors = np.asarray([*RATE_FACTORS.values(), *SWEEP])
    near_factors = np.asarray([RATE_FACTORS["too large"], RATE_FACTORS["above 2/L"]])

    def program(c, o, x, y):  # one compiled program for every measurement of the slice
        f, _ = flat_loss(logistic(), x, y, "binary_crossentropy")

        def f2(w):
            return f(jnp.concatenate([w, theta[2:]]))

        eigenvalues, vectors = jnp.linalg.eigh(jax.hessian(f2)(c))
        flat, steep = vectors[:, 0], vectors[:, 1]
        big_l = eigenvalues[1]
        # the labelled rates and the sweep from the window's edge, the notes' rate too, and
        # two rates started 1e-6 from the minimum along the steepest direction (above 2/L it
        # must move away, the minimum being an unstable fixed point; below it comes back)
        start = c + 0.9 * GRID_HALF_WIDTH * (
            jnp.cos(START_ANGLE) * flat + jnp.sin(START_ANGLE) * steep
        )
        rates = jnp.concatenate([factors * 2 / big_l, jnp.array([NOTES_RATE])])
        rates = jnp.concatenate([rates, near_factors * 2 / big_l])
        near = c + NEAR * steep
        starts = jnp.concatenate(
            [jnp.broadcast_to(start, (len(factors) + 1, 2)), jnp.stack([near, near])]
        )
        paths, losses = gradient_descent(f2, starts, rates, GD_STEPS)
        return {
            "f_min": f2(c),
            "eigenvalues": eigenvalues,
            "steep": steep,
            "rates": rates,
            "paths": paths,
            "losses": losses,
            **contour_measurements(f2, c, o, n),
        }

    m = jax.tree.map(np.asarray, jax.jit(program)(centre, offsets, *breast_cancer()))
    f_min, steep, paths = float(m["f_min"]), m["steep"], m["paths"]
    mu, big_l = (float(e) for e in m["eigenvalues"])
    gradients, tangents = m["gradients"], m["tangents"]
    # the notes' tangent: slope dw2/dw1 = -f_w1 / f_w2 from the gradient's components
    implicit = np.stack([np.ones(len(gradients)), -gradients[:, 0] / gradients[:, 1]], 1)
    implicit_angle = angle_between(implicit, tangents)
    grad_norm = np.linalg.norm(gradients, axis=1)
    thirds = np.quantile(grad_norm, [1 / 3, 2 / 3])
    labelled = dict(zip(RATE_FACTORS, m["rates"][: len(RATE_FACTORS)].tolist(), strict=True))
    summaries = [
        path_summary(p, v, centre, f_min, steep) for p, v in zip(paths, m["losses"], strict=True)
    ]
    k = len(labelled)
    near_growth = np.linalg.norm(paths[-2:, NEAR_STEPS] - centre, axis=1) / NEAR
    return {
        "theta": np.asarray(theta),
        "f_min": f_min,
        "mu": mu,
        "L": big_l,
        "grid": m["grid"],
        "arrows": m["arrows"],
        "points": centre + offsets,
        "crossings": m["crossings"],
        "angle_to_gradient": angle_between(tangents, gradients),
        "implicit_vs_measured": np.minimum(implicit_angle, 180 - implicit_angle),
        "outward": np.sum(gradients * offsets, 1),
        "level_step": float(m["level_step"]),
        "spacing": m["spacing"],
        "grad_norm": grad_norm,
        "spacing_steep_third": float(np.median(m["spacing"][grad_norm >= thirds[1]])),
        "spacing_gentle_third": float(np.median(m["spacing"][grad_norm <= thirds[0]])),
        "rates": labelled,
        "paths": paths[:k],
        "summaries": dict(zip(labelled, summaries[:k], strict=True)),
        "sweep": summaries[k : k + len(SWEEP)],
        "notes_rate": summaries[k + len(SWEEP)],
        "near_growth": near_growth,
    }


def quadratic_sweep(theta) -> dict:
    """Linear regression's (w1, w2) slice through its minimum ``theta`` is an exact quadratic:
    GD from its edge for each rate of the sweep; final distance to the minimum over the
    start's."""
    theta = np.asarray(theta)

    def program(c, x, y):
        f, _ = flat_loss(linear(), x, y, "mean_squared_error")

        def f2(w):
            return f(jnp.concatenate([w, theta[2:]]))

        big_l = jnp.linalg.eigvalsh(jax.hessian(f2)(c))[-1]
        start = c + GRID_HALF_WIDTH * jnp.array([0.6, 0.8])
        starts = jnp.broadcast_to(start, (len(SWEEP), 2))
        paths, _ = gradient_descent(f2, starts, np.asarray(SWEEP) * 2 / big_l, GD_STEPS)
        return big_l, paths[:, -1]

    big_l, ends = jax.jit(program)(theta[:2], *diabetes())
    big_l = float(big_l)
    with np.errstate(over="ignore", invalid="ignore"):
        distance = np.linalg.norm(np.asarray(ends) - theta[:2], axis=1)
    distance = np.where(np.isfinite(distance), distance, np.inf)  # overflowed: diverged
    return {"L": big_l, "distance_ratio": distance / GRID_HALF_WIDTH}


def never(iterations: int | None) -> str:
    """An iteration count as printed: "never" for a path that does not reach the level."""
    return "never" if iterations is None else str(iterations)


def draw(out: Path, s: dict, xor: dict, weight: dict, solved: np.ndarray) -> None:
    g1, g2, values = s["grid"]
    levels = np.quantile(values, np.linspace(0, 1, 24) ** 2)[1:]
    labels = [f"w ({f})" for f in CLASSIFICATION_FEATURES]
    fig, axes = plotting.figure_with_3d(3, three_d=(0,), size=(5.0, 4.4))
    plotting.surface(axes[0], g1, g2, values, title="logistic regression: BCE over (w1, w2)",
                     xlabel=labels[0], ylabel=labels[1], zlabel="loss")  # fmt: skip
    arrows_at, arrows = s["arrows"]
    plotting.contour_map(
        axes[1], g1, g2, values, levels=levels, centre=s["theta"][:2],
        arrows=(arrows_at, arrows), title="contours and gradient arrows (point away)",
        xlabel=labels[0], ylabel=labels[1],
    )  # fmt: skip
    ax = axes[2]
    ax.plot(s["grad_norm"], s["spacing"], "o", ms=4, label="measured spacing")
    norms = np.linspace(s["grad_norm"].min(), s["grad_norm"].max(), 100)
    ax.plot(norms, s["level_step"] / norms, "k--", lw=1, label="dc / |grad f|")
    ax.set(xlabel="|grad f| at the point", ylabel=f"distance to the next contour (dc = "
           f"{s['level_step']:.3g})", title="steeper loss, denser contours",
           ylim=(0, 1.2 * s["spacing"].max()))  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    plotting.save(fig, out / "landscape.png")

    fig, axes = plotting.figure(3, size=(5.0, 4.4))
    paths = {
        f"{label}: r = {s['rates'][label]:.3g} ({RATE_FACTORS[label]:g} x 2/L)": p
        for label, p in zip(s["rates"], s["paths"], strict=True)
    }
    plotting.contour_map(
        axes[0], g1, g2, values, levels=levels, centre=s["theta"][:2],
        paths={k: p[:60] for k, p in paths.items()},
        title="gradient descent, first 60 steps", xlabel=labels[0], ylabel=labels[1],
    )  # fmt: skip
    shown = np.concatenate([p[:60] for p in s["paths"]])
    low, high = shown.min(0), shown.max(0)
    middle, half = (low + high) / 2, 0.6 * (high - low).max()  # a square zoom on the paths
    axes[0].set_xlim(middle[0] - half, middle[0] + half)
    axes[0].set_ylim(middle[1] - half, middle[1] + half)
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # off the paths
    gaps = {k: np.maximum(s["summaries"][label]["loss_gap"], 1e-17)
            for k, label in zip(paths, s["rates"], strict=True)}  # fmt: skip
    plotting.curves(axes[1], gaps, x=np.arange(GD_STEPS + 1), title="loss above the minimum",
                    xlabel="iteration", ylabel="f - f*", log=True)  # fmt: skip
    axes[1].get_legend().remove()  # the paths' legend is on the left panel
    level = LEVEL_FRACTION * next(iter(gaps.values()))[0]  # every path starts at one point
    axes[1].axhline(level, color="gray", ls=":", lw=1)
    axes[1].text(GD_STEPS, level, f"level {LEVEL_FRACTION:g} (f0 - f*)", ha="right",
                 va="bottom", fontsize=7, color="gray")  # fmt: skip
    for line, label in zip(axes[1].get_lines(), s["rates"], strict=False):
        first = s["summaries"][label]["iterations_to_level"]
        if first is not None:  # where the stated iteration count ends
            axes[1].plot(first, gaps[line.get_label()][first], "o", color=line.get_color())
    factors = np.asarray(SWEEP)
    iters = [r["iterations_to_level"] for r in s["sweep"]]
    reached = [i is not None for i in iters]
    axes[2].semilogy(factors[reached], [i for i in iters if i is not None], "o-",
                     label="iterations to the loss level")  # fmt: skip
    for f_ in factors[~np.asarray(reached)]:
        axes[2].axvline(f_, color="r", alpha=0.4)
    axes[2].axvline(1.0, color="k", ls="--", lw=1, label="r = 2/L")
    axes[2].set(xlabel="learning rate / (2/L)", ylabel="iterations",
                title="red: never reaches the level")  # fmt: skip
    axes[2].grid(alpha=0.3, which="both")
    axes[2].legend(fontsize=8, loc="lower left")  # the points fall from upper left
    plotting.save(fig, out / "learning_rates.png")

    fig, axes = plotting.figure(3, size=(5.0, 4.0))
    t = np.linspace(0, 1, LINE_POINTS)
    for i in np.flatnonzero(solved):
        line = xor["line_loss"][i]
        axes[0].plot(t, line, label=f"seed {i}")
        axes[0].plot(t, (1 - t) * line[0] + t * line[-1], "k:", lw=1)
    axes[0].set(xlabel="t (minimum -> its hidden-unit swap)", ylabel="BCE + l2 penalty",
                title="2-2-1 tanh on XOR: the loss rises above the chord")  # fmt: skip
    axes[0].grid(alpha=0.3)
    for i in np.flatnonzero(solved):
        axes[1].plot(t, xor["line_min_eigenvalues"][i])
    axes[1].axhline(0, color="k", lw=1)
    axes[1].set(xlabel="t", ylabel="smallest Hessian eigenvalue",
                title="negative curvature between the minima")  # fmt: skip
    axes[1].grid(alpha=0.3)
    for label, curve in weight.items():
        (line,) = axes[2].plot(ONE_WEIGHT, curve["J"], label=f"J {label}")
        axes[2].plot(ONE_WEIGHT, curve["J2"], ls="--", color=line.get_color(),
                     label=f"J'' {label}")  # fmt: skip
    axes[2].axhline(0, color="k", lw=1)
    axes[2].axvline(np.log(2), color="gray", ls=":", label="w = ln 2")
    axes[2].set(xlabel="w (sigmoid(w x), sample x = 1, y = 0)", ylim=(-0.3, 1.2),
                title="one sigmoid unit: MSE non-convex, CE convex")  # fmt: skip
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    plotting.save(fig, out / "convexity.png")


def main(argv=None) -> bool:
    p = common.parser(NAME, __doc__)
    p.set_defaults(seeds=SEEDS)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds: expected a positive number of XOR networks, got {args.seeds}")
    start_time = time.perf_counter()
    grid = QUICK_GRID_POINTS if args.quick else GRID_POINTS
    lines = QUICK_LINES if args.quick else LINES
    with jax.enable_x64(True):
        models = {
            "logistic regression (BCE)": (logistic(), breast_cancer(), "binary_crossentropy"),
            "linear regression (MSE)": (linear(), diabetes(), "mean_squared_error"),
        }

        def convex_program(key, datasets):  # both models' minima and measurements
            losses = [
                flat_loss(net, x, y, loss)[0]
                for (net, _, loss), (x, y) in zip(models.values(), datasets, strict=True)
            ]
            keys = jax.random.split(key, len(losses))
            minima = [newton_minimum(f, 3) for f in losses]
            return minima, [
                convexity(f, c, grid, lines, k)
                for f, c, k in zip(losses, minima, keys, strict=True)
            ]

        minima, results = jax.tree.map(
            np.asarray,
            jax.jit(convex_program)(jax.random.key(0), [d for _, d, _ in models.values()]),
        )
        convex = {
            label: {"minimum": c, **convexity_summary(r)}
            for label, c, r in zip(models, minima, results, strict=True)
        }
        xor = xor_minima(args.seeds, XOR_GD_STEPS)
        weight = one_weight()
        s = slice_study(minima[0], args.quick)
        quad = quadratic_sweep(minima[1])
        solved = (
            (xor["accuracy"] == 1.0)
            & (xor["gradient_norm"] < MINIMUM_GRADIENT)
            & (xor["min_eigenvalue"] > 0)
        )
        draw(args.out, s, xor, weight, solved)
    seconds = time.perf_counter() - start_time

    metrics: dict = {"seconds": seconds, "convex": convex}
    print(f"convexity over a {grid}^3 grid of (w1, w2, b) around the minimum +- "
          f"{GRID_HALF_WIDTH:g} and {lines} random chords (float64):")  # fmt: skip
    for label, c in convex.items():
        print(f"  {label:<28} min Hessian eigenvalue {c['min_eigenvalue']:+.3g} "
              f"(relative {c['min_eigenvalue_relative']:+.2g}), max chord gap "
              f"{c['max_chord_gap']:+.3g}")  # fmt: skip

    # XOR certificates
    solved_idx = np.flatnonzero(solved)
    rise = xor["gaps"].max(1)
    plain_rise = xor["plain_gaps"].max(1)
    metrics["xor"] = {
        "seeds": args.seeds,
        "l2": XOR_L2,
        "solved_seeds": solved_idx,
        "loss": xor["loss"],
        "swapped_loss_difference": np.abs(xor["loss"] - xor["swapped_loss"]),
        "gradient_norm": xor["gradient_norm"],
        "min_eigenvalue_at_minimum": xor["min_eigenvalue"],
        "distance_between_minima": xor["distance"],
        "max_rise_above_chord": rise,
        "max_rise_above_chord_plain_bce": plain_rise,
        "middle_min_eigenvalue": xor["middle_min_eigenvalue"],
        "middle_curvature_along_line": xor["middle_curvature_along_line"],
        "negative_eigenvalue_fraction_on_line": (xor["line_min_eigenvalues"] < 0).mean(1),
    }
    print(f"2-2-1 tanh on XOR (BCE + {XOR_L2:g}/2 |W|^2), {len(solved_idx)}/{args.seeds} seeds "
          "at a certified minimum with 100% accuracy:")  # fmt: skip
    for i in solved_idx:
        print(f"  seed {i}: loss {xor['loss'][i]:.6f} = swapped {xor['swapped_loss'][i]:.6f}, "
              f"|grad| {xor['gradient_norm'][i]:.1e}, min eig {xor['min_eigenvalue'][i]:.3g}; "
              f"line rises {rise[i]:.3f} above the chord (plain BCE {plain_rise[i]:.3f}); "
              f"midpoint min eig {xor['middle_min_eigenvalue'][i]:.3g}")  # fmt: skip

    # one weight
    w = ONE_WEIGHT
    mse_j2, ce_j2 = weight["mse"]["J2"], weight["cross-entropy"]["J2"]
    sig = 1 / (1 + np.exp(-w))
    negative = w[mse_j2 < 0]
    metrics["one_weight"] = {
        "mse_min_J2": float(mse_j2.min()),
        "mse_first_negative_w": float(negative.min()) if negative.size else None,
        "mse_last_nonnegative_w": float(w[mse_j2 >= 0].max()),
        "mse_J_vs_sigmoid_squared": float(np.max(np.abs(weight["mse"]["J"] - sig**2))),
        "ce_min_J2": float(ce_j2.min()),
        "ce_J2_vs_s_1_minus_s": float(np.max(np.abs(ce_j2 - sig * (1 - sig)))),
        "ln2": float(np.log(2)),
    }
    ow = metrics["one_weight"]
    first = ow["mse_first_negative_w"]
    where = "nowhere" if first is None else f"from w = {first:.4f}"
    print(f"one sigmoid weight on (1, 0): MSE J'' min {ow['mse_min_J2']:.4f}, negative {where} "
          f"(ln 2 = {np.log(2):.4f}); CE J'' min {ow['ce_min_J2']:.2e}")  # fmt: skip

    # contours
    perpendicular = np.abs(s["angle_to_gradient"] - 90.0)
    metrics["contours"] = {
        "features": CLASSIFICATION_FEATURES,
        "minimum": s["theta"],
        "samples": len(s["points"]),
        "level_set_crossings": s["crossings"],
        "max_angle_error_deg": float(perpendicular.max()),
        "mean_angle_deg": float(s["angle_to_gradient"].mean()),
        "max_implicit_slope_vs_measured_deg": float(s["implicit_vs_measured"].max()),
        "min_outward_component": float(s["outward"].min()),
        "level_step": s["level_step"],
        "spacing_vs_grad_spearman": spearman(s["spacing"], s["grad_norm"]),
        "spacing_steep_third": s["spacing_steep_third"],
        "spacing_gentle_third": s["spacing_gentle_third"],
        "median_spacing_times_grad_over_step": float(
            np.median(s["spacing"] * s["grad_norm"] / s["level_step"])
        ),
    }
    c = metrics["contours"]
    print(f"contours of BCE over (w1, w2) at {len(s['points'])} points: angle(gradient, "
          f"tangent) 90 +- {c['max_angle_error_deg']:.2g} deg, implicit slope vs level set "
          f"{c['max_implicit_slope_vs_measured_deg']:.2g} deg; spacing vs |grad| Spearman "
          f"{c['spacing_vs_grad_spearman']:.3f}, median spacing steep/gentle third "
          f"{c['spacing_steep_third']:.3g}/{c['spacing_gentle_third']:.3g}")  # fmt: skip

    # learning rates
    rates = {}
    print(f"gradient descent on the slice: L = {s['L']:.4g}, mu = {s['mu']:.4g}, 2/L = "
          f"{2 / s['L']:.4g}; level f - f* <= {LEVEL_FRACTION:g} (f0 - f*)")  # fmt: skip
    for label, r in s["summaries"].items():
        rates[label] = {
            "rate": s["rates"][label],
            "factor_of_2_over_L": RATE_FACTORS[label],
            **{k: v for k, v in r.items() if k != "loss_gap"},
        }
        print(f"  {label:<11} r = {s['rates'][label]:8.4g}: iterations to level "
              f"{never(r['iterations_to_level'])}, steps reversing along the steepest "
              f"direction {r['sign_changes_along_steepest']}/{r['steps_counted']}, final distance "
              f"ratio {r['final_distance_ratio']:.3g}")  # fmt: skip
    sweep, notes = s["sweep"], s["notes_rate"]
    metrics["learning_rates"] = {
        "L": s["L"],
        "mu": s["mu"],
        "two_over_L": 2 / s["L"],
        "condition_number": s["L"] / s["mu"],
        "level_fraction": LEVEL_FRACTION,
        "paths": rates,
        "near_minimum_growth": {"too large": s["near_growth"][0], "above 2/L": s["near_growth"][1]},
        "sweep_factors": SWEEP,
        "sweep_iterations_to_level": [r["iterations_to_level"] for r in sweep],
        "sweep_final_distance_ratio": [r["final_distance_ratio"] for r in sweep],
        "notes_rate": NOTES_RATE,
        "notes_rate_factor_of_2_over_L": NOTES_RATE * s["L"] / 2,
        "notes_rate_iterations_to_level": notes["iterations_to_level"],
        "notes_rate_final_distance_ratio": notes["final_distance_ratio"],
        "linear_regression_L": quad["L"],
        "linear_regression_final_distance_ratio": quad["distance_ratio"],
    }
    print("  sweep r/(2/L): " + ", ".join(
        f"{f:g}: {never(r['iterations_to_level'])}" for f, r in zip(SWEEP, sweep, strict=True)
    ))  # fmt: skip
    print(f"  the notes' r = {NOTES_RATE:g} is {NOTES_RATE * s['L'] / 2:.2g} x 2/L here: "
          f"iterations to level {never(notes['iterations_to_level'])} (of {GD_STEPS})")  # fmt: skip
    print("  linear regression (quadratic) final distance ratio: " + ", ".join(
        f"{f:g}: {d:.2g}" for f, d in zip(SWEEP, quad["distance_ratio"], strict=True)
    ))  # fmt: skip

    checks = _checks(metrics, s, solved_idx)
    return common.finish(args.out, metrics, checks)


def _checks(metrics: dict, s: dict, solved_idx: np.ndarray) -> dict[str, bool]:
    convex, xor, ow = metrics["convex"], metrics["xor"], metrics["one_weight"]
    c, lr = metrics["contours"], metrics["learning_rates"]
    paths = lr["paths"]
    small, good, large, above = (paths[k] for k in RATE_FACTORS)
    below = np.asarray(SWEEP) < 1
    sweep_converged = np.asarray(lr["sweep_final_distance_ratio"]) < CONVERGED
    quad_ratio = np.asarray(lr["linear_regression_final_distance_ratio"])
    solved = list(solved_idx)
    return {
        "logistic and linear regression: Hessian PSD at every grid point (float64)": all(
            v["psd_everywhere"] for v in convex.values()
        ),
        "logistic and linear regression: loss below every random chord": all(
            v["below_chords"] for v in convex.values()
        ),
        "XOR: at least one seed reaches a certified minimum (|grad| < 1e-8, Hessian > 0) "
        "with 100% accuracy": len(solved) > 0,
        "XOR: each minimum and its hidden-unit swap are distinct points of equal loss": all(
            xor["swapped_loss_difference"][i] <= 1e-12 and xor["distance_between_minima"][i] > 1
            for i in solved
        ),
        f"XOR: the line between them rises > {CHORD_MARGIN:g} above the chord (with and "
        "without the l2 term)": all(
            min(xor["max_rise_above_chord"][i], xor["max_rise_above_chord_plain_bce"][i])
            > CHORD_MARGIN
            for i in solved
        ),
        "XOR: a negative Hessian eigenvalue between the minima (curvature along the line < 0)": all(
            xor["middle_min_eigenvalue"][i] <= xor["middle_curvature_along_line"][i] < 0
            for i in solved
        ),
        "one sigmoid weight: MSE J'' < 0 exactly beyond w = ln 2 (non-convex)": (
            ow["mse_min_J2"] < 0
            and ow["mse_first_negative_w"] is not None
            and abs(ow["mse_first_negative_w"] - np.log(2)) <= ONE_WEIGHT[1] - ONE_WEIGHT[0]
            and ow["mse_J_vs_sigmoid_squared"] < 1e-12
        ),
        "one sigmoid weight: CE J'' = s(1 - s) > 0 everywhere (convex)": (
            ow["ce_min_J2"] > 0 and ow["ce_J2_vs_s_1_minus_s"] < 1e-12
        ),
        f"contours: gradient perpendicular to the measured tangent within {MAX_ANGLE_ERROR:g} "
        "deg, and the notes' slope -f_w1/f_w2 matches it": (
            c["max_angle_error_deg"] <= MAX_ANGLE_ERROR
            and c["max_implicit_slope_vs_measured_deg"] <= MAX_ANGLE_ERROR
            and bool(np.all(np.asarray(c["level_set_crossings"]) == 2))
        ),
        "contours: the gradient points away from the minimum at every sampled point": (
            c["min_outward_component"] > 0
        ),
        "contours: lowest value of the slice at its centre (the minimum)": bool(
            s["grid"][2].min() >= s["f_min"] - 1e-12
        ),
        f"contours: spacing shrinks as |grad| grows (Spearman <= {SPACING_CORRELATION:g})": (
            c["spacing_vs_grad_spearman"] <= SPACING_CORRELATION
            and c["spacing_steep_third"] < c["spacing_gentle_third"]
        ),
        "learning rate too small: no side-to-side steps, >= 5x the iterations of 1/L": (
            small["sign_changes_along_steepest"] == 0
            and good["iterations_to_level"] is not None
            and small["iterations_to_level"] is not None
            and small["iterations_to_level"] >= 5 * good["iterations_to_level"]
        ),
        "learning rate 1/L: reaches the level without side-to-side steps": (
            good["iterations_to_level"] is not None and good["sign_changes_along_steepest"] == 0
        ),
        "learning rate too large (< 2/L): jumps side to side on >= 90% of steps, converges": (
            large["reversal_fraction"] >= 0.9 and large["iterations_to_level"] is not None
        ),
        "learning rate above 2/L: never reaches the level; moves away from the minimum": (
            above["iterations_to_level"] is None
            and lr["near_minimum_growth"]["above 2/L"] > 100
            and lr["near_minimum_growth"]["too large"] < 1
        ),
        "sweep: gradient descent converges exactly when r < 2/L (logistic regression)": bool(
            np.all(sweep_converged == below)
        ),
        f"sweep: linear regression converges below 2/L, diverges (x{DIVERGED:g}) above": bool(
            np.all(quad_ratio[below] < CONVERGED) and np.all(quad_ratio[~below] > DIVERGED)
        ),
    }


if __name__ == "__main__":
    common.exit_code(main())
