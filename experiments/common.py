"""What every experiment shares: its flags, its output folder, its metrics and its verdict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """--quick, --seeds N and --out DIR (default runs/<name>/)."""
    p = argparse.ArgumentParser(prog=name, description=(doc or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small and fast (for tests)")
    p.add_argument("--seeds", type=int, default=3, help="seeds run at once with vmap")
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
    """Writes metrics.json (with the checks), prints the verdict; True when all held."""
    out.mkdir(parents=True, exist_ok=True)
    held = all(checks.values())
    payload = {**metrics, "checks": checks, "conclusion_held": held}
    (out / "metrics.json").write_text(json.dumps(_plain(payload), indent=2))
    for name, ok in checks.items():
        print(f"  [{'held' if ok else 'FAILED'}] {name}")
    print(f"conclusion {'held' if held else 'did NOT hold'}; metrics in {out / 'metrics.json'}")
    return held


def mean_std(values) -> str:
    """'mean +- std' of a sequence of numbers."""
    values = np.asarray(values, np.float64)
    return f"{values.mean():.4g} +- {values.std():.2g}"


def exit_code(held: bool) -> None:
    """Exit status 0 when the conclusion held, 1 otherwise."""
    sys.exit(0 if held else 1)
