"""A sampled mutation score: a seeded random sample of a module's mutants, each run against
the tests that reach the module, in a fresh interpreter, with a timeout.

    python tools/mutation_sample.py losses layers --n 10 --seed 0 --jobs 2

Mutants are mutmut's (its operators, applied with libcst), one change each, but applied to
a plain copy of the source instead of mutmut's trampolines, and also inside decorated
functions (``@jax.jit``, ``@dataclass`` methods), which mutmut skips. Each mutant is written
into a scratch copy of the repository and the module's selected tests
(``tools/mutation_selection.py``) run there with ``python -m pytest -x`` in a new process:
JAX is never forked, and no program compiled before the mutation can be reused. Exit status
0 means the mutant survived; a failure, an error or a timeout means it was killed.

Mutants triaged as equivalent (``tools/mutation_equivalent.json``, with a reason each) are
reported as such and left out of the score. Results go to
``tests/mutation_results/<module>.json``; the score is killed / (sampled - equivalent) with
a Wilson 95% interval: a score of what ran, never extrapolated.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
from mutmut.mutation import file_mutation

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from mutation_selection import SELECTION, paths  # noqa: E402

EQUIVALENT = ROOT / "tools" / "mutation_equivalent.json"
RESULTS = ROOT / "tests" / "mutation_results"
COPIED = ["nnfun", "tests", "experiments", "pyproject.toml"]


@dataclass(frozen=True)
class Mutant:
    """One change to one file; ``key`` names it (file, line, function, a digest of the change)."""

    path: str
    line: int
    function: str
    before: str
    after: str
    tree: cst.Module
    original: cst.CSTNode
    mutated: cst.CSTNode

    @property
    def key(self) -> str:
        digest = hashlib.sha1(f"{self.before}\0{self.after}".encode()).hexdigest()[:8]
        return f"{self.path}:{self.line}:{self.function}:{digest}"

    def source(self) -> str:
        """The whole mutated file."""
        return file_mutation.deep_replace(self.tree, self.original, self.mutated).code


class _Visitor(file_mutation.MutationVisitor):
    """mutmut's visitor, also entering decorated functions (their decorators stay intact)."""

    def _skip_node_and_children(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef) and node.decorators:
            return False
        return super()._skip_node_and_children(node)


def mutants(path: str, root: Path = ROOT) -> list[Mutant]:
    """Every mutant of one source file, in source order, without duplicates."""
    code = (root / path).read_text()
    wrapper = cst.MetadataWrapper(cst.parse_module(code))
    ignored = file_mutation.get_ignored_lines(path, code, wrapper, None)
    visitor = _Visitor(file_mutation.mutation_operators, ignored, None)
    wrapper.visit(visitor)
    tree = wrapper.module
    positions = wrapper.resolve(cst.metadata.PositionProvider)
    found: dict[str, Mutant] = {}
    for m in visitor.mutations:
        outer = m.contained_by_top_level_function
        if outer is None:
            continue  # module-level code: mutmut's rule, it runs at import
        mutant = Mutant(
            path=path,
            line=positions[m.original_node].start.line,
            function=outer.name.value if isinstance(outer, cst.FunctionDef) else "class-body",
            before=tree.code_for_node(m.original_node).strip(),
            after=cst.Module([]).code_for_node(m.mutated_node).strip(),
            tree=tree,
            original=m.original_node,
            mutated=m.mutated_node,
        )
        if mutant.before != mutant.after:
            found.setdefault(mutant.key, mutant)
    return list(found.values())


def sample(module: str, n: int, seed: int, root: Path = ROOT) -> tuple[list[Mutant], int]:
    """A reproducible random sample of n mutants of a module (all if fewer), and the pool size."""
    pool = [m for p in paths(module) for m in mutants(p, root)]
    rng = random.Random(f"{seed}:{module}")
    chosen = rng.sample(range(len(pool)), min(n, len(pool)))
    return [pool[i] for i in sorted(chosen)], len(pool)


