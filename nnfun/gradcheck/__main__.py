"""``python -m nnfun.gradcheck FILE.py``: checks the derivatives written in a user's file.

Imports FILE.py, finds every nnfun ``Activation`` and ``Loss`` record and every ``Layer``
subclass or instance defined in it, checks each against jax.grad/jax.vjp and central
differences in float64 (``check_activation``, ``check_loss``, ``check_layer``), prints the
reports and exits 0 when all agree, 1 on a failure, 2 on a usage error (no such file, an
import error, nothing to check, a layer class that cannot be built without arguments).

A layer is checked on inputs of per-sample shape ``(input_dim,)``, else ``(4,)``, unless the
file sets ``GRADCHECK_INPUT_SHAPES = {"Name": (6,)}`` (a class or variable name). A layer
class is built as ``Class()``; one that needs arguments is checked through the instances
defined in the file. Losses get predictions in (0.05, 0.95) and one-hot targets.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from pathlib import Path

import numpy as np

from nnfun import activations, layers, losses
from nnfun.gradcheck import pieces

USAGE, FAILED = 2, 1


def _library_objects() -> list:
    """nnfun's own records, which a user file may import but did not write."""
    return [*activations.ACTIVATIONS.values(), *losses.LOSSES.values(), *losses.FUSED.values()]


def find(module) -> list[tuple[str, str, object]]:
    """``(kind, name, object)`` for every activation, loss and layer defined in ``module``."""
    own = _library_objects()
    found, classes_with_instances = [], set()
    for name, obj in vars(module).items():
        if name.startswith("__"):
            continue
        if isinstance(obj, activations.Activation) and not any(obj is o for o in own):
            found.append(("activation", name, obj))
        elif isinstance(obj, losses.Loss) and not any(obj is o for o in own):
            found.append(("loss", name, obj))
        elif isinstance(obj, layers.Layer) and type(obj).__module__ == module.__name__:
            found.append(("layer", name, obj))
            classes_with_instances.add(type(obj))
    for name, obj in vars(module).items():
        is_layer_class = isinstance(obj, type) and issubclass(obj, layers.Layer)
        if is_layer_class and obj.__module__ == module.__name__:
            if obj not in classes_with_instances:
                found.append(("layer class", name, obj))
    return found


def _input_shape(module, name: str, layer) -> tuple[int, ...]:
    shapes = getattr(module, "GRADCHECK_INPUT_SHAPES", {})
    shape = shapes.get(name, shapes.get(type(layer).__name__))
    if shape is None:
        return (layer.input_dim or 4,)
    return (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)


def run(path: Path, seed: int = 0) -> int:
    """Checks everything in the file at ``path``; prints; returns the exit code."""
    if path.suffix != ".py" or not path.is_file():
        print(f"FILE: expected an existing .py file, got {str(path)!r}", file=sys.stderr)
        return USAGE
    spec = importlib.util.spec_from_file_location(f"_gradcheck_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception:
        print(f"{path}: importing it failed:\n{traceback.format_exc()}", file=sys.stderr)
        return USAGE
    finally:
        sys.path.remove(str(path.parent))
    found = find(module)
    if not found:
        print(
            f"{path}: found no nnfun Activation, Loss or Layer defined in it "
            "(define them at module level)",
            file=sys.stderr,
        )
        return USAGE
    rng = np.random.default_rng(seed)
    failed, unusable = [], []
    for kind, name, obj in found:
        if kind == "layer class":
            try:
                obj = obj()
            except TypeError as e:
                print(
                    f"SKIP layer class {name}: {name}() failed ({e}); define an instance in "
                    f"the file, e.g. {name.lower()} = {name}(...)\n"
                )
                unusable.append(name)
                continue
            kind = "layer"
        if kind == "activation":
            result = pieces.check_activation(obj, seed=seed)
        elif kind == "loss":
            pred = rng.uniform(0.05, 0.95, size=(5, 3))
            y = np.eye(3)[rng.integers(0, 3, size=5)]
            result = pieces.check_loss(obj, pred, y)
        else:
            result = pieces.check_layer(obj, _input_shape(module, name, obj), seed=seed)
        label = obj.name if kind in ("activation", "loss") else str(obj)
        print(f"{'ok  ' if result.ok else 'FAIL'} {kind} {name} ({label})\n{result}\n")
        if not result.ok:
            failed.append(name)
    checked = len(found) - len(unusable)
    print(
        f"{checked} checked, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
        + (f"; {len(unusable)} could not be built: {', '.join(unusable)}" if unusable else "")
    )  # fmt: skip
    return FAILED if failed else (USAGE if unusable else 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.gradcheck", description=__doc__.split("\n")[0]
    )
    parser.add_argument("file", type=Path, metavar="FILE.py", help="the file to check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)  # a usage error exits 2
    return run(args.file, args.seed)


if __name__ == "__main__":
    sys.exit(main())
