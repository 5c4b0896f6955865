"""The benchmark script runs end to end in --quick mode and every variant trains the same net.

Speed is never asserted here (the numbers live in experiments/benchmarks/README.md); a variant
that crashes fails the test, and only a peer that is not installed may be skipped.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnfun

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD1 = (
    "nnfun fit (autodiff)",
    "nnfun fit (manual)",
    "jax jit per step",
    "jax scan",
    "flax linen",  # skipped with a reason where flax is not installed
    "pytorch eager",  # the same for torch
)
WORKLOAD4 = (
    "nnfun fit (autodiff)",
    "nnfun fit (manual)",
    "nnfun fit + 2 track probes",
    "jax scan, whole run",
    "jax jit step, Python loop",
    "numpy loop",
    "pytorch eager",  # skipped with a reason where torch is not installed
)
PEERS = {"flax linen": "flax", "pytorch eager": "torch"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(exit status, stderr, stdout, results JSON) of one --quick run of every workload."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    only = ";".join(dict.fromkeys(WORKLOAD1 + WORKLOAD4))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "benchmarks" / "run.py"), "--quick",
         "--only", only, "--regimes", "planar,digits", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.read_text()) if out.is_file() else None
    return proc.returncode, proc.stderr, proc.stdout, result


def _check_rows(rows: dict, names: tuple[str, ...], ran_key: str) -> None:
    """Every variant asked for ran, except a peer that is not installed."""
    assert set(rows) == set(names)
    for name, row in rows.items():
        assert "failed" not in row, f"{name} crashed: {row['failed']}"
        if "skipped" in row:
            assert name in PEERS and row["skipped"] == f"{PEERS[name]} not installed", (name, row)
        else:
            assert row[ran_key] > 0, name


def test_quick_run_succeeds(quick_run):
    status, stderr, stdout, result = quick_run
    assert status == 0, stderr[-3000:]
    assert "steps/s" in stdout and "x jax scan" in stdout


def test_workload1_every_variant_trains_the_same_network(quick_run):
    rows = quick_run[3]["workloads"]["1"]["variants"]
    _check_rows(rows, WORKLOAD1, "steps_per_s")
    # The losses after the timed epochs (each variant its own shuffles) agree roughly.
    losses = [row["final_loss"] for row in rows.values() if "final_loss" in row]
    assert max(losses) - min(losses) < 0.5


def test_workloads2_and_3_report_their_numbers(quick_run):
    w2, w3 = quick_run[3]["workloads"]["2"], quick_run[3]["workloads"]["3"]
    assert w2["nnfun fit (bf16)"]["tflops"] > 0 and w2["jax scan (bf16)"]["tflops"] > 0
    assert w3["vmap_s"] > 0 and w3["sequential_s"] > 0
    assert w3["max_final_loss_diff"] < 1e-4  # each vmapped model follows its solo run


def test_workload4_short_epochs_every_variant_trains_the_same_network(quick_run):
    regimes = quick_run[3]["workloads"]["4"]
    # The cat regime is the planar one's code on a 12288-wide input; its own run, on the
    # course's files, is the benchmark's, not this smoke test's.
    assert set(regimes) == {"planar", "digits"}
    tracks = "track" in inspect.signature(nnfun.train.fit).parameters
    for regime, w4 in regimes.items():
        rows = w4["variants"]
        if not tracks:  # the probes variant waits for fit(..., track=...)
            assert rows.pop("nnfun fit + 2 track probes")["skipped"].startswith("nnfun fit has")
            _check_rows(rows, tuple(n for n in WORKLOAD4 if "track" not in n), "run_s")
        else:
            _check_rows(rows, WORKLOAD4, "run_s")
        assert rows["jax scan, whole run"]["x_jax_scan"] == 1.0
        assert rows["nnfun fit (autodiff)"]["fit_speedup"] == 1.0
        losses = {name: row["final_loss"] for name, row in rows.items() if "final_loss" in row}
        # Full batch: the same initial weights and the same steps, whatever runs them. With
        # mini-batches each variant shuffles its own way: close, not equal.
        tol = 1e-3 if w4["batch"] is None else 0.05
        assert max(losses.values()) - min(losses.values()) < tol, (regime, losses)
