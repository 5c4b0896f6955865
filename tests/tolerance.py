"""Tolerances for comparing two different computations of the same value.

Two programs that compute the same float32 numbers in another order (a jitted epoch against
eager steps, a fused kernel against an unfused one) agree only to rounding, and rounding
differs between CPUs and XLA's fusion choices. The tolerance is derived from the dtype's
epsilon: ``ulps`` units of the leaf's largest magnitude, so that elements near zero are not
held to a relative bound they cannot meet.
"""

from __future__ import annotations

import jax
import numpy as np


def assert_rounding_close(actual, desired, ulps: float = 64) -> None:
    """Every leaf of ``actual`` within ``ulps`` x eps x max|desired leaf| of ``desired``, eps
    being the coarser of the two dtypes' (float32 against a float64 reference: float32's)."""
    a_leaves, a_tree = jax.tree.flatten(actual)
    d_leaves, d_tree = jax.tree.flatten(desired)
    assert a_tree == d_tree, f"structures differ: {a_tree} vs {d_tree}"
    for i, (a, d) in enumerate(zip(a_leaves, d_leaves, strict=True)):
        a, d = np.asarray(a), np.asarray(d)
        assert a.shape == d.shape, f"leaf {i}: shape {a.shape} vs {d.shape}"
        floats = [x.dtype for x in (a, d) if np.issubdtype(x.dtype, np.floating)]
        eps = max((float(np.finfo(t).eps) for t in floats), default=0.0)  # the coarser one
        scale = float(np.max(np.abs(d))) if d.size else 0.0
        np.testing.assert_allclose(a, d, rtol=0, atol=ulps * eps * scale, err_msg=f"leaf {i}")
