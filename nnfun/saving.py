"""Save and load whole models: the architecture and compile configuration as plain JSON, the
training state through :mod:`nnfun.checkpoint` (atomic, no pickle).

A saved model is one folder::

    model.json       {"format": "nnfun.model", "layers": [...], "compile": {...}, ...}
    step_00000650/   the TrainState (weights, optimiser state, BatchNorm statistics, PRNG key,
                     step and epoch counters), named by its step (optimiser updates so far);
                     its metadata repeats model.json

Loading never runs code from the folder (as Keras's ``safe_mode``): layer classes,
activations, losses and initialisers are looked up by name among nnfun's own and those
registered with :func:`register` or passed as ``custom_objects``; constructor arguments are
JSON numbers, strings, lists and such names; arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nnfun import (
    activations,
    checkpoint,
    conv,
    initializers,
    layer_face,
    layers,
    losses,
    pooling,
    regularizers,
    train,
)

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.json"

_REGISTRY: dict[str, Any] = {}
_BUILTIN_LAYERS = {
    cls.__name__: cls
    for module in (layers, conv, pooling)
    for cls in vars(module).values()
    if isinstance(cls, type)
    and issubclass(cls, layers.Layer)
    and cls is not layers.Layer
    and not cls.__name__.startswith("_")
}
_HOW_TO_REGISTER = (
    "register it with @nnfun.register (or nnfun.register(obj, name=...)) before saving, and "
    "register it again (or pass custom_objects={{{name!r}: obj}} to nnfun.load_model) before "
    "loading"
)


# ---- names ---------------------------------------------------------------------------------
def register(obj=None, *, name: str | None = None):
    """Makes a custom activation, loss, layer class or initialiser savable under ``name``
    (default: its ``.name`` or ``__name__``). A decorator (``@register`` or
    ``@register(name="...")``) or a call; returns ``obj``."""

    def add(o):
        key = name if name is not None else _default_name(o)
        if not isinstance(key, str) or not key:
            raise TypeError(f"name: expected a non-empty str, got {key!r}")
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not o:
            raise ValueError(
                f"name: {key!r} is already registered for {existing!r}; pass another name="
            )
        _REGISTRY[key] = o
        return o

    return add if obj is None else add(obj)


def _default_name(obj) -> str:
    if isinstance(obj, (activations.Activation, losses.Loss)):
        return obj.name
    if isinstance(obj, type) or callable(obj):
        name = getattr(obj, "__name__", None)
        if name and name != "<lambda>":
            return name
    raise TypeError(f"name: {obj!r} has no name of its own; use register(obj, name='...')")


def _registered_name(obj) -> str | None:
    return next((k for k, v in _REGISTRY.items() if v is obj), None)


def _lookup(name: str, custom_objects: dict | None, where: str, path: Path):
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise ValueError(
        f"load_model: {path}: {where} uses the custom object {name!r}, which is not known "
        f"here; {_HOW_TO_REGISTER.format(name=name)}"
    )


# ---- values: Python objects <-> JSON ---------------------------------------------------------
def _encode(value, where: str):
    """A constructor argument as JSON: primitives as they are, sequences as lists, nnfun's
    activations and initialisers by name, regularizers by their factors, registered objects
    as {"registered": name}; anything else is refused with how to make it savable."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, regularizers.L1L2):
        return {"regularizer": value.get_config()}
    if isinstance(value, activations.Activation) and (
        activations.ACTIVATIONS.get(value.name) is value
    ):
        return value.name
    builtin_init = next((k for k, v in initializers.INITIALIZERS.items() if v is value), None)
    if builtin_init is not None:
        return builtin_init
    registered = _registered_name(value)
    if registered is not None:
        return {"registered": registered}
    if type(value) in (tuple, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    name = getattr(value, "name", None) or getattr(value, "__name__", None) or "my_object"
    raise TypeError(
        f"save: {where} is {value!r}, which cannot be written as JSON; "
        + _HOW_TO_REGISTER.format(name=name)
    )


def _decode(value, custom_objects, where: str, path: Path):
    if isinstance(value, list):
        return tuple(_decode(v, custom_objects, f"{where}[{i}]", path) for i, v in enumerate(value))
    if isinstance(value, dict):
        if set(value) == {"registered"} and isinstance(value["registered"], str):
            return _lookup(value["registered"], custom_objects, where, path)
        if set(value) == {"regularizer"} and isinstance(value["regularizer"], dict):
            return regularizers.get(value["regularizer"])
        raise ValueError(f"load_model: {path}: {where}: unexpected value {value!r} (damaged?)")
    return value


def _layer_config(i: int, layer) -> dict:
    cls = type(layer)
    where = f"layers[{i}] ({layer})"
    if _BUILTIN_LAYERS.get(cls.__name__) is cls:
        class_name, registered = cls.__name__, False
    else:
        class_name, registered = _registered_name(cls), True
        if class_name is None:
            raise TypeError(
                f"save: {where} is an instance of the custom layer class {cls.__qualname__}; "
                + _HOW_TO_REGISTER.format(name=cls.__name__)
            )
    if hasattr(layer, "get_config"):
        config = layer.get_config()
    elif dataclasses.is_dataclass(layer):
        # Arguments left at their default are not written: the class supplies them again.
        config = {
            f.name: getattr(layer, f.name)
            for f in dataclasses.fields(layer)
            if f.init
            and not (f.default is not dataclasses.MISSING and getattr(layer, f.name) == f.default)
        }
        for attribute, default in (("name", None), ("trainable", True)):  # Keras's, beside them
            if getattr(layer, attribute, default) != default:
                config[attribute] = getattr(layer, attribute)
    else:
        raise TypeError(
            f"save: {where}: a custom layer must be a dataclass or define get_config() "
            "returning its constructor arguments"
        )
    encoded = {k: _encode(v, f"{where} argument {k}") for k, v in config.items()}
    return {"class_name": class_name, "registered": registered, "config": encoded}


def _compile_config(model, state) -> dict | None:
    config = model.compiled
    if config is None:
        return None
    if config.optimizer_name is None:
        raise TypeError(
            "save: the model was compiled with an optax GradientTransformation (or an "
            "nnfun.optimizers object with settings beyond its learning rate), which cannot "
            "be written as JSON; compile with an optimizer name ('adam', 'sgd', ...) and "
            "learning_rate=..., or save the weights alone with save_weights"
        )
    hyper = getattr(state.opt_state, "hyperparams", None)
    if not isinstance(hyper, dict) or "learning_rate" not in hyper:
        raise TypeError(
            "save: the learning rate is a schedule (a function), which cannot be written as "
            "JSON; save the weights alone with save_weights"
        )
    if losses.LOSSES.get(config.loss.name) is config.loss:
        loss = config.loss.name
    else:
        loss = _encode(config.loss, "compile argument loss")
    return {
        "loss": loss,
        "optimizer": config.optimizer_name,
        "learning_rate": float(np.asarray(hyper["learning_rate"])),
        "metrics": list(config.metrics),
        "grad": config.grad,
        "l1": config.l1,
        "l2": config.l2,
        "compute_dtype": config.compute_dtype,
        "precision": config.precision,
        "check_every": config.check_every,
    }


def model_config(model, state=None) -> dict:
    """The JSON description of ``model``: layers with their arguments, input shape, name and
    compile configuration (learning rate from ``state``, default the model's)."""
    state = model.state if state is None else state
    return {
        "format": "nnfun.model",
        "version": FORMAT_VERSION,
        "class_name": "Sequential",
        "name": model.name,
        "input_shape": list(model.input_shape),
        "layers": [_layer_config(i, layer) for i, layer in enumerate(model.layers)],
        "compile": _compile_config(model, state),
    }


# ---- files ---------------------------------------------------------------------------------
def _check_target(path: Path, own_file: str) -> None:
    """Refuses to write into a file, or into a folder holding anything but an earlier save of
    the same kind: saving replaces what it finds, so it must never find a run's checkpoints,
    a model where weights go (or the reverse), or a user's files."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"path: {path} is a file; expected a folder (new or saved by nnfun)")
    if not path.is_dir() or not any(path.iterdir()) or (path / own_file).is_file():
        return
    other = WEIGHTS_FILE if own_file == MODEL_FILE else MODEL_FILE
    if (path / other).is_file():
        held = f"a saved {'model' if other == MODEL_FILE else 'weights'} folder ({other})"
    elif checkpoint.all_steps(path):
        held = "a training run's checkpoints (a fit checkpoint_dir)"
    else:
        held = "other files"
    what = "save" if own_file == MODEL_FILE else "save_weights"
    raise ValueError(
        f"path: {path} holds {held}; expected a new folder or one written by {what} "
        "(nothing there was changed)"
    )


def _write_json(path: Path, content: dict) -> None:
    """Writes a JSON file atomically: a temporary file, fsynced, renamed over the old one."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_json(path: Path, name: str, expected_format: str, what: str) -> dict:
    file = path / name
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path}: no such folder")
    if not file.is_file():
        other = MODEL_FILE if name == WEIGHTS_FILE else WEIGHTS_FILE
        hint = (
            f" (it holds {other}: a {'model' if other == MODEL_FILE else 'weights'} folder; "
            f"use {'nnfun.load_model' if other == MODEL_FILE else 'model.load_weights'})"
            if (path / other).is_file()
            else ""
        )
        raise ValueError(f"{what}: {path} is not a folder written by nnfun: no {name}{hint}")
    try:
        content = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what}: {file} is damaged: {e}") from None
    if not isinstance(content, dict) or content.get("format") != expected_format:
        got = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{what}: {file}: expected format {expected_format!r}, got {got!r}")
    if content.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{what}: {file}: format version {content.get('version')!r}; this nnfun reads "
            f"version {FORMAT_VERSION}"
        )
    return content


