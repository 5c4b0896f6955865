"""The machine a GPU run ran on, without importing JAX: packages, GPU, environment.

``python gpu_env.py missing`` prints the modules nnfun needs that are not installed (space
separated; nothing when all are there). ``python gpu_env.py describe OUT.json`` writes the
Python, the packages' versions, ``nvidia-smi``'s view of the GPU and the variables that steer
JAX and XLA.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REQUIRED = ("jax", "optax", "chex", "numpy", "sklearn", "tqdm", "h5py")  # module names
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    "jax-cuda12-plugin",
    "optax",
    "chex",
    "numpy",
    "scikit-learn",
    "h5py",
    "flax",
    "equinox",
    "torch",
    "triton",
)
ENV = (
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
    "JAX_COMPILATION_CACHE_DIR",
)
GPU_QUERY = "name,memory.total,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.limit"


def missing() -> list[str]:
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    cmd = ["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return (done.stdout or done.stderr).strip()


def describe() -> dict:
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {name: _version(name) for name in PACKAGES},
        "nvidia_smi": _nvidia_smi(),
        "env": {name: os.environ.get(name) for name in ENV},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["missing"]:
        print(" ".join(missing()))
    elif sys.argv[1:2] == ["describe"] and len(sys.argv) == 3:
        Path(sys.argv[2]).write_text(json.dumps(describe(), indent=2))
    else:
        sys.exit(f"usage: {sys.argv[0]} missing | describe OUT.json")
