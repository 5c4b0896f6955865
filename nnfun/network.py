"""Network: a stack of layers as pure functions of a parameter pytree.

``params`` is a list with one dict per layer (``{"W": ..., "b": ...}``, ``{}`` for layers
without parameters); ``state`` is a list of the same length holding non-parameter state
(BatchNorm's running statistics). ``forward`` keeps each layer's cache and ``backward``
runs the chain rule through the layers in reverse: the manual backprop that
``jax.grad(net.loss)`` referees. Nothing here knows about training: the Keras-style face
(``compile``/``fit``/...) is :class:`nnfun.model.Sequential`, a subclass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import layer_face, losses, validation
from nnfun.layers import Dense, Input, Layer

Array = jax.Array
Params = list[dict[str, Array]]


class Aux(NamedTuple):
    """What the objective computes besides J: the network output and the new state."""

    output: Array
    state: list[dict[str, Array]]


class Network:
    """A stack of layers. ``x`` is (batch, *input_shape); batch is always the leading axis."""

    def __init__(self, layers=(), input_shape: int | tuple[int, ...] | None = None):
        self.layers: list[Layer] = []
        self._input_shape = None if input_shape is None else _as_shape(input_shape)
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> Network:
        """Appends a layer (Keras style); returns the network. An ``Input(shape=...)`` first
        sets the input shape instead."""
        if isinstance(layer, Input):
            if self.layers:
                raise ValueError(
                    f"layer: Input(shape={layer.shape}) must come first, got it after "
                    f"{len(self.layers)} layer(s)"
                )
            if self._input_shape is not None and self._input_shape != layer.shape:
                raise ValueError(
                    f"input_shape: {self._input_shape} given and Input(shape={layer.shape}) "
                    "disagree"
                )
            self._input_shape = layer.shape
            return self
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an nnfun layer such as Dense, got {layer!r}")
        layer_face.equip(type(layer))
        layer_face.attach(layer, self, len(self.layers))
        self.layers.append(layer)
        return self

    def __repr__(self):
        return f"{type(self).__name__}([{', '.join(map(str, self.layers))}])"

    # ---- shapes -----------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape: from the constructor or the first layer's input_dim."""
        if self._input_shape is not None:
            return self._input_shape
        if self.layers and self.layers[0].input_shape is not None:
            return tuple(self.layers[0].input_shape)
        if self.layers and self.layers[0].input_dim is not None:
            return (self.layers[0].input_dim,)
        raise ValueError(
            "input_shape: unknown; pass Sequential(..., input_shape=...) or give the first "
            "layer input_dim=..."
        )

    def shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shapes at every layer boundary: [input, after layer 0, ...]."""
        shapes = [self.input_shape]
        for i, layer in enumerate(self.layers):
            # A declared input_dim that disagrees would otherwise be silently ignored.
            if layer.input_dim is not None and shapes[-1] != (layer.input_dim,):
                source = "the network's input_shape" if i == 0 else f"layer {i - 1}"
                raise ValueError(
                    f"input_dim: layer {i} ({layer}) declares input_dim={layer.input_dim}, "
                    f"but receives per-sample shape {shapes[-1]} from {source}"
                )
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    # ---- initialisation ---------------------------------------------------------------
    def init(self, key: Array, dtype=jnp.float32) -> Params:
        """One params dict per layer, drawn from ``key``."""
        if not self.layers:
            raise ValueError("Sequential: no layers; add at least one before init")
        keys = jax.random.split(key, len(self.layers))
        return [
            layer.init(k, shape, dtype)
            for layer, k, shape in zip(self.layers, keys, self.shapes(), strict=False)
        ]

    def init_state(self, dtype=jnp.float32) -> list[dict[str, Array]]:
        """One state dict per layer ({} for all but BatchNorm)."""
        return [
            layer.init_state(shape, dtype)
            for layer, shape in zip(self.layers, self.shapes(), strict=False)
        ]

    def check_params(self, params: Params) -> None:
        """Raises ValueError naming the first leaf whose path or shape differs from init's."""
        expected = jax.eval_shape(lambda: self.init(jax.random.key(0)))
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(
                f"params: expected a list of {len(self.layers)} dicts (one per layer), got {got}"
            )
        for i, (want, have) in enumerate(zip(expected, params, strict=True)):
            if not isinstance(have, dict) or set(want) != set(have):
                got = sorted(have) if isinstance(have, dict) else type(have).__name__
                raise ValueError(
                    f"params[{i}] ({self.layers[i]}): expected keys {sorted(want)}, got {got}"
                )
            for name in want:
                if tuple(np.shape(have[name])) != want[name].shape:
                    raise ValueError(
                        f"params[{i}]['{name}'] ({self.layers[i]}): expected shape "
                        f"{want[name].shape}, got {tuple(np.shape(have[name]))}"
                    )

    def _check_input(self, x: Array) -> None:
        if np.ndim(x) < 1 or tuple(np.shape(x)[1:]) != self.input_shape:
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(
                f"x: layer 0 ({self.layers[0]}) expected shape (batch, {expected}), "
                f"got {tuple(np.shape(x))}"
            )

    # ---- forward ----------------------------------------------------------------------
    def forward(self, params, x, *, state=None, key=None, train=False, mask=None):
        """Runs every layer, keeping caches: ``(y, new_state, caches)``.

        ``mask`` (batch,) marks the rows in BatchNorm's training statistics (0: left out).
        """
        if validation.is_concrete(params, x):  # tracers pass untouched; their shapes are checked
            # Concrete params and x may still be constants closed over inside a jit trace,
            # where the value checks would otherwise produce tracers; evaluate them now.
            with jax.ensure_compile_time_eval():
                x = validation.check_x(self, x, nonempty=False)
                validation.check_params(self, params)
        self._check_input(x)
        if state is None:  # statistics at least float32, also for bfloat16 or integer x
            state = self.init_state(jnp.promote_types(x.dtype, jnp.float32))
        if train and key is None and any(layer.stochastic for layer in self.layers):
            raise ValueError("key: training a network with Dropout/RReLU needs a PRNG key")
        keys = (
            jax.random.split(key, len(self.layers))
            if key is not None
            else [None] * len(self.layers)
        )
        new_state, caches = [], []
        for layer, p, s, k in zip(self.layers, params, state, keys, strict=True):
            masked = {"mask": mask} if layer.takes_mask else {}
            x, s, cache = layer.forward(p, s, x, key=k, train=train, **masked)
            new_state.append(s)
            caches.append(cache)
        return x, new_state, caches

    def apply(self, params, x, *, state=None, key=None, train=False) -> Array:
        """The network's output for a batch ``x``: (batch, *input_shape) -> (batch, out)."""
        return self.forward(params, x, state=state, key=key, train=train)[0]

    # ---- loss -------------------------------------------------------------------------
    def _fused(self, loss: losses.Loss) -> losses.Loss | None:
        last = self.layers[-1]
        if isinstance(last, Dense):
            return losses.FUSED.get((last.act.name, loss.name))
        return None

    def _objective(
        self, params, x, y, *, loss, sample_weight=None, mask=None, l1=0.0, l2=0.0,
        compute_dtype=None, **fwd,
    ):  # fmt: skip
        loss = losses.get(loss)
        # Named errors for y, as apply gives for x, before JAX's own; an x that is no batch
        # (None, a scalar, a string) is left to forward's check of x.
        if np.ndim(x) >= 1 and validation.is_concrete(x, y):
            with jax.ensure_compile_time_eval():
                y = validation.check_y(self, loss, y, np.shape(x)[0])
        # BatchNorm's batch statistics leave a padded row (m = 0) out; sample weights weigh
        # the loss only (Keras's BatchNormalization never sees them).
        fwd["mask"] = mask
        if compute_dtype is not None:  # mixed precision: layers run in compute_dtype ...
            state = fwd.get("state")
            out, new_state, caches = self.forward(
                _cast(params, compute_dtype), _cast(x, compute_dtype), **fwd
            )
            # ... while the loss, the output and the carried state (BatchNorm's running
            # statistics, updated in their own dtype) stay in float32.
            out = out.astype(jnp.float32)
            new_state = new_state if state is None else _cast_like(new_state, state)
        else:
            out, new_state, caches = self.forward(params, x, **fwd)
        fused = self._fused(loss)
        if fused is not None:
            logits = caches[-1][1].astype(out.dtype)
            data_loss = losses.value(fused, logits, y, sample_weight, mask)
        else:
            data_loss = losses.value(loss, out, y, sample_weight, mask)
        value = data_loss + self.penalty(params, l1=l1, l2=l2)
        return value, Aux(out, new_state), caches, fused or loss

    def objective(self, params, x, y, *, loss, **kwargs) -> tuple[Array, Aux]:
        """``(J, Aux(output, state))``: J = sum(m w L) / sum(m) + l2/2 sum W^2 + l1 sum |W|.

        Keyword arguments: ``state``, ``key``, ``train``, ``sample_weight`` w (batch,),
        ``mask`` m (batch,) of the real rows (Keras's reduction: the weighted losses summed
        over the batch size, padding rows excluded), ``l1``, ``l2``.
        When the output activation and the loss fuse (softmax + categorical CE, sigmoid +
        binary CE) J is computed from the logits, which keeps it finite for huge logits.
        Shaped for ``jax.value_and_grad(net.objective, has_aux=True)``.
        """
        return self._objective(params, x, y, loss=loss, **kwargs)[:2]

    def loss(self, params, x, y, *, loss, **kwargs) -> Array:
        """The scalar objective J (see ``objective``); differentiate it with jax.grad."""
        return self._objective(params, x, y, loss=loss, **kwargs)[0]

    def penalty(self, params, *, l1=0.0, l2=0.0) -> Array:
        """l2/2 sum W^2 + l1 sum |W| over the weights (not biases) of every layer.

        |W| is written sign(W) W so that jax.grad gives the subgradient sign(0) = 0 at W = 0,
        the manual gradient's convention (jax.grad of abs gives 1 there). Each layer's own
        ``kernel_regularizer`` R(W) is added too (Keras's form, see nnfun.regularizers).
        """
        total = 0.0
        for layer, p in zip(self.layers, params, strict=True):
            if layer.kernel_regularizer is not None:
                for name in layer.regularized:
                    total = total + layer.kernel_regularizer(p[name])
        if not (_nonzero(l1) or _nonzero(l2)):
            return total
        for layer, p in zip(self.layers, params, strict=True):
            for name in layer.regularized:
                w = p[name]
                total = total + 0.5 * l2 * jnp.sum(w * w) + l1 * jnp.sum(jnp.sign(w) * w)
        return total

    # ---- the manual backward pass -----------------------------------------------------
    def backward(self, params, caches, dy, *, last_dz=None):
        """Chain rule from the output gradient dy (or the last layer's dZ) back to the input.

        Returns ``(grads, dx)``; grads has exactly ``params``' structure.
        """
        grads = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            layer, p, cache = self.layers[i], params[i], caches[i]
            if i == len(self.layers) - 1 and last_dz is not None:
                grads[i], dy = layer.backward_affine(p, cache, last_dz)
            else:
                grads[i], dy = layer.backward(p, cache, dy)
        return grads, dy

    def value_and_manual_grad(self, params, x, y, *, loss, l1=0.0, l2=0.0, **kwargs):
        """``((J, Aux(output, state)), grads)`` by the hand-written backward pass: the same
        shape as ``jax.value_and_grad(net.objective, has_aux=True)`` returns."""
        sample_weight, mask = kwargs.get("sample_weight"), kwargs.get("mask")
        value, aux, caches, out_loss = self._objective(
            params, x, y, loss=loss, l1=l1, l2=l2, **kwargs
        )
        dtype = kwargs.get("compute_dtype")
        run = params if dtype is None else _cast(params, dtype)
        if self._fused(losses.get(loss)) is not None:
            logits = caches[-1][1].astype(aux.output.dtype)
            dz = losses.gradient(out_loss, logits, y, sample_weight, mask)
            grads, _ = self.backward(run, caches, None, last_dz=_cast(dz, dtype))
        else:
            dy = losses.gradient(out_loss, aux.output, y, sample_weight, mask)
            grads, _ = self.backward(run, caches, _cast(dy, dtype))
        if dtype is not None:  # gradients in the parameters' own dtype
            grads = _cast_like(grads, params)
        if _nonzero(l1) or _nonzero(l2):
            for layer, g, p in zip(self.layers, grads, params, strict=True):
                for name in layer.regularized:
                    g[name] = g[name] + l2 * p[name] + l1 * jnp.sign(p[name])
        for layer, g, p in zip(self.layers, grads, params, strict=True):
            if layer.kernel_regularizer is not None:
                for name in layer.regularized:
                    g[name] = g[name] + layer.kernel_regularizer.gradient(p[name])
        return (value, aux), grads

    def manual_grad(self, params, x, y, *, loss, **kwargs) -> Params:
        """dJ/dparams by the hand-written backward pass (same structure as params)."""
        return self.value_and_manual_grad(params, x, y, loss=loss, **kwargs)[1]


def _as_shape(shape: Any) -> tuple[int, ...]:
    return (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)


def _cast(tree, dtype):
    """Floating leaves of ``tree`` in ``dtype`` (``None``: unchanged)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _cast_like(tree, like):
    return jax.tree.map(lambda a, b: a.astype(b.dtype), tree, like)


def _nonzero(value: Any) -> bool:
    """False only for a concrete zero, so traced (vmapped) coefficients still count."""
    return not (isinstance(value, (int, float)) and value == 0)
