"""One piece at a time: a gradient, an activation, a loss or a layer against jax.grad/jax.vjp
and central differences, in float64 on the CPU."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import activations as _activations
from nnfun import losses as _losses
from nnfun.gradcheck import errors, finite
from nnfun.layers import Layer

FD_TOL = 1e-5  # central differences with h = 1e-6 in float64 agree to ~1e-9 on smooth f


def finite_differences(
    loss_fn: Callable,
    params,
    *,
    eps: float = 1e-6,
    max_elements: int = 2048,
    min_per_leaf: int = 4,
    seed: int = 0,
    tol: float = FD_TOL,
):
    """Central differences (f(p + eps e_i) - f(p - eps e_i)) / 2 eps for sampled elements i.

    Returns ``(estimate, checked, kink)``: NumPy trees shaped like ``params``; elements not
    sampled are 0 in ``estimate`` and False in both masks. About ``max_elements`` are
    sampled, at least ``min_per_leaf`` per leaf; ``checked`` are those off a kink. Runs in
    float64 on the CPU (``params`` are promoted).
    """
    with errors.cpu64():
        est = finite.estimate(
            loss_fn,
            errors.to_cpu64(jax.tree.map(jnp.asarray, params)),
            eps=eps,
            tol=tol,
            max_elements=max_elements,
            min_per_leaf=min_per_leaf,
            seed=seed,
        )
    return est.central, est.checked, est.kink


def check(
    loss_fn: Callable,
    params,
    grads,
    *,
    tol: float | None = None,
    fd_tol: float = FD_TOL,
    eps: float = 1e-6,
    finite_diff: bool = True,
    max_elements: int = 2048,
    seed: int = 0,
) -> errors.GradCheck:
    """Compares ``grads`` with jax.grad(loss_fn)(params) and with central differences.

    ``params`` are promoted to float64 on the CPU, so ``loss_fn`` must follow its inputs'
    dtype. ``tol`` defaults to ``tolerance`` of ``grads``' dtype (float32 gradients are held
    to float32 accuracy); ``fd_tol`` is raised to it too.
    """
    with errors.cpu64():
        params = errors.to_cpu64(jax.tree.map(jnp.asarray, params))
        names = errors.paths(params)
        grad_leaves = [jnp.asarray(g) for g in jax.tree.leaves(grads)]
        if jax.tree.structure(grads) != jax.tree.structure(params):
            raise ValueError(
                f"grads: expected a tree shaped like params, {jax.tree.structure(params)}, "
                f"got {jax.tree.structure(grads)}"
            )
        reference = jax.grad(loss_fn)(params)
        auto = errors.compare_leaves(
            names, grad_leaves, jax.tree.leaves(reference), tol=tol, name="jax.grad",
            shapes="report",
        )  # fmt: skip
        if not finite_diff:
            return errors.GradCheck(auto)
        fd_tol = max(fd_tol, errors.tolerance(errors.least_precise(*grad_leaves)))
        est = finite.estimate(
            loss_fn, params, eps=eps, tol=fd_tol, max_elements=max_elements, seed=seed
        )
        fd = finite.compare(names, grad_leaves, est, tol=fd_tol, shapes="report")
        return errors.GradCheck(auto, fd)


def _call_derivative(derivative: Callable, z, a):
    """``derivative(z, a)`` like an Activation's, or ``derivative(z)``."""
    try:
        params = inspect.signature(derivative).parameters.values()
        required = [
            p for p in params
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]  # fmt: skip
        takes_a = len(required) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):  # no signature (some builtins): try both
        try:
            return derivative(z, a)
        except TypeError:
            return derivative(z)
    return derivative(z, a) if takes_a else derivative(z)


def _kinks(fn: Callable, z, eps: float, tol: float):
    """Element-wise one-sided slopes of an element-wise ``fn`` and which elements are kinks
    (see ``finite``): returns ``(central, left, right, kink)``."""
    h = eps * jnp.maximum(1.0, jnp.abs(z))
    f0, fp, fm, fp2, fm2 = (fn(z + s * h) for s in (0, 1, -1, 2, -2))
    central, left, right = (fp - fm) / (2 * h), (f0 - fm) / h, (fp - f0) / h
    jump = jnp.abs((fp2 - 2 * f0 + fm2) / (2 * h) - 2 * (fp - 2 * f0 + fm) / h)
    noise = finite._NOISE_ULPS * jnp.finfo(jnp.float64).eps * jnp.maximum(jnp.abs(f0), 1) / h
    scale = jnp.maximum(jnp.abs(central), noise / tol)
    return central, left, right, jump > 0.5 * tol * scale


