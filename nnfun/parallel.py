"""Data parallelism: a device mesh with one axis "data", batch sharding, multi-host start-up.

Parameters and optimiser state are replicated (``PartitionSpec()``); every mini-batch is
split along its leading (sample) axis over the mesh axis ``"data"`` (``PartitionSpec("data")``).
The loss is a mean over the batch, so the compiler turns the gradient's batch sum into an
all-reduce across devices: each device sees batch_size / devices samples, the update is the
same as on one device. Multi-host (a TPU pod slice): call ``initialize()`` on every host
first, then ``data_mesh()`` spans all hosts' devices and ``shard_host_data`` builds the
global arrays from each process's own shard.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def initialize(**kwargs) -> None:
    """Multi-host start-up: ``jax.distributed.initialize(**kwargs)`` before any other JAX call.

    On Cloud TPU VMs (and SLURM/Open MPI clusters) every argument is detected; elsewhere
    pass ``coordinator_address``, ``num_processes`` and ``process_id``. One process per host.
    """
    jax.distributed.initialize(**kwargs)


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named "data" over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (AXIS,), (AxisType.Auto,), devices=devices)


def data_size(mesh: Mesh) -> int:
    """How many ways the batch is split: the size of the mesh axis "data"."""
    if AXIS not in mesh.shape:
        raise ValueError(f"mesh: expected an axis named {AXIS!r}, got axes {tuple(mesh.shape)}")
    return int(mesh.shape[AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, keys)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (sample) axis split over "data"; other axes whole."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh: Mesh):
    """``tree`` placed whole on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def constrain_batch(x, mesh: Mesh):
    """Inside jit: ask the compiler to split ``x`` (batch, ...) over "data"."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def shard_host_data(local, mesh: Mesh):
    """Global arrays from this process's samples: (n_local, ...) on each of P processes gives
    (P * n_local, ...) sharded over "data". Every process must pass the same n_local."""
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(a)),
        local,
    )


def place_data(x, mesh: Mesh):
    """Training data for a sharded fit: kept as is when already a global array on ``mesh``
    (multi-host, from ``shard_host_data``); otherwise replicated, so that each step's
    shuffled gather stays local and only the gathered batch is split."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
        return x
    if jax.process_count() > 1:
        raise ValueError(
            "x: with several processes pass global arrays built by "
            "nnfun.parallel.shard_host_data(local_data, mesh)"
        )
    return replicate(x, mesh)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Full batches must split evenly over the devices (the last partial batch need not)."""
    devices = data_size(mesh)
    if batch_size % devices:
        below = batch_size - batch_size % devices
        above = below + devices
        nearby = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"batch_size: {batch_size} does not split over the {devices} devices of the mesh "
            f"axis {AXIS!r}; use a multiple of {devices}, e.g. {nearby}"
        )
