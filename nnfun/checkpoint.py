"""Save / restore a training state (any pytree of arrays) plus JSON metadata, atomically.

Hand-written format, not orbax. Measured on this 2-core CPU, 1M float32 params + Adam state
(12 MB): save 0.03-0.05 s here vs 0.09-0.14 s orbax, restore 0.01-0.02 s vs 0.03 s, and
orbax adds 0.28 s of import. orbax is SIGKILL-safe (atomic rename) but, per strace, fsyncs only
its array chunks: its JSON/commit files and directories are not fsynced before the rename.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_STEP = re.compile(r"step_(\d{8,})")
_TMP = ".tmp-"  # temporary and retired directories: ignored by readers, removed by save
_SCALARS = (bool, int, float)


class DamagedCheckpointError(ValueError):
    """A checkpoint folder that cannot be read back: a file missing, truncated or corrupt,
    or files that disagree with each other (the message names the folder and the fault)."""


def _as_directory(directory) -> Path:
    """``directory`` as a Path; a ValueError naming it when it is an existing file."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory: expected a checkpoint directory, got the file {directory}")
    return directory


def all_steps(directory) -> list[int]:
    """Completed checkpoint steps in ``directory``, ascending; [] when there is none."""
    directory = _as_directory(directory)
    if not directory.is_dir():
        return []
    names = (_STEP.fullmatch(p.name) for p in directory.iterdir() if p.is_dir())
    return sorted(int(m[1]) for m in names if m)


def latest_step(directory) -> int | None:
    """The newest completed step in ``directory``, or None."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def save(directory, step: int, tree, *, metadata=None, keep: int | None = None) -> Path:
    """Write ``tree`` and JSON ``metadata`` to ``directory/step_{step:08d}`` atomically.

    Files go to a temporary sibling, are fsynced, then renamed into place, so a reader (or a
    process killed at any moment) only ever sees complete checkpoints. Saving an existing step
    replaces it. ``keep=K`` then deletes all but the newest K. One writer per directory.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep: expected None or an int >= 1, got {keep!r}")
    try:
        meta = json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata: expected JSON-serialisable values, got {e}") from None
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    manifest = [_spec(path, x) for path, x in leaves]
    arrays = {str(i): _data(x) for i, (_, x) in enumerate(leaves)}

    directory = _as_directory(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a file on the way there
        raise ValueError(f"directory: cannot create {directory}: {e}") from None
    for stale in directory.glob(_TMP + "*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}step_{step:08d}-", dir=directory))
    _write(tmp / "arrays.npz", lambda f: np.savez(f, **arrays))
    _write(tmp / "manifest.json", lambda f: f.write(json.dumps({"leaves": manifest}).encode()))
    _write(tmp / "metadata.json", lambda f: f.write(meta.encode()))
    _fsync(tmp)
    final = directory / f"step_{step:08d}"
    if final.exists():
        _retire(final)
    os.rename(tmp, final)
    _fsync(directory)
    for old in all_steps(directory)[:-keep] if keep else []:
        _retire(directory / f"step_{old:08d}")
    return final


def restore(directory, like, step: int | None = None):
    """``(tree, metadata)`` of checkpoint ``step`` (default: the newest) in ``directory``.

    The tree has the structure and leaf types of ``like`` (e.g. a freshly initialised state)
    with the saved values, bit for bit; typed PRNG keys come back as typed keys. Raises
    ``DamagedCheckpointError`` when that checkpoint cannot be read back and ``ValueError``
    when it holds another tree than ``like``; both name the folder.
    """
    directory = _as_directory(directory)
    if step is None:
        step = latest_step(directory)
        if step is None:
            why = "no completed step_* checkpoint" if directory.is_dir() else "no such directory"
            raise FileNotFoundError(f"no checkpoint in {directory}: {why}")
    path = directory / f"step_{step:08d}"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no checkpoint for step {step} in {directory}; steps there: {all_steps(directory)}"
        )
    return _load(path, like)


def restore_latest(directory, like):
    """``(tree, metadata)`` of the newest intact checkpoint in ``directory``, or None when
    there is none (no such directory, or no completed ``step_*`` in it).

    A newer checkpoint that cannot be read back (a truncated arrays file, a missing
    manifest, a leaf count that disagrees...) is skipped with a ``warnings.warn`` naming its
    folder and the fault; when every checkpoint there is damaged a ``DamagedCheckpointError``
    (a ValueError) names them all. An intact checkpoint that holds another tree than
    ``like`` raises ``ValueError`` naming it: a directory of another model is not skipped.
    """
    directory = _as_directory(directory)
    damaged = []
    for step in reversed(all_steps(directory)):
        path = directory / f"step_{step:08d}"
        try:
            found = _load(path, like)
        except DamagedCheckpointError as e:
            damaged.append(str(e))
            continue
        for fault in damaged:
            warnings.warn(f"{fault}; skipped, resuming from {path}", stacklevel=2)
        return found
    if damaged:
        raise DamagedCheckpointError(
            f"no intact checkpoint in {directory}, all {len(damaged)} damaged: "
            + "; ".join(damaged)
        )
    return None


