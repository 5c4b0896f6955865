"""Data parallelism: a device mesh with one axis "data", batch sharding, multi-host start-up.

Parameters and optimiser state are replicated (``PartitionSpec()``); every mini-batch is
split along its leading (sample) axis over the mesh axis ``"data"`` (``PartitionSpec("data")``).
The loss is a mean over the batch, so the compiler turns the gradient's batch sum into an
all-reduce across devices: each device sees batch_size / devices samples, the update is the
same as on one device.

Multi-host (a TPU pod slice, or several processes on one machine): every process runs the
same script and calls ``initialize()`` first; ``data_mesh()`` then spans all processes'
devices, and arrays on it are *global*: each process holds only its own devices' shards.
Everything here is written for that case and is the identity of the one-process case:

- ``shard_host_data`` builds global arrays from each process's own rows (``local_rows``);
- ``replicate`` places host values (the same on every process) on every device;
- ``fetch`` brings global arrays back as NumPy, the same values on every process;
- ``is_main_process``, ``barrier``, ``any_process`` and ``check_on_all_processes``
  coordinate the host side: one writer, no reader ahead of it, one decision for all, and
  an error seen by one process raised by all;
- ``save_checkpoint``, ``restore_checkpoint``, ``restore_latest_checkpoint`` and
  ``latest_checkpoint_step``: process 0 writes the replicated state, every process restores
  the same one (the directory must be shared by all hosts).

Functions that talk to other processes are collectives: every process must call them, in
the same order, or the run hangs.
"""

from __future__ import annotations

import json
import os
import traceback
import zlib

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
_MESSAGE_BYTES = 2048  # room for one process's error message in check_on_all_processes


# ---- start-up ---------------------------------------------------------------------------
def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids=None,
    **kwargs,
) -> None:
    """Multi-host start-up, on every process before any other JAX call.

    With no arguments on Cloud TPU VMs (and SLURM / Open MPI / Kubernetes clusters) JAX
    detects everything. Elsewhere pass ``coordinator_address`` ("host:port" of process 0),
    ``num_processes`` and ``process_id``, or set ``JAX_COORDINATOR_ADDRESS`` (read by JAX),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here). ``kwargs`` go to
    ``jax.distributed.initialize``. CPU processes exchange data over gloo (TCP).
    """
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = _env_int("JAX_NUM_PROCESSES", 1)
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = _env_int("JAX_PROCESS_ID", 0)
    if num_processes is not None and process_id is not None:
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id: expected an int in [0, {num_processes}) for num_processes="
                f"{num_processes}, got {process_id}"
            )
    # Without cross-process collectives a CPU backend cannot run a computation spanning
    # processes. gloo is JAX's default today; set it unless the user chose another.
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        **kwargs,
    )


def _env_int(name: str, minimum: int) -> int:
    value = os.environ[name]
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum} in the environment, got {value!r}")
    return number


def is_main_process() -> bool:
    """True on process 0: the one that writes files and prints."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches ``barrier(name)`` (the same name on all)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any of them: one decision for all
    (stop on Ctrl-C seen by one host, a file only one host found). A collective."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.bool_(flag))))


def check_on_all_processes(ok: bool, message: str = "") -> None:
    """Raises ``ValueError`` on every process when ``ok`` is False on any of them.

    For an error that only some processes can see (their own data, their own file): each
    raises with the messages of the processes that failed, so no process is left waiting
    in a collective. ``message`` says what went wrong where ``ok`` is False. A collective.
    """
    if jax.process_count() == 1:
        if not ok:
            raise ValueError(message)
        return
    text = (message if not ok else "").encode()[: _MESSAGE_BYTES - 1]
    row = np.zeros(_MESSAGE_BYTES + 1, np.uint8)
    row[0] = not ok
    row[1 : 1 + len(text)] = np.frombuffer(text, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(row))
    failed = [i for i in range(rows.shape[0]) if rows[i, 0]]
    if failed:
        texts = [bytes(rows[i, 1:]).rstrip(b"\0").decode(errors="replace") for i in failed]
        if len(failed) == 1:  # the same text as on one process
            raise ValueError(texts[0])
        raise ValueError("; ".join(f"process {i}: {t}" for i, t in zip(failed, texts, strict=True)))


# ---- mesh and shardings -------------------------------------------------------------------
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


def constrain_batch(x, mesh: Mesh):
    """Inside jit: ask the compiler to split ``x`` (batch, ...) over "data"."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _spans_processes(mesh: Mesh) -> bool:
    return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


# ---- host values <-> global arrays ------------------------------------------------------------
def replicate(tree, mesh: Mesh):
    """``tree`` placed whole on every device of ``mesh``: a state to train.

    Leaves are host values (NumPy, Python scalars, arrays on this process's devices), the
    same on every process, or global arrays already on ``mesh``. A mesh spanning several
    processes cannot be reached by ``device_put``; each process then supplies its copy
    (``make_array_from_process_local_data``). Typed PRNG keys stay typed keys.
    """
    sharding = replicated(mesh)
    if not _spans_processes(mesh):
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: _replicate_leaf(a, sharding), tree)