def wilson(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a kill rate (95% for z = 1.96)."""
    if total == 0:
        return (0.0, 1.0)
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def scratch_copy(root: Path, into: Path) -> Path:
    """A copy of the parts of the repository the tests need."""
    into.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, into / name)
    return into


def run_tests(scratch: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """Runs the tests in a new interpreter in ``scratch``: (outcome, seconds, last line).

    Compiled programs are shared between runs through JAX's persistent cache, which is keyed
    by the traced program itself: a mutant that changes what is traced compiles anew."""
    env = dict(os.environ, PYTHONPATH=str(scratch), KERAS_BACKEND="jax", PYTHONHASHSEED="0")
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(Path(tempfile.gettempdir()) / "nnfun-mutation-jax-cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    env.pop("MUTANT_UNDER_TEST", None)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider"]
    start = time.monotonic()
    try:
        done = subprocess.run(
            [*cmd, *tests], cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else done.stderr.strip()[-200:]
    return ("survived" if done.returncode == 0 else "killed"), seconds, last


def run_mutant(mutant: Mutant, scratch: Path, tests: list[str], timeout: float) -> dict:
    """Writes the mutant into the scratch copy, runs the tests, puts the file back."""
    target = scratch / mutant.path
    original = target.read_text()
    target.write_text(mutant.source())
    try:
        outcome, seconds, last = run_tests(scratch, tests, timeout)
    finally:
        target.write_text(original)
        shutil.rmtree(target.parent / "__pycache__", ignore_errors=True)
    return {
        "key": mutant.key,
        "line": mutant.line,
        "before": mutant.before,
        "after": mutant.after,
        "outcome": outcome,
        "seconds": round(seconds, 1),
        "last_line": last,
    }


def equivalent() -> dict[str, str]:
    """Triaged equivalent mutants: key -> why no test can tell them apart."""
    if not EQUIVALENT.exists():
        return {}
    return {k: v["reason"] for k, v in json.loads(EQUIVALENT.read_text()).items()}


def check_baseline(scratch: Path, tests: list[str], timeout: float) -> None:
    """The unmutated selection must pass, or every mutant would read as killed."""
    outcome, _, last = run_tests(scratch, tests, timeout)
    if outcome != "survived":
        raise SystemExit(f"the unmutated selection {tests} does not pass: {last}")


def previous(module: str) -> dict[str, dict]:
    """Killed mutants of an earlier run with the same key: tests are only ever added, so they
    stay killed; survivors are run again."""
    path = RESULTS / f"{module}.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["mutants"]
    return {r["key"]: r for r in rows if r["outcome"] in ("killed", "timeout")}


def score(module: str, rows: list[dict], seed: int, n: int, pool: int) -> dict:
    """Scores one module's sample and writes its results file."""
    triaged = equivalent()
    for row in rows:
        if row["outcome"] in ("survived", "equivalent") and row["key"] in triaged:
            row["outcome"] = "equivalent"
            row["why"] = triaged[row["key"]]
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("killed", "timeout", "survived")}
    counts["equivalent"] = sum(r["outcome"] == "equivalent" for r in rows)
    scored = len(rows) - counts["equivalent"]
    killed = counts["killed"] + counts["timeout"]
    low, high = wilson(killed, scored)
    result = {
        "module": module,
        "date": datetime.date.today().isoformat(),
        "seed": seed,
        "n": n,
        "pool": pool,
        "sampled": len(rows),
        "tests": SELECTION[module],
        **counts,
        "score": round(killed / scored, 3) if scored else None,
        "interval95": [round(low, 3), round(high, 3)],
        "mutants": sorted(rows, key=lambda r: r["key"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{module}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def report(r: dict) -> None:
    print(
        f"{r['module']}: {r['sampled']} of {r['pool']} sampled, {r['killed']} killed, "
        f"{r['timeout']} timed out, {r['equivalent']} equivalent, {r['survived']} survived: "
        f"score {r['score']} (95% {r['interval95']})",
        flush=True,
    )
    for row in r["mutants"]:
        if row["outcome"] == "survived":
            print(f"  survived {row['key']}: {row['before']!r} -> {row['after']!r}", flush=True)


def table() -> str:
    """The per-module table of tests/MUTATION.md, from the results files."""
    lines = [
        "| module | mutants in module | sampled | killed | timed out | equivalent | survived "
        "| score | 95% interval |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for module in SELECTION:
        path = RESULTS / f"{module}.json"
        if not path.exists():
            lines.append(f"| {module} | not measured | | | | | | | |")
            continue
        r = json.loads(path.read_text())
        low, high = r["interval95"]
        score = "n/a" if r["score"] is None else f"{r['score']:.0%}"
        lines.append(
            f"| {module} | {r['pool']} | {r['sampled']} | {r['killed']} | {r['timeout']} "
            f"| {r['equivalent']} | {r['survived']} | {score} | {low:.0%} to {high:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(SELECTION), help="core modules")
    parser.add_argument("--n", type=int, default=60, help="mutants sampled per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    parser.add_argument("--fresh", action="store_true", help="rerun killed mutants too")
    parser.add_argument("--table", action="store_true", help="print the results table only")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    samples = {m: sample(m, args.n, args.seed) for m in args.modules}
    kept = {m: {} if args.fresh else previous(m) for m in args.modules}
    rows: dict[str, list[dict]] = {m: [] for m in args.modules}
    tasks = []
    for module, (chosen, _) in samples.items():
        for mutant in chosen:
            if mutant.key in kept[module]:
                rows[module].append(kept[module][mutant.key])
            else:
                tasks.append((module, mutant))
    left = {m: sum(t[0] == m for t in tasks) for m in args.modules}
    with tempfile.TemporaryDirectory(prefix="nnfun-mut-") as tmp:
        free = [scratch_copy(ROOT, Path(tmp) / f"w{i}") for i in range(args.jobs)]
        if not args.no_baseline:
            for tests in {tuple(SELECTION[m]) for m in left if left[m]}:
                check_baseline(free[0], list(tests), args.timeout)

        def work(task: tuple[str, Mutant]) -> tuple[str, dict]:
            scratch = free.pop()
            try:
                return task[0], run_mutant(task[1], scratch, SELECTION[task[0]], args.timeout)
            finally:
                free.append(scratch)

        def finish(module: str) -> None:
            chosen, pool = samples[module]
            report(score(module, rows[module], args.seed, args.n, pool))

        for module in [m for m in args.modules if not left[m]]:
            finish(module)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for future in concurrent.futures.as_completed([pool.submit(work, t) for t in tasks]):
                module, row = future.result()
                rows[module].append(row)
                left[module] -= 1
                if not left[module]:
                    finish(module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
