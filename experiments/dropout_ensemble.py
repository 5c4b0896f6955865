"""Is dropout's test-time weight scaling the average of the thinned networks it trained?

Question: a 64-256-10 ReLU/softmax network trained on the digits with dropout (rate 0.2 on
the inputs, 0.5 on the hidden units), in the inverted form (kept units scaled by
1/(1 - rate) in training, nothing done at test time) and in the notes' classic form (no
scaling in training, weights times the keep probability 1 - rate at test time). At test
time, how close is the single weight-scaled network to the ensemble it stands for: the
average of the predictions of many (1000) networks thinned by sampled dropout masks, as the
arithmetic mean of their probabilities and as the normalised geometric mean?

Expected answer (notes 001 and 003): dropout trains an exponential number (2^N) of thinned
networks that share weights, a cheap form of bagging, and at test time the notes drop no
unit but multiply the weights by the keep probability, so that each unit's expected input
is what it was in training. For a single linear layer after dropout this is exact:
E[sum_i m_i w_i x_i / keep] = sum_i w_i x_i (inverted) and E[sum_i m_i w_i x_i] =
keep sum_i w_i x_i (classic), so the mask-average equals the weight-scaled output up to
Monte-Carlo error. Through ReLU and softmax it is only an approximation, but a close one:
the weight-scaled network predicts the same class as the ensemble for almost every digit
(>= 97%), its probabilities are within a few hundredths, and its accuracy is the ensemble's.
It is a little more confident than the arithmetic mean of the thinned networks'
probabilities and much closer to their normalised geometric mean, softmax(mean logits),
which for a single softmax layer after dropout it would equal exactly.

Both networks of a seed start from the same weights. The Monte-Carlo error is measured, not
assumed: for the linear layer |mask-average - weight-scaled| is compared with the standard
error std / sqrt(masks) of each logit (pure noise gives a mean ratio of sqrt(2/pi) = 0.80);
the same ratio for the whole network's logits shows how far the ReLU moves it beyond noise.
"""

from __future__ import annotations

import math
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

NAME = "dropout_ensemble"
FORMS = {"inverted": True, "classic": False}  # label -> Dropout(scaled=...)
RATES = (0.2, 0.5)  # on the inputs, on the hidden units
HIDDEN = 256
LOSS = "categorical_crossentropy"
LEARNING_RATE = 0.001  # Adam
N_TRAIN = 1400  # of the 1437 training digits: a multiple of the batch size
BATCH_SIZE = 50
EPOCHS = 40
QUICK_EPOCHS = 10
MASKS = 1000  # thinned networks averaged per test digit
QUICK_MASKS = 100
CHUNK = 50  # masks per vmapped forward pass (bounds memory)
MIN_AGREEMENT = 0.97  # same argmax as the mask-average, at least
MAX_MEAN_DIFF = 0.03  # mean |p_scaled - p_average| over digits and classes, at most
MAX_MEAN_DIFF_GEOMETRIC = 0.01  # the same against the normalised geometric mean
MAX_Z = 5.0  # linear layer: |mask-average - weight-scaled| within this many standard errors
CONFIG = nnfun.Config.make(LOSS, "adam", ["accuracy"], learning_rate=LEARNING_RATE)


def glorot_flat(key, shape, dtype=jnp.float32):
    """Glorot uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), drawn as one flat
    vector and reshaped: the same distribution, but on CPU a (256, 10) draw takes seconds
    to compile and a flat one a fraction of that."""
    limit = math.sqrt(6.0 / (shape[0] + math.prod(shape[1:])))
    flat = jax.random.uniform(key, (math.prod(shape),), dtype, -limit, limit)
    return flat.reshape(shape)


def build(scaled: bool) -> nnfun.Sequential:
    """64 -> Dropout -> Dense(256, relu) -> Dropout -> Dense(10, softmax)."""
    return nnfun.Sequential(
        [
            nnfun.Dropout(RATES[0], scaled=scaled),
            nnfun.Dense(HIDDEN, "relu"),
            nnfun.Dropout(RATES[1], scaled=scaled),
            nnfun.Dense(10, "softmax", kernel_init=glorot_flat),
        ],
        input_shape=64,
    )


