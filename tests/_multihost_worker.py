"""One process of a multi-process JAX run on CPU, for tests/test_multihost.py.

Run as N processes (one per simulated host), each with its own CPU devices:

    python tests/_multihost_worker.py --process-id I --num-processes N --port P --devices D \
        --scenario replicate,step,... --out DIR [--checkpoint-in DIR]

Each scenario writes ``DIR/{scenario}.{I}.json``; an unexpected error writes
``DIR/{scenario}.{I}.error`` and exits 1 (the launcher then ends the other processes, which
may be waiting in a collective). With N = 1 no coordinator is started.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

STARTED = time.perf_counter()
SAMPLES, VALIDATION, FEATURES, CLASSES = 200, 40, 6, 3


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--scenario", required=True, help="comma-separated, run in order")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint-in", type=Path, help="a checkpoint another run wrote")
    return parser.parse_args(argv)


def data_set(n: int, seed: int):
    """The same samples on every process: each then keeps its own rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (x[:, :2].sum(1) > 0).astype(np.int32) + (x[:, 2] > 0.5).astype(np.int32)
    return x, y


def network_and_config():
    import nnfun

    net = nnfun.Sequential(
        [nnfun.Dense(16, "tanh", input_dim=FEATURES), nnfun.Dense(CLASSES, "softmax")]
    )
    return net, nnfun.Config.make("categorical_crossentropy", "adam", ["accuracy"])


def fresh_state(seed: int):
    from nnfun import train

    net, config = network_and_config()
    return train.init_state(net, config, __import__("jax").random.key(seed))


def tolist(tree):
    import jax
    import numpy as np

    return [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(tree)]


def error_of(call) -> str | None:
    """The ValueError message ``call()`` raises, or None."""
    try:
        call()
    except ValueError as e:
        return str(e)
    return None


# ---- scenarios: each returns what the test compares ------------------------------------------
def scenario_replicate(args, mesh):
    """A state replicated over every process's devices, read back on each."""
    import jax
    import numpy as np

    from nnfun import parallel

    host = fresh_state(1)
    state = parallel.replicate(host, mesh)
    again = parallel.replicate(state, mesh)  # already placed: kept as is
    back = parallel.fetch(state)
    leaves = [x for x in jax.tree.leaves(state) if not parallel._is_key(x)]
    return {
        "replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state)),
        "devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(state)}),
        "addressable": any(x.is_fully_addressable for x in leaves),
        "same_object": all(
            a is b for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again), strict=True)
        ),
        "max_diff": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
            for a, b in zip(jax.tree.leaves(host.params), jax.tree.leaves(back.params), strict=True)
        ),
        "key_equal": bool(
            np.array_equal(jax.random.key_data(back.key), jax.random.key_data(host.key))
        ),
        "key_typed": parallel._is_key(back.key),
        "params": tolist(back.params),
    }


def scenario_step(args, mesh):
    """Global data from each process's rows; one jitted training step and a global mean."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nnfun import parallel, train

    x_all, y_all = data_set(SAMPLES, 0)
    x_local, y_local = parallel.local_rows((x_all, y_all))
    x, y = parallel.shard_host_data((x_local, y_local), mesh)
    net, config = network_and_config()
    state = parallel.replicate(fresh_state(2), mesh)
    step = jax.jit(lambda s, a, b: train.train_step(net, config, s, a, b))
    new, metrics = step(state, x, y)
    mean = jax.jit(lambda a: jnp.mean(a, 0))(x)
    return {
        "global_shape": list(x.shape),
        "local_rows": int(x_local.shape[0]),
        "x_sharded": not x.sharding.is_fully_replicated,
        "x_equals_all_rows": bool(np.array_equal(parallel.fetch(x), x_all[: x.shape[0]])),
        "mean": parallel.fetch(mean).tolist(),
        "loss": float(parallel.fetch(metrics["loss"])),
        "params": tolist(parallel.fetch(new.params)),
        "params_replicated": all(a.sharding.is_fully_replicated for a in jax.tree.leaves(new)),
    }


def scenario_user_errors(args, mesh):
    """Mistakes raise the same ValueError on every process: process i passing 4 + 2i rows
    (none may hang), process-local NumPy data for a fit, a batch that does not split."""
    import numpy as np

    from nnfun import parallel

    rows = np.zeros((4 + 2 * args.process_id, FEATURES), np.float32)
    return {
        "n_local": error_of(lambda: parallel.shard_host_data(rows, mesh)),
        "numpy_data": error_of(lambda: parallel.place_data(rows[:4], mesh)),
        "batch_size": error_of(lambda: parallel.check_batch_size(6, mesh)),
    }


def scenario_check_all(args, mesh):
    """An error only the last process sees is raised on all; all-ok raises nowhere; a flag
    only the last process raises is everyone's decision."""
    from nnfun import parallel

    parallel.check_on_all_processes(True, "")
    last = args.process_id == args.num_processes - 1
    decisions = [parallel.any_process(last), parallel.any_process(False)]
    try:
        parallel.check_on_all_processes(not last, f"data file of process {args.process_id} bad")
    except ValueError as e:
        return {"error": str(e), "any": decisions}
    return {"error": None, "any": decisions}


