"""Determinism: the same seed and data give bit-identical parameters in two separate processes
on CPU (initialisation, shuffling, dropout masks and BatchNorm all included)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_reliability_worker.py")


def test_same_seed_gives_bit_identical_params_across_processes(tmp_path):
    if os.environ.get("JAX_PLATFORMS", "cpu") not in ("", "cpu"):
        pytest.skip("bit-identity is promised on CPU only")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    outs = [tmp_path / f"run{i}.npz" for i in range(2)]
    runs = [
        subprocess.Popen([sys.executable, str(WORKER), "train", str(out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for out in outs
    ]  # fmt: skip
    for run in runs:
        log, _ = run.communicate(timeout=300)
        assert run.returncode == 0, log
    first, second = (np.load(out) for out in outs)
    assert sorted(first.files) == sorted(second.files) and len(first.files) >= 7
    for name in first.files:
        assert first[name].tobytes() == second[name].tobytes(), name
    loss = first["loss"]
    assert loss.shape == (4,) and np.all(np.isfinite(loss)) and np.all(loss > 0)
