"""Training from files on disk, read batch by batch: one process or several hosts.

The data set (scikit-learn's digits, standing in for one too large to load) is written once
as .npy files. One process trains from the memory-mapped files (``np.load(...,
mmap_mode="r")``: rows read a batch at a time, shuffled as arrays are) and checks that the
result is bit for bit the run from the same arrays in memory. On several hosts each process
reads only its own share of the rows, through a ``PyDataset``; the global batch is assembled
across hosts and every process takes the same steps (a share with fewer rows is padded with
masked rows). The same command runs on every host of a pod:

    python -m experiments.train_from_disk [--quick]                      # one process
    python -m experiments.train_from_disk --processes 2 --devices 2      # 2 local "hosts"
    gcloud compute tpus tpu-vm ssh NAME --worker=all \\
        --command="cd nnfun && python -m experiments.train_from_disk --pod --folder /mnt/data"

Process 0 prints the per-epoch losses.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_files(folder: Path) -> None:
    """The data set as .npy files (skipped when they exist)."""
    import numpy as np

    import nnfun

    if (folder / "y_val.npy").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    data = nnfun.data.load_digits()
    for name, a in (("x", data.x_train), ("y", data.y_train), ("x_val", data.x_test),
                    ("y_val", data.y_test)):  # fmt: skip
        np.save(folder / f"{name}.npy", np.asarray(a))


class FileShare:
    """This process's contiguous share of the rows of ``x.npy`` / ``y.npy``, in batches of
    ``rows`` (a PyDataset: ``fit`` shuffles the batch order per epoch with the run's key)."""

    def __init__(self, folder: Path, rows: int, process: int, processes: int):
        import numpy as np

        self.x = np.load(folder / "x.npy", mmap_mode="r")
        self.y = np.load(folder / "y.npy", mmap_mode="r")
        n = len(self.x)
        self.start, self.stop = n * process // processes, n * (process + 1) // processes
        self.rows = rows

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.rows)

    def __getitem__(self, i: int):
        import numpy as np

        lo = self.start + i * self.rows
        hi = min(lo + self.rows, self.stop)
        return np.asarray(self.x[lo:hi]), np.asarray(self.y[lo:hi])

    def on_epoch_end(self) -> None:
        pass


def run_host(args) -> int:
    if args.devices:  # before JAX starts: the CPU device count is fixed then
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np

    import nnfun
    from nnfun import parallel

    if args.processes and args.processes > 1:
        parallel.initialize(coordinator_address=args.coordinator, num_processes=args.processes,
                            process_id=args.process_id)  # fmt: skip
    elif args.processes is None:
        parallel.initialize()  # a pod: every argument detected
    folder = Path(args.folder)
    if parallel.is_main_process():
        write_files(folder)
    parallel.barrier("files written")
    net = nnfun.Sequential([nnfun.Dense(64, "relu", input_dim=64), nnfun.Dense(10, "softmax")])
    config = nnfun.Config.make("categorical_crossentropy", "adam", ["accuracy"])
    mesh = parallel.data_mesh()
    state = parallel.replicate(nnfun.train.init_state(net, config, jax.random.key(0)), mesh)
    xv, yv = (np.load(folder / f"{n}.npy") for n in ("x_val", "y_val"))
    val = parallel.shard_host_data(parallel.local_rows((xv, yv)), mesh)
    common = dict(config=config, state=state, epochs=args.epochs, batch_size=args.batch_size,
                  validation_data=val, mesh=mesh, steps_per_execution=8)  # fmt: skip
    start = time.perf_counter()
    if jax.process_count() == 1:  # the memory-mapped files, shuffled as arrays are
        x = np.load(folder / "x.npy", mmap_mode="r")
        y = np.load(folder / "y.npy", mmap_mode="r")
        trained, history = nnfun.train.fit(net, x, y, **common)
    else:  # each host its own share, a batch of batch_size / processes rows at a time
        share = FileShare(folder, args.batch_size // jax.process_count(), jax.process_index(),
                          jax.process_count())  # fmt: skip
        trained, history = nnfun.train.fit(net, share, None, **common)
    seconds = time.perf_counter() - start
    if not parallel.is_main_process():
        return 0
    print(f"{jax.process_count()} process(es) x {jax.local_device_count()} devices; "
          f"{seconds:.1f} s")  # fmt: skip
    for epoch, (loss, val_acc) in enumerate(zip(history["loss"], history["val_accuracy"],
                                                strict=True)):  # fmt: skip
        print(f"epoch {epoch + 1}: loss {loss:.6f} val_accuracy {val_acc:.4f}")
    if jax.process_count() == 1:
        common["steps_per_execution"] = 1
        x, y = (np.load(folder / f"{n}.npy") for n in ("x", "y"))
        in_memory, _ = nnfun.train.fit(net, x, y, **{**common, "epochs_per_chunk": 1})
        same = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(parallel.fetch(trained.params)),
            jax.tree.leaves(parallel.fetch(in_memory.params)), strict=True))  # fmt: skip
        print(f"from disk == from arrays in memory, bit for bit: {same}")
        if not same:
            return 1
    return 0


def spawn(args) -> int:
    """Starts ``--processes`` local processes of this script; process 0's output is shown."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(args.processes):
        cmd = [sys.executable, __file__, "--processes", str(args.processes), "--process-id",
               str(i), "--coordinator", f"localhost:{port}", "--devices", str(args.devices),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--folder", str(args.folder)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL if i else None))
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):
            break  # one failed: the others would wait for it forever
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    return int(any(p.returncode for p in procs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=None, help="N local processes "
                        "(default: one, or every host of a pod with --pod)")  # fmt: skip
    parser.add_argument("--pod", action="store_true", help="start-up detected (a TPU pod)")
    parser.add_argument("--devices", type=int, default=0, help="CPU devices per process")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--folder", default=None, help="where the .npy files are (written)")
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 2
    if args.folder is None:
        args.folder = tempfile.mkdtemp(prefix="nnfun-disk-")
    if args.pod:
        args.processes = None
        return run_host(args)
    args.processes = args.processes or 1
    if args.processes > 1 and args.process_id is None:
        return spawn(args)
    args.process_id = args.process_id or 0
    return run_host(args)


if __name__ == "__main__":
    sys.exit(main())
