"""The error measure and its reports: per-leaf relative error with an absolute floor.

For a leaf with manual gradient m and reference r the error is
    max|m - r| / max(max|m|, max|r|, floor(dtype) * max over all leaves of |r|),
so a leaf whose true gradient is 0 passes on rounding noise (up to ~1000 ulps of the
gradient's overall size) while a leaf of ordinary size is measured relative to itself.
A leaf passes when its error is at most ``tolerance(dtype)``, sqrt(eps) of the least
precise dtype compared: half the significant digits must agree.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def tolerance(dtype) -> float:
    """The tolerance ``compare`` uses for gradients in ``dtype``: sqrt(eps).

    float64 1.5e-8, float32 3.5e-4, bfloat16 8.8e-2. A plain Python float, so it can be
    used inside ``jit``.
    """
    return float(np.sqrt(_eps(dtype)))


def floor(dtype) -> float:
    """The absolute floor as a fraction of the gradient's overall size: 1000 sqrt(eps)
    (at most 1), so that rounding noise of 1000 ulps stays within ``tolerance(dtype)``."""
    return min(1.0, 1e3 * float(np.sqrt(_eps(dtype))))


def _eps(dtype) -> float:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype such as float32, got {dtype}")
    return float(jnp.finfo(dtype).eps)


def least_precise(*arrays) -> np.dtype:
    """The floating dtype with the largest eps among ``arrays`` (float32 if none float)."""
    dtypes = [jnp.dtype(a.dtype) for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    return max(dtypes, key=_eps) if dtypes else jnp.dtype(jnp.float32)


def leaf_errors(manual, reference) -> Array:
    """The error of every leaf of ``manual`` against ``reference``: shape (n_leaves,).

    Jittable (no Python control flow on values), in the leaves' own precision, in
    ``jax.tree.leaves`` order; NaN or inf anywhere in a leaf gives inf. Compare the result
    with ``tolerance(dtype)``.
    """
    return _errors(*_matching_leaves(manual, reference))


def _matching_leaves(manual, reference):
    m_def, r_def = jax.tree.structure(manual), jax.tree.structure(reference)
    if m_def != r_def:
        raise ValueError(f"manual: expected a tree shaped like {r_def}, got {m_def}")
    m_leaves, r_leaves = jax.tree.leaves(manual), jax.tree.leaves(reference)
    for path, m, r in zip(paths(reference), m_leaves, r_leaves, strict=True):
        if np.shape(m) != np.shape(r):
            raise ValueError(
                f"{path}: manual gradient has shape {np.shape(m)}, expected {np.shape(r)}"
            )
    return [jnp.asarray(m) for m in m_leaves], [jnp.asarray(r) for r in r_leaves]


def _errors(m_leaves, r_leaves, masks=None, min_scales=None, xp=jnp) -> Array:
    """Per-leaf errors; ``masks`` select the elements compared, ``min_scales`` raise each
    leaf's denominator (the finite-difference noise floor). ``xp`` is jax.numpy inside jit
    (in the leaves' precision) or NumPy on the host (float64, nothing to compile)."""
    if not r_leaves:
        return xp.zeros((0,))
    dtype = least_precise(*m_leaves, *r_leaves)
    compute = np.float64 if xp is np else jnp.result_type(*m_leaves, *r_leaves, jnp.float32)
    masks = [xp.ones(np.shape(r), bool) for r in r_leaves] if masks is None else masks
    diffs, scales, refs, bad = [], [], [], []
    for m, r, mask in zip(m_leaves, r_leaves, masks, strict=True):
        m, r = xp.asarray(m).astype(compute), xp.asarray(r).astype(compute)
        diff = xp.where(mask, xp.abs(m - r), 0)
        diffs.append(xp.max(diff, initial=0))
        ref = xp.max(xp.where(mask, xp.abs(r), 0), initial=0)
        refs.append(ref)
        scales.append(xp.maximum(ref, xp.max(xp.where(mask, xp.abs(m), 0), initial=0)))
        bad.append(xp.any(mask & ~(xp.isfinite(m) & xp.isfinite(r))))
    diffs, scales, bad = xp.stack(diffs), xp.stack(scales), xp.stack(bad)
    overall = xp.max(xp.stack(refs))
    denom = xp.maximum(scales, floor(dtype) * overall)
    if min_scales is not None:
        denom = xp.maximum(denom, xp.asarray(min_scales, compute))
    safe = xp.where(denom > 0, denom, 1)
    err = xp.where(denom > 0, diffs / safe, xp.where(diffs == 0, 0.0, xp.inf))
    return xp.where(bad | xp.isnan(err), xp.inf, err)


def paths(tree) -> list[str]:
    """Leaf paths in ``jax.tree.leaves`` order: ``"[1]['W']"`` is layer 1's weight."""
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def leaf_names(params, net=None) -> list[str]:
    """Readable leaf names: ``"params[1]['W'] (layer 1, Dense(3, tanh))"`` given the network,
    else the plain paths ``"[1]['W']"``."""
    names = paths(params)
    if net is None:
        return names
    out = []
    for name in names:
        layer = layer_of(name)
        where = "" if layer is None else f" (layer {layer}, {net.layers[layer]})"
        out.append(f"params{name}{where}")
    return out


def layer_of(path: str) -> int | None:
    """The layer index a leaf path such as ``"[1]['W']"`` starts with, if any."""
    found = re.match(r"\[(\d+)\]", path)
    return int(found.group(1)) if found else None


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
    size: int = -1  # elements in the leaf (-1: unknown)
    note: str = ""  # why the leaf fails beyond its numbers (a wrong shape)

    def passes(self, tol: float) -> bool:
        """Within ``tol``, and never ``ok`` on a non-empty leaf of which nothing was sampled."""
        sampled = self.checked + self.kinks > 0 or self.size == 0
        return bool(self.rel_error <= tol) and sampled and not self.note


@dataclass(frozen=True)
class Report:
    """Per-leaf errors of ``manual`` against one reference, with a tolerance."""

    reference: str
    leaves: list[LeafError]
    tol: float

    @property
    def failures(self) -> list[LeafError]:
        return [leaf for leaf in self.leaves if not leaf.passes(self.tol)]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def worst(self) -> LeafError:
        return max(self.leaves, key=lambda leaf: np.nan_to_num(leaf.rel_error, nan=np.inf))

    def lines(self, blame=lambda leaf: "") -> list[str]:
        """One line per leaf; ``blame(leaf)`` may append a note to a failing leaf."""
        width = max([0, *(len(leaf.path) for leaf in self.leaves)])
        out = []
        for leaf in self.leaves:
            ok = leaf.passes(self.tol)
            kinks = f", {leaf.kinks} at kinks skipped" if leaf.kinks else ""
            text = f"  {'ok  ' if ok else 'FAIL'} {leaf.path:<{width}} rel err {leaf.rel_error:.2e}"
            if leaf.note:
                text += f"  {leaf.note}"
            elif leaf.checked:
                text += (
                    f"  worst at {leaf.worst_index}: manual {leaf.manual:.6g} vs "
                    f"{self.reference} {leaf.reference:.6g}"
                )
            of, sample = "", ""
            if 0 <= leaf.checked + leaf.kinks < leaf.size:  # finite differences' sample
                of, sample = f" of {leaf.size}", ", a random sample"
            text += f" ({leaf.checked}{of} checked{kinks}{sample})"
            out.append(text + ("" if ok else blame(leaf)))
        return out

    def header(self) -> str:
        """``manual vs jax.grad (tol 3.5e-04, float32's sqrt(eps))``."""
        return f"manual vs {self.reference} (tol {tolerance_text(self.tol)})"

    def __str__(self) -> str:
        return "\n".join([self.header(), *self.lines()])


def tolerance_text(tol: float) -> str:
    """``3.5e-04, float32's sqrt(eps)`` when ``tol`` is a dtype's tolerance, else ``1.0e-05``."""
    for dtype in ("float64", "float32", "bfloat16", "float16"):
        if tol == tolerance(dtype):
            return f"{tol:.1e}, {dtype}'s sqrt(eps)"
    return f"{tol:.1e}"


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


def compare(manual, reference, *, tol: float | None = None, name: str = "reference") -> Report:
    """Per-leaf error of gradient tree ``manual`` against ``reference`` (see module doc).

    ``tol`` defaults to ``tolerance`` of the least precise dtype compared, so float32
    gradients are held to float32 accuracy, never silently to float64's.
    """
    m_leaves, r_leaves = _matching_leaves(manual, reference)
    return compare_leaves(paths(reference), m_leaves, r_leaves, tol=tol, name=name)


def compare_leaves(
    names, m_leaves, r_leaves, *, tol=None, name="reference", masks=None, kinks=None,
    min_scales=None, shapes="raise",
) -> Report:  # fmt: skip
    """``compare`` on flat lists of leaves with their names; ``masks`` choose the elements
    compared and ``kinks`` count those skipped. ``shapes="report"`` turns a wrong shape
    into a failing leaf instead of an error."""
    m_leaves = [jnp.asarray(m) for m in m_leaves]
    r_leaves = [jnp.asarray(r) for r in r_leaves]
    if tol is None:
        tol = tolerance(least_precise(*m_leaves, *r_leaves))
    wrong = [np.shape(m) != np.shape(r) for m, r in zip(m_leaves, r_leaves, strict=True)]
    for path, m, r, bad in zip(names, m_leaves, r_leaves, wrong, strict=True):
        if bad and shapes == "raise":
            raise ValueError(
                f"{path}: manual gradient has shape {np.shape(m)}, expected {np.shape(r)}"
            )
    if masks is None:
        masks = [np.ones(np.shape(r), bool) for r in r_leaves]
    # A wrong-shaped leaf is measured as all zeros, then failed by its note.
    m_fixed = [
        jnp.zeros_like(r) if bad else m for m, r, bad in zip(m_leaves, r_leaves, wrong, strict=True)
    ]
    host = [np.asarray(a) for a in m_fixed], [np.asarray(a) for a in r_leaves]
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: caught as a bad leaf
        errors = _errors(*host, [np.asarray(k) for k in masks], min_scales, xp=np)
    leaves = []
    for i, (path, m, r, mask) in enumerate(zip(names, m_fixed, r_leaves, masks, strict=True)):
        m, r, mask = np.asarray(m, np.float64), np.asarray(r, np.float64), np.asarray(mask)
        diff = np.where(mask, np.abs(m - r), -1.0)
        diff = np.where(mask & ~(np.isfinite(m) & np.isfinite(r)), np.inf, diff)
        flat = int(np.argmax(diff)) if diff.size else 0
        worst = tuple(int(j) for j in np.unravel_index(flat, r.shape)) if r.size else ()
        note = ""
        if wrong[i]:
            note = f"manual gradient has shape {np.shape(m_leaves[i])}, expected {r.shape}"
        leaves.append(
            LeafError(
                path,
                float(errors[i]),
                worst,
                float(m[worst]) if r.size else 0.0,
                float(r[worst]) if r.size else 0.0,
                int(mask.sum()),
                0 if kinks is None else int(kinks[i]),
                int(r.size),
                note,
            )
        )
    return Report(name, leaves, float(tol))


@contextlib.contextmanager
def cpu64():
    """float64 on the CPU backend, whatever the default device (TPUs have no float64)."""
    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        yield


def to_cpu64(tree):
    """Every array leaf moved to the CPU, floating ones as float64 (call inside ``cpu64``)."""
    cpu = jax.devices("cpu")[0]

    def move(a):
        if not isinstance(a, (jax.Array, np.ndarray, np.generic)):
            return a  # Python scalars (l1=0.01, train=True) stay as they are
        if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.device_put(a, cpu)
        a = jax.device_put(jnp.asarray(a) if not isinstance(a, jax.Array) else a, cpu)
        return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree.map(move, tree)
