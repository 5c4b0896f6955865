"""nnfun.checkpoint: exact round trips, keep-K, clear errors naming the path, the order of
writes, fsyncs and renames, SIGKILL at every stage of a save, and damaged checkpoints skipped
on resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnfun import checkpoint

WORKER = Path(__file__).with_name("_checkpoint_worker.py")
sys.path.insert(0, str(WORKER.parent))
import _checkpoint_worker as worker  # noqa: E402


def _tree():
    params = [{"W": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([1, 2, 3], jnp.bfloat16)}]
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "key": jax.random.key(7),
        "raw_key": jax.random.PRNGKey(3),
        "step": jnp.int32(12),
        "weak": jnp.asarray(0.5),
        "host": np.arange(4, dtype=np.uint8),
        "count": 3,
        "rate": 0.25,
        "flag": True,
    }


def _assert_same(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert type(x) is type(y)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
        assert getattr(x, "weak_type", None) == getattr(y, "weak_type", None)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_for_every_leaf_type(tmp_path):
    tree = _tree()
    meta = {"loss": [0.5, 0.25], "stopped": None}
    path = checkpoint.save(tmp_path, 12, tree, metadata=meta)
    assert path.name == "step_00000012"
    restored, got_meta = checkpoint.restore(tmp_path, like=_tree())
    _assert_same(restored, tree)
    assert got_meta == meta
    # the restored key draws the same numbers
    np.testing.assert_array_equal(
        jax.random.normal(restored["key"], (3,)), jax.random.normal(tree["key"], (3,))
    )


def test_keep_latest_and_all_steps(tmp_path):
    assert checkpoint.all_steps(tmp_path / "none") == []
    assert checkpoint.latest_step(tmp_path) is None
    for step in (1, 2, 3, 10):
        checkpoint.save(tmp_path, step, {"x": jnp.float32(step)}, keep=2)
    assert checkpoint.all_steps(tmp_path) == [3, 10]
    assert checkpoint.latest_step(tmp_path) == 10
    tree, _ = checkpoint.restore(tmp_path, {"x": jnp.float32(0)}, step=3)
    assert float(tree["x"]) == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000010"]


def test_stale_temporary_directories_are_ignored_and_cleaned(tmp_path):
    checkpoint.save(tmp_path, 1, {"x": jnp.zeros(2)})
    stale = tmp_path / ".tmp-step_00000002-abc"
    stale.mkdir()
    (stale / "arrays.npz").write_bytes(b"half a file")
    assert checkpoint.latest_step(tmp_path) == 1
    checkpoint.save(tmp_path, 2, {"x": jnp.ones(2)})
    assert not stale.exists()
    assert checkpoint.all_steps(tmp_path) == [1, 2]


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        checkpoint.restore(tmp_path / "missing", {"x": jnp.zeros(2)})
    checkpoint.save(tmp_path, 5, {"x": jnp.zeros(2)})
    with pytest.raises(FileNotFoundError, match=r"step 4 .*steps there: \[5\]"):
        checkpoint.restore(tmp_path, {"x": jnp.zeros(2)}, step=4)
    with pytest.raises(ValueError, match=r"\['x'\]: expected \['x'\] float32\[3\], got .*\[2\]"):
        checkpoint.restore(tmp_path, {"x": jnp.zeros(3)})
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.restore(tmp_path, {"x": jnp.zeros(2), "y": jnp.zeros(2)})
    with pytest.raises(ValueError, match="step: expected an int >= 0, got -1"):
        checkpoint.save(tmp_path, -1, {})
    with pytest.raises(ValueError, match="keep: expected None or an int >= 1, got 0"):
        checkpoint.save(tmp_path, 1, {}, keep=0)
    with pytest.raises(TypeError, match="metadata: expected JSON-serialisable"):
        checkpoint.save(tmp_path, 1, {}, metadata={"f": object()})
    with pytest.raises(TypeError, match=r"leaf \['s'\]: expected an array .* got str"):
        checkpoint.save(tmp_path, 1, {"s": "text"})


def test_save_writes_then_fsyncs_files_then_the_folder_then_renames(tmp_path, monkeypatch):
    """Durable as claimed: each file is written and fsynced inside a temporary folder, the
    folder is fsynced, renamed to step_N, and the parent fsynced (the rename made durable)
    before the previous step is retired."""
    checkpoint.save(tmp_path, 1, worker.state(1), metadata=worker.metadata(1))
    events: list[str] = []

    def patch(obj, name, value):
        monkeypatch.setattr(obj, name, value, raising=False)

    worker.Recorder(events.append, tmp_path, patch=patch)
    checkpoint.save(tmp_path, 2, worker.state(2), metadata=worker.metadata(2), keep=1)
    monkeypatch.undo()
    tmp = next(e.split()[1] for e in events if e.startswith("mkdir .tmp-step_00000002-"))
    file_syncs = []
    for name in ("arrays.npz", "manifest.json", "metadata.json"):
        opened = events.index(f"open {tmp}/{name}")
        writes = [i for i, e in enumerate(events) if e == f"write {tmp}/{name}"]
        file_syncs.append(events.index(f"fsync {tmp}/{name}"))
        assert writes and opened < writes[0] and writes[-1] < file_syncs[-1], name
    folder_sync = events.index(f"fsync {tmp}")
    rename = events.index(f"rename {tmp} -> step_00000002")
    parent_sync = events.index("fsync .", rename)
    retire = next(i for i, e in enumerate(events) if e.startswith("rename step_00000001 -> "))
    assert max(file_syncs) < folder_sync < rename < parent_sync < retire, events
    # Nothing is opened or written anywhere but in the temporary folder.
    written = {e.split()[1].rsplit("/", 1)[0] for e in events if e.split()[0] in ("open", "write")}
    assert written == {tmp}, written
    tree, meta = checkpoint.restore(tmp_path, like=worker.state(1))
    _assert_same(tree, worker.state(2))
    assert checkpoint.all_steps(tmp_path) == [2] and meta == worker.metadata(2)


def test_sigkill_at_every_stage_of_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A save of step 2 over step 1 (keep=1) killed just before each of its file-system
    events, chosen from a trace of the save (see _checkpoint_worker): every step left
    visible restores exactly; until the rename the newest is step 1, afterwards step 2."""
    run = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    trace, runs = report["events"], report["runs"]
    # Step 2 may appear only complete: at its rename (or, without one, once the save ends).
    renames = [k for k, e in enumerate(trace, 1) if e.endswith(" -> step_00000002")]
    appears = renames[0] if renames else len(trace) + 1
    # The kill points span the whole save: before anything, inside each file, at every
    # fsync, around the rename, inside the retirement of step 1, and a completed save.
    kinds = [r["event"].split()[0] if r["event"] else "done" for r in runs]
    for kind in ("mkdtemp", "open", "write", "fsync", "rename", "rmtree", "done"):
        assert kind in kinds, kind
    # Three writes inside arrays.npz, one into each JSON file; fsyncs of 3 files, 2 folders.
    assert kinds.count("write") >= 5 and kinds.count("fsync") >= 5
    like = worker.state(1)
    for r in runs:
        assert (r["signal"], r["exit"]) == ((signal.SIGKILL, None) if r["event"] else (None, 0))
        directory = tmp_path / str(r["k"])
        steps = checkpoint.all_steps(directory)
        assert steps[-1] == (2 if r["k"] > appears else 1), (r, steps)
        for step in steps:  # every visible checkpoint is complete, read strictly
            tree, meta = checkpoint.restore(directory, like, step=step)
            _assert_same(tree, worker.state(step))
            assert meta == worker.metadata(step)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing damaged to skip
            tree, _ = checkpoint.restore_latest(directory, like)
        _assert_same(tree, worker.state(steps[-1]))
    assert len(renames) == 1, trace


