"""What ``fit`` trains and validates on: checked arrays, sample and class weights, the
validation split, as Keras 3 builds them.

The validation split is the last ``n - floor(n * (1 - validation_split))`` rows, taken
before any shuffling; ``sample_weight`` is split with them (the validation rows keep their
weights), while ``class_weight`` weighs the training rows only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from nnfun import validation


def sample_weights(name: str, weights, n: int):
    """``weights`` as a float32 (n,) array of finite numbers >= 0, not all 0; None passes."""
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.shape != (n,) or w.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected {n} numbers, one per sample, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name}: expected finite weights >= 0, got min {w.min()}")
    if not np.any(w > 0):
        raise ValueError(f"{name}: expected at least one weight > 0, got all zero")
    return jnp.asarray(w, jnp.float32)


def class_weights(class_weight, y, n: int):
    """Per-sample weights from ``{class: weight}``: the class of integer labels, of one-hot
    rows (argmax) or of a single 0/1 target."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight: expected a dict {{class: weight}}, got {class_weight!r}")
    bad = [k for k in class_weight if isinstance(k, bool) or not isinstance(k, (int, np.integer))]
    if bad:
        raise TypeError(f"class_weight: expected integer class labels as keys, got {bad!r}")
    for k, v in class_weight.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            raise TypeError(f"class_weight[{k}]: expected a number, got {v!r}")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"class_weight[{k}]: expected a finite weight >= 0, got {v}")
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(1)
    labels = np.rint(labels.reshape(n)).astype(np.int64)
    present = sorted(set(np.unique(labels).tolist()))
    missing = sorted(set(present) - set(class_weight))
    if missing:
        raise ValueError(f"class_weight: no weight for classes {missing} present in y")
    if not any(class_weight[c] > 0 for c in present):
        raise ValueError(
            f"class_weight: expected a weight > 0 for at least one class present in y "
            f"{present}, got {class_weight}"
        )
    table = np.zeros(max(max(class_weight), labels.max()) + 1)
    for k, v in class_weight.items():
        table[int(k)] = v
    return table[labels]


def split_at(n: int, validation_split: float) -> int:
    """The first validation row, as Keras: floor(n * (1 - validation_split))."""
    return int(math.floor(n * (1.0 - validation_split)))


def prepare_data(net, config, x, y, *, sample_weight=None, class_weight=None,
                 validation_data=None, validation_split=0.0):  # fmt: skip
    """Checked arrays ``(x, y, w, x_val, y_val, w_val)`` (None where absent)."""
    x, y = validation.check_data(net, config.loss, x, y)
    n = x.shape[0]
    if jax.process_count() > 1:
        for name, value in (("sample_weight", sample_weight), ("class_weight", class_weight),
                            ("validation_split", validation_split or None)):  # fmt: skip
            if value is not None:
                raise ValueError(
                    f"{name}: not supported with several processes yet; split and weigh each "
                    "process's own rows before parallel.shard_host_data and pass "
                    "validation_data"
                )
    w = sample_weights("sample_weight", sample_weight, n)
    validation_split = validation.check_fraction("validation_split", validation_split)
    val = None
    if validation_split and validation_data is None:
        cut = split_at(n, validation_split)
        if not 0 < cut < n:
            raise ValueError(
                f"validation_split: expected a fraction leaving samples on both sides, got "
                f"{validation_split} of {n} samples"
            )
        val = (x[cut:], y[cut:], None if w is None else w[cut:])
        x, y, w = x[:cut], y[:cut], None if w is None else w[:cut]
    elif validation_data is not None:
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 3:
            xv, yv = validation.check_validation_data(net, config.loss, validation_data[:2])
            wv = sample_weights("validation_data[2]", validation_data[2], xv.shape[0])
            val = (xv, yv, wv)
        else:
            val = (*validation.check_validation_data(net, config.loss, validation_data), None)
    cw = class_weights(class_weight, y, x.shape[0])  # the training rows only, as Keras
    if cw is not None:
        w = jnp.asarray(cw if w is None else np.asarray(w) * cw, jnp.float32)
    return (x, y, w, *(val or (None, None, None)))
