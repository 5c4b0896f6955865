"""Argument and data checks for the public API, run in Python before anything compiles.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong
value) whose message starts with the argument's name and says what was expected and what
was got. Checks of values (finite, label ranges) need concrete arrays; inside ``jit`` or
``grad`` inputs are tracers, so callers test ``is_concrete`` and let tracers pass untouched.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def is_concrete(*trees: Any) -> bool:
    """True when no leaf of ``trees`` is a tracer (we are not inside jit/grad/vmap)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def _describe(value: Any) -> str:
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:57]}..."


# ---- scalars ----------------------------------------------------------------------------
def check_int(name: str, value: Any, minimum: int) -> int:
    """An integer >= ``minimum`` (bools and floats such as 32.0 are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_optional_int(name: str, value: Any, minimum: int) -> int | None:
    return None if value is None else check_int(name, value, minimum)


def check_fraction(name: str, value: Any) -> float:
    """A number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number in [0, 1), got {_describe(value)}")
    if not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def check_learning_rate(value: Any) -> None:
    """A finite number > 0 or a schedule (a callable of the step)."""
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"learning_rate: expected a number > 0 or a schedule, got {_describe(value)}"
        )
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"learning_rate: expected a finite number > 0, got {value!r}")


def check_key(name: str, key: Any) -> None:
    """A PRNG key from ``jax.random.key(seed)`` (or a legacy uint32 ``PRNGKey``)."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    legacy = dtype == jnp.uint32 and tuple(getattr(key, "shape", ())) == (2,)
    if not (typed and np.ndim(key) == 0) and not legacy:
        raise TypeError(
            f"{name}: expected a PRNG key such as jax.random.key(0), got {_describe(key)}"
        )


def check_instance(name: str, value: Any, kind: type, hint: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{name}: expected {hint}, got {_describe(value)}")


# ---- arrays -----------------------------------------------------------------------------
def _is_numeric(dtype) -> bool:
    """Bool, integer or real floating, ml_dtypes' bfloat16/float8 included (NumPy gives them
    kind "V", so a test of ``dtype.kind`` would refuse them)."""
    return any(jnp.issubdtype(dtype, kind) for kind in (jnp.bool_, jnp.integer, jnp.floating))


def check_array(name: str, value: Any) -> Array:
    """A numeric (bool, integer or real floating) array; strings, objects, complex refused."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a numeric array, got {_describe(value)}")
    if not isinstance(value, jax.Array):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise ValueError(f"{name}: expected a rectangular numeric array, got {e}") from e
    if not _is_numeric(value.dtype):
        raise TypeError(
            f"{name}: expected a numeric array (bool, int or float), got dtype {value.dtype}"
        )
    return value if isinstance(value, jax.Array) else jnp.asarray(value)


def _host_view(a: Array):
    """NumPy for an array already in host memory (CPU devices, or NumPy itself): checked
    there without compiling a program for its shape; an accelerator's array stays put."""
    if isinstance(a, np.ndarray):
        return np
    on_cpu = a.is_fully_addressable and all(d.platform == "cpu" for d in a.devices())
    return np if on_cpu else jnp


def check_finite(name: str, a: Array) -> None:
    """No NaN or inf among the values of a concrete array."""
    xp = _host_view(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact) or bool(xp.all(xp.isfinite(xp.asarray(a)))):
        return
    host = np.asarray(a)
    nan, inf = int(np.isnan(host).sum()), int(np.isinf(host).sum())
    first = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
    raise ValueError(
        f"{name}: expected finite values, got {nan} NaN and {inf} inf "
        f"(first at index {first} of shape {host.shape})"
    )


def _value_range(a: Array) -> tuple[float, float]:
    xp = _host_view(a)
    a = xp.asarray(a)
    return float(xp.min(a)), float(xp.max(a))


# ---- network inputs, targets and parameters ---------------------------------------------
def check_x(net, x: Any, name: str = "x", *, nonempty: bool = True) -> Array:
    """Network inputs: numeric, (batch, *net.input_shape), at least one sample, finite."""
    x = check_array(name, x)
    want = net.input_shape
    if x.ndim < 1 or tuple(x.shape[1:]) != want:
        expected = ", ".join(map(str, want))
        raise ValueError(
            f"{name}: layer 0 ({net.layers[0]}) expected shape (batch, {expected}), "
            f"got {tuple(x.shape)}"
        )
    if nonempty and x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got shape {tuple(x.shape)}")
    if is_concrete(x):
        check_finite(name, x)
    return x


def check_y(net, loss, y: Any, n: int, name: str = "y") -> Array:
    """Targets for ``n`` samples: integer labels (n,) in [0, classes) or targets (n, *out)."""
    y = check_array(name, y)
    out = net.shapes()[-1]
    units = out[-1] if len(out) == 1 else None
    classify = "crossentropy" in loss.name
    if y.ndim == 0 or y.shape[0] != n:
        got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} (shape {tuple(y.shape)})"
        raise ValueError(f"{name}: expected {n} samples (as many as x), got {got}")
    if is_concrete(y):
        check_finite(name, y)
    integer = jnp.issubdtype(y.dtype, jnp.integer)
    if y.ndim == 1 and units is not None and units > 1:
        if not integer:
            raise TypeError(
                f"{name}: expected integer class labels in [0, {units}) of shape ({n},) or "
                f"one-hot targets of shape ({n}, {units}), got {y.dtype} labels of shape "
                f"{tuple(y.shape)} (use y.astype(int))"
            )
        if is_concrete(y) and n:
            low, high = _value_range(y)
            if low < 0 or high >= units:
                raise ValueError(
                    f"{name}: expected class labels in [0, {units}) (the output layer has "
                    f"{units} units), got values in [{low:g}, {high:g}]"
                )
        return y
    if y.ndim == 1 and units == 1:
        if classify and is_concrete(y) and n:
            low, high = _value_range(y)
            if low < 0 or high > 1:
                raise ValueError(
                    f"{name}: expected binary labels in [0, 1] for {loss.name} with one "
                    f"output unit, got values in [{low:g}, {high:g}]"
                )
        return y
    if tuple(y.shape[1:]) != tuple(out):
        width = ", ".join(map(str, out))
        raise ValueError(
            f"{name}: expected integer labels of shape ({n},) or targets (one-hot for "
            f"classes) of shape ({n}, {width}) to match the output layer "
            f"({net.layers[-1]}), got shape {tuple(y.shape)}"
        )
    if classify and is_concrete(y) and n:
        low, high = _value_range(y)
        if low < 0 or high > 1:
            raise ValueError(
                f"{name}: expected one-hot or probability targets in [0, 1] for {loss.name}, "
                f"got values in [{low:g}, {high:g}]"
            )
    return y


