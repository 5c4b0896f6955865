"""Gradient checking: a hand-written gradient against jax.grad and central differences.

Point it at your own code: ``check(loss_fn, params, grads)`` compares any gradient pytree
with ``jax.grad(loss_fn)`` and with finite differences, and reports per leaf
(``[1]['b']``: layer 1's bias) the relative error max|manual - ref| / max|ref| and the
worst element. Finite differences skip elements sitting on a kink (ReLU at 0, a maxout
tie), detected when the one-sided slopes disagree. Stochastic code must use the same key
on every evaluation (close over it). Run checks in float64: ``check_network`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


@dataclass(frozen=True)
class LeafError:
    """One leaf's comparison: where, how far off, and at which element."""

    path: str
    rel_error: float
    worst_index: tuple[int, ...]
    manual: float
    reference: float
    checked: int  # elements compared
    kinks: int = 0  # elements skipped because they sit on a kink


@dataclass(frozen=True)
class Report:
    """Per-leaf errors of ``manual`` against one reference, with a tolerance."""

    reference: str
    leaves: list[LeafError]
    tol: float

    @property
    def failures(self) -> list[LeafError]:
        return [leaf for leaf in self.leaves if not leaf.rel_error <= self.tol]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def worst(self) -> LeafError:
        return max(self.leaves, key=lambda leaf: np.nan_to_num(leaf.rel_error, nan=np.inf))

    def __str__(self) -> str:
        lines = [f"manual vs {self.reference} (tol {self.tol:.0e})"]
        for leaf in self.leaves:
            flag = "ok  " if leaf.rel_error <= self.tol else "FAIL"
            kinks = f", {leaf.kinks} at kinks skipped" if leaf.kinks else ""
            lines.append(
                f"  {flag} {leaf.path:<16} rel err {leaf.rel_error:.2e}  worst at "
                f"{leaf.worst_index}: {leaf.manual:.6g} vs {leaf.reference:.6g} "
                f"({leaf.checked} checked{kinks})"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class GradCheck:
    """The two comparisons of one gradient: against jax.grad and finite differences."""

    autodiff: Report
    finite_differences: Report | None = None
    reports: list[Report] = field(init=False)

    def __post_init__(self):
        reports = [r for r in (self.autodiff, self.finite_differences) if r is not None]
        object.__setattr__(self, "reports", reports)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def __str__(self) -> str:
        return "\n".join(map(str, self.reports))

    def assert_ok(self) -> None:
        """Raises AssertionError listing every failing leaf of every comparison."""
        if not self.ok:
            raise AssertionError(f"gradient check failed:\n{self}")


def _paths(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _leaf_error(path, manual, ref, mask=None, kinks=0) -> LeafError:
    manual, ref = np.asarray(manual, np.float64), np.asarray(ref, np.float64)
    if manual.shape != ref.shape:
        raise ValueError(f"{path}: manual gradient has shape {manual.shape}, expected {ref.shape}")
    if mask is None:
        mask = np.ones(ref.shape, bool)
    diff = np.where(mask, np.abs(manual - ref), 0.0)
    if np.isnan(manual[mask]).any() or np.isnan(ref[mask]).any():
        diff = np.where(mask & (np.isnan(manual) | np.isnan(ref)), np.inf, diff)
    scale = max(np.max(np.abs(ref[mask]), initial=0.0), np.max(np.abs(manual[mask]), initial=0.0))
    flat = int(np.argmax(diff)) if diff.size else 0
    worst = np.unravel_index(flat, ref.shape) if ref.ndim else ()
    worst_diff = float(diff.flat[flat]) if diff.size else 0.0
    rel = worst_diff / scale if scale > 0 else (0.0 if worst_diff == 0 else np.inf)
    return LeafError(
        path,
        float(rel),
        tuple(int(i) for i in worst),
        float(manual[worst]) if ref.ndim else float(manual),
        float(ref[worst]) if ref.ndim else float(ref),
        int(mask.sum()),
        kinks,
    )


def compare(manual, reference, *, tol: float = 1e-7, name: str = "reference") -> Report:
    """Per-leaf relative error of gradient tree ``manual`` against ``reference``."""
    m_def, r_def = jax.tree.structure(manual), jax.tree.structure(reference)
    if m_def != r_def:
        raise ValueError(f"manual: expected a tree shaped like {r_def}, got {m_def}")
    leaves = [
        _leaf_error(path, m, r)
        for path, m, r in zip(
            _paths(reference), jax.tree.leaves(manual), jax.tree.leaves(reference), strict=True
        )
    ]
    return Report(name, leaves, tol)


def finite_differences(
    loss_fn: Callable, params, *, eps: float = 1e-6, max_elements: int = 2048, seed: int = 0
):
    """Central differences (f(p + eps e_i) - f(p - eps e_i)) / 2 eps for sampled elements i.

    Returns ``(estimate, checked, kink)``: three trees shaped like ``params``; elements not
    sampled are 0 in ``estimate`` and False in ``checked``. An element is a kink when its
    forward and backward one-sided slopes disagree beyond what curvature explains.
    """
    flat, unravel = ravel_pytree(params)
    n = flat.size
    rng = np.random.default_rng(seed)
    idx = np.arange(n) if n <= max_elements else np.sort(rng.choice(n, max_elements, False))
    f = jax.jit(lambda v: loss_fn(unravel(v)))
    f0 = f(flat)

    def shifted(i):
        e = jnp.zeros_like(flat).at[i].set(eps)
        return jnp.stack([f(flat + e), f(flat - e)])

    values = np.asarray(jax.lax.map(shifted, jnp.asarray(idx), batch_size=64))
    plus, minus = values[:, 0], values[:, 1]
    forward, backward = (plus - f0) / eps, (f0 - minus) / eps
    central = (plus - minus) / (2 * eps)
    scale = max(np.max(np.abs(central), initial=0.0), 1e-12)
    kink = np.abs(forward - backward) > 1e-3 * np.maximum(np.abs(central), scale)

    def scatter(values, dtype):
        out = np.zeros(n, dtype)
        out[idx] = values
        return _unravel_numpy(out, params)

    return scatter(central, np.float64), scatter(True, bool), scatter(kink, bool)


def _unravel_numpy(flat: np.ndarray, like):
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        size = int(np.size(leaf))
        out.append(flat[start : start + size].reshape(np.shape(leaf)))
        start += size
    return jax.tree.unflatten(treedef, out)


def check(
    loss_fn: Callable,
    params,
    grads,
    *,
    tol: float = 1e-7,
    fd_tol: float = 1e-5,
    eps: float = 1e-6,
    finite_diff: bool = True,
    max_elements: int = 2048,
) -> GradCheck:
    """Compares ``grads`` with jax.grad(loss_fn)(params) and with central differences."""
    auto = compare(grads, jax.grad(loss_fn)(params), tol=tol, name="jax.grad")
    if not finite_diff:
        return GradCheck(auto)
    estimate, checked, kink = finite_differences(
        loss_fn, params, eps=eps, max_elements=max_elements
    )
    leaves = []
    for path, g, e, c, k in zip(
        _paths(params),
        jax.tree.leaves(grads),
        jax.tree.leaves(estimate),
        jax.tree.leaves(checked),
        jax.tree.leaves(kink),
        strict=True,
    ):
        leaves.append(_leaf_error(path, g, e, mask=c & ~k, kinks=int(np.sum(c & k))))
    return GradCheck(auto, Report("finite differences", leaves, fd_tol))


def check_network(net, params, x, y, *, loss, finite_diff: bool = True, **kwargs) -> GradCheck:
    """Manual backprop of ``net`` vs jax.grad vs finite differences, all in float64.

    ``kwargs`` go to ``net.loss`` (state, key, train, sample_weight, l1, l2); a key makes
    every evaluation draw the same dropout masks / RReLU slopes.
    """
    with jax.enable_x64(True):
        to64 = lambda t: jax.tree.map(  # noqa: E731
            lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            t,
        )
        params, x = to64(params), jnp.asarray(x, jnp.float64)
        y = jnp.asarray(y) if jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer) else to64(y)
        if kwargs.get("state") is not None:
            kwargs["state"] = to64(kwargs["state"])
        loss_fn = lambda p: net.loss(p, x, y, loss=loss, **kwargs)  # noqa: E731
        grads = net.manual_grad(params, x, y, loss=loss, **kwargs)
        return check(loss_fn, params, grads, finite_diff=finite_diff)


def check_derivative(fn: Callable, derivative: Callable, z, *, tol: float = 1e-10) -> Report:
    """An element-wise derivative ``derivative(z) -> g'(z)`` against jax.grad of ``fn``."""
    with jax.enable_x64(True):
        z = jnp.asarray(z, jnp.float64)
        ref = jax.vmap(jax.grad(fn))(z.ravel()).reshape(z.shape)
        return Report("jax.grad", [_leaf_error("g'(z)", derivative(z), ref)], tol)


def check_vjp(fn: Callable, vjp: Callable, z, cotangent, *, tol: float = 1e-10) -> Report:
    """A hand-written vector-Jacobian product ``vjp(z, ct)`` against jax.vjp of ``fn``."""
    with jax.enable_x64(True):
        z, ct = jnp.asarray(z, jnp.float64), jnp.asarray(cotangent, jnp.float64)
        ref = jax.vjp(fn, z)[1](ct)[0]
        return Report("jax.vjp", [_leaf_error("vjp", vjp(z, ct), ref)], tol)