def linear_part(scaled: bool) -> nnfun.Sequential:
    """The output layer on its own, its softmax removed: Dropout -> Dense(10), linear."""
    return nnfun.Sequential(
        [nnfun.Dropout(RATES[1], scaled=scaled), nnfun.Dense(10)], input_shape=HIDDEN
    )


def logits(net, params, x, key=None):
    """Pre-softmax outputs: weight-scaled without ``key``, one thinned network with it."""
    _, _, caches = net.forward(params, x, key=key, train=key is not None)
    return caches[-1][1]


def mask_moments(fns, inputs, key, masks: int):
    """For each fn(x, key) -> [(n, k), ...] with its input x (an (n, d) array or a list of
    them): the mean, standard deviation and mean softmax (the arithmetic-mean probabilities)
    of each of its outputs over `masks` dropout masks per row of x.

    Each scan step runs every fn once, with its own key, on CHUNK stacked copies of its x, so
    every row of every copy draws its own mask.
    """
    copies = jax.tree.map(lambda x: jnp.tile(x, (CHUNK, 1)), inputs)

    def body(carry, key):
        new = []
        for fn, xs, k, sums in zip(
            fns, copies, jax.random.split(key, len(fns)), carry, strict=True
        ):
            outs = []
            for z, (s, s2, sp) in zip(fn(xs, k), sums, strict=True):
                z = z.reshape(CHUNK, z.shape[0] // CHUNK, -1)
                outs.append((s + z.sum(0), s2 + (z * z).sum(0), sp + jax.nn.softmax(z, -1).sum(0)))
            new.append(outs)
        return new, None

    zeros = [
        [(z, z, z) for z in (jnp.zeros(o.shape, o.dtype) for o in jax.eval_shape(fn, x, key))]
        for fn, x in zip(fns, inputs, strict=True)
    ]
    carry, _ = jax.lax.scan(body, zeros, jax.random.split(key, masks // CHUNK))
    moments = []
    for sums in carry:
        moments.append([])
        for s, s2, sp in sums:
            mean = s / masks
            std = jnp.sqrt(jnp.maximum(s2 / masks - mean * mean, 0.0))
            moments[-1].append((mean, std, sp / masks))
    return moments


def compare(x, y, masks: int):
    """For each form's params: weight scaling vs the mask-average, and the linear layer.

    One compiled program for both forms (one compile instead of two); the forms see the same
    masks, drawn from the same keys with the same keep probabilities.
    """
    nets = {label: build(scaled) for label, scaled in FORMS.items()}
    lins = {label: linear_part(scaled) for label, scaled in FORMS.items()}

    def one(params, key):
        z_scaled, hidden = {}, {}
        for label, net in nets.items():
            _, _, caches = net.forward(params[label], x)
            z_scaled[label], hidden[label] = caches[-1][1], caches[1][2]  # weight-scaled
        # The output layer alone, fed the weight-scaled hidden units: dropout, then linear.
        lin_params = {label: [{}, p[-1]] for label, p in params.items()}
        net_moments, lin_moments = mask_moments(
            [
                lambda xs, k: [logits(nets[f], params[f], xs, k) for f in FORMS],
                lambda hs, k: [logits(lins[f], lin_params[f], hs[f], k) for f in FORMS],
            ],
            [x, hidden],
            key,
            masks,
        )
        return {
            label: summary(
                z_scaled[label],
                net_moments[i],
                logits(lins[label], lin_params[label], hidden[label]),
                lin_moments[i],
                y,
                masks,
            )
            for i, label in enumerate(FORMS)
        }

    return jax.jit(jax.vmap(one))


def summary(z_scaled, net_moments, l_scaled, lin_moments, y, masks: int) -> dict:
    """One form: the weight-scaled network's logits against the mask-average's moments."""
    (z_mean, z_std, p_arith), (l_mean, l_std, _) = net_moments, lin_moments
    p_scaled = jax.nn.softmax(z_scaled, -1)
    p_geo = jax.nn.softmax(z_mean, -1)  # prod p^(1/n) renormalised = softmax(mean z)
    stderr = jnp.maximum(l_std, 1e-12) / jnp.sqrt(masks)
    net_stderr = jnp.maximum(z_std, 1e-12) / jnp.sqrt(masks)
    same = lambda p, q: jnp.mean(jnp.argmax(p, -1) == jnp.argmax(q, -1))  # noqa: E731
    accuracy = lambda p: jnp.mean(jnp.argmax(p, -1) == y)  # noqa: E731
    return {
        "accuracy_scaled": accuracy(p_scaled),
        "accuracy_arithmetic": accuracy(p_arith),
        "accuracy_geometric": accuracy(p_geo),
        "agreement_arithmetic": same(p_scaled, p_arith),
        "agreement_geometric": same(p_scaled, p_geo),
        "mean_abs_diff_arithmetic": jnp.mean(jnp.abs(p_scaled - p_arith)),
        "max_abs_diff_arithmetic": jnp.max(jnp.abs(p_scaled - p_arith)),
        "mean_abs_diff_geometric": jnp.mean(jnp.abs(p_scaled - p_geo)),
        "linear_max_z": jnp.max(jnp.abs(l_mean - l_scaled) / stderr),
        "linear_diff_over_stderr": jnp.mean(jnp.abs(l_mean - l_scaled)) / jnp.mean(stderr),
        "network_diff_over_stderr": jnp.mean(jnp.abs(z_mean - z_scaled)) / jnp.mean(net_stderr),
        "p_scaled_of_label": jnp.take_along_axis(p_scaled, y[:, None], -1)[:, 0],
        "p_arith_of_label": jnp.take_along_axis(p_arith, y[:, None], -1)[:, 0],
        "p_geo_of_label": jnp.take_along_axis(p_geo, y[:, None], -1)[:, 0],
    }


def initial_states(seeds: int) -> nnfun.TrainState:
    """One state per seed. Dropout has no parameters, so both forms start from these: the
    inverted and the classic network of a seed begin with the same weights."""
    keys = jax.random.split(jax.random.key(0), seeds)
    # One compiled program for every seed's init instead of one small one per operation.
    return jax.jit(lambda k: nnfun.train.init_many(build(True), CONFIG, k))(keys)


def train(label: str, split, states, epochs: int):
    """Trains a stack of networks of one dropout form at once: (params, loss curves)."""
    x, y = jnp.asarray(split.x_train[:N_TRAIN]), jnp.asarray(split.y_train[:N_TRAIN])
    states, hist = nnfun.train.fit_many(
        build(FORMS[label]), x, y, states, config=CONFIG, epochs=epochs, batch_size=BATCH_SIZE
    )
    return states.params, hist["loss"].T


def run(split, states, epochs: int, masks: int) -> dict:
    """Trains both forms, then compares each at test time: form -> results."""
    trained = {label: train(label, split, states, epochs) for label in FORMS}
    xt, yt = jnp.asarray(split.x_test), jnp.asarray(split.y_test)
    mask_keys = jax.random.split(jax.random.key(1), len(states.step))
    compared = compare(xt, yt, masks)({k: p for k, (p, _) in trained.items()}, mask_keys)
    return {
        label: {k: np.asarray(v) for k, v in compared[label].items()} | {"loss_curve": curve}
        for label, (_, curve) in trained.items()
    }


def figure(results: dict, out, masks: int) -> None:
    fig, axes = plotting.figure(len(results) + 1)
    plotting.curves(axes[0], {k: r["loss_curve"] for k, r in results.items()},
                    ylabel="training loss (with dropout)", title="training")  # fmt: skip
    for ax, (label, r) in zip(axes[1:], results.items(), strict=True):
        for key, name in (("p_arith_of_label", "arithmetic"), ("p_geo_of_label", "geometric")):
            ax.scatter(r[key][0], r["p_scaled_of_label"][0], s=6, alpha=0.5, label=name)
        ax.plot([0, 1], [0, 1], color="gray", lw=1, ls=":")
        ax.set(xlabel=f"mean over {masks} thinned networks", ylabel="weight-scaled network",
               title=f"{label}: p(true class), seed 0")  # fmt: skip
        ax.legend(fontsize=8, title="mean", title_fontsize=8)
        ax.grid(alpha=0.3)
    plotting.save(fig, out / "dropout_ensemble.png")


def main(argv=None) -> bool:
    args = common.parser(NAME, __doc__).parse_args(argv)
    epochs, masks = (QUICK_EPOCHS, QUICK_MASKS) if args.quick else (EPOCHS, MASKS)
    split = data.load_digits()
    start = time.perf_counter()
    states = initial_states(args.seeds)
    results = run(split, states, epochs, masks)
    figure(results, args.out, masks)

    metrics: dict = {
        "epochs": epochs, "seeds": args.seeds, "masks": masks, "rates": RATES,
        "n_train": N_TRAIN, "n_test": len(split.y_test),
    }  # fmt: skip
    head = ("acc scaled", "acc mask-avg", "acc geo-mean", "same argmax", "mean |dp|",
            "max |dp|", "linear max z")  # fmt: skip
    print(f"{'form':<10}" + "".join(f"{h:>20}" for h in head))
    for label, r in results.items():
        keys = ("accuracy_scaled", "accuracy_arithmetic", "accuracy_geometric",
                "agreement_arithmetic", "mean_abs_diff_arithmetic", "max_abs_diff_arithmetic",
                "linear_max_z")  # fmt: skip
        print(f"{label:<10}" + "".join(f" {common.mean_std(r[k]):>19}" for k in keys))
        metrics[label] = {
            k: float(v.mean())
            for k, v in r.items()
            if k not in ("loss_curve", "p_scaled_of_label", "p_arith_of_label", "p_geo_of_label")
        }
        metrics[label]["agreement_min"] = float(r["agreement_arithmetic"].min())
        metrics[label]["agreement_geometric_min"] = float(r["agreement_geometric"].min())
        metrics[label]["linear_max_z"] = float(r["linear_max_z"].max())
        metrics[label]["accuracy_scaled_std"] = float(r["accuracy_scaled"].std())
    metrics["seconds"] = time.perf_counter() - start
    print(
        "linear max z: largest |mask-average - weight-scaled| logit of the output layer alone, "
        f"in Monte-Carlo standard errors (std / sqrt({masks})); mean |diff| / mean stderr: "
        + ", ".join(
            f"{k} linear {metrics[k]['linear_diff_over_stderr']:.2f}, whole network "
            f"{metrics[k]['network_diff_over_stderr']:.2f}"
            for k in FORMS
        )
        + " (pure Monte-Carlo noise gives sqrt(2/pi) = 0.80)"
    )

    checks = {}
    for label in FORMS:
        m = metrics[label]
        checks |= {
            f"{label}: weight scaling and the mask-average agree on >= {MIN_AGREEMENT:.0%} of "
            "the test digits (every seed, arithmetic and geometric mean)": min(
                m["agreement_min"], m["agreement_geometric_min"]
            )
            >= MIN_AGREEMENT,
            f"{label}: mean |p_scaled - p_mask-average| <= {MAX_MEAN_DIFF} (arithmetic mean), "
            f"<= {MAX_MEAN_DIFF_GEOMETRIC} (normalised geometric mean)": (
                m["mean_abs_diff_arithmetic"] <= MAX_MEAN_DIFF
                and m["mean_abs_diff_geometric"] <= MAX_MEAN_DIFF_GEOMETRIC
            ),
            f"{label}: accuracies of weight scaling and the mask-average within 0.02": (
                abs(m["accuracy_scaled"] - m["accuracy_arithmetic"]) <= 0.02
            ),
            f"{label}: test accuracy >= 0.9": m["accuracy_scaled"] >= 0.9,
            f"{label}: one linear layer: mask-average == weight scaling within {MAX_Z:g} "
            "standard errors, mean |diff| / mean stderr < 1": m["linear_max_z"] <= MAX_Z
            and m["linear_diff_over_stderr"] < 1.0,
        }
    return common.finish(args.out, metrics, checks)


if __name__ == "__main__":
    common.exit_code(main())
