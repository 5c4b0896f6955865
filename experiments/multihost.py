"""Data-parallel training over several hosts: the README's Cloud TPU pod recipe, runnable.

On a pod slice run the same command on every host at once; ``parallel.initialize()`` detects
the pod (one process per host):

    gcloud compute tpus tpu-vm ssh NAME --worker=all \\
        --command="cd nnfun && python -m experiments.multihost"

On one machine, ``--processes N`` starts N local CPU processes, one per "host", each with
``--devices D`` CPU devices, joined by ``jax.distributed`` (gloo collectives over TCP):

    python -m experiments.multihost --processes 2 --devices 2

Process 0 prints the per-epoch losses; every process computes the same ones. The data set
(scikit-learn's digits) is small enough for every host to read it and keep its own rows;
with a large one each host reads only its share (``parallel.local_rows`` says which rows).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

# Run by path, Python puts this script's folder on sys.path, not the root holding `experiments`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def train_on_all_hosts(net, config, x_all, y_all, **fit_kwargs):
    """The README recipe after ``parallel.initialize()``: each process keeps its rows of
    (x_all, y_all), the global arrays span every host, ``fit`` trains on all of them."""
    import nnfun
    from nnfun import parallel

    mesh = parallel.data_mesh()  # spans all hosts' devices
    x_local, y_local = parallel.local_rows((x_all, y_all))  # this host's share of the rows
    x, y = parallel.shard_host_data((x_local, y_local), mesh)  # same n_local on every host
    return nnfun.train.fit(net, x, y, config=config, mesh=mesh, **fit_kwargs)


def run_host(args) -> int:
    """One host's process: start-up, data, training; process 0 prints the losses."""
    if args.devices:  # before JAX starts: the CPU device count is fixed then
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    import nnfun
    from nnfun import parallel

    if args.process_id is None:
        parallel.initialize()  # first, on every host (arguments detected on a pod)
    elif args.processes > 1:
        parallel.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.processes,
            process_id=args.process_id,
        )
    data = nnfun.data.load_digits()
    net = nnfun.Sequential([nnfun.Dense(64, "relu", input_dim=64), nnfun.Dense(10, "softmax")])
    config = nnfun.Config.make("categorical_crossentropy", "adam", ["accuracy"])
    start = time.perf_counter()
    state, history = train_on_all_hosts(
        net,
        config,
        data.x_train,
        data.y_train,
        key=jax.random.key(0),
        epochs=args.epochs,
        batch_size=args.batch_size,
    )
    if parallel.is_main_process():
        print(
            f"{jax.process_count()} process(es) x {jax.local_device_count()} devices, "
            f"{jax.device_count()} in the mesh; {time.perf_counter() - start:.1f} s"
        )
        for epoch, (loss, acc) in enumerate(zip(history["loss"], history["accuracy"], strict=True)):
            print(f"epoch {epoch + 1}: loss {loss:.6f} accuracy {acc:.4f}")
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
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]  # fmt: skip
        quiet = subprocess.DEVNULL if i else None
        procs.append(subprocess.Popen(cmd, stdout=quiet, start_new_session=True))
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break  # done, or one failed: the others would wait for it forever
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    codes = [p.returncode for p in procs]
    if any(codes):
        print(f"multihost: process exit codes {codes} (timeout {args.timeout} s)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--processes", type=int, default=None, help="start N local processes (default: a pod)"
    )
    parser.add_argument("--devices", type=int, default=0, help="CPU devices per local process")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300, help="seconds, local processes")
    parser.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.processes is not None and args.processes < 1:
        parser.error(f"--processes: expected an int >= 1, got {args.processes}")
    if args.processes is not None and args.process_id is None:
        if args.processes == 1:
            args.process_id = 0
            return run_host(args)
        return spawn(args)
    return run_host(args)


if __name__ == "__main__":
    sys.exit(main())