def check_derivative(
    fn: Callable, derivative: Callable, z, *, tol: float = 1e-10, eps: float = 1e-6
) -> errors.Report:
    """An element-wise derivative ``derivative(z, a)`` (or ``derivative(z)``) -> g'(z) against
    jax.grad of ``fn``; elements on a kink are skipped and counted (see ``check_activation``
    for the check there)."""
    with errors.cpu64():
        z = errors.to_cpu64(jnp.asarray(z))
        manual = jnp.asarray(_call_derivative(derivative, z, fn(z)), jnp.float64)
        ref = jax.vmap(jax.grad(fn))(z.ravel()).reshape(z.shape)
        _, left, right, kink = _kinks(fn, z, eps, FD_TOL)
        return errors.compare_leaves(
            ["g'(z)"], [manual], [ref], tol=tol, name="jax.grad", masks=[~kink],
            kinks=[int(kink.sum())],
        )  # fmt: skip


def _between(manual, left, right, kink) -> errors.LeafError:
    """At a kink any value between the one-sided slopes is a valid (sub)derivative; the error
    is the distance outside [lo, hi] relative to the largest one-sided slope there."""
    lo, hi = jnp.minimum(left, right), jnp.maximum(left, right)
    scale = jnp.max(jnp.where(kink, jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 0))
    outside = jnp.where(kink, jnp.maximum(lo - manual, manual - hi), -jnp.inf)
    worst = np.unravel_index(int(jnp.argmax(outside)), manual.shape) if manual.ndim else ()
    err = max(float(jnp.max(outside)), 0.0) / max(float(scale), 1e-300)
    return errors.LeafError(
        "g'(z) at kinks, within the one-sided slopes",
        err,
        tuple(int(i) for i in worst),
        float(manual[worst]),
        float(left[worst]),
        int(kink.sum()),
        size=int(kink.sum()),
    )


def check_vjp(fn: Callable, vjp: Callable, z, cotangent, *, tol: float = 1e-10) -> errors.Report:
    """A hand-written vector-Jacobian product ``vjp(z, ct)`` against jax.vjp of ``fn``."""
    with errors.cpu64():
        z, ct = errors.to_cpu64((jnp.asarray(z), jnp.asarray(cotangent)))
        ref = jax.vjp(fn, z)[1](ct)[0]
        return errors.compare_leaves(["vjp"], [vjp(z, ct)], [ref], tol=tol, name="jax.vjp")


def check_activation(
    act: str | _activations.Activation, z=None, *, tol: float = 1e-10, seed: int = 0
) -> errors.GradCheck:
    """An activation's ``derivative(z, a)`` and ``vjp(z, a, da)`` against jax.grad/jax.vjp of
    its ``fn`` and against central differences, in float64. Kinks (ReLU at 0, ...) are
    skipped from the comparisons, where g'(z) must lie between the one-sided slopes.

    ``z`` defaults to a (9, 9) grid: -5..5 in steps of 0.25 (0 included) and normals.
    """
    act = _activations.get(act)
    rng = np.random.default_rng(seed)
    if z is None:
        grid = np.linspace(-5.0, 5.0, 41)
        z = np.concatenate([grid, 3 * rng.normal(size=81 - grid.size)]).reshape(9, 9)
    with errors.cpu64():
        z = errors.to_cpu64(jnp.asarray(z))
        a = act.fn(z)
        da = jnp.asarray(rng.normal(size=z.shape))
        ref_vjp = jax.vjp(act.fn, z)[1](da)[0]
        man_vjp = act.vjp(z, a, da)
        if act.derivative is None:  # not element-wise (softmax): its vjp only
            auto = errors.compare_leaves(["vjp"], [man_vjp], [ref_vjp], tol=tol, name="jax.vjp")
            fd_fn = lambda v: jnp.sum(da * act.fn(v))  # noqa: E731
            est = finite.estimate(fd_fn, z, tol=FD_TOL)
            return errors.GradCheck(auto, finite.compare(["vjp"], [man_vjp], est, tol=FD_TOL))
        central, left, right, kink = _kinks(act.fn, z, 1e-6, FD_TOL)
        manual = jnp.asarray(_call_derivative(act.derivative, z, a), jnp.float64)
        ref = jax.vmap(jax.grad(act.fn))(z.ravel()).reshape(z.shape)
        n_kinks = int(kink.sum())
        auto = errors.compare_leaves(
            ["g'(z)", "vjp"], [manual, man_vjp], [ref, ref_vjp], tol=tol, name="jax.grad",
            masks=[~kink, ~kink], kinks=[n_kinks, n_kinks],
        )  # fmt: skip
        fd = errors.compare_leaves(
            ["g'(z)"], [manual], [central], tol=FD_TOL, name="finite differences",
            masks=[~kink], kinks=[n_kinks],
        )  # fmt: skip
        if n_kinks:
            at_kinks = _between(manual, left, right, kink)
            fd = errors.Report(fd.reference, [*fd.leaves, at_kinks], fd.tol)
        return errors.GradCheck(auto, fd)


