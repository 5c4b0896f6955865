"""The host loop's data handling against a NumPy softmax regression trained by plain SGD:
every batch used (the remainder too), each epoch's loss and metrics weighted by batch size,
the validation split held out, shuffling on and off, evaluate's L1/L2 penalty and
predict in chunks."""

import chex
import jax
import numpy as np
import pytest

import nnfun
from nnfun import train
from nnfun.layers import Dense

RNG = np.random.default_rng(4)
X = RNG.normal(size=(10, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 1], np.int32)
NET = nnfun.Sequential([Dense(3, "softmax", input_dim=4)])
LR = 0.5
CFG = nnfun.Config.make(
    "categorical_crossentropy", "sgd", ["accuracy", "mae", "mse"], learning_rate=LR
)
EPOCHS, BATCH, SPLIT = 2, 4, 0.3  # 7 training rows: batches of 4 and 3; rows 7-9 validate
KEY = jax.random.key(5)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def per_sample(params, x, y):
    """Cross-entropy, accuracy, mae and mse per sample, in float64."""
    p = softmax(x @ np.float64(params["W"]) + np.float64(params["b"]))
    onehot = np.eye(3)[y]
    return {
        "loss": -np.log(p[np.arange(len(y)), y]),
        "accuracy": (p.argmax(1) == y).astype(float),
        "mae": np.abs(p - onehot).mean(1),
        "mse": ((p - onehot) ** 2).mean(1),
    }


def numpy_sgd(params, x, y, batch, epochs):
    """Plain SGD in order, the last partial batch included: (params per epoch, epoch logs,
    steps taken). An epoch's log is the size-weighted mean of its per-batch means."""
    params = {k: np.float64(v) for k, v in params.items()}
    per_epoch, logs, steps = [], [], 0
    for _ in range(epochs):
        sums = dict.fromkeys(("loss", "accuracy", "mae", "mse"), 0.0)
        batch_losses = []
        for start in range(0, len(x), batch):
            xb, yb = np.float64(x[start : start + batch]), y[start : start + batch]
            for k, v in per_sample(params, xb, yb).items():
                sums[k] += v.mean() * len(yb)
            batch_losses.append(per_sample(params, xb, yb)["loss"].mean())
            dz = (softmax(xb @ params["W"] + params["b"]) - np.eye(3)[yb]) / len(yb)
            params = {"W": params["W"] - LR * xb.T @ dz, "b": params["b"] - LR * dz.sum(0)}
            steps += 1
        logs.append({**{k: v / len(x) for k, v in sums.items()}, "batch_losses": batch_losses})
        per_epoch.append(params)
    return per_epoch, logs, steps


@pytest.fixture(scope="module")
def run():
    """One fit without shuffling, with a validation split, and its NumPy reference."""
    start = train.init_state(NET, CFG, KEY)
    state, history = train.fit(NET, X, Y, config=CFG, state=start, epochs=EPOCHS,
                               batch_size=BATCH, validation_split=SPLIT, shuffle=False)  # fmt: skip
    cut = 7
    per_epoch, logs, steps = numpy_sgd(start.params[0], X[:cut], Y[:cut], BATCH, EPOCHS)
    return state, history, per_epoch, logs, steps


def test_every_batch_trains_the_remainder_included(run):
    state, _, per_epoch, _, _ = run
    # 7 rows in batches of 4: steps at rows 0-3 and 4-6, two epochs.
    assert int(state.step) == 4 and int(state.epoch) == EPOCHS
    chex.assert_trees_all_close(state.params[0], per_epoch[-1], rtol=1e-5, atol=1e-6)


def test_epoch_loss_and_metrics_weigh_each_batch_by_its_size(run):
    _, history, _, logs, _ = run
    for name in ("loss", "accuracy", "mae", "mse"):
        expected = [epoch[name] for epoch in logs]
        np.testing.assert_allclose(history[name], expected, rtol=1e-5, err_msg=name)
    # The plain mean of the batch losses is far off: the check tells the two apart.
    for epoch, logged in zip(logs, history["loss"], strict=True):
        assert abs(np.mean(epoch["batch_losses"]) - logged) > 1e-3


def test_validation_split_validates_on_the_last_rows_only(run):
    _, history, per_epoch, _, _ = run
    for name in ("loss", "accuracy", "mae", "mse"):
        expected = [per_sample(p, np.float64(X[7:]), Y[7:])[name].mean() for p in per_epoch]
        np.testing.assert_allclose(history[f"val_{name}"], expected, rtol=1e-5, err_msg=name)


def test_shuffle_changes_the_order_of_the_batches(run):
    _, _, per_epoch, _, _ = run
    start = train.init_state(NET, CFG, KEY)
    shuffled, _ = train.fit(NET, X, Y, config=CFG, state=start, epochs=EPOCHS,
                            batch_size=BATCH, validation_split=SPLIT)  # fmt: skip
    assert int(shuffled.step) == 4
    gap = np.abs(np.float64(shuffled.params[0]["W"]) - per_epoch[-1]["W"]).max()
    assert gap > 1e-3  # same rows, another order: another SGD trajectory


def test_evaluate_adds_the_l1_l2_penalty_on_weights(run):
    state = run[0]
    cfg = CFG._replace(l1=0.01, l2=0.1)
    w = np.float64(state.params[0]["W"])
    scores = per_sample(state.params[0], np.float64(X), Y)
    penalty = 0.01 * np.abs(w).sum() + 0.5 * 0.1 * (w * w).sum()  # biases are not penalised
    expected = [scores["loss"].mean() + penalty, *(scores[k].mean() for k in CFG.metrics)]
    for batch_size in (None, 4):  # in one batch, and in 4 + 4 + 2
        values = train.evaluate(NET, state, X, Y, config=cfg, batch_size=batch_size)
        np.testing.assert_allclose(values, expected, rtol=1e-5, err_msg=str(batch_size))


@pytest.mark.parametrize("batch_size", [3, 4, 10, 16])
def test_predict_in_chunks_returns_every_row(run, batch_size):
    state = run[0]
    p = state.params[0]
    expected = softmax(np.float64(X) @ np.float64(p["W"]) + np.float64(p["b"]))
    out = train.predict(NET, state, X, batch_size=batch_size)
    assert out.shape == (10, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
