"""Shared test helpers."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def run_experiment(tmp_path):
    """Runs an experiment module with --quick into tmp_path; returns its metrics.json after
    checking that its conclusion held and that it drew a figure."""

    def run(module, *flags) -> dict:
        out = tmp_path / module.NAME
        assert module.main(["--quick", *flags, "--out", str(out)]) is True
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["conclusion_held"] and all(metrics["checks"].values())
        assert list(out.glob("*.png")) or list(out.glob("*.md")), "no figure or table written"
        return metrics

    return run