def check_data(net, loss, x, y, names=("x", "y")) -> tuple[Array, Array]:
    """``check_x`` and ``check_y`` together: the same number of samples, at least one."""
    x = check_x(net, x, names[0])
    return x, check_y(net, loss, y, x.shape[0], names[1])


def check_validation_data(net, loss, data) -> tuple[Array, Array]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"validation_data: expected a pair (x_val, y_val), got {_describe(data)}")
    return check_data(net, loss, *data, names=("validation_data[0]", "validation_data[1]"))


@functools.lru_cache(maxsize=128)
def _expected_params(layers: tuple, input_shape: tuple) -> tuple:
    """Per layer, the sorted (name, shape) pairs that init produces (shapes only, no FLOPs)."""
    shapes, result = [input_shape], []
    for layer in layers:
        p = jax.eval_shape(lambda layer=layer, s=shapes[-1]: layer.init(jax.random.key(0), s))
        result.append(tuple(sorted((k, v.shape) for k, v in p.items())))
        shapes.append(layer.output_shape(shapes[-1]))
    return tuple(result)


def check_params(net, params, name: str = "params", *, stacked: bool = False) -> None:
    """``params`` has the network's structure: a list with one dict per layer, the same
    keys and shapes as ``net.init`` (after a leading model axis when ``stacked``)."""
    try:
        expected = _expected_params(tuple(net.layers), tuple(net.input_shape))
    except TypeError:  # an unhashable layer spec: skip the cache
        expected = _expected_params.__wrapped__(tuple(net.layers), tuple(net.input_shape))
    if not isinstance(params, (list, tuple)) or len(params) != len(expected):
        got = f"{len(params)} entries" if isinstance(params, (list, tuple)) else _describe(params)
        raise ValueError(
            f"{name}: expected a list of {len(expected)} dicts (one per layer, as net.init "
            f"returns), got {got}"
        )
    for i, (want, have) in enumerate(zip(expected, params, strict=True)):
        keys = [k for k, _ in want]
        if not isinstance(have, dict) or sorted(have) != keys:
            got = sorted(have) if isinstance(have, dict) else _describe(have)
            raise ValueError(f"{name}[{i}] ({net.layers[i]}): expected keys {keys}, got {got}")
        for key, shape in want:
            leaf = have[key]
            if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                raise TypeError(
                    f"{name}[{i}]['{key}'] ({net.layers[i]}): expected an array of shape "
                    f"{shape}, got {_describe(leaf)}"
                )
            got = tuple(leaf.shape[1:] if stacked else leaf.shape)
            if got != tuple(shape):
                want = f"(models, {', '.join(map(str, shape))})" if stacked else tuple(shape)
                hint = " (a stack of models from train.init_many or train.stack)" * stacked
                raise ValueError(
                    f"{name}[{i}]['{key}'] ({net.layers[i]}): expected shape {want}{hint}, "
                    f"got {tuple(leaf.shape)}"
                )
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(
                    f"{name}[{i}]['{key}'] ({net.layers[i]}): expected a floating array, "
                    f"got dtype {leaf.dtype}"
                )


def check_batchnorm_batches(net, n: int, batch_size: int) -> None:
    """Training BatchNorm needs >= 2 values per feature in every batch, the last partial one
    included: a batch of b samples gives it b values per feature for (batch, F) inputs and
    b * H * W for (batch, H, W, C) feature maps, so only the flat case can fall short."""
    smallest = n % batch_size or batch_size
    for layer, shape in zip(net.layers, net.shapes(), strict=False):
        if type(layer).__name__ == "BatchNorm" and smallest * math.prod(shape[:-1]) < 2:
            raise ValueError(
                f"batch_size: BatchNorm needs at least 2 samples per training batch, got "
                f"batch_size={batch_size} with {n} samples, which leaves a batch of {smallest}"
            )


# ---- losses -----------------------------------------------------------------------------
def check_loss_args(pred, y, weights=None) -> None:
    """Shapes and dtypes for ``losses.value``/``gradient`` (static, so also under jit)."""
    for name, a in (("pred", pred), ("y", y)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"{name}: expected an array, got {_describe(a)}")
        if not _is_numeric(a.dtype):
            raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if not jnp.issubdtype(pred.dtype, jnp.floating):
        raise TypeError(f"pred: expected a floating array (batch, outputs), got {pred.dtype}")
    if pred.ndim < 2:
        raise ValueError(f"pred: expected shape (batch, outputs), got {tuple(pred.shape)}")
    if weights is not None and tuple(np.shape(weights)) != (pred.shape[0],):
        raise ValueError(
            f"sample_weight: expected shape ({pred.shape[0]},), got {tuple(np.shape(weights))}"
        )
