"""What every experiment shares: its flags, its output folder, its metrics and its verdict."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_started = [time.time()]  # this run's start (reset by ``parser``): its figures are newer


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """--quick, --seeds N and --out DIR (default runs/<name>/)."""
    _started[0] = time.time()
    p = argparse.ArgumentParser(prog=name, description=(doc or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small and fast (for tests)")
    p.add_argument("--seeds", type=int, default=3, help="seeds (independent runs) per setting")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / name, help="output folder")
    return p


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "tolist"):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def finish(out: Path, metrics: dict, checks: dict[str, bool]) -> bool:
    """Writes metrics.json (with the checks), prints the verdict and where the metrics and
    this run's figures are; True when all held."""
    out.mkdir(parents=True, exist_ok=True)
    held = all(checks.values())
    payload = {**metrics, "checks": checks, "conclusion_held": held}
    (out / "metrics.json").write_text(json.dumps(_plain(payload), indent=2))
    for name, ok in checks.items():
        print(f"  [{'held' if ok else 'FAILED'}] {name}")
    figures = ", ".join(str(path) for path in figures_since(out, _started[0]))
    print(
        f"conclusion {'held' if held else 'did NOT hold'}; metrics in {out / 'metrics.json'}"
        + (f"; figures: {figures}" if figures else "")
    )
    return held


def figures_since(out: Path, started: float) -> list[Path]:
    """The PNG files in ``out`` written since ``started`` (time.time()), by name; a second of
    slack for file systems whose clocks are coarse."""
    return sorted(p for p in out.glob("*.png") if p.stat().st_mtime >= started - 1.0)


def mean_std(values, decimals: int | None = None) -> str:
    """'mean +- std' of a sequence of numbers; with ``decimals`` both to that many places,
    so that a table's column lines up."""
    values = np.asarray(values, np.float64)
    if decimals is not None:
        return f"{values.mean():.{decimals}f} +- {values.std():.{decimals}f}"
    return f"{values.mean():.4g} +- {values.std():.2g}"


def exit_code(held: bool) -> None:
    """Exit status 0 when the conclusion held, 1 otherwise."""
    sys.exit(0 if held else 1)