# ---- damaged checkpoints ----------------------------------------------------------------
def _small(step: int) -> dict:
    return {"x": np.full(4, float(step)), "n": np.int64(step), "rate": 0.5 * step}


def _flip_a_data_byte(path: Path) -> None:
    data = bytearray((path / "arrays.npz").read_bytes())
    at = data.index(np.full(4, 3.0).tobytes())  # leaf 0's values: the zip CRC no longer fits
    data[at + 3] ^= 0xFF
    (path / "arrays.npz").write_bytes(bytes(data))


def _add_a_leaf(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["leaves"].append({"path": "['y']", "dtype": "float64", "shape": [4]})
    (path / "manifest.json").write_text(json.dumps(manifest))


DAMAGE = {
    "truncated arrays": (
        lambda p: (p / "arrays.npz").write_bytes((p / "arrays.npz").read_bytes()[:200]),
        "arrays.npz: BadZipFile",
    ),
    "flipped byte": (_flip_a_data_byte, "arrays.npz, leaf \\['x'\\]: Bad CRC-32"),
    "missing manifest": (lambda p: (p / "manifest.json").unlink(), "manifest.json: File"),
    "manifest not JSON": (lambda p: (p / "manifest.json").write_text('{"leav'), "JSONDecode"),
    "wrong leaf count": (_add_a_leaf, "holds 3 arrays, manifest.json lists 4 leaves"),
    "missing metadata": (lambda p: (p / "metadata.json").unlink(), "metadata.json: File"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_restore_latest_skips_a_damaged_newest_with_a_warning(tmp_path, damage):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, _small(step), metadata={"step": step})
    harm, fault = DAMAGE[damage]
    harm(tmp_path / "step_00000003")
    newest = str(tmp_path / "step_00000003")
    with pytest.warns(UserWarning, match="resuming from") as caught:
        tree, meta = checkpoint.restore_latest(tmp_path, like=_small(0))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"checkpoint {newest} is damaged: " in message, message
    assert str(tmp_path / "step_00000002") in message
    assert __import__("re").search(fault, message), message
    _assert_same(tree, _small(2))
    assert meta == {"step": 2}
    # restore names the damaged one instead of falling back.
    with pytest.raises(checkpoint.DamagedCheckpointError, match=f"{newest} is damaged"):
        checkpoint.restore(tmp_path, like=_small(0))


def test_restore_latest_without_an_intact_checkpoint(tmp_path):
    assert checkpoint.restore_latest(tmp_path / "new", like=_small(0)) is None
    assert checkpoint.restore_latest(tmp_path, like=_small(0)) is None  # empty
    (tmp_path / ".tmp-step_00000004-x").mkdir()  # a killed save's leftovers are no checkpoint
    assert checkpoint.restore_latest(tmp_path, like=_small(0)) is None
    for step in (1, 2):
        checkpoint.save(tmp_path, step, _small(step))
        (tmp_path / f"step_{step:08d}" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no intact checkpoint .* all 2 damaged") as err:
        checkpoint.restore_latest(tmp_path, like=_small(0))
    for step in (1, 2):
        assert f"{tmp_path / f'step_{step:08d}'} is damaged: manifest.json" in str(err.value)


def test_user_errors_name_the_path(tmp_path):
    file = tmp_path / "file"
    file.write_text("not a folder")
    for call in (
        lambda: checkpoint.save(file, 1, _small(1)),
        lambda: checkpoint.restore(file, _small(0)),
        lambda: checkpoint.restore_latest(file, _small(0)),
        lambda: checkpoint.all_steps(file),
    ):
        with pytest.raises(ValueError, match=f"directory: expected a .* got the file {file}"):
            call()
    with pytest.raises(ValueError, match=f"directory: cannot create {file / 'sub'}"):
        checkpoint.save(file / "sub", 1, _small(1))
    # A folder of something else with step_* names: no manifest, named as damaged.
    foreign = tmp_path / "foreign"
    (foreign / "step_00000007").mkdir(parents=True)
    (foreign / "step_00000007" / "weights.bin").write_bytes(b"other")
    with pytest.raises(ValueError, match=f"{foreign / 'step_00000007'} is damaged: manifest"):
        checkpoint.restore_latest(foreign, _small(0))
    # Another model's newest checkpoint is an error naming it, never skipped for an older one.
    mixed = tmp_path / "mixed"
    checkpoint.save(mixed, 1, _small(1))
    checkpoint.save(mixed, 2, {"other": np.zeros(3)})
    with pytest.raises(ValueError, match=f"checkpoint {mixed / 'step_00000002'} does not match"):
        checkpoint.restore_latest(mixed, _small(0))
