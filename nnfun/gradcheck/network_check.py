"""A network's manual gradient as a whole and layer by layer, with the culprit named.

The whole gradient is compared with jax.grad and central differences; then every piece the
manual backward pass uses is checked on its own, in backprop order: the loss's gradient
(the fused dJ/dz when the output activation and the loss fuse), then each layer's
``backward`` (``backward_affine`` for a fused output layer) against jax.vjp of its
``forward``, on the layer's real input from the forward pass and a random dy. The first
piece that disagrees is the culprit; a wrong dx there makes every layer below it fail in
the whole-network comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import losses as _losses
from nnfun.gradcheck import errors, pieces


@dataclass(frozen=True)
class PieceCheck:
    """One piece of the backward pass against jax.vjp/jax.grad in isolation."""

    layer: int | None  # None for the loss
    name: str  # "layer 1 (Scale)", "loss categorical_crossentropy"
    report: errors.Report

    @property
    def ok(self) -> bool:
        return self.report.ok


@dataclass(frozen=True)
class NetworkCheck(errors.GradCheck):
    """The whole-gradient comparisons plus the layer-by-layer ones (backprop order)."""

    pieces: tuple[PieceCheck, ...] = ()

    @property
    def ok(self) -> bool:
        return super().ok and all(piece.ok for piece in self.pieces)

    @property
    def first_disagreement(self) -> PieceCheck | None:
        """The first piece, in backprop order, whose own backward disagrees."""
        return next((piece for piece in self.pieces if not piece.ok), None)

    def diagnosis(self) -> str:
        """One sentence: where the disagreement starts, or that there is none."""
        first = self.first_disagreement
        if first is None:
            if self.ok:
                return "every piece agrees: no disagreement"
            return (
                "every piece agrees on its own: the disagreement is in how the network joins "
                "them (penalty, loss reduction, fused output)"
            )
        worst = max(first.report.failures, key=lambda leaf: leaf.rel_error)
        text = f"first disagreement: {first.name}: {worst.path}, rel err {worst.rel_error:.1e}"
        if worst.note:
            text += f" ({worst.note})"
        below = first.layer if first.layer is not None else len(self.pieces)
        propagates = first.layer is None or any(leaf.path == "dx" for leaf in first.report.failures)
        inherited = [
            leaf
            for report in self.reports
            for leaf in report.failures
            if (errors.layer_of(leaf.path) is not None and errors.layer_of(leaf.path) < below)
        ]
        if propagates and inherited:
            text += "; the layers below it fail because of it"
        return text

    def __str__(self) -> str:
        first = self.first_disagreement
        lines = []
        for report in self.reports:
            lines.append(f"manual vs {report.reference} (tol {report.tol:.1e})")
            lines += report.lines(lambda leaf: self._blame(leaf, first))
        lines.append("layer by layer, in backprop order (each against jax.vjp on its real input)")
        for piece in self.pieces:
            lines.append(f"  {'ok  ' if piece.ok else 'FAIL'} {piece.name}")
            if not piece.ok:
                lines += ["  " + line for line in piece.report.lines()]
        lines.append(self.diagnosis())
        return "\n".join(lines)

    @staticmethod
    def _blame(leaf: errors.LeafError, first: PieceCheck | None) -> str:
        layer = errors.layer_of(leaf.path)
        if first is None or layer is None:
            return ""
        source = "the loss" if first.layer is None else f"layer {first.layer}"
        if layer == first.layer:
            return f"  <- {source}"
        if first.layer is None or layer < first.layer:
            return f"  <- inherited from {source}"
        return ""


def check_network(
    net,
    params,
    x,
    y,
    *,
    loss,
    finite_diff: bool = True,
    max_elements: int = 2048,
    seed: int = 0,
    **kwargs,
) -> NetworkCheck:
    """Manual backprop of ``net`` vs jax.grad vs finite differences, then layer by layer,
    all in float64 on the CPU.

    ``kwargs`` go to ``net.loss`` (state, key, train, sample_weight, l1, l2); a key makes
    every evaluation draw the same dropout masks / RReLU slopes. ``compute_dtype`` is
    dropped: the check's point is float64.
    """
    kwargs.pop("compute_dtype", None)
    with errors.cpu64():
        params = jax.tree.map(jnp.asarray, params)
        params, x, kwargs = errors.to_cpu64((params, jnp.asarray(x), kwargs))
        y = jnp.asarray(y)
        y = y if jnp.issubdtype(y.dtype, jnp.integer) else errors.to_cpu64(y)
        loss_fn = lambda p: net.loss(p, x, y, loss=loss, **kwargs)  # noqa: E731
        grads = net.manual_grad(params, x, y, loss=loss, **kwargs)
        whole = pieces.check(
            loss_fn, params, grads, finite_diff=finite_diff, max_elements=max_elements, seed=seed
        )
        layers = _pieces(net, params, x, y, loss=_losses.get(loss), seed=seed, **kwargs)
        return NetworkCheck(whole.autodiff, whole.finite_differences, pieces=tuple(layers))


def _pieces(net, params, x, y, *, loss, seed, state=None, key=None, train=False,
            sample_weight=None, **_) -> list[PieceCheck]:  # fmt: skip
    """The loss and every layer in backprop order, each on its real input."""
    n = len(net.layers)
    state = net.init_state(x.dtype) if state is None else state
    keys = jax.random.split(key, n) if key is not None else [None] * n
    inputs, caches = [], []
    h = x
    for layer, p, s, k in zip(net.layers, params, state, keys, strict=True):
        inputs.append(h)
        h, _, cache = layer.forward(p, s, h, key=k, train=train)
        caches.append(cache)
    fused = net._fused(loss)  # the pair the manual pass uses, by the network's own rule
    out_loss, pred = (fused, caches[-1][1]) if fused is not None else (loss, h)
    value = lambda o: _losses.value(out_loss, o, y, sample_weight)  # noqa: E731
    name = f"loss {out_loss.name}" + (f" (fused with {_label(net.layers[-1])})" if fused else "")
    leaf = "dJ/dz" if fused else "dJ/da"
    report = errors.compare_leaves(
        [leaf], [_losses.gradient(out_loss, pred, y, sample_weight)], [jax.grad(value)(pred)],
        name="jax.grad", shapes="report",
    )  # fmt: skip
    out = [PieceCheck(None, name, report)]
    rng = np.random.default_rng(seed)
    for i in reversed(range(n)):
        layer, p, s, k = net.layers[i], params[i], state[i], keys[i]
        affine = i == n - 1 and fused is not None

        def forward(p, v, layer=layer, s=s, k=k, affine=affine):
            y_, _, cache = layer.forward(p, s, v, key=k, train=train)
            return cache[1] if affine else y_  # a fused output layer starts from dZ

        y_i, vjp = jax.vjp(forward, p, inputs[i])
        dy = jnp.asarray(rng.normal(size=np.shape(y_i)), y_i.dtype)
        backward = layer.backward_affine if affine else layer.backward
        dparams, dx = backward(p, caches[i], dy)
        ref_params, ref_dx = vjp(dy)
        if jax.tree.structure(dparams) != jax.tree.structure(p):
            raise ValueError(
                f"params[{i}] ({layer}): backward returned gradients shaped like "
                f"{jax.tree.structure(dparams)}, expected {jax.tree.structure(p)}"
            )
        names = [f"[{i}]{path}" for path in errors.paths(p)] + ["dx"]
        report = errors.compare_leaves(
            names, [*jax.tree.leaves(dparams), dx], [*jax.tree.leaves(ref_params), ref_dx],
            name="jax.vjp", shapes="report",
        )  # fmt: skip
        what = " backward_affine from dZ" if affine else ""
        out.append(PieceCheck(i, f"layer {i} ({_label(layer)}){what}", report))
    return out


def _label(layer) -> str:
    """``str(layer)``, led by its class name when that hides it (a subclass of Dense)."""
    text = str(layer)
    name = type(layer).__name__
    return text if text.startswith(name) else f"{name}: {text}"
