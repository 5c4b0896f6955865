"""A network's manual gradient as a whole and layer by layer, with every culprit named.

The whole gradient is compared with jax.grad and central differences; then every piece the
manual backward pass uses is checked on its own, in backprop order: the loss's gradient
(the fused dJ/dz when the output activation and the loss fuse), then each layer's
``backward`` (``backward_affine`` for a fused output layer) against jax.vjp of its
``forward``, on the layer's real input from the forward pass and a random dy. Every piece
that disagrees on its own is a culprit; a failing leaf of the whole gradient is
"inherited" only when its layer's own check passes and a piece above it passes on a wrong
dx (or the loss is wrong).

Modes: "train" is training mode (BatchNorm normalises with the batch's statistics, Dropout
and RReLU draw from the key), "eval" is evaluation mode (BatchNorm's running statistics, no
dropout). By default the check runs in training mode, the mode whose gradient training
uses, and also in evaluation mode where some layer behaves differently in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import losses as _losses
from nnfun.gradcheck import course, errors, pieces


@dataclass(frozen=True)
class PieceCheck:
    """One piece of the backward pass against jax.vjp/jax.grad in isolation."""

    layer: int | None  # None for the loss
    name: str  # "layer 1 (Scale)", "loss categorical_crossentropy"
    report: errors.Report
    mode: str = "train"  # "train" or "eval"

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def wrong_dx(self) -> bool:
        """Whether what it passes down is wrong (the loss's gradient, a layer's dx)."""
        return not self.ok and (
            self.layer is None or any(f.path == "dx" for f in self.report.failures)
        )

    @property
    def label(self) -> str:
        return self.name + (" in eval mode" if self.mode == "eval" else "")


@dataclass(frozen=True)
class NetworkCheck(errors.GradCheck):
    """The whole-gradient comparisons plus the layer-by-layer ones (backprop order).

    ``autodiff`` and ``finite_differences`` are in ``mode``; ``eval_check`` holds the same
    comparisons in evaluation mode when they ran. ``difference`` is the course's number
    ||grad - gradapprox|| / (||grad|| + ||gradapprox||) with step ``epsilon`` over all the
    ``elements`` (see ``gradcheck.difference``); None when not computed.
    """

    pieces: tuple[PieceCheck, ...] = ()
    mode: str = "train"
    eval_check: errors.GradCheck | None = None
    loss_form: str = ""
    difference: float | None = None
    epsilon: float | None = course.EPSILON
    elements: int = 0  # in the gradient

    def __post_init__(self):
        super().__post_init__()
        more = self.eval_check.reports if self.eval_check is not None else []
        object.__setattr__(self, "reports", [*self.reports, *more])

    def _modes(self) -> list[str]:
        n = len(self.reports) - (len(self.eval_check.reports) if self.eval_check else 0)
        return [self.mode] * n + ["eval"] * (len(self.reports) - n)

    @property
    def ok(self) -> bool:
        return super().ok and all(piece.ok for piece in self.pieces)

    @property
    def culprits(self) -> list[PieceCheck]:
        """Every piece, in backprop order, whose own backward disagrees."""
        return [piece for piece in self.pieces if not piece.ok]

    @property
    def first_disagreement(self) -> PieceCheck | None:
        """The first piece, in backprop order, whose own backward disagrees."""
        return next(iter(self.culprits), None)

    def blame(self, leaf: errors.LeafError, mode: str) -> str:
        """Where a failing whole-gradient leaf's error comes from: its own layer's backward,
        a wrong gradient passed down from above, or '' when no piece explains it."""
        layer = errors.layer_of(leaf.path)
        if layer is None:
            return ""
        # A layer checked in one mode only behaves the same in both.
        own_mode = {piece.layer for piece in self.pieces if piece.mode == mode}
        in_mode = [p for p in self.pieces if p.mode == mode or p.layer not in own_mode]
        own = any(
            piece.layer == layer and any(f.path == leaf.path for f in piece.report.failures)
            for piece in in_mode
        )
        above = [
            piece for piece in in_mode
            if piece.wrong_dx and (piece.layer is None or piece.layer > layer)
        ]  # fmt: skip
        source = None
        if above:  # the nearest one
            nearest = min((p.layer for p in above if p.layer is not None), default=None)
            source = "the loss" if nearest is None else f"layer {nearest}"
        if own:
            return f"  <- layer {layer}'s own backward" + (
                f", and inherited from {source}" if source else ""
            )
        return f"  <- inherited from {source}" if source else ""

    def diagnosis(self) -> str:
        """One sentence: every culprit (the first one first), or that there is none."""
        culprits = self.culprits
        if not culprits:
            if self.ok:
                return "every piece agrees: no disagreement"
            return (
                "every piece agrees on its own: the disagreement is in how the network joins "
                "them (penalty, loss reduction, fused output)"
            )

        def worst(piece: PieceCheck) -> str:
            leaf = max(piece.report.failures, key=lambda leaf: leaf.rel_error)
            text = f"{piece.label}: {leaf.path}, rel err {leaf.rel_error:.1e}"
            return text + (f" ({leaf.note})" if leaf.note else "")

        text = "first disagreement: " + worst(culprits[0])
        if len(culprits) > 1:
            text += "; also wrong on its own: " + "; ".join(map(worst, culprits[1:]))
        inherited = any(
            "inherited" in self.blame(leaf, mode)
            for mode, report in zip(self._modes(), self.reports, strict=True)
            for leaf in report.failures
        )
        if inherited:
            text += "; the layers below it fail because of it"
        return text

    def __str__(self) -> str:
        lines = [f"loss: {self.loss_form}"] if self.loss_form else []
        for mode, report in zip(self._modes(), self.reports, strict=True):
            tol = errors.tolerance_text(report.tol)
            lines.append(f"manual vs {report.reference}, {mode} mode (tol {tol})")
            lines += report.lines(lambda leaf, mode=mode: self.blame(leaf, mode))
        if self.difference is not None:
            lines.append(
                f"the course's difference ||grad - gradapprox|| / (||grad|| + ||gradapprox||)"
                f" (epsilon {self.epsilon:g}): {course.readout(self.difference)}, "
                f"{course.verdict(self.difference)}"
            )
        elif self.finite_differences is not None and self.epsilon is not None:
            lines.append(
                f"the course's difference: over all {self.elements} elements only, more than "
                "max_elements; gradcheck.difference computes it"
            )
        lines.append(
            "layer by layer, in backprop order (each against jax.vjp on its real input; "
            "train: training mode, eval: evaluation mode)"
        )
        for piece in self.pieces:
            lines.append(f"  {'ok  ' if piece.ok else 'FAIL'} [{piece.mode}] {piece.name}")
            if not piece.ok:
                lines += ["  " + line for line in piece.report.lines()]
        lines.append(self.diagnosis())
        return "\n".join(lines)


def check_network(
    net,
    params,
    x,
    y,
    *,
    loss,
    train: bool | None = None,
    fused: bool = True,
    finite_diff: bool = True,
    epsilon: float | None = course.EPSILON,
    max_elements: int = 2048,
    seed: int = 0,
    **kwargs,
) -> NetworkCheck:
    """Manual backprop of ``net`` vs jax.grad vs finite differences, then layer by layer,
    all in float64 on the CPU.

    ``train=None`` (the default) checks training mode, and evaluation mode too for layers
    that behave differently in it (BatchNorm, Dropout, RReLU, or any whose output differs);
    ``train=True``/``False`` checks that mode only. ``fused=False`` computes a sigmoid or
    softmax output's loss from the probabilities (the course's log(a), log(1 - a)) instead
    of from the logits. With ``finite_diff`` the course's ``difference`` is reported too,
    with step ``epsilon`` (None: not computed), when the gradient has at most
    ``max_elements`` elements (it is defined over all of them: 2 loss evaluations each).
    ``kwargs`` go to ``net.loss`` (state, key, sample_weight, mask,
    l1, l2); in training mode a network with Dropout/RReLU and no key gets
    ``jax.random.key(seed)``, the same masks on every evaluation. ``compute_dtype`` is
    dropped: the check's point is float64.
    """
    kwargs.pop("compute_dtype", None)
    if not fused:
        net = course.unfused(net)
    loss = _losses.get(loss)
    with errors.cpu64():
        params = jax.tree.map(jnp.asarray, params)
        params, x, kwargs = errors.to_cpu64((params, jnp.asarray(x), kwargs))
        y = jnp.asarray(y)
        y = y if jnp.issubdtype(y.dtype, jnp.integer) else errors.to_cpu64(y)
        mode_train = True if train is None else bool(train)
        if mode_train and kwargs.get("key") is None and any(l.stochastic for l in net.layers):
            kwargs["key"] = jax.random.key(seed)
        differs = list(_differs(net, params, x, kwargs)) if train is None else []
        both = any(differs)
        options = dict(finite_diff=finite_diff, max_elements=max_elements, seed=seed)

        def whole(mode: bool):
            loss_fn = lambda p: net.loss(p, x, y, loss=loss, train=mode, **kwargs)  # noqa: E731
            grads = net.manual_grad(params, x, y, loss=loss, train=mode, **kwargs)
            return loss_fn, grads, pieces.check(loss_fn, params, grads, **options)

        loss_fn, grads, main = whole(mode_train)
        eval_check = whole(False)[2] if both else None
        layers = _pieces(net, params, x, y, loss=loss, seed=seed, train=mode_train, **kwargs)
        if both:
            layers = _merge(layers, _pieces(net, params, x, y, loss=loss, seed=seed, train=False,
                                            only=differs, **kwargs))  # fmt: skip
        diff, total = None, sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
        if finite_diff and epsilon is not None and total <= max_elements:
            diff = course.difference(loss_fn, params, grads, epsilon=epsilon)
        return NetworkCheck(
            main.autodiff, main.finite_differences, pieces=tuple(layers),
            mode="train" if mode_train else "eval", eval_check=eval_check,
            loss_form=_loss_form(net, loss), difference=diff, epsilon=epsilon,
            elements=total,
        )  # fmt: skip


def _loss_form(net, loss) -> str:
    fused = net._fused(loss)
    if fused is None:
        return f"{loss.name} of the output layer's values"
    return (
        f"{loss.name} computed from the logits, fused with {_label(net.layers[-1])} "
        "(fused=False: from its probabilities)"
    )


def _differs(net, params, x, kwargs):
    """Per layer: whether it behaves differently in training and evaluation mode."""
    state = kwargs.get("state") or net.init_state(x.dtype)
    key = kwargs.get("key")
    keys = jax.random.split(key, len(net.layers)) if key is not None else [None] * len(net.layers)
    h = x
    for layer, p, s, k in zip(net.layers, params, state, keys, strict=True):
        out_train = layer.forward(p, s, h, key=k, train=True)[0]
        out_eval = layer.forward(p, s, h, key=k, train=False)[0]
        same = np.shape(out_train) == np.shape(out_eval) and np.allclose(out_train, out_eval)
        yield layer.stochastic or layer.takes_mask or not same
        h = out_train


def _merge(train_pieces, eval_pieces):
    """Both modes' pieces in backprop order, a layer's training-mode piece first."""
    out = []
    for piece in train_pieces:
        out.append(piece)
        out += [e for e in eval_pieces if e.layer == piece.layer and e.layer is not None]
    return out


def _pieces(net, params, x, y, *, loss, seed, train, state=None, key=None,
            sample_weight=None, mask=None, only=None, **_) -> list[PieceCheck]:  # fmt: skip
    """The loss and every layer (those in ``only``) in backprop order, each on its real
    input, with BatchNorm's statistics over the rows the network's mask keeps."""
    n = len(net.layers)
    mode = "train" if train else "eval"
    state = net.init_state(x.dtype) if state is None else state
    keys = jax.random.split(key, n) if key is not None else [None] * n

    def run(layer, p, s, v, k):
        masked = {"mask": mask} if layer.takes_mask else {}
        return layer.forward(p, s, v, key=k, train=train, **masked)

    inputs, caches = [], []
    h = x
    for layer, p, s, k in zip(net.layers, params, state, keys, strict=True):
        inputs.append(h)
        h, _, cache = run(layer, p, s, h, k)
        caches.append(cache)
    out = []
    fused = net._fused(loss)  # the pair the manual pass uses, by the network's own rule
    if only is None:
        out_loss, pred = (fused, caches[-1][1]) if fused is not None else (loss, h)
        value = lambda o: _losses.value(out_loss, o, y, sample_weight, mask)  # noqa: E731
        name = f"loss {out_loss.name}" + (
            f" (fused with {_label(net.layers[-1])})" if fused else ""
        )
        leaf = "dJ/dz" if fused else "dJ/da"
        report = errors.compare_leaves(
            [leaf], [_losses.gradient(out_loss, pred, y, sample_weight, mask)],
            [jax.grad(value)(pred)], name="jax.grad", shapes="report",
        )  # fmt: skip
        out.append(PieceCheck(None, name, report, mode))
    rng = np.random.default_rng(seed)
    for i in reversed(range(n)):
        if only is not None and not only[i]:
            continue
        layer, p, s, k = net.layers[i], params[i], state[i], keys[i]
        affine = i == n - 1 and fused is not None

        def forward(p, v, layer=layer, s=s, k=k, affine=affine):
            y_, _, cache = run(layer, p, s, v, k)
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
        out.append(PieceCheck(i, f"layer {i} ({_label(layer)}){what}", report, mode))
    return out


def _label(layer) -> str:
    """``str(layer)``, led by its class name when that hides it (a subclass of Dense)."""
    text = str(layer)
    name = type(layer).__name__
    return text if text.startswith(name) else f"{name}: {text}"