def _replicate_leaf(a, sharding: NamedSharding):
    if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
        return a
    if isinstance(a, jax.Array) and not a.is_fully_addressable:  # global, another layout
        return jax.jit(lambda v: v, out_shardings=sharding)(a)
    if _is_key(a):
        data = _replicate_leaf(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_process_local_data(sharding, host, host.shape)


def fetch(tree):
    """Host values of a tree of (global) arrays: NumPy, identical on every process.

    Replicated leaves are read from a local copy; sharded ones are gathered from every
    process (a collective: call it on all). Typed PRNG keys come back as keys on this
    process's first device (NumPy has no key type); other leaves are passed through.
    """
    return jax.tree.map(_fetch_leaf, tree)


def _fetch_leaf(a):
    if not isinstance(a, jax.Array):
        return a
    if _is_key(a):
        data = _fetch_leaf(jax.random.key_data(a))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    if a.is_fully_addressable:
        return np.asarray(a)
    if a.sharding.is_fully_replicated:
        return np.asarray(a.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def local_rows(tree, process_index: int | None = None, process_count: int | None = None):
    """This process's share of a data set every process can read: equal contiguous rows.

    Each leaf (n, ...) gives rows ``[i * k, (i + 1) * k)`` for process ``i``, with
    ``k = n // (process_count * L) * L`` and L this process's device count, so that
    ``shard_host_data`` accepts the share; the last ``n - process_count * k`` rows (fewer
    than one per device) are left out. Defaults: this process and the process count.
    """
    i = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not (isinstance(count, int) and count >= 1):
        raise ValueError(f"process_count: expected an int >= 1, got {count!r}")
    if not (isinstance(i, int) and 0 <= i < count):
        raise ValueError(f"process_index: expected an int in [0, {count}), got {i!r}")
    leaves = jax.tree.leaves(tree)
    lengths = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if not leaves or None in lengths or len(lengths) > 1:
        shapes = [np.shape(a) for a in leaves]
        raise ValueError(
            f"tree: expected arrays with the same leading (sample) axis, got shapes {shapes}"
        )
    n = lengths.pop()
    devices = jax.local_device_count()
    k = n // (count * devices) * devices
    if k == 0:
        raise ValueError(
            f"tree: {n} samples do not give every one of {count} processes x {devices} "
            f"devices a sample; expected at least {count * devices}"
        )
    return jax.tree.map(lambda a: a[i * k : (i + 1) * k], tree)


def shard_host_data(local, mesh: Mesh):
    """Global arrays from this process's samples: (n_local, ...) on each of P processes gives
    (P * n_local, ...) sharded over "data", process i's rows at [i * n_local, ...).

    Every process must pass the same n_local (and feature shapes), a multiple of its device
    count on ``mesh``; otherwise every process raises the same ``ValueError``. A collective.
    """
    leaves = [np.asarray(a) for a in jax.tree.leaves(local)]
    shapes = [a.shape for a in leaves]
    if not leaves or any(a.ndim == 0 for a in leaves) or len({s[0] for s in shapes}) > 1:
        raise ValueError(
            f"local: expected arrays (n_local, ...) with the same n_local, got shapes {shapes}"
        )
    n_local = shapes[0][0]
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if jax.process_count() > 1:
        # Mismatched shapes would make the global arrays inconsistent (or hang): compare first.
        everyone = np.asarray(multihost_utils.process_allgather(_shape_code(shapes)))
        if not (everyone == everyone[0]).all():
            per_process = {i: _shape_decode(row) for i, row in enumerate(everyone)}
            n_locals = [row[0][0] if row else None for row in per_process.values()]
            what = (
                f"n_local (rows per process) {n_locals}"
                if len(set(n_locals)) > 1
                else f"shapes {per_process}"
            )
            raise ValueError(
                f"local: every process must pass the same n_local and feature shapes; "
                f"processes 0..{len(everyone) - 1} passed {what}"
            )
    if local_devices == 0 or n_local % local_devices:
        raise ValueError(
            f"local: n_local={n_local} rows must split evenly over this process's "
            f"{local_devices} devices of the mesh; use a multiple of {max(local_devices, 1)} "
            f"(parallel.local_rows picks one)"
        )
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local)


_MAX_DIMS = 8


def _shape_code(shapes) -> np.ndarray:
    """Shapes as a fixed-size int array (the same size on every process) for a collective."""
    code = np.full((len(shapes), _MAX_DIMS + 1), -1, np.int64)
    for row, shape in zip(code, shapes, strict=True):
        row[0] = len(shape)
        row[1 : 1 + min(len(shape), _MAX_DIMS)] = shape[:_MAX_DIMS]
    return code


def _shape_decode(code: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row[1 : 1 + min(row[0], _MAX_DIMS)]) for row in code]


