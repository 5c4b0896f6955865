"""The accelerator targets of the benchmarks, judged from one run's merged results.

Each target is a ratio of two numbers from the same run; ``met`` is None where a number is
missing (a workload not run, a peer not installed). The H100 reference is the steps/s that the
targets were set against (workload 1, another project's measurement on an H100).
"""

from __future__ import annotations

H100_REFERENCE = {  # workload 1, steps/s
    "jax scan": 17_273,
    "flax nnx (nnx.jit)": 390,
    "flax linen": 743,
    "equinox (filter_jit)": 732,
    "pytorch eager": 618,
    "torch.compile": 713,
}
FIT = "nnfun fit (autodiff)"


def _get(tree: dict, *path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _row(target: str, value: float | None, goal: float, unit: str = "x", note: str = "") -> dict:
    met = None if value is None else bool(value >= goal)
    measured = "not measured" if value is None else f"{value:.3g}{unit}"
    return {
        "target": target,
        "goal": goal,
        "value": value,
        "measured": measured,
        "met": met,
        "note": note,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def workload1_targets(w1: dict | None) -> list[dict]:
    rows = _get(w1, "variants") or {}
    fit = _get(rows, FIT, "steps_per_s")

    def speed(name):
        return _get(rows, name, "steps_per_s")

    return [
        _row("W1 fit >= 20x Flax NNX", _ratio(fit, speed("flax nnx (nnx.jit)")), 20),
        _row("W1 fit >= 20x PyTorch eager", _ratio(fit, speed("pytorch eager")), 20),
        _row("W1 fit >= 0.95x the hand-written epoch scan", _ratio(fit, speed("jax scan")), 0.95),
    ]


def workload2_targets(w2: dict | None) -> list[dict]:
    nnfun_ = _get(w2, "nnfun fit (bf16)", "tflops")
    jax_ = _get(w2, "jax scan (bf16)", "tflops")
    torch_ = _get(w2, "pytorch (autocast bf16)", "tflops")
    peak = _get(w2, "peak matmul (jax)", "tflops")
    share = None if _ratio(nnfun_, peak) is None else f"{nnfun_ / peak:.0%} of the measured peak"
    return [
        _row("W2 bf16 fit >= 0.95x plain JAX", _ratio(nnfun_, jax_), 0.95, note=share or ""),
        _row("W2 bf16 fit >= 1.15x PyTorch autocast", _ratio(nnfun_, torch_), 1.15),
    ]


def workload3_targets(w3: dict | None) -> list[dict]:
    return [
        _row("W3 256 models: vmap >= 15x one after another", _get(w3, "vmap_over_sequential"), 15)
    ]


def workload4_targets(w4: dict | None, regimes=("planar", "cat", "digits")) -> list[dict]:
    out = []
    for regime in regimes:
        rows = _get(w4, regime, "variants") or {}
        fit = _get(rows, FIT, "run_s")
        scan = _get(rows, "jax scan, whole run", "run_s")
        torch_ = _get(rows, "pytorch eager", "run_s")
        out += [
            _row(f"W4 {regime}: fit >= 0.8x the whole-run scan", _ratio(scan, fit), 0.8),
            _row(f"W4 {regime}: fit >= 10x PyTorch eager", _ratio(torch_, fit), 10),
        ]
    return out


def judge(result: dict) -> list[dict]:
    """Every target, from merged results: workloads "1" to "3", and workload 4's default pass."""
    w = result.get("workloads", {})
    w4 = _get(result, "workload4_passes", "default", "regimes")
    return (
        workload1_targets(w.get("1"))
        + workload2_targets(w.get("2"))
        + workload3_targets(w.get("3"))
        + workload4_targets(w4)
    )
