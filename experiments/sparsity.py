"""How sparse are the hidden activations of a trained ReLU network, next to a sigmoid one?

Question: after training a 64 -> 100 -> 100 -> 10 network on the digits with Adam (four
learning rates), what share of the (training sample, hidden unit) pairs is active? For
ReLU "active" means output > 0; for sigmoid, whose output is never 0, the notes' "about
half active" is measured as output > 0.5. Also reported: the share of outputs exactly 0,
the mean activation, units that never activate, and ReLU's rate among its live units.

Expected answer (note 003): ReLU's one-sided suppression (exactly 0 for z < 0) gives the
network sparse representations, so its activation rate is lower than a sigmoid network's,
which is about 50% (the brain is said to run at about 5%; 15-30% is said to be ideal).
Measured here: the claim depends on the learning rate. ReLU's rate falls as the learning
rate grows (more units are pushed to never activate) and is below sigmoid's only at the
larger rates; at Adam's usual 0.001 ReLU units are active more often than not, well above
sigmoid's one half. ReLU's outputs are exactly 0 for a large share of pairs at every rate,
which a sigmoid's never are.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Run by path, Python puts this script's folder on sys.path, not the root holding `experiments`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

import nnfun
from experiments import common
from nnfun import data, plotting

NAME = "sparsity"
ACTIVE_ABOVE = {"relu": 0.0, "sigmoid": 0.5}  # activation -> output threshold for "active"
HIDDEN = (100, 100)
LEARNING_RATES = (0.001, 0.003, 0.01, 0.03)  # Adam
QUICK_LEARNING_RATES = (0.001, 0.03)
LOSS = "categorical_crossentropy"
BATCH_SIZE = 32
EPOCHS = 30
QUICK_EPOCHS = 8


def build(activation: str) -> nnfun.Sequential:
    hidden = [
        nnfun.Dense(u, activation, input_dim=64 if i == 0 else None) for i, u in enumerate(HIDDEN)
    ]
    return nnfun.Sequential([*hidden, nnfun.Dense(10, "softmax")])


def run(activation: str, split, seeds: int, rates, epochs: int) -> dict:
    """Trains len(rates) x seeds models at once; activation statistics on the training set."""
    net = build(activation)
    config = nnfun.Config.make(LOSS, "adam", ["accuracy"])
    lrs = np.repeat(rates, seeds)
    states = nnfun.train.init_many(
        net, config, jax.random.split(jax.random.key(0), len(lrs)), learning_rates=lrs
    )
    x = jnp.asarray(split.x_train)
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)
    threshold = ACTIVE_ABOVE[activation]

    def stats(params):
        _, _, caches = net.forward(params, x)
        a = jnp.concatenate([c[2] for c in caches[:-1]], axis=1)  # (samples, hidden units)
        active = a > threshold
        live = jnp.any(active, axis=0)
        return {
            "rate": jnp.mean(active),
            "rate_per_layer": jnp.stack([jnp.mean(c[2] > threshold) for c in caches[:-1]]),
            "exact_zeros": jnp.mean(a == 0),
            "mean_activation": jnp.mean(a),
            "never_active": 1 - jnp.mean(live),
            "rate_live_units": jnp.sum(active) / (jnp.sum(live) * a.shape[0]),
            "test_accuracy": jnp.mean(jnp.argmax(net.apply(params, xt), -1) == yt),
        }

    stats_fn = jax.jit(jax.vmap(stats))
    before = stats_fn(states.params)
    states, _ = nnfun.train.fit_many(
        net, x, split.y_train, states, config=config, epochs=epochs, batch_size=BATCH_SIZE
    )
    after = stats_fn(states.params)
    shape = (len(rates), seeds)
    result = {k: np.asarray(v).reshape(*shape, *np.shape(v)[1:]) for k, v in after.items()}
    result["rate_at_init"] = np.asarray(before["rate"]).reshape(shape)
    return result


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    rates = QUICK_LEARNING_RATES if args.quick else LEARNING_RATES
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    split = data.load_digits()
    start = time.perf_counter()
    results = {a: run(a, split, args.seeds, rates, epochs) for a in ACTIVE_ABOVE}

    fig, axes = plotting.figure(2)
    plotting.curves(
        axes[0], {a: r["rate"].T for a, r in results.items()}, x=rates,
        title="active (sample, unit) pairs after training", xlabel="Adam learning rate",
        ylabel="activation rate",
    )  # fmt: skip
    plotting.curves(
        axes[1], {a: r["exact_zeros"].T for a, r in results.items()}, x=rates,
        title="outputs exactly 0", xlabel="Adam learning rate", ylabel="fraction",
    )  # fmt: skip
    for ax in axes:
        ax.set_xscale("log")
    plotting.save(fig, args.out / "activation_rates.png")

    print(f"{'act':<8} {'lr':>6} {'rate at init':>13} {'rate':>16} {'exact 0':>8} "
          f"{'mean a':>7} {'never on':>9} {'rate (live)':>11} {'test acc':>9}")  # fmt: skip
    metrics = {"epochs": epochs, "seeds": args.seeds, "learning_rates": rates,
               "active_above": ACTIVE_ABOVE}  # fmt: skip
    for act, r in results.items():
        for i, lr in enumerate(rates):
            print(
                f"{act:<8} {lr:>6g} {r['rate_at_init'][i].mean():>13.3f} "
                f"{common.mean_std(r['rate'][i]):>16} {r['exact_zeros'][i].mean():>8.3f} "
                f"{r['mean_activation'][i].mean():>7.3f} {r['never_active'][i].mean():>9.3f} "
                f"{r['rate_live_units'][i].mean():>11.3f} {r['test_accuracy'][i].mean():>9.3f}"
            )
        metrics[act] = {k: v.mean(1) for k, v in r.items()} | {"rate_std": r["rate"].std(1)}
    metrics["seconds"] = time.perf_counter() - start

    relu, sigmoid = metrics["relu"], metrics["sigmoid"]
    below = relu["rate"] < sigmoid["rate"]
    metrics["relu_rate_below_sigmoid_at"] = [lr for lr, b in zip(rates, below, strict=True) if b]
    checks = {
        "sigmoid: about half active (0.4-0.6 of outputs > 0.5) at the smallest lr": bool(
            abs(sigmoid["rate"][0] - 0.5) <= 0.1
        ),
        "relu: >= 20% of outputs exactly 0 at every lr; sigmoid: none": bool(
            np.all(relu["exact_zeros"] >= 0.2) and np.all(sigmoid["exact_zeros"] == 0)
        ),
        "relu: activation rate falls as the learning rate grows": bool(
            np.all(np.diff(relu["rate"]) < 0)
        ),
        f"relu: activation rate below sigmoid's at the largest lr ({rates[-1]:g})": bool(below[-1]),
        f"relu: activation rate above sigmoid's at the smallest lr ({rates[0]:g}), so the "
        "lower rate is not automatic": bool(not below[0]),
    }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
