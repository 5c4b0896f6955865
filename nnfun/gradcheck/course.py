"""The course's gradient check: its one number, its layout and its loss form.

The course compares a whole gradient with one number,
    difference = ||grad - gradapprox|| / (||grad|| + ||gradapprox||),
    gradapprox_i = (J(theta + epsilon e_i) - J(theta - epsilon e_i)) / (2 epsilon),
with epsilon = 1e-7 and the verdicts "< 1e-7 great, > 2e-7 a mistake". Its last digits
depend on how J rounds: each J carries a rounding error of about ulp(J) (1e-16 for J near
1 in float64), which the division by 2 epsilon turns into about 1e-9 in every gradapprox_i.
Far more where the course's form of the loss computes log(1 - a) with a near 1 (on the
course's data a = 0.9989 for a sample labelled 0: 1 - a keeps 3 digits fewer). A correct
gradient therefore gives a difference of 1e-9 to 1e-7 (rounding noise, not an error: 1.2e-7
on the course's own data in its form, 8.6e-10 from the logits), and a wrong one a value
that two implementations of the same J agree on to 7-9 significant digits only: on the
course's data NumPy gives 0.2850931567761624 (its published value) or 0.2850931567206389
(sum / m instead of 1/m * sum), nnfun 0.2850931565577 from the probabilities and
0.2850931493326 from the logits, the closest to the exact value (0.28509314(9) with a step
of 1e-6, where rounding weighs 10 times less).

Its layout: parameters ``{"W1": (n_1, n_0), "b1": (n_1, 1), ...}``, gradients ``{"dW1", "db1",
...}``, samples as columns (X of shape (n_x, m)). nnfun's: ``[{"W": (n_0, n_1), "b": (n_1,)},
...]`` with ``{}`` for parameter-free layers, samples as rows. ``from_course`` and
``to_course`` convert; ``check_course`` checks a student's NumPy gradients as they are.

Its loss form: the course computes binary cross-entropy from the sigmoid's output a,
-(y log a + (1 - y) log(1 - a)); nnfun computes it from the logits z (the fused, stable
form, log(1 + e^-|z|) + max(z, 0) - y z), which rounds differently. ``unfused(net)`` (and
``fused=False`` in ``check_network``) uses the course's form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nnfun.gradcheck import errors, finite, pieces
from nnfun.network import Network

EPSILON = 1e-7  # the course's step
GREAT, MISTAKE = 1e-7, 2e-7  # the course's verdicts


def difference(
    loss_fn, params, grads, *, epsilon: float = EPSILON, max_elements: int | None = None,
    seed: int = 0,
) -> float:  # fmt: skip
    """The course's difference of ``grads`` against central differences of ``loss_fn`` at
    ``params`` with step ``epsilon``, over every element (or about ``max_elements`` sampled,
    at least 4 per leaf), in float64 on the CPU."""
    with errors.cpu64():
        params = errors.to_cpu64(jax.tree.map(jnp.asarray, params))
        grads = errors.to_cpu64(jax.tree.map(jnp.asarray, grads))
        if jax.tree.structure(grads) != jax.tree.structure(params):
            raise ValueError(
                f"grads: expected a tree shaped like params, {jax.tree.structure(params)}, "
                f"got {jax.tree.structure(grads)}"
            )
        flat, unravel = ravel_pytree(params)
        grad = np.asarray(ravel_pytree(grads)[0], np.float64)
        if grad.shape != flat.shape:
            raise ValueError(f"grads: expected {flat.size} elements like params, got {grad.size}")
        total = int(flat.size)
        if max_elements is None or total <= max_elements:
            idx = np.arange(total)
        else:
            idx = finite.sample(params, max_elements, 4, seed)
        f = jax.jit(jax.vmap(lambda v: loss_fn(unravel(v))))
        values = finite._evaluate(f, flat, idx, epsilon, steps=(1.0, -1.0))
        approx = (values[:, 0] - values[:, 1]) / (2 * epsilon)
        value = formula(grad[idx], approx)
    return value


def formula(grad, gradapprox) -> float:
    """||grad - gradapprox|| / (||grad|| + ||gradapprox||) of two flat arrays (0 if both 0)."""
    grad, gradapprox = np.ravel(grad), np.ravel(gradapprox)
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)
    return float(np.linalg.norm(grad - gradapprox) / denominator) if denominator else 0.0


def readout(value: float) -> str:
    """The difference with the digits it can be trusted to: 6 significant ones for a
    mistake (the loss's rounding, which XLA's fusion choices change, moves the 8th), 2 for
    the rounding noise of a right gradient."""
    return f"{value:.6g}" if value > MISTAKE else f"{value:.2e}"


def verdict(value: float) -> str:
    """The course's reading of its difference."""
    if value < GREAT:
        return "< 1e-7: great, the backward pass is right"
    if value <= MISTAKE:
        return (
            "between 1e-7 and 2e-7: probably right (rounding noise reaches this; try epsilon 1e-6)"
        )
    return "> 2e-7: a mistake in the backward pass"


_NAME = re.compile(r"^(d?)(W|b)(\d+)$")