def _restore(path: Path, like, what: str):
    """checkpoint.restore with every way a damaged folder fails turned into one message."""
    try:
        return checkpoint.restore(path, like)  # the folder's one (or newest) step
    except FileNotFoundError as e:
        raise ValueError(f"{what}: {path} is damaged: {e}") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{what}: {path} is damaged or belongs to another model: {e}") from None


def _save_only(path: Path, state, tree, metadata: dict) -> None:
    """The folder's one checkpoint, named by ``state``'s step: written atomically, then every
    other step there removed (also a later one: saving an earlier state replaces it)."""
    step = int(jax.device_get(state.step))
    checkpoint.save(path, step, tree, metadata=metadata)
    for other in checkpoint.all_steps(path):
        if other != step:
            checkpoint._retire(path / f"step_{other:08d}")


# ---- whole models --------------------------------------------------------------------------
def save_model(model, path, *, state=None) -> Path:
    """Writes ``model`` (architecture, compile configuration and ``state``, default the
    model's own; built first if needed) to the folder ``path``; returns it."""
    path = Path(path)
    if state is None:
        model.build()
        state = model.state
    elif not isinstance(state, train.TrainState):
        raise TypeError(f"state: expected a TrainState, got {type(state).__name__}")
    config = model_config(model, state)
    _check_target(path, MODEL_FILE)
    tree = {"state": state, "model_key": model._key}
    _save_only(path, state, tree, {"model": config})
    _write_json(path / MODEL_FILE, config)
    return path


