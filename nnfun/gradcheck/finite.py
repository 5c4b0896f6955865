"""Central differences on sampled elements, with kinks detected element by element.

For element i with step h: the central difference (f(p + h e_i) - f(p - h e_i)) / 2h, and
the second differences D(h) = (f(p + h e_i) - 2 f(p) + f(p - h e_i)) / h, which is h f''
where f is smooth but the slope jump J where it has a kink. D(2h) - 2 D(h) is therefore
~h^3 f'''' (nothing) on smooth elements and -J on a kink at p: an element is a kink when that
jump could move the central difference by more than half the tolerance of its leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nnfun.gradcheck import errors

# f(p) is known to ~ulp(f); divided by h that is the noise of every difference quotient.
_NOISE_ULPS = 1e3


class Estimate(NamedTuple):
    """Central differences of sampled elements, per leaf (NumPy trees shaped like params)."""

    central: object  # float64; 0 where not sampled
    checked: object  # bool: sampled and not a kink
    kink: object  # bool: sampled and on a kink
    scales: list[float]  # per leaf: the smallest denominator its error may use


def sample(params, max_elements: int, min_per_leaf: int, seed: int) -> np.ndarray:
    """Flat indices (into ``ravel_pytree(params)``) to check: all of a small tree; of a larger
    one about ``max_elements`` spread over the leaves by size, each leaf at least
    ``min_per_leaf`` (or all of it)."""
    sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(params)]
    total = sum(sizes)
    if total <= max_elements:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    chosen, start = [], 0
    for size in sizes:
        k = min(size, max(min_per_leaf, round(max_elements * size / total)))
        chosen.append(start + np.sort(rng.choice(size, k, replace=False)))
        start += size
    return np.concatenate(chosen) if chosen else np.zeros(0, int)


def estimate(
    loss_fn: Callable,
    params,
    *,
    eps: float = 1e-6,
    tol: float = 1e-5,
    max_elements: int = 2048,
    min_per_leaf: int = 4,
    seed: int = 0,
) -> Estimate:
    """Central differences, what was checked and where the kinks are; ``tol`` is the relative
    accuracy the estimate will be held to (it sets the kink threshold and the noise floor)."""
    flat, unravel = ravel_pytree(params)
    n = flat.size
    idx = sample(params, max_elements, min_per_leaf, seed)
    f = lambda v: loss_fn(unravel(v))  # noqa: E731
    f0 = f(flat)
    if jnp.dtype(f0.dtype) != jnp.float64:
        raise TypeError(
            f"loss_fn: expected a float64 value for float64 params (finite differences need "
            f"it), got {f0.dtype}; do not cast inside loss_fn"
        )
    values = _evaluate(jax.jit(jax.vmap(f)), flat, idx, eps)
    plus, minus, plus2, minus2 = values.T
    f0 = float(f0)
    central = (plus - minus) / (2 * eps)
    jump = np.abs((plus2 - 2 * f0 + minus2) / (2 * eps) - 2 * (plus - 2 * f0 + minus) / eps)

    owner = np.repeat(np.arange(len(jax.tree.leaves(params))), _sizes(params))[idx]
    n_leaves = len(_sizes(params))
    leaf_max = np.zeros(n_leaves)
    np.maximum.at(leaf_max, owner, np.abs(central))
    noise = _NOISE_ULPS * np.finfo(np.float64).eps * max(abs(f0), 1e-300) / eps
    overall = float(leaf_max.max(initial=0.0))
    scales = np.maximum(leaf_max, max(errors.floor(np.float64) * overall, noise / tol))
    kink = jump > 0.5 * tol * scales[owner]

    def scatter(values, dtype):
        out = np.zeros(n, dtype)
        out[idx] = values
        return _unravel_numpy(out, params)

    return Estimate(
        scatter(central, np.float64),
        scatter(~kink, bool),
        scatter(kink, bool),
        [float(s) for s in scales],
    )


def _evaluate(
    batched: Callable, flat, idx: np.ndarray, eps: float, steps=(1.0, -1.0, 2.0, -2.0)
) -> np.ndarray:
    """f at p + s eps e_i for s in ``steps`` and every sampled i: (len(idx), len(steps)).

    In chunks of a fixed number of points (the last one padded), so that ``batched``
    compiles once and memory stays at chunk x n.
    """
    n = flat.size
    k = len(steps)
    steps = np.asarray(steps, np.float64) * eps
    rows = np.repeat(idx, k)
    shifts = np.tile(steps, idx.size)
    needed = 1 << max(int(rows.size) - 1, 0).bit_length()  # the next power of 2
    chunk = int(np.clip(2**22 // max(n, 1), 1, min(256, needed)))
    out = []
    for start in range(0, rows.size, chunk):
        r, s = rows[start : start + chunk], shifts[start : start + chunk]
        pad = chunk - r.size  # a full chunk keeps the shapes, hence the compiled ops, the same
        r, s = np.pad(r, (0, pad)), np.pad(s, (0, pad))
        points = jnp.tile(flat, (chunk, 1)).at[np.arange(chunk), r].add(jnp.asarray(s))
        out.append(np.asarray(batched(points))[: chunk - pad])
    return np.concatenate(out).reshape(-1, k) if out else np.zeros((0, k))


def _sizes(tree) -> list[int]:
    return [int(np.size(leaf)) for leaf in jax.tree.leaves(tree)]


def _unravel_numpy(flat: np.ndarray, like):
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        size = int(np.size(leaf))
        out.append(flat[start : start + size].reshape(np.shape(leaf)))
        start += size
    return jax.tree.unflatten(treedef, out)


def compare(names, grads, est: Estimate, *, tol: float, shapes="raise") -> errors.Report:
    """Each leaf of ``grads`` against the central differences of its non-kink samples."""
    checked, kink = jax.tree.leaves(est.checked), jax.tree.leaves(est.kink)
    sampled = [c | k for c, k in zip(checked, kink, strict=True)]
    return errors.compare_leaves(
        names,
        grads,
        jax.tree.leaves(est.central),
        tol=tol,
        name="finite differences",
        masks=jax.tree.leaves(est.checked),
        kinks=[int(np.sum(k)) for k in jax.tree.leaves(est.kink)],
        min_scales=[s if np.any(m) else 0.0 for s, m in zip(est.scales, sampled, strict=True)],
        shapes=shapes,
    )