def scenario_checkpoint(args, mesh):
    """Restores the checkpoint another run wrote, then writes this run's own and reads it
    back; a directory each process has for itself is refused by all."""
    import jax

    from nnfun import checkpoint, parallel

    out = {}
    if args.checkpoint_in is not None:
        restored, metadata = parallel.restore_checkpoint(args.checkpoint_in, fresh_state(0), mesh)
        out["restored_params"] = tolist(parallel.fetch(restored.params))
        out["restored_key"] = tolist(jax.random.key_data(parallel.fetch(restored.key)))
        out["restored_metadata"] = metadata
        out["restored_replicated"] = all(
            a.sharding.is_fully_replicated and len(a.sharding.device_set) == len(jax.devices())
            for a in jax.tree.leaves(restored)
        )
    state = parallel.replicate(fresh_state(10 + args.num_processes), mesh)
    directory = args.out / "checkpoint"
    parallel.save_checkpoint(directory, 3, state, metadata={"writer": jax.process_count()})
    out["latest"] = parallel.latest_checkpoint_step(directory)
    out["written_params"] = tolist(parallel.fetch(state.params))
    latest, _ = parallel.restore_latest_checkpoint(directory, fresh_state(0), mesh)
    out["latest_params"] = tolist(parallel.fetch(latest.params))
    out["latest_replicated"] = all(a.sharding.is_fully_replicated for a in jax.tree.leaves(latest))
    # Each process its own directory (hosts' local disks): every process must refuse it.
    own = args.out / f"own_disk_{args.process_id}"
    checkpoint.save(own, 1 + args.process_id, fresh_state(0), metadata={"epoch": args.process_id})
    out["unshared"] = [
        error_of(lambda: parallel.latest_checkpoint_step(own)),
        error_of(lambda: parallel.restore_latest_checkpoint(own, fresh_state(0))),
    ]
    return out


def scenario_fit(args, mesh):
    """The README pod recipe with validation, early stopping, checkpoints, evaluate and
    predict; then the same run stopped after a checkpoint and resumed."""
    import jax
    import numpy as np

    import nnfun
    from experiments.multihost import train_on_all_hosts  # the README recipe
    from nnfun import parallel

    x_all, y_all = data_set(SAMPLES, 0)
    xv_all, yv_all = data_set(VALIDATION, 1)
    net, config = network_and_config()
    val = parallel.shard_host_data(parallel.local_rows((xv_all, yv_all)), mesh)

    def recipe(epochs, checkpoint_dir):
        return train_on_all_hosts(
            net,
            config,
            x_all,
            y_all,
            key=jax.random.key(3),
            epochs=epochs,
            batch_size=16,
            validation_data=val,
            # val_loss falls about 0.04 an epoch: no epoch after the first improves by 0.1,
            # so every layout stops after epoch 2 (best: epoch 0).
            early_stopping=nnfun.EarlyStopping(patience=2, min_delta=0.1),
            checkpoint_dir=checkpoint_dir,
            # A checkpoint every epoch makes every chunk one epoch already; fixing the chunk
            # length also fixes the history buffers' (a power of two of the epochs left
            # otherwise: 8, 2 and 4 here), so that the three runs share one program.
            epochs_per_chunk=1,
        )

    state, history = recipe(5, args.out / "whole")
    evaluated = nnfun.train.evaluate(net, state, *val, config=config)
    predicted = parallel.fetch(nnfun.train.predict(net, state, val[0], as_numpy=False))
    try:  # NumPy rows of every process, as on one process
        as_numpy = np.asarray(nnfun.train.predict(net, state, val[0])).tolist()
    except Exception as e:  # reported by the test, after the rest is compared
        as_numpy = f"{type(e).__name__}: {e}"
    # The same run stopped after its epoch-2 checkpoint and started again (one program).
    _, first = recipe(2, args.out / "resumed")
    resumed, second = recipe(5, args.out / "resumed")
    return {
        "history": history,
        "evaluate": [float(v) for v in evaluated],
        "predict": np.asarray(predicted).tolist(),
        "predict_numpy": as_numpy,
        "params": tolist(parallel.fetch(state.params)),
        "first_history": first,
        "resumed_history": second,
        "resumed_params": tolist(parallel.fetch(resumed.params)),
    }


