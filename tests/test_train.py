"""Training: gradient sources agree, nothing is dropped, fit/evaluate/predict, early stopping,
many models at once, the Keras face and checkpoint resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun
from nnfun import train
from nnfun.layers import BatchNorm, Dense, Dropout

RNG = np.random.default_rng(0)
X = RNG.normal(size=(90, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int32) + (X[:, 3] > 1).astype(np.int32)


def small_net(*extra):
    return nnfun.Sequential([Dense(16, "tanh", input_dim=6), *extra, Dense(3, "softmax")])


def config(**kw):
    kw.setdefault("metrics", ["accuracy"])
    return nnfun.Config.make("categorical_crossentropy", kw.pop("optimizer", "adam"), **kw)


def max_rel_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("extra", [(), (BatchNorm(), Dropout(0.2))], ids=["plain", "bn+dropout"])
def test_manual_and_autodiff_trajectories_agree_over_100_steps(extra):
    net = small_net(*extra)
    runs = {}
    for grad in ("autodiff", "manual"):
        state, hist = train.fit(
            net, X, Y, config=config(grad=grad), key=jax.random.key(1), epochs=10, batch_size=9
        )
        assert int(state.step) == 100
        runs[grad] = (state, hist)
    (auto, h_auto), (manual, h_manual) = runs["autodiff"], runs["manual"]
    assert max_rel_diff(manual.params, auto.params) < 1e-5
    np.testing.assert_allclose(h_manual["loss"], h_auto["loss"], rtol=1e-5)
    assert h_auto["loss"][-1] < h_auto["loss"][0]


def test_last_partial_batch_is_trained_on():
    net, cfg = small_net(), config(optimizer="sgd", learning_rate=0.1)
    state0 = train.init_state(net, cfg, jax.random.key(0))
    x, y = X[:10], Y[:10]
    epoch = train._compiled_epoch(net, cfg, 4, False, False)
    state, metrics = epoch(train._copy(state0), x, y)
    assert int(state.step) == train.steps_per_epoch(10, 4) == 3
    assert metrics["loss"].shape == (3,)
    # The same three steps by hand: batches [0:4], [4:8] and the remainder [8:10].
    by_hand = state0._replace(key=jax.random.split(state0.key)[0])  # as run_epoch splits
    for lo, hi in ((0, 4), (4, 8), (8, 10)):
        by_hand, _ = train.train_step(net, cfg, by_hand, x[lo:hi], y[lo:hi])
    assert max_rel_diff(state.params, by_hand.params) < 1e-6


def test_fit_history_validation_and_metrics():
    net = small_net()
    state, hist = train.fit(
        net, X, Y, config=config(), epochs=5, batch_size=16, validation_split=0.2
    )
    assert set(hist) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 5 for v in hist.values())
    assert hist["loss"][-1] < hist["loss"][0]
    assert int(state.epoch) == 5 and int(state.step) == 5 * train.steps_per_epoch(72, 16)
    loss, acc = train.evaluate(net, state, X, Y, config=config())
    probs = train.predict(net, state, X)
    assert probs.shape == (90, 3) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    assert acc == pytest.approx(np.mean(probs.argmax(-1) == Y), abs=1e-6)
    # Evaluating in chunks gives the same numbers as in one go.
    np.testing.assert_allclose(
        train.evaluate(net, state, X, Y, config=config(), batch_size=7), [loss, acc], rtol=1e-5
    )


@pytest.mark.parametrize("name", sorted(train.OPTIMIZERS))
def test_every_named_optimiser_trains(name):
    net = small_net()
    _, hist = train.fit(net, X, Y, config=config(optimizer=name), epochs=6, batch_size=10)
    assert hist["loss"][-1] < hist["loss"][0]


def test_optax_transforms_and_schedules_are_accepted():
    schedule = optax.exponential_decay(0.05, transition_steps=10, decay_rate=0.5)
    for opt, lr in ((optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), None),
                    ("momentum", schedule)):  # fmt: skip
        _, hist = train.fit(
            small_net(), X, Y, config=config(optimizer=opt, learning_rate=lr), epochs=4
        )
        assert hist["loss"][-1] < hist["loss"][0]


@pytest.mark.parametrize(
    "kind, value",
    [("optimizer", "adamw2"), ("loss", "hinge"), ("metrics", ["f1"]), ("grad", "numeric")],
)
def test_unknown_names_list_the_valid_ones(kind, value):
    kwargs = {"loss": "categorical_crossentropy", kind: value}
    with pytest.raises(ValueError, match=kind) as err:
        nnfun.Config.make(**kwargs)
    assert repr(value if isinstance(value, str) else value[0]) in str(err.value)


def test_l1_l2_penalise_weights_and_agree_between_gradient_sources():
    net = small_net()
    params = net.init(jax.random.key(0))
    for grad in ("autodiff", "manual"):
        cfg = config(grad=grad, l1=1e-3, l2=1e-2)
        state = train.init_state(net, cfg, jax.random.key(0), params=params)
        state, _ = train.train_step(net, cfg, state, X, Y)
        if grad == "autodiff":
            reference = state.params
    assert max_rel_diff(state.params, reference) < 1e-6
    assert float(net.penalty(params, l2=2.0)) == pytest.approx(
        sum(float(jnp.sum(p["W"] ** 2)) for p in params), rel=1e-6
    )


def test_batchnorm_state_is_returned_and_used_at_evaluation():
    net = small_net(BatchNorm(momentum=0.9))
    state, _ = train.fit(net, X, Y, config=config(), epochs=3, batch_size=30)
    bn = state.model_state[1]
    assert not np.allclose(bn["mean"], 0) and not np.allclose(bn["var"], 1)
    # Evaluation is deterministic and uses the running statistics.
    a = train.predict(net, state, X[:5])
    b = train.predict(net, state, X)[:5]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_early_stopping_restores_the_best_epoch():
    net = nnfun.Sequential([Dense(64, "relu", input_dim=6), Dense(64, "relu"), Dense(3, "softmax")])
    x_val, y_val = X[:20] + 0.5, Y[:20][::-1].copy()  # noisy labels so that val_loss turns up
    cfg = config(learning_rate=0.02)
    stop = nnfun.EarlyStopping(monitor="val_loss", patience=3)
    state, hist = train.fit(
        net, X, Y, config=cfg, epochs=60, batch_size=10, validation_data=(x_val, y_val),
        early_stopping=stop, key=jax.random.key(3),
    )  # fmt: skip
    best = hist["best_epoch"]
    assert "early stopping" in hist["stopped"] and best < len(hist["loss"])
    assert int(np.argmin(hist["val_loss"])) + 1 == best
    replay, _ = train.fit(net, X, Y, config=cfg, epochs=best, batch_size=10, key=jax.random.key(3))
    assert max_rel_diff(state.params, replay.params) == 0.0


def test_keras_face_runs_the_notes_example():
    model = nnfun.Sequential()
    model.add(Dense(input_dim=6, units=32, activation="sigmoid"))
    model.add(Dense(units=32, activation="sigmoid"))
    model.add(Dense(units=3, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, Y, batch_size=10, epochs=8)
    score = model.evaluate(X, Y)
    result = model.predict(X)
    assert len(score) == 2 and 0 <= score[1] <= 1 and result.shape == (90, 3)
    assert model.history["loss"][-1] < model.history["loss"][0]
    assert isinstance(model.state.params, list) and set(model.state.params[0]) == {"W", "b"}
    constructor = nnfun.Sequential([Dense(32, "relu", input_dim=6), Dense(3, "softmax")]).compile(
        loss="categorical_crossentropy"
    )
    constructor.fit(X, Y, epochs=2)
    with pytest.raises(ValueError, match="not trained"):
        nnfun.Sequential([Dense(3, input_dim=6)]).predict(X)


def test_many_models_equal_their_solo_runs():
    net, cfg = small_net(Dropout(0.1)), config(optimizer="sgd", learning_rate=0.1)
    keys = jax.random.split(jax.random.key(7), 4)
    rates = [0.02, 0.05, 0.1, 0.2]
    states, hist = train.fit_many(
        net, X, Y, train.init_many(net, cfg, keys, learning_rates=rates), config=cfg,
        epochs=3, batch_size=16,
    )  # fmt: skip
    assert hist["loss"].shape == (3, 4)
    for i, (key, rate) in enumerate(zip(keys, rates, strict=True)):
        solo_cfg = config(optimizer="sgd", learning_rate=rate)
        solo, solo_hist = train.fit(net, X, Y, config=solo_cfg, key=key, epochs=3, batch_size=16)
        assert max_rel_diff(train.unstack(states)[i].params, solo.params) < 1e-5
        np.testing.assert_allclose(hist["loss"][:, i], solo_hist["loss"], rtol=1e-5)


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    pytest.importorskip("nnfun.checkpoint")
    net, cfg = small_net(BatchNorm(), Dropout(0.3)), config()
    straight, straight_hist = train.fit(net, X, Y, config=cfg, epochs=4, key=jax.random.key(5))
    train.fit(net, X, Y, config=cfg, epochs=2, key=jax.random.key(5), checkpoint_dir=tmp_path)
    resumed, resumed_hist = train.fit(
        net, X, Y, config=cfg, epochs=4, key=jax.random.key(5), checkpoint_dir=tmp_path
    )
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        a, b = (jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v
                for v in (a, b))  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed_hist["loss"] == straight_hist["loss"]