def place_data(x, mesh: Mesh):
    """Training data for a sharded fit: kept as is when already a global array on ``mesh``
    (multi-host, from ``shard_host_data``); otherwise replicated, so that each step's
    shuffled gather stays local and only the gathered batch is split."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
        return x
    if _spans_processes(mesh):
        got = "a global array on another mesh" if sharding is not None else type(x).__name__
        raise ValueError(
            f"x: with a mesh spanning {jax.process_count()} processes expected global arrays "
            f"from nnfun.parallel.shard_host_data(local_data, mesh), got {got}"
        )
    return replicate(x, mesh)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Full batches must split evenly over the mesh's devices, on all processes together
    (the last partial batch need not)."""
    devices = data_size(mesh)
    if batch_size % devices:
        below = batch_size - batch_size % devices
        above = below + devices
        nearby = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"batch_size: {batch_size} does not split over the {devices} devices of the mesh "
            f"axis {AXIS!r}; use a multiple of {devices}, e.g. {nearby}"
        )


# ---- checkpoints in a multi-host run ----------------------------------------------------
def latest_checkpoint_step(directory) -> int | None:
    """The newest completed checkpoint step, agreed by every process (None: start afresh).

    Raises ``ValueError`` on every process when they see different steps: the directory is
    not shared (each host its own disk) or a save is in flight. A collective.
    """
    from nnfun import checkpoint

    step = checkpoint.latest_step(directory)
    if jax.process_count() == 1:
        return step
    steps = np.asarray(multihost_utils.process_allgather(np.int64(-1 if step is None else step)))
    if len(set(steps.tolist())) > 1:
        seen = ["none" if s < 0 else int(s) for s in steps]
        raise ValueError(
            f"directory: processes 0..{len(steps) - 1} see different newest checkpoints "
            f"{seen} in {directory}; it must be one directory every host shares (NFS, a "
            f"mounted bucket), or use Orbax for per-host storage"
        )
    return step


def save_checkpoint(directory, step: int, tree, *, metadata=None, keep: int | None = None):
    """Process 0 writes ``tree`` (replicated or host values) with ``nnfun.checkpoint.save``;
    every process returns only once it is complete, and a failed write raises on all.

    Writes ``directory/step_{step:08d}``. Only replicated or fully gathered state fits this
    format: for states sharded beyond replication use Orbax (``orbax.checkpoint``), whose
    processes each write their own shards. A collective.
    """
    from nnfun import checkpoint

    host = fetch(tree)  # a collective for sharded leaves: every process takes part
    ok, message = True, ""
    if is_main_process():
        try:
            checkpoint.save(directory, step, host, metadata=metadata, keep=keep)
        except Exception as e:  # reported to every process below, then raised there
            ok, message = False, f"saving checkpoint {step} in {directory} failed: {e!r}"
            traceback.print_exc()
    check_on_all_processes(ok, message)  # also the barrier: the checkpoint is complete


def restore_checkpoint(directory, like, mesh: Mesh | None = None, step: int | None = None):
    """``(tree, metadata)`` of checkpoint ``step`` (default: the newest every process sees),
    read by every process and, with ``mesh``, replicated over it.

    ``like`` gives the structure and types (e.g. a fresh state). A file that is missing or
    does not match on any process raises ``ValueError`` on all. A collective.
    """
    from nnfun import checkpoint

    if step is None:
        step = latest_checkpoint_step(directory)
        check_on_all_processes(step is not None, f"directory: no checkpoint in {directory}")
    tree, metadata, ok, message = None, None, True, ""
    try:
        tree, metadata = checkpoint.restore(directory, like=fetch(like), step=step)
    except (OSError, ValueError, TypeError) as e:
        ok, message = False, f"restoring checkpoint {step} from {directory} failed: {e}"
    check_on_all_processes(ok, message)
    if mesh is not None:
        tree = replicate(tree, mesh)
    return tree, metadata


def restore_latest_checkpoint(directory, like, mesh: Mesh | None = None):
    """``(tree, metadata)`` of the newest intact checkpoint (``checkpoint.restore_latest``:
    damaged newer ones skipped), read by every process and, with ``mesh``, replicated over
    it; None on every process when there is none. For ``fit``'s resume.

    Every process must find the same one: when they read different checkpoints (a
    directory that is not shared) or one fails, every process raises ``ValueError``.
    A collective.
    """
    from nnfun import checkpoint

    found, ok, message = None, True, ""
    try:
        found = checkpoint.restore_latest(directory, like=fetch(like))
    except (OSError, ValueError, TypeError) as e:
        ok, message = False, f"restoring the newest checkpoint in {directory} failed: {e}"
    check_on_all_processes(ok, message)
    if jax.process_count() > 1:
        # The metadata tells checkpoints apart (fit stores its epoch and history there).
        seen = "none" if found is None else json.dumps(found[1], sort_keys=True, default=str)
        digests = multihost_utils.process_allgather(np.uint32(zlib.crc32(seen.encode())))
        if len(set(np.asarray(digests).tolist())) > 1:
            raise ValueError(
                f"directory: processes 0..{len(digests) - 1} read different checkpoints in "
                f"{directory}; it must be one directory every host shares (NFS, a mounted "
                f"bucket), or use Orbax for per-host storage"
            )
    if found is None:
        return None
    tree, metadata = found
    return (replicate(tree, mesh) if mesh is not None else tree), metadata
