"""Experiments start from any working directory, by path and as modules.

Runs the fastest experiment (computational_graph --quick) twice at once: as
``python experiments/computational_graph.py`` and as ``python -m experiments.computational_graph``,
each from a folder outside the repository and with no PYTHONPATH, so only the script's own
sys.path line and the installed ``experiments`` package can make ``from experiments import``
work.
"""

from __future__ import annotations

import json
import os
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
    by_path, as_module = tmp_path / "by_path", tmp_path / "as_module"
    runs = {}
    for folder, target in ((by_path, [str(ROOT / "experiments" / f"{NAME}.py")]),
                           (as_module, ["-m", f"experiments.{NAME}"])):  # fmt: skip
        folder.mkdir()
        command = [sys.executable, *target, "--quick", "--out", str(folder / "out")]
        runs[folder.name] = _start(command, folder)
    for how, proc in runs.items():
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, f"{how}: exit {proc.returncode}\n{stderr[-3000:]}"
        metrics = json.loads((tmp_path / how / "out" / "metrics.json").read_text())
        assert metrics["conclusion_held"], how
