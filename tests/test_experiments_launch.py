"""Experiments start from any working directory, by path and as modules.

Runs the fastest experiment (computational_graph --quick) twice at once, each from a folder
outside the repository and with no PYTHONPATH: as ``python -m experiments.computational_graph``
(the installed ``experiments`` package) and by path from a copy of the repository, which must
use its own checkout (its sys.path line), not the installed one: its default output folder
lands inside the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "computational_graph"


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_experiment_runs_by_path_and_as_module_from_elsewhere(tmp_path):
    copy = tmp_path / "checkout"
    skip = shutil.ignore_patterns("__pycache__", "figures", "runs", "*.md")
    for package in ("nnfun", "experiments"):
        shutil.copytree(ROOT / package, copy / package, ignore=skip)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    module_out = tmp_path / "module_out"
    runs = {
        "by path": _start(
            [sys.executable, str(copy / "experiments" / f"{NAME}.py"), "--quick"], elsewhere
        ),  # fmt: skip
        "as module": _start(
            [sys.executable, "-m", f"experiments.{NAME}", "--quick", "--out", str(module_out)],
            elsewhere,
        ),  # fmt: skip
    }
    outputs = {"by path": copy / "runs" / NAME, "as module": module_out}
    for how, proc in runs.items():
        try:
            _, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, f"{how}: exit {proc.returncode}\n{stderr[-3000:]}"
        metrics = json.loads((outputs[how] / "metrics.json").read_text())
        assert metrics["conclusion_held"], how
