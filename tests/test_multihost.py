"""Multi-host runs on CPU: 2 processes x 2 devices (jax.distributed, gloo) against 1 x 4.

Several local processes are a real multi-host JAX run: one coordinator, cross-process
collectives, arrays whose shards live in other processes. Each launch has a timeout and
ends every process of a run as soon as one fails, so a hang fails the test, never CI.
The checkpoint chain: this process writes one; the 2 x 2 launch restores it and writes its
own; the 1 x 4 launch restores that and writes its own; this process restores it. Measured
on a 2-core CPU: each worker process spends about 11 s of CPU (start-up 2 s, building blocks
3 s, the fit scenario 6-7 s; DIR/timing.I.json), three processes in two launches.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from nnfun import parallel

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_multihost_worker.py"
sys.path.insert(0, str(ROOT / "tests"))
import _multihost_worker as worker  # noqa: E402

BUILDING_BLOCKS = "replicate,step,check_all,checkpoint"
TIMEOUT = 120  # seconds for a whole launch: start-up, compiles and every scenario


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(processes: int, devices: int, scenarios: str, out: Path, checkpoint_in=None):
    """Runs the worker as ``processes`` processes; returns {scenario: [result per process]}
    and, for a scenario that failed, {scenario: error text} under "errors"."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    procs = []
    for i in range(processes):
        cmd = [sys.executable, str(WORKER), "--process-id", str(i), "--num-processes",
               str(processes), "--port", str(port), "--devices", str(devices),
               "--scenario", scenarios, "--out", str(out)]  # fmt: skip
        if checkpoint_in is not None:
            cmd += ["--checkpoint-in", str(checkpoint_in)]
        log = open(out / f"log.{i}.txt", "w")  # closed below, once the process has ended
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                       start_new_session=True), log))  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p, _ in procs]
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break  # done, or one failed: the others may wait forever in a collective
            time.sleep(0.1)
    finally:
        running = [i for i, (p, _) in enumerate(procs) if p.poll() is None]
        late = time.monotonic() >= deadline
        for p, log in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # its session: the process and any child
            p.wait()
            log.close()
    results, errors = {}, {}
    for name in scenarios.split(","):
        files = [out / f"{name}.{i}.json" for i in range(processes)]
        if all(f.exists() for f in files):
            results[name] = [json.loads(f.read_text()) for f in files]
        else:
            failed = sorted(out.glob(f"{name}.*.error"))
            logs = "\n".join((out / f"log.{i}.txt").read_text()[-2000:] for i in range(processes))
            cause = "running at the timeout" if late else "running when another failed"
            why = f"(processes {running} killed, {cause})" if running else ""
            errors[name] = failed[0].read_text() if failed else f"no result {why}; logs:\n{logs}"
    results["errors"] = errors
    return results