def from_course(parameters: dict, net=None) -> list[dict]:
    """Course parameters ``{"W1", "b1", ...}`` (or gradients ``{"dW1", "db1", ...}``) as nnfun
    params ``[{"W": W1.T, "b": b1 (flat)}, ...]`` (NumPy, dtypes kept). Given ``net``, a
    ``{}`` goes in for every parameter-free layer and the shapes are checked."""
    found = {}
    for key, value in parameters.items():
        match = _NAME.match(key)
        if match is None:
            raise ValueError(
                f"parameters: expected keys like 'W1', 'b1' (or 'dW1', 'db1'), got {key!r}"
            )
        found[(match.group(2), int(match.group(3)))] = np.asarray(value)
    prefix = "d" if next(iter(parameters), "").startswith("d") else ""
    count = max((number for _, number in found), default=0)
    layers = []
    for number in range(1, count + 1):
        for kind in ("W", "b"):
            if (kind, number) not in found:
                raise ValueError(
                    f"parameters: {prefix}{kind}{number} missing (got {sorted(parameters)})"
                )
        w, b = found[("W", number)], found[("b", number)]
        if w.ndim != 2 or b.size != w.shape[0]:
            raise ValueError(
                f"parameters: {prefix}W{number} (n_l, n_l-1) and {prefix}b{number} (n_l, 1) "
                f"disagree: shapes {w.shape} and {b.shape}"
            )
        layers.append({"W": w.T, "b": b.reshape(-1)})
    if net is None:
        return layers
    expected = jax.eval_shape(lambda: net.init(jax.random.key(0)))
    dense = [i for i, p in enumerate(expected) if p]
    for i in dense:
        if set(expected[i]) != {"W", "b"}:
            raise ValueError(
                f"net: layer {i} ({net.layers[i]}) has parameters {sorted(expected[i])}; the "
                "course's layout holds only W and b"
            )
    if len(dense) != count:
        raise ValueError(
            f"parameters: net has {len(dense)} layers with W and b, got {count} "
            f"({prefix}W1..{prefix}W{count})"
        )
    params = [{} for _ in expected]
    for i, layer in zip(dense, layers, strict=True):
        params[i] = layer
    net.check_params(params)
    return params


def to_course(params, *, gradients: bool = False) -> dict:
    """nnfun params ``[{"W", "b"}, {}, ...]`` as the course's ``{"W1": W.T, "b1": (n, 1),
    ...}`` (``{"dW1", "db1", ...}`` with ``gradients``), numbered over the layers with
    parameters. NumPy arrays."""
    prefix = "d" if gradients else ""
    out, number = {}, 0
    for i, p in enumerate(params):
        if not p:
            continue
        if set(p) != {"W", "b"}:
            raise ValueError(
                f"params[{i}]: the course's layout holds only W and b, got {sorted(p)}"
            )
        number += 1
        w, b = np.asarray(p["W"]), np.asarray(p["b"])
        out[f"{prefix}W{number}"], out[f"{prefix}b{number}"] = w.T, b.reshape(-1, 1)
    return out


def samples_from_course(X, Y=None):
    """The course's samples as columns, X (n_x, m) and Y (n_y, m) or (m,), as nnfun's rows:
    ``(X.T, Y.T)`` (Y (m,) stays)."""
    X = np.asarray(X).T
    if Y is None:
        return X
    Y = np.asarray(Y)
    return X, (Y.T if Y.ndim == 2 else Y)


class _Unfused(Network):
    """The same layers; the loss always computed from the output activation's values."""

    def _fused(self, loss):
        return None


def unfused(net) -> Network:
    """A network of ``net``'s layers whose loss is computed from the output's probabilities
    (the course's log(a), log(1 - a)), never fused with the output activation."""
    return _Unfused(net.layers, input_shape=net.input_shape)


@dataclass(frozen=True)
class CourseCheck(errors.GradCheck):
    """A student's gradients per leaf (named as the course names them) and the course's
    difference."""

    difference: float = float("nan")
    epsilon: float = EPSILON

    def __str__(self) -> str:
        return "\n".join([
            super().__str__(),
            f"difference (epsilon {self.epsilon:g}): {readout(self.difference)}, "
            f"{verdict(self.difference)}",
        ])  # fmt: skip


def check_course(
    net, parameters: dict, gradients: dict, X, Y, *, loss="binary_crossentropy",
    fused: bool = False, epsilon: float = EPSILON, finite_diff: bool = True, **kwargs,
) -> CourseCheck:  # fmt: skip
    """A student's course-layout ``gradients`` of ``net``'s loss at ``parameters`` on the
    samples-as-columns ``X``, ``Y``: per leaf against jax.grad and central differences, and
    the course's difference over every element with step ``epsilon``. The loss is the
    course's unfused form unless ``fused``. ``kwargs`` go to ``net.loss``."""
    net = net if fused else unfused(net)
    params = from_course(parameters, net)
    grads = from_course(gradients, net)
    x, y = samples_from_course(X, Y)
    with errors.cpu64():
        x, y = errors.to_cpu64((jnp.asarray(x), jnp.asarray(y)))
        loss_fn = lambda p: net.loss(p, x, y, loss=loss, **kwargs)  # noqa: E731
        result = pieces.check(loss_fn, params, grads, finite_diff=finite_diff)
        names = {
            path: f"{name} {path}"
            for path, name in zip(errors.paths(params), _course_names(params), strict=True)
        }
        reports = [
            errors.Report(r.reference, [replace(l, path=names[l.path]) for l in r.leaves], r.tol)
            for r in result.reports
        ]
        value = difference(loss_fn, params, grads, epsilon=epsilon)
    return CourseCheck(*reports, difference=value, epsilon=epsilon)


def _course_names(params) -> list[str]:
    """``dW1``, ``db1``, ... in ``jax.tree.leaves`` order (W before b within a layer)."""
    names, number = [], 0
    for p in params:
        if p:
            number += 1
            names += [f"d{key}{number}" for key in sorted(p)]
    return names
