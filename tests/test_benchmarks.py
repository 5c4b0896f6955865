"""The benchmark script runs end to end in --quick mode and every variant trains the same net.

Speed is never asserted here: the numbers live in experiments/benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (
    "nnfun fit (autodiff)",
    "nnfun fit (manual)",
    "jax jit per step",
    "jax scan",
    "flax linen",  # skipped with a reason where flax is not installed
)


def test_benchmark_quick_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "benchmarks" / "run.py"), "--quick",
         "--only", ";".join(VARIANTS), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    w1 = result["workloads"]["1"]["variants"]
    assert set(w1) == set(VARIANTS)
    for name in VARIANTS[:4]:
        assert w1[name]["steps_per_s"] > 0, name
    for name, row in w1.items():
        assert row.get("skipped") or row["steps_per_s"] > 0, name
    # Every variant trains the same network: the losses after the timed epochs agree roughly.
    losses = [row["final_loss"] for row in w1.values() if not row.get("skipped")]
    assert max(losses) - min(losses) < 0.5
    w2 = result["workloads"]["2"]
    assert w2["nnfun fit (bf16)"]["tflops"] > 0 and w2["jax scan (bf16)"]["tflops"] > 0
    w3 = result["workloads"]["3"]
    assert w3["vmap_over_sequential"] > 1
    assert w3["max_final_loss_diff"] < 1e-4  # each vmapped model follows its solo run
    assert "steps/s" in proc.stdout