def check_loss(
    loss: str | _losses.Loss, pred, y, sample_weight=None, *, tol: float = 1e-10
) -> errors.GradCheck:
    """A loss's hand-written ``grad`` through ``losses.gradient`` (dJ/dpred of the weighted
    batch mean) against jax.grad of ``losses.value`` and central differences, in float64."""
    loss = _losses.get(loss)
    with errors.cpu64():
        w = None if sample_weight is None else jnp.asarray(sample_weight)
        pred, y, w = errors.to_cpu64((jnp.asarray(pred), jnp.asarray(y), w))
        value = lambda p: _losses.value(loss, p, y, w)  # noqa: E731
        manual = _losses.gradient(loss, pred, y, w)
        names = [f"{loss.name}: dJ/dpred"]
        auto = errors.compare_leaves(
            names, [manual], [jax.grad(value)(pred)], tol=tol, name="jax.grad", shapes="report"
        )
        est = finite.estimate(value, pred, tol=FD_TOL)
        fd = finite.compare(names, [manual], est, tol=FD_TOL, shapes="report")
        return errors.GradCheck(auto, fd)


def check_layer(
    layer: Layer,
    in_shape: int | tuple[int, ...] | None = None,
    *,
    batch: int = 5,
    train: bool | None = None,
    seed: int = 0,
    tol: float = 1e-10,
    finite_diff: bool = True,
) -> errors.GradCheck:
    """A layer's ``backward(params, cache, dy)`` against jax.vjp of its ``forward`` for a random
    dy, both the parameter gradients and dx, in training and evaluation mode (or ``train``):
    leaves named ``train ...`` are training mode's (BatchNorm's batch statistics, dropout
    drawn from a fixed key), ``eval ...`` evaluation mode's (running statistics, no dropout).

    ``in_shape`` is the per-sample input shape (default ``(input_dim,)`` or ``(4,)``); params
    come from ``layer.init`` and x from a normal distribution, all float64 on the CPU. With
    ``finite_diff`` the same vjp is also checked by central differences of sum(dy * y).
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"layer: expected an nnfun Layer instance such as Dense(3), got {layer!r}")
    if in_shape is None:
        in_shape = (layer.input_dim or 4,)
    in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
    modes = (True, False) if train is None else (bool(train),)
    keys = jax.random.split(jax.random.key(seed), 3)
    rng = np.random.default_rng(seed)
    with errors.cpu64():
        params = layer.init(keys[0], in_shape, jnp.float64)
        state = layer.init_state(in_shape, jnp.float64)
        x = jnp.asarray(rng.normal(size=(batch, *in_shape)))
        names, manual, reference, fds = [], [], [], []
        for mode in modes:
            label = "train" if mode else "eval"

            def forward(p, v, mode=mode):
                return layer.forward(p, state, v, key=keys[1], train=mode)

            y, _, cache = forward(params, x)
            dy = jnp.asarray(rng.normal(size=np.shape(y)))
            dparams, dx = layer.backward(params, cache, dy)
            _, vjp = jax.vjp(lambda p, v: forward(p, v)[0], params, x)
            ref_params, ref_dx = vjp(dy)
            if jax.tree.structure(dparams) != jax.tree.structure(params):
                raise ValueError(
                    f"{layer}.backward: expected parameter gradients shaped like params, "
                    f"{jax.tree.structure(params)}, got {jax.tree.structure(dparams)}"
                )
            leaf_names = [f"{label} {p}" for p in errors.paths(params)] + [f"{label} dx"]
            names += leaf_names
            manual += [*jax.tree.leaves(dparams), dx]
            reference += [*jax.tree.leaves(ref_params), ref_dx]
            if finite_diff:
                inner = lambda t, forward=forward, dy=dy: jnp.sum(dy * forward(*t)[0])  # noqa: E731
                est = finite.estimate(inner, (params, x), tol=FD_TOL, seed=seed)
                grads = [*jax.tree.leaves(dparams), dx]
                fds.append(finite.compare(leaf_names, grads, est, tol=FD_TOL, shapes="report"))
        auto = errors.compare_leaves(
            names, manual, reference, tol=tol, name="jax.vjp", shapes="report"
        )
        fd = None
        if fds:
            fd = errors.Report("finite differences", [l for r in fds for l in r.leaves], FD_TOL)
        return errors.GradCheck(auto, fd)