def _load(path: Path, like):
    """Reads one checkpoint folder; every way its files can be broken is a
    DamagedCheckpointError naming the folder, a mismatch with ``like`` a ValueError."""

    def damaged(what: str) -> DamagedCheckpointError:
        return DamagedCheckpointError(f"checkpoint {path} is damaged: {what}")

    saved = _read_json(path / "manifest.json", damaged)
    entries = saved.get("leaves") if isinstance(saved, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and set(e) == {"path", "dtype", "shape"} for e in entries
    ):
        raise damaged("manifest.json: expected {'leaves': [{path, dtype, shape}, ...]}")
    saved = entries
    metadata = _read_json(path / "metadata.json", damaged)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    expected = [_spec(p, x) for p, x in leaves]
    # Our own handle: np.load leaves the file open when it is not a zip file.
    with _open_or_damaged(path / "arrays.npz", damaged) as file:
        try:
            npz = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise damaged(f"arrays.npz: {type(e).__name__}: {e}") from None
        if sorted(npz.files) != sorted(map(str, range(len(saved)))):
            raise damaged(
                f"arrays.npz holds {len(npz.files)} arrays, manifest.json lists {len(saved)} leaves"
            )
        for i in range(max(len(saved), len(expected))):
            want = expected[i] if i < len(expected) else None
            got = saved[i] if i < len(saved) else None
            if want != got:
                raise ValueError(
                    f"checkpoint {path} does not match `like` at leaf {(want or got)['path']}: "
                    f"expected {_show(want)}, got {_show(got)}"
                )
        values = []
        for i, (_, x) in enumerate(leaves):
            try:
                a = npz[str(i)]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise damaged(f"arrays.npz, leaf {expected[i]['path']}: {e}") from None
            shape, itemsize = _stored_shape(x)
            if a.shape != shape or a.dtype.itemsize != itemsize:
                raise damaged(
                    f"arrays.npz, leaf {expected[i]['path']}: expected {itemsize}-byte values "
                    f"of shape {shape} as manifest.json says, got {a.dtype}{list(a.shape)}"
                )
            values.append(_restore_leaf(x, a))
    return jax.tree_util.tree_unflatten(treedef, values), metadata


def _open_or_damaged(path: Path, damaged):
    try:
        return path.open("rb")
    except OSError as e:
        raise damaged(f"{path.name}: {type(e).__name__}: {e}") from None


def _read_json(path: Path, damaged):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # missing, unreadable, truncated, not JSON
        raise damaged(f"{path.name}: {type(e).__name__}: {e}") from None


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _spec(path, x) -> dict:
    """The manifest entry of one leaf: its path, dtype name and shape."""
    if isinstance(x, _SCALARS):
        dtype, shape = type(x).__name__, []
    elif isinstance(x, (jax.Array, np.ndarray, np.generic)):
        dtype, shape = str(x.dtype), list(x.shape)
    else:
        raise TypeError(
            f"leaf {jax.tree_util.keystr(path)}: expected an array or a Python int/float/bool, "
            f"got {type(x).__name__}"
        )
    return {"path": jax.tree_util.keystr(path), "dtype": dtype, "shape": shape}


def _show(spec: dict | None) -> str:
    return "no leaf" if spec is None else f"{spec['path']} {spec['dtype']}{spec['shape']}"


def _stored_shape(x) -> tuple[tuple[int, ...], int]:
    """Shape and item size of the array ``_data`` stores for a leaf like ``x``."""
    if _is_key(x):
        data = jax.eval_shape(jax.random.key_data, x)
        return tuple(data.shape), np.dtype(data.dtype).itemsize
    a = np.asarray(x) if isinstance(x, _SCALARS) else x
    return tuple(a.shape), np.dtype(a.dtype).itemsize


def _data(x) -> np.ndarray:
    a = np.asarray(jax.random.key_data(x) if _is_key(x) else x)
    # np.load cannot name ml_dtypes (bfloat16, float8...): store their raw bytes
    return a if a.dtype.isbuiltin == 1 else a.view(f"V{a.dtype.itemsize}")


def _restore_leaf(like, a: np.ndarray):
    if isinstance(like, _SCALARS):
        return type(like)(a.item())
    if _is_key(like):
        return jax.random.wrap_key_data(a, impl=jax.random.key_impl(like))
    a = a.view(like.dtype)
    if isinstance(like, np.generic):
        return a[()]
    if isinstance(like, np.ndarray):
        return a
    if like.weak_type and a.ndim == 0 and jnp.asarray(a.item()).dtype == a.dtype:
        return jnp.asarray(a.item())  # a Python scalar gives the weak type `like` has
    return jnp.asarray(a)


def _write(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retire(path: Path) -> None:
    """Delete a checkpoint: rename it out of sight first, so a kill leaves no half of it."""
    trash = Path(tempfile.mkdtemp(prefix=_TMP, dir=path.parent))
    os.rename(path, trash / path.name)
    shutil.rmtree(trash)
