"""nnfun.checkpoint: exact round trips, keep-K, clear errors, and SIGKILL at random moments."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnfun import checkpoint

WORKER = Path(__file__).with_name("_checkpoint_worker.py")


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


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path):
    """A worker saves 12 MB checkpoints in a loop; killed 3 times at random moments, the newest
    complete checkpoint always restores to exactly what was saved for its step."""
    sys.path.insert(0, str(WORKER.parent))
    import _checkpoint_worker as worker

    directory, rng = tmp_path / "ckpt", np.random.default_rng(0)
    steps_seen = []
    for kill in range(3):
        flag = tmp_path / f"started{kill}"
        proc = subprocess.Popen([sys.executable, str(WORKER), str(directory), str(flag)])
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "worker died before its first save"
            assert time.monotonic() < deadline, "worker never saved"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        step = checkpoint.latest_step(directory)
        steps_seen.append(step)
        tree, meta = checkpoint.restore(directory, like=worker.state(1))
        _assert_same(tree, worker.state(step))
        assert meta == worker.metadata(step)
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