def load_model(path, custom_objects: dict | None = None):
    """The model saved in the folder ``path``: same layers, compile configuration, weights,
    optimiser state, key and counters, so it predicts and trains on as the original would.

    ``custom_objects`` maps the names of custom activations, losses, layer classes or
    initialisers to the objects (as Keras); objects registered with ``register`` are found
    without it.
    """
    from nnfun.model import Sequential

    path = Path(path)
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"custom_objects: expected a dict {{name: object}}, got {custom_objects!r}")
    config = _read_json(path, MODEL_FILE, "nnfun.model", "load_model")
    try:
        model = _build(config, custom_objects, path, Sequential)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"load_model: {path}/{MODEL_FILE} is damaged: {e!r}") from None
    like = {
        "state": train.init_state(model, model.compiled, jax.random.key(0)),
        "model_key": model._key,
    }
    tree, metadata = _restore(path, like, "load_model")
    if not isinstance(metadata, dict) or metadata.get("model") != config:
        raise ValueError(
            f"load_model: {path} is damaged: {MODEL_FILE} and the saved state disagree "
            "(an interrupted save?)"
        )
    model.state = tree["state"]
    model._key = tree["model_key"]
    return model


def _build(config: dict, custom_objects, path: Path, sequential_class):
    built = []
    for i, entry in enumerate(config["layers"]):
        name = entry["class_name"]
        where = f"layers[{i}]"
        if entry.get("registered"):
            cls = _lookup(name, custom_objects, where, path)
        elif name in _BUILTIN_LAYERS:
            cls = _BUILTIN_LAYERS[name]
        else:
            raise ValueError(f"load_model: {path}: {where}: unknown layer class {name!r}")
        kwargs = {
            k: _decode(v, custom_objects, f"{where} argument {k}", path)
            for k, v in entry["config"].items()
        }
        if dataclasses.is_dataclass(cls) and not hasattr(cls, "from_config"):
            layer_face.equip(cls)  # takes name= and trainable=
        try:
            built.append(cls.from_config(kwargs) if hasattr(cls, "from_config") else cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ValueError(f"load_model: {path}: {where}: cannot build {name}: {e}") from None
    # An explicit key: loading must not draw from the process-wide seed sequence.
    model = sequential_class(built, tuple(config["input_shape"]), key=0, name=str(config["name"]))
    options = config["compile"]
    if options is not None:
        options = dict(options)
        loss = _decode(options.pop("loss"), custom_objects, "compile argument loss", path)
        try:
            model.compile(loss=loss, **options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"load_model: {path}: compile settings: {e}") from None
    return model


# ---- weights alone -------------------------------------------------------------------------
def save_weights(model, path, *, state=None) -> Path:
    """Writes the weights and BatchNorm statistics of ``state`` (default the model's) to the
    folder ``path``; any layers, custom ones included, and any optimiser."""
    path = Path(path)
    if state is None:
        model.build()
        state = model.state
    elif not isinstance(state, train.TrainState):
        raise TypeError(f"state: expected a TrainState, got {type(state).__name__}")
    _check_target(path, WEIGHTS_FILE)
    meta = {
        "format": "nnfun.weights",
        "version": FORMAT_VERSION,
        "layers": [str(layer) for layer in model.layers],
    }
    tree = {"params": state.params, "model_state": state.model_state}
    _save_only(path, state, tree, meta)
    _write_json(path / WEIGHTS_FILE, meta)
    return path


def load_weights(model, path) -> None:
    """Replaces ``model``'s weights and BatchNorm statistics by those saved in ``path``
    (shapes must match); the optimiser state and counters stay."""
    path = Path(path)
    _read_json(path, WEIGHTS_FILE, "nnfun.weights", "load_weights")
    model.build()
    like = {"params": model.state.params, "model_state": model.state.model_state}
    tree, _ = _restore(path, like, "load_weights")
    model.state = model.state._replace(params=tree["params"], model_state=tree["model_state"])
