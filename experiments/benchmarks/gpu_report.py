"""Merges the parts of one ``gpu.sh`` run into ``results.json`` and ``results.md``.

``python gpu_report.py PARTS OUTDIR``: PARTS holds what the phases wrote (``env.json``,
``phases.tsv``, ``check.json``, ``w123.json``, ``w4-<pass>.json``, ``compile.json``). Besides
the correctness checks of ``gpu_check.py`` it adds two of its own: every command-buffer pass
of workload 4 ends at the default pass's losses (the flags change how kernels are launched,
not what they compute), and each vmapped model of workload 3 ends where its solo run does.
Exits 1 when a check fails or a phase failed or ran out of time.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import targets  # noqa: E402

PASSES = {  # workload 4's passes: name -> what XLA's command buffers take over
    "default": "XLA's default command buffers",
    "loops": "command buffers with while loops and conditionals (+WHILE,+CONDITIONAL)",
    "off": "no command buffers",
}
SAME_RUN = ("nnfun fit (autodiff)", "nnfun fit (manual)", "jax scan, whole run")
PASS_TOLERANCE = 1e-5  # final losses of the same deterministic run under other launch flags
VMAP_TOLERANCE = 1e-3  # TF32 matmuls of a batched and a single model may round differently


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _phases(parts: Path) -> list[dict]:
    rows = []
    path = parts / "phases.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, seconds, flags = (line.split("\t") + ["", "", ""])[:4]
        rows.append(
            {"phase": name, "status": status, "seconds": int(seconds or 0), "xla_flags": flags}
        )
    return rows


def _check(name: str, error: float, tolerance: float) -> dict:
    passed = bool(math.isfinite(error) and error <= tolerance)
    return {"check": name, "error": error, "tolerance": tolerance, "passed": passed}


def pass_checks(passes: dict) -> list[dict]:
    """Each command-buffer pass's final losses against the default pass's, relative."""
    rows = []
    base = passes.get("default", {}).get("regimes", {})
    for name, result in passes.items():
        if name == "default":
            continue
        for regime, w4 in result.get("regimes", {}).items():
            for variant in SAME_RUN:
                got = w4["variants"].get(variant, {}).get("final_loss")
                ref = base.get(regime, {}).get("variants", {}).get(variant, {}).get("final_loss")
                if got is None or ref is None:
                    continue
                error = abs(got - ref) / max(abs(ref), 1e-30)
                rows.append(
                    _check(
                        f"W4 {regime} {variant}: {name} pass = default pass", error, PASS_TOLERANCE
                    )
                )
    return rows


def merge(parts: Path) -> dict:
    runs = {"w123": _load(parts / "w123.json"), "compile": _load(parts / "compile.json")}
    runs |= {f"w4-{name}": _load(parts / f"w4-{name}.json") for name in PASSES}
    first = next((r for r in runs.values() if r), {})
    check = _load(parts / "check.json") or {}
    workloads = dict((runs["w123"] or {}).get("workloads", {}))
    compiled = (runs["compile"] or {}).get("workloads", {}).get("1", {}).get("variants", {})
    if "1" in workloads and compiled:
        variants = {**workloads["1"]["variants"], **compiled}
        workloads["1"] = {**workloads["1"], "variants": variants}
    passes = {}
    for name, what in PASSES.items():
        run = runs[f"w4-{name}"]
        if run and "4" in run.get("workloads", {}):
            passes[name] = {
                "what": what,
                "xla_flags": run["env"].get("XLA_FLAGS"),
                "regimes": run["workloads"]["4"],
            }
    checks = list(check.get("checks", [])) + pass_checks(passes)
    if "3" in workloads:
        diff = workloads["3"]["max_final_loss_diff"]
        checks.append(
            _check("W3 each vmapped model ends at its solo run's loss", diff, VMAP_TOLERANCE)
        )
    phases = _phases(parts)
    result = {
        "date": first.get("date"),
        "device": first.get("device") or check.get("device"),
        "backend": first.get("backend") or check.get("backend"),
        "versions": first.get("versions"),
        "matmul_precision": first.get("matmul_precision"),
        "quick": bool(first.get("quick")),
        "machine": _load(parts / "env.json"),
        "phases": phases,
        "checks": checks,
        "workloads": workloads,
        "workload4_passes": passes,
    }
    result["targets"] = targets.judge(result)
    bad = [p for p in phases if p["status"] not in ("ok", "not asked for")]
    result["passed"] = bool(checks) and all(c["passed"] for c in checks) and not bad
    return result


# ---- markdown --------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def _num(value, fmt: str = ".3g") -> str:
    return "" if value is None else format(value, fmt)


def _mb(value) -> str:
    return "" if value is None else f"{value / 1e6:.1f} MB"


def _not_run(row: dict) -> str:
    return f"failed: {row['failed']}" if "failed" in row else f"skipped: {row.get('skipped')}"


def markdown(r: dict) -> str:
    out = [f"# Benchmarks on {r['device']} ({r['backend']}), {r['date']}", ""]
    if r["quick"] or r["backend"] == "cpu":
        out += [
            "A dry run (tiny sizes or the CPU): the steps of a GPU run, not its numbers; "
            "the targets are for an accelerator.",
            "",
        ]
    out += [
        f"Versions: {r['versions']}. JAX's matmul precision for float32: "
        f"{r['matmul_precision'] or 'default (TF32 on NVIDIA GPUs since Ampere)'}.",
        "",
    ]
    out += ["## Phases", ""]
    out += _table(
        ["phase", "status", "seconds", "XLA_FLAGS"],
        [[p["phase"], p["status"], p["seconds"], f"`{p['xla_flags']}`"] for p in r["phases"]],
    )
    out += ["## Correctness (relative error against float64)", ""]
    out += _table(
        ["check", "error", "tolerance", "passed"],
        [
            [
                c["check"],
                f"{c['error']:.2e}",
                f"{c['tolerance']:.0e}",
                "yes" if c["passed"] else "**no**",
            ]
            for c in r["checks"]
        ],
    )
    out += ["## Targets", ""]
    met = {True: "yes", False: "**no**", None: "not measured"}
    out += _table(
        ["target", "measured", "met", "note"],
        [[t["target"], t["measured"], met[t["met"]], t["note"]] for t in r["targets"]],
    )
    w = r["workloads"]
    if "1" in w:
        rows, scan = w["1"]["variants"], w["1"]["variants"].get("jax scan", {}).get("steps_per_s")
        out += [f"## Workload 1: 784-500-500-10, batch {w['1']['batch']}, steps/s", ""]
        body = []
        for name, row in rows.items():
            sps = row.get("steps_per_s")
            ref = targets.H100_REFERENCE.get(name, "")
            if sps is None:
                body.append([name, _not_run(row), "", ref, ""])
            else:
                ratio = _num(sps / scan) if scan else ""
                body.append([name, f"{sps:.1f}", ratio, ref, _mb(row.get("program_bytes"))])
        out += _table(
            ["variant", "steps/s", "x jax scan", "H100 reference", "program memory"], body
        )
        peak = _mb(w["1"].get("peak_bytes_so_far")) or "not reported"
        out += [f"Peak device memory after workload 1: {peak}.", ""]
    if "2" in w:
        w2 = w["2"]
        out += [f"## Workload 2: width {w2['width']}, depth {w2['depth']}, bfloat16", ""]
        body = [
            [
                name,
                _num(row["tflops"], ".3g"),
                _mb(row.get("program_bytes") or row.get("peak_bytes")),
            ]
            for name, row in w2.items()
            if isinstance(row, dict) and "tflops" in row
        ]
        out += _table(["variant", "TFLOP/s", "memory"], body)
        peak = _mb(w2.get("peak_bytes_so_far")) or "not reported"
        out += [f"Peak device memory after workload 2: {peak}.", ""]
    if "3" in w:
        w3 = w["3"]
        out += [
            f"## Workload 3: {w3['models']} models x {w3['steps']} steps",
            "",
            f"vmap {w3['vmap_s']:.2f} s, one after another {w3['sequential_s']:.2f} s "
            f"(from {w3['sequential_models_timed']} timed): "
            f"{w3['vmap_over_sequential']:.1f}x. Peak device memory after it: "
            f"{_mb(w3.get('peak_bytes_so_far')) or 'not reported'}.",
            "",
        ]
    out += _workload4(r["workload4_passes"])
    return "\n".join(out)


def _workload4(passes: dict) -> list[str]:
    if not passes:
        return []
    out = ["## Workload 4: short epochs, whole-run seconds (x the whole-run scan of the pass)", ""]
    out += [f"- {name}: {p['what']}; XLA_FLAGS=`{p['xla_flags']}`" for name, p in passes.items()]
    out.append("")
    regimes = dict.fromkeys(reg for p in passes.values() for reg in p["regimes"])
    for regime in regimes:
        spec = next(p["regimes"][regime] for p in passes.values() if regime in p["regimes"])
        peak = _mb(spec.get("peak_bytes_so_far")) or "not reported"
        out += [
            f"### {regime}: {spec['sizes']}, {spec['epochs']} epochs, "
            f"batch {spec['batch'] or 'full'} (peak device memory so far: {peak})",
            "",
        ]
        names = dict.fromkeys(
            n for p in passes.values() for n in p["regimes"].get(regime, {}).get("variants", {})
        )
        body = []
        for name in names:
            cells = [name]
            for p in passes.values():
                row = p["regimes"].get(regime, {}).get("variants", {}).get(name)
                if row is None:
                    cells.append("")
                elif "run_s" not in row:
                    cells.append(_not_run(row))
                else:
                    scaled = "" if row["epochs_run"] == spec["epochs"] else " (scaled)"
                    cells.append(f"{row['run_s']:.3g} s ({_num(row['x_jax_scan'])}x){scaled}")
            body.append(cells)
        out += _table(["variant", *passes], body)
    return out


def main(parts: Path, out: Path) -> dict:
    result = merge(parts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(markdown(result))
    failed = [c["check"] for c in result["checks"] if not c["passed"]]
    bad = [
        f"{p['phase']} ({p['status']})"
        for p in result["phases"]
        if p["status"] not in ("ok", "not asked for")
    ]
    print("\n".join(f"target {t['target']}: {t['measured']}" for t in result["targets"]))
    print(
        f"checks: {len(result['checks']) - len(failed)} of {len(result['checks'])} passed"
        + (f"; FAILED: {'; '.join(failed)}" if failed else "")
    )
    if bad:
        print(f"phases not completed: {', '.join(bad)}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} PARTS OUTDIR")
    sys.exit(0 if main(Path(sys.argv[1]), Path(sys.argv[2]))["passed"] else 1)