def result(run: dict, name: str) -> list[dict]:
    assert name not in run["errors"], run["errors"][name]
    return run[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The checkpoint chain and both layouts' building-block scenarios, then the fit."""
    base = tmp_path_factory.mktemp("multihost")
    # Written here, by one process with one device: the 2-process run restores it.
    first = parallel.replicate(worker.fresh_state(5), parallel.data_mesh())
    parallel.save_checkpoint(base / "here", 3, first, metadata={"writer": "test"})
    # The fit comes last: until it works on several processes it ends that launch.
    multi = launch(2, 2, BUILDING_BLOCKS + ",user_errors,fit,stream", base / "multi",
                   base / "here")  # fmt: skip
    single = launch(1, 4, BUILDING_BLOCKS + ",fit,stream", base / "single",
                    base / "multi" / "checkpoint")  # fmt: skip
    written = base / "single" / "checkpoint"
    back = None  # stays None when the chain broke earlier: the checkpoint test says where
    if parallel.latest_checkpoint_step(written) is not None:
        back, _ = parallel.restore_checkpoint(written, worker.fresh_state(0))
    return {"multi": multi, "single": single, "first": first, "back": back}


def test_replicated_state_spans_both_processes(runs):
    multi, single = result(runs["multi"], "replicate"), result(runs["single"], "replicate")
    for r in multi + single:
        assert r["replicated"] and r["devices"] == [4] and r["same_object"]
        assert r["max_diff"] == 0.0 and r["key_equal"] and r["key_typed"]
    assert not any(r["addressable"] for r in multi)  # other process's devices: global arrays
    assert all(r["addressable"] for r in single)
    assert multi[0]["params"] == multi[1]["params"] == single[0]["params"]


def test_global_step_on_two_processes_matches_one(runs):
    multi, single = result(runs["multi"], "step"), result(runs["single"], "step")
    assert [r["local_rows"] for r in multi] == [100, 100] and single[0]["local_rows"] == 200
    for r in multi + single:
        assert r["global_shape"] == [200, worker.FEATURES] and r["x_sharded"]
        assert r["x_equals_all_rows"] and r["params_replicated"]
    assert multi[0] == multi[1]  # fetch: the same host values on every process
    ref = single[0]
    np.testing.assert_allclose(multi[0]["mean"], ref["mean"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(multi[0]["loss"], ref["loss"], rtol=0, atol=1e-5)
    chex.assert_trees_all_close(
        [np.asarray(p) for p in multi[0]["params"]], [np.asarray(p) for p in ref["params"]],
        atol=1e-5, rtol=0,
    )  # fmt: skip


def test_user_errors_raise_on_every_process(runs):
    multi = result(runs["multi"], "user_errors")
    assert multi[0] == multi[1]  # the same message on both processes, and neither hung
    assert "n_local" in multi[0]["n_local"] and "[4, 6]" in multi[0]["n_local"]
    assert "shard_host_data" in multi[0]["numpy_data"] and "2 processes" in multi[0]["numpy_data"]
    assert "batch_size: 6" in multi[0]["batch_size"] and "4 devices" in multi[0]["batch_size"]


def test_error_seen_by_one_process_is_raised_on_all(runs):
    multi, single = result(runs["multi"], "check_all"), result(runs["single"], "check_all")
    assert [r["error"] for r in multi] == ["data file of process 1 bad"] * 2
    assert single[0]["error"] == "data file of process 0 bad"
    assert [r["any"] for r in multi + single] == [[True, False]] * 3


def test_checkpoints_cross_between_one_and_two_processes(runs):
    multi, single = result(runs["multi"], "checkpoint"), result(runs["single"], "checkpoint")
    first = [np.asarray(p).tolist() for p in jax.tree.leaves(parallel.fetch(runs["first"].params))]
    key = np.asarray(jax.random.key_data(runs["first"].key)).tolist()
    for r in multi + single:  # the newest checkpoint read back where it was written
        assert r["latest_params"] == r["written_params"] and r["latest_replicated"]
    for r in multi:  # one directory per process, as on hosts' local disks: refused by all
        assert "see different newest checkpoints [1, 2]" in r["unshared"][0]
        assert "read different checkpoints" in r["unshared"][1]
    assert single[0]["unshared"] == [None, None]
    for r in multi:  # written by one process (here), restored by two
        assert r["restored_params"] == first and r["restored_key"] == [key]
        assert r["restored_metadata"] == {"writer": "test"} and r["restored_replicated"]
        assert r["latest"] == 3
    # written by two processes, restored by one
    assert single[0]["restored_params"] == multi[0]["written_params"]
    assert single[0]["restored_metadata"] == {"writer": 2}
    assert single[0]["restored_params"] != first  # a different state: not a stale read
    # written by one process with 4 devices, restored here with one device
    assert runs["back"] is not None, "the 1 x 4 run wrote no checkpoint"
    back = [np.asarray(p).tolist() for p in jax.tree.leaves(runs["back"].params)]
    assert back == single[0]["written_params"]


def test_readme_pod_recipe_matches_one_process(runs):
    multi, single = result(runs["multi"], "fit"), result(runs["single"], "fit")
    assert multi[0] == multi[1]  # every process: the same history, stop, numbers
    ref, got = single[0], multi[0]
    stopped = ref["history"].pop("stopped")
    assert stopped.startswith("early stopping after epoch 2") and ref["history"]["best_epoch"] == 0
    # The message prints the best value to 6 digits: compare the epoch it names.
    assert got["history"].pop("stopped").split(":")[0] == stopped.split(":")[0]
    assert got["history"].keys() == ref["history"].keys()
    for k, v in ref["history"].items():
        np.testing.assert_allclose(got["history"][k], v, rtol=0, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(got["evaluate"], ref["evaluate"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["predict"], ref["predict"], rtol=0, atol=1e-5)
    chex.assert_trees_all_close(
        [np.asarray(p) for p in got["params"]], [np.asarray(p) for p in ref["params"]],
        atol=1e-5, rtol=0,
    )  # fmt: skip
    # Stopped after the epoch-2 checkpoint and started again: the uninterrupted run.
    for r in (got, ref):
        assert r["resumed_params"] == r["params"]
        assert r["resumed_history"].pop("stopped").split(":")[0] == stopped.split(":")[0]
        assert r["resumed_history"] == r["history"]  # the checkpoint carries the history
        assert r["first_history"]["loss"] == r["history"]["loss"][:2]
    # predict's NumPy answer holds every process's rows (a global array's are elsewhere).
    assert got["predict_numpy"] == got["predict"] and ref["predict_numpy"] == ref["predict"]


# ---- the same functions in this one process ---------------------------------------------------
def test_local_rows_gives_each_process_an_equal_contiguous_share():
    x, y = np.arange(23 * 2).reshape(23, 2), np.arange(23)
    shares = [parallel.local_rows((x, y), i, 3) for i in range(3)]
    assert [len(sy) for _, sy in shares] == [7, 7, 7]  # 2 rows (fewer than 3) left out
    np.testing.assert_array_equal(np.concatenate([sy for _, sy in shares]), y[:21])
    np.testing.assert_array_equal(shares[1][0], x[7:14])
    with pytest.raises(ValueError, match=r"process_index: expected an int in \[0, 3\), got 3"):
        parallel.local_rows(x, 3, 3)
    with pytest.raises(ValueError, match="same leading"):
        parallel.local_rows((x, y[:5]), 0, 1)
    with pytest.raises(ValueError, match="expected at least 4"):
        parallel.local_rows(x[:3], 0, 4)


def test_one_process_checks_raise_here():
    parallel.check_on_all_processes(True, "never shown")
    with pytest.raises(ValueError, match="^bad file$"):
        parallel.check_on_all_processes(False, "bad file")
    parallel.barrier("alone")  # nothing to wait for
    assert parallel.any_process(True) and not parallel.any_process(False)


def test_initialize_rejects_bad_arguments_before_starting(monkeypatch):
    with pytest.raises(ValueError, match=r"process_id: expected an int in \[0, 2\).*got 2"):
        parallel.initialize("localhost:1", num_processes=2, process_id=2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES: expected an int >= 1.*'two'"):
        parallel.initialize("localhost:1", process_id=0)


def test_restore_without_a_checkpoint_names_the_directory(tmp_path):
    assert parallel.latest_checkpoint_step(tmp_path) is None
    with pytest.raises(ValueError, match=f"directory: no checkpoint in {tmp_path}"):
        parallel.restore_checkpoint(tmp_path, worker.fresh_state(0))


def test_stream_shares_on_two_processes_match_one(runs):
    """Each process reads its own share (4 and 3 batches): every process takes 4 steps, the
    missing rows masked, and trains as one process reading the global batches."""
    multi, single = result(runs["multi"], "stream"), result(runs["single"], "stream")
    assert [r["rows"] for r in multi] == [[4, 4, 4, 4], [4, 4, 2]]
    assert single[0]["rows"] == [8, 8, 6, 4]
    ref = single[0]
    for r in multi:
        assert r["step"] == ref["step"] == 8 and r["replicated"]
        np.testing.assert_allclose(r["loss"], ref["loss"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(r["accuracy"], ref["accuracy"], rtol=0, atol=1e-6)
        chex.assert_trees_all_close(
            [np.asarray(p) for p in r["params"]], [np.asarray(p) for p in ref["params"]],
            atol=1e-5, rtol=0,
        )  # fmt: skip