def scenario_stream(args, mesh):
    """Each process reads its own share as a PyDataset: process 0 four batches of 4 rows,
    process 1 three (4, 4 and 2 rows); one process reads the global batches (8, 8, 6 and 4
    rows). Every process takes 4 steps, the missing rows masked."""
    import jax

    import nnfun
    from nnfun import parallel

    x_all, y_all = data_set(26, 4)
    shares = [(x_all[:16], y_all[:16]), (x_all[16:], y_all[16:])]

    def cut(x, y):
        return [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(x), 4)]

    local = [cut(*share) for share in shares]
    if args.num_processes == 1:  # the global batches: each step's rows of both processes
        batches = [tuple(a for part in (local[0][i], *local[1][i : i + 1]) for a in part)
                   for i in range(4)]  # fmt: skip
        import numpy as np

        batches = [(np.concatenate(b[0::2]), np.concatenate(b[1::2])) for b in batches]
    else:
        batches = local[args.process_id]

    class Share(nnfun.sources.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    net, config = network_and_config()
    state = parallel.replicate(fresh_state(6), mesh)
    state, history = nnfun.train.fit(net, Share(), None, config=config, state=state, epochs=2,
                                     batch_size=8, shuffle=False, mesh=mesh,
                                     steps_per_execution=2)  # fmt: skip
    return {
        "rows": [int(b[0].shape[0]) for b in batches],
        "loss": history["loss"],
        "accuracy": history["accuracy"],
        "params": tolist(parallel.fetch(state.params)),
        "step": int(parallel.fetch(state.step)),
        "replicated": all(a.sharding.is_fully_replicated for a in jax.tree.leaves(state)),
    }


SCENARIOS = {
    name[len("scenario_") :]: f for name, f in globals().items() if name[:9] == "scenario_"
}


def _plain(value):
    """JSON for NumPy values (history entries restored from a checkpoint)."""
    import numpy as np

    return np.asarray(value).tolist()


def main(argv=None) -> int:
    args = parse(argv)
    # Before JAX starts: its CPU device count is fixed at start-up.
    # (The suite's own XLA flags, inherited, are kept.)
    os.environ["XLA_FLAGS"] = " ".join(
        (os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={args.devices}")
    ).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    from nnfun import parallel

    if args.num_processes > 1:
        parallel.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=60,
        )
    assert jax.process_count() == args.num_processes, jax.process_count()
    mesh = parallel.data_mesh()
    args.out.mkdir(parents=True, exist_ok=True)
    timing = {"start-up": [time.perf_counter() - STARTED, time.process_time()]}
    for name in args.scenario.split(","):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            result = SCENARIOS[name](args, mesh)
        except Exception:
            (args.out / f"{name}.{args.process_id}.error").write_text(traceback.format_exc())
            traceback.print_exc()
            sys.stdout.flush()
            os._exit(1)  # skip jax's shutdown: the other processes may never reach theirs
        (args.out / f"{name}.{args.process_id}.json").write_text(json.dumps(result, default=_plain))
        timing[name] = [time.perf_counter() - wall, time.process_time() - cpu]
        (args.out / f"timing.{args.process_id}.json").write_text(json.dumps(timing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
