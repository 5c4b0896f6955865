"""Which tests reach which module: the tests each sampled mutant of a module runs against.

The lists name the test files (or single tests) that call into the module, fastest and most
direct first, so that a killed mutant usually fails within seconds (the runner stops at the
first failure). They were chosen by reading the tests and confirmed by an unmutated run of
each selection passing (``tools/mutation_sample.py`` checks that before sampling).
"""

from __future__ import annotations

_FIT = ["tests/test_fit.py", "tests/test_run_semantics.py"]

SELECTION: dict[str, list[str]] = {
    "activations": ["tests/test_activations.py"],
    "losses": ["tests/test_mutation_kills_losses.py", "tests/test_losses.py"],
    "layers": ["tests/test_layers.py", "tests/test_network.py"],
    "network": ["tests/test_network.py", "tests/test_layers.py"],
    "train": ["tests/test_train.py", "tests/test_optimizers.py"],
    "fit": [
        "tests/test_mutation_kills_fit.py",
        "tests/test_fit.py",
        "tests/test_model.py",
        "tests/test_run_semantics.py",
    ],
    "callbacks": [
        "tests/test_mutation_kills_callbacks.py",
        "tests/test_run_semantics.py",
        "tests/test_model.py",
        "tests/test_fit.py",
    ],
    "model": [
        "tests/test_mutation_kills_model.py",
        "tests/test_model.py",
        "tests/test_keras_script.py",
    ],
    "saving": ["tests/test_model.py", "tests/test_keras_script.py"],
    "checkpoint": ["tests/test_mutation_kills_checkpoint.py", "tests/test_checkpoint.py"],
    "gradcheck": ["tests/test_gradcheck.py"],
    "parallel": ["tests/test_mutation_kills_parallel.py", "tests/test_parallel.py"],
    "data": ["tests/test_data.py"],
    "metrics": ["tests/test_mutation_kills_metrics.py", "tests/test_model.py", "tests/test_fit.py"],
    "regularizers": ["tests/test_model.py", "tests/test_train.py"],
    "initializers": ["tests/test_initializers.py"],
    "chunks": ["tests/test_mutation_kills_chunks.py", *_FIT],
    "epochs": _FIT,
    "fit_inputs": [
        "tests/test_mutation_kills_fit_inputs.py",
        "tests/test_run_semantics.py",
        "tests/test_fit.py",
        "tests/test_model.py",
    ],
    "fit_history": _FIT,
    "fit_checkpoints": ["tests/test_run_semantics.py", "tests/test_model.py"],
    "fit_many": ["tests/test_run_semantics.py", "tests/test_parallel.py"],
    "monitor": ["tests/test_run_semantics.py", "tests/test_model.py"],
    "probes": ["tests/test_run_semantics.py", "tests/test_train.py"],
    "progress": [
        "tests/test_mutation_kills_progress.py",
        "tests/test_fit.py",
        "tests/test_model.py",
        "tests/test_run_semantics.py",
    ],
    "run_record": ["tests/test_mutation_kills_run_record.py", *_FIT],
}

# Core modules a module name stands for: a package is mutated file by file.
PATHS: dict[str, list[str]] = {
    "gradcheck": [
        "nnfun/gradcheck/__init__.py",
        "nnfun/gradcheck/errors.py",
        "nnfun/gradcheck/finite.py",
        "nnfun/gradcheck/network_check.py",
        "nnfun/gradcheck/pieces.py",
    ],
}


def paths(module: str) -> list[str]:
    """The source files of a core module."""
    return PATHS.get(module, [f"nnfun/{module}.py"])
