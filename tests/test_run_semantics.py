"""What a training run means: early stopping by Keras 3's rule, the best epoch's own number,
what restoring restores, continuing with a new config, each callback's own rule, weights on
training rows, probes after a stop and across resumes, subclassed callbacks.

Expected values come from Keras 3 run side by side (from the same initial weights), from the
rule written out by hand on a known sequence, or from a hand count; never from nnfun.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import monitor, train
from nnfun.layers import Dense

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 3)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int32)


def net(seed=0):
    return nnfun.Sequential([Dense(4, "tanh", input_dim=3), Dense(2, "softmax")], key=seed)


# The functional tests share one network object and one Config object per rate: fit's
# compiled programs are cached by (network, config, plan) identity.
NET = net()


@functools.cache
def sgd(lr=0.1, **kw):
    return nnfun.Config.make("sparse_categorical_crossentropy", "sgd", learning_rate=lr, **kw)


def twins(keras, lr=0.1, seed=1):
    """A Keras model and an nnfun model with Keras's initial weights, both plain SGD."""
    keras.utils.set_random_seed(seed)
    k = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                          keras.layers.Dense(2, activation="softmax")])  # fmt: skip
    k.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    n = nnfun.Sequential([nnfun.Input(shape=(3,)), Dense(4, activation="tanh"),
                          Dense(2, activation="softmax")], key=0)  # fmt: skip
    n.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=lr)
    n.set_weights(k.get_weights())
    return k, n


# ---- the rule itself, by hand ---------------------------------------------------------------
def rule(values, patience, min_delta=0.0, baseline=None, start=0):
    """Runs nnfun.monitor's rule over ``values`` (epochs 0, 1, ...): (epochs run, best)."""
    m = monitor.Monitor("loss", False, min_delta, patience, baseline, start)
    memory = monitor.start(m)
    for epoch, v in enumerate(values):
        memory, _, stop = monitor.update(m, memory, jnp.float32(v), epoch)
        if bool(stop):
            return epoch + 1, int(memory.best_epoch)
    return len(values), int(memory.best_epoch)


def test_the_rule_by_hand():
    # Keras: improving epochs never stop; patience 0 stops at the first non-improving one.
    assert rule([5, 4, 3, 2, 1], patience=0) == (5, 4)
    assert rule([5, 4, 4.5, 3], patience=0) == (3, 1)
    assert rule([5, 4, 4.5, 3], patience=1) == (3, 1)  # one epoch without improvement
    assert rule([5, 4, 4.5, 3, 3.5, 3.6], patience=2) == (6, 3)  # the wait reset at epoch 3
    assert rule([5, 6, 7], patience=0) == (2, 0)  # never after epoch 0, then 6 > 5 stops
    assert rule([5, 4.95, 4.9, 4.85], patience=2, min_delta=0.1) == (3, 0)
    # A baseline not beaten keeps the wait growing although the value improves.
    assert rule([5, 4, 4.5, 4.6], patience=2, baseline=1.0) == (3, 1)
    assert rule([5, 4, 4.5, 4.6], patience=2) == (4, 1)
    # Epochs before start_from_epoch are not watched: the best is epoch 2's 6.
    assert rule([1, 2, 6, 7], patience=0, start=2) == (4, 2)


# ---- Keras as the oracle --------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"monitor": "loss"},  # Keras's default patience 0 on a falling loss: every epoch
        {"monitor": "loss", "min_delta": 0.03, "patience": 1},
        {"monitor": "val_loss", "patience": 1, "restore_best_weights": True},
    ],
    ids=["patience0", "min_delta", "restore"],
)
def test_early_stopping_matches_keras(keras, kwargs):
    k, n = twins(keras, lr=0.5)
    xv, yv = X[:12] + 0.7, 1 - Y[:12]  # disagreeing validation rows: val_loss turns up
    fit = dict(epochs=8, batch_size=10, shuffle=False, validation_data=(xv, yv), verbose=0)
    k_es, n_es = keras.callbacks.EarlyStopping(**kwargs), nnfun.EarlyStopping(**kwargs)
    kh = k.fit(X, Y, callbacks=[k_es], **fit)
    nh = n.fit(X, Y, callbacks=n_es, **fit)  # one callback, not a list, as Keras accepts
    assert nh.epoch == kh.epoch
    np.testing.assert_allclose(nh.history["loss"], kh.history["loss"], rtol=1e-5, atol=1e-6)
    assert (n_es.stopped_epoch, n_es.best_epoch) == (k_es.stopped_epoch, k_es.best_epoch)
    for a, b in zip(n.get_weights(), k.get_weights(), strict=True):  # restored or not
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_history_numbers_epochs_from_initial_epoch_like_keras(keras):
    k, n = twins(keras)
    kh = k.fit(X, Y, epochs=5, initial_epoch=2, batch_size=10, shuffle=False, verbose=0)
    nh = n.fit(X, Y, epochs=5, initial_epoch=2, batch_size=10, shuffle=False, verbose=0)
    assert nh.epoch == kh.epoch == [2, 3, 4] and n.history is nh
    assert nh.params["steps"] == kh.params["steps"] == 4


def test_weights_apply_like_keras(keras):
    """Keras's reduction sum(w L)/batch size, class weights on training rows only,
    sample weights split with the validation rows, Keras's validation row count."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    w = np.r_[np.ones(150), np.zeros(75), 3 * np.ones(75)].astype(np.float32)
    cases = [
        dict(sample_weight=w, batch_size=32),
        dict(class_weight={0: 1.0, 1: 3.0}, batch_size=1, epochs=1),
        dict(class_weight={0: 0.5, 1: 2.0}, validation_split=0.33, batch_size=32),
        dict(sample_weight=w, validation_split=0.33, batch_size=32),
    ]
    # One pair of twins for the four cases, reset to the same initial weights before each
    # (plain SGD keeps no state between steps): each side compiles its programs once.
    k, n = twins(keras, lr=0.05)
    initial = k.get_weights()
    for case in cases:
        k.set_weights(initial)
        n.set_weights(initial)
        fit = {**dict(epochs=2, shuffle=False, verbose=0), **case}
        kh, nh = k.fit(x, y, **fit).history, n.fit(x, y, **fit).history
        assert sorted(nh) == sorted(kh), case
        for key in kh:
            np.testing.assert_allclose(nh[key], kh[key], rtol=1e-5, atol=1e-6, err_msg=str(case))
        for a, b in zip(n.get_weights(), k.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(case))
        evaluated = n.evaluate(x, y, sample_weight=w, verbose=0)
        assert evaluated == pytest.approx(k.evaluate(x, y, sample_weight=w, verbose=0), 1e-5)


def test_sample_weights_leave_batch_norm_statistics_alone_as_in_keras(keras):
    """Keras's BatchNormalization never sees sample weights: its batch statistics (and so
    every gradient through them) are the unweighted batch's, the last partial one included."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    w = np.r_[np.ones(32), np.zeros(16), 3 * np.ones(16)].astype(np.float32)
    keras.utils.set_random_seed(1)
    L = keras.layers
    k = keras.Sequential([keras.Input((3,)), L.Dense(4), L.BatchNormalization(epsilon=1e-5),
                          L.Activation("tanh"), L.Dense(2, activation="softmax")])  # fmt: skip
    k.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    n = nnfun.Sequential([nnfun.Input(shape=(3,)), Dense(4), nnfun.BatchNorm(),
                          nnfun.Activation("tanh"), Dense(2, "softmax")], key=0)  # fmt: skip
    n.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=0.1)
    n.set_weights(k.get_weights())
    fit = dict(sample_weight=w, batch_size=24, epochs=2, shuffle=False, verbose=0)
    kh, nh = k.fit(x, y, **fit).history, n.fit(x, y, **fit).history
    np.testing.assert_allclose(nh["loss"], kh["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(n.get_weights(), k.get_weights(), strict=True):  # running stats included
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_learning_rate_callbacks_match_keras(keras):
    def schedule(epoch, lr):
        return lr * 0.5 if epoch >= 1 else lr

    for make in (
        lambda m: m.callbacks.LearningRateScheduler(schedule),
        lambda m: m.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=0.5, patience=0, min_delta=0.5
        ),  # fmt: skip
    ):
        k, n = twins(keras, lr=0.5)
        fit = dict(epochs=4, batch_size=10, shuffle=False, verbose=0)
        kh = k.fit(X, Y, callbacks=[make(keras)], **fit).history
        nh = n.fit(X, Y, callbacks=[make(nnfun)], **fit).history
        np.testing.assert_allclose(nh["learning_rate"], kh["learning_rate"], rtol=1e-6)
        np.testing.assert_allclose(nh["loss"], kh["loss"], rtol=1e-5, atol=1e-6)


# ---- hand counts ----------------------------------------------------------------------------
def test_restoring_the_best_weights_keeps_step_optimizer_and_key_going():
    # Validation labels that disagree with training: val_loss is best at epoch 0.
    xv, yv = X[:10], 1 - Y[:10]
    es = nnfun.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    cfg = nnfun.Config.make("sparse_categorical_crossentropy", "adam", learning_rate=0.05)
    state, hist = train.fit(NET, X, Y, config=cfg, epochs=10, batch_size=8, callbacks=[es],
                            validation_data=(xv, yv), shuffle=True, key=0)  # fmt: skip
    ran = len(hist["epoch"])
    assert hist["best_epoch"] == int(np.argmin(hist["val_loss"])) == es.best_epoch
    assert int(state.step) == 5 * ran  # 40 rows in batches of 8, every epoch run
    assert int(state.opt_state.inner_state.count) == 5 * ran  # Adam's moments went on too
    assert ran == es.best_epoch + 3 and es.stopped_epoch == hist["epoch"][-1]
    # The message and the history use one numbering.
    assert f"after epoch {hist['epoch'][-1]}" in hist["stopped"]
    assert f"at epoch {hist['best_epoch']}" in hist["stopped"]


def test_continuing_uses_the_config_given():
    cfg1, cfg5 = sgd(0.1), sgd(0.5)
    state, _ = train.fit(NET, X, Y, config=cfg1, epochs=1, batch_size=40, key=0)
    after, _ = train.fit(NET, X, Y, config=cfg5, state=state, epochs=2, initial_epoch=1,
                         batch_size=40)  # fmt: skip
    grads = jax.jit(jax.grad(lambda p: NET.loss(p, X, Y, loss=cfg5.loss)))(state.params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads)  # one full-batch step
    for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_each_checkpoint_applies_its_own_rule(tmp_path):
    model = net()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=0.3)
    saver = nnfun.ModelCheckpoint(tmp_path / "best", monitor="loss", save_best_only=True)
    es = nnfun.EarlyStopping(monitor="loss", min_delta=5.0, patience=10)
    h = model.fit(X, Y, epochs=6, batch_size=40, callbacks=[es, saver], verbose=0)
    assert np.all(np.diff(h.history["loss"]) < 0)  # the loss fell every epoch ...
    saved = nnfun.load_model(tmp_path / "best")  # ... so the best is the last epoch's model
    for a, b in zip(saved.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_many_probes_read_nan_after_a_model_stops():
    cfg = sgd(0.1)
    states = train.init_many(NET, cfg, [0, 1])
    xv, yv = X[:10], 1 - Y[:10]
    es = nnfun.EarlyStopping(monitor="val_loss", patience=0)
    probe = {"w": lambda p, s: jnp.sum(p[0]["W"])}
    _, hist = train.fit_many(NET, X, Y, states, config=cfg, epochs=6, batch_size=10,
                             validation_data=(xv, yv), early_stopping=es, track=probe)  # fmt: skip
    ran = (~np.isnan(hist["loss"])).sum(0)
    assert ran.min() < 6  # a model stopped early ...
    for m in range(2):
        assert np.all(np.isnan(hist["w"][ran[m] :, m])) and not np.any(
            np.isnan(hist["w"][: ran[m], m])
        )


def test_subclassed_callbacks_get_their_hooks_every_epoch(tmp_path):
    seen = []

    class StopAt2(nnfun.CSVLogger):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 2:
                self.model.stop_training = True

    class Watching(nnfun.EarlyStopping):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    model = net()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=0.1)
    callbacks = [StopAt2(tmp_path / "log.csv"), Watching(monitor="loss", patience=99)]
    h = model.fit(X, Y, epochs=50, batch_size=40, epochs_per_chunk=50, verbose=0,
                  callbacks=callbacks)  # fmt: skip
    assert h.epoch == [0, 1, 2] and seen == [0, 1, 2]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4  # header + 3 epochs


def test_a_tuple_probe_survives_a_resume(tmp_path):
    probe = {"pair": lambda p, s: (jnp.sum(p[0]["W"]), p[1]["b"])}
    kw = dict(config=sgd(), batch_size=10, track=probe, checkpoint_dir=tmp_path, key=0)
    _, first = train.fit(NET, X, Y, epochs=2, **kw)
    _, resumed = train.fit(NET, X, Y, epochs=4, **kw)
    _, whole = train.fit(NET, X, Y, epochs=4, **{**kw, "checkpoint_dir": tmp_path / "other"})
    assert isinstance(resumed["pair"], tuple) and resumed["pair"][1].shape == (4, 2)
    for a, b in zip(resumed["pair"], whole["pair"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_probe_buffers_follow_the_run_and_huge_probes_are_refused(monkeypatch):
    from nnfun import chunks, probes

    state = train.init_state(NET, sgd(), jax.random.key(0))
    track = probes.check({"W": lambda p, s: p[0]["W"]})
    assert chunks.capacity(None, 3) == 16 and chunks.capacity(None, 100) == 128
    assert chunks.capacity(None, 100_000) == chunks.MAX_CHUNK
    # A fixed chunk (one epoch per call with per-epoch callbacks) shares the short runs'
    # program; a fixed chunk longer than MAX_CHUNK still fits in one call.
    assert chunks.capacity(1, 40) == chunks.capacity(7, 1000) == 16
    assert chunks.capacity(20, 30) == 32 and chunks.capacity(5000, 9000) == 5000
    assert probes.capacity(track, state, 16, 3) == 4  # probe buffers: the run's epochs
    monkeypatch.setattr(probes, "DEVICE_BUDGET", 48 * 8)  # 48 bytes an epoch: 8 epochs fit
    assert probes.capacity(track, state, 64, 10) == 8
    monkeypatch.setattr(probes, "_host_memory", lambda: 1000)
    with pytest.raises(ValueError, match=r"track: the probes take .* half this host's memory"):
        probes.capacity(track, state, 64, 100)


def test_fit_many_warns_for_a_wrong_manual_gradient():
    class Halved(Dense):
        def backward_affine(self, params, cache, dz):
            grads, dx = super().backward_affine(params, cache, dz)
            return {**grads, "W": grads["W"] / 2}, dx  # planted bug: half dW

    bad = nnfun.Network([Dense(4, "tanh", input_dim=3), Halved(2, "softmax")])
    cfg = sgd(grad="checked")
    with pytest.warns(RuntimeWarning, match=r"model 0: the manual gradient of params\[1\]\['W'\]"):
        train.fit_many(bad, X, Y, train.init_many(bad, cfg, [0, 1]), config=cfg, epochs=1)


def test_bad_class_weights_are_refused_before_training():
    model = net()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.raises(ValueError, match=r"class_weight\[1\]: expected a finite weight >= 0"):
        model.fit(X, Y, class_weight={0: 1.0, 1: -1.0}, verbose=0)
    with pytest.raises(ValueError, match="class_weight: expected a weight > 0 for at least one"):
        model.fit(X, Y, class_weight={0: 0.0, 1: 0.0}, verbose=0)


def test_float64_training_logs_float64_losses():
    with jax.enable_x64(True):
        state = train.init_state(NET, sgd(), jax.random.key(0))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), state.params)
        state = state._replace(params=params, opt_state=sgd().optimizer.init(params))
        x = X.astype(np.float64)
        _, hist = train.fit(NET, x, Y, config=sgd(), state=state, epochs=1, batch_size=40)
        loss = jax.jit(lambda p: NET.loss(p, x, Y, loss="sparse_categorical_crossentropy"))
        exact = float(loss(params))  # jitted: one compile instead of one per operation
    assert hist["loss"][0] == pytest.approx(exact, rel=1e-14)
    assert hist["loss"][0] != float(np.float32(exact))


# ---- row 9: saving never destroys what a folder holds ---------------------------------------
def test_saving_refuses_a_folder_holding_something_else(tmp_path):
    model = net()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=0.1)
    run_dir = tmp_path / "run"
    model.fit(X, Y, epochs=3, batch_size=20, checkpoint_dir=run_dir, verbose=0)
    steps = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ValueError, match=f"path: {run_dir} holds a training run's checkpoints"):
        model.save(run_dir)
    with pytest.raises(ValueError, match=f"path: {run_dir} holds a training run's checkpoints"):
        model.save_weights(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == steps  # nothing deleted
    saved = model.save(tmp_path / "model")
    with pytest.raises(ValueError, match=r"holds a saved model folder \(model.json\)"):
        model.save_weights(saved)
    assert nnfun.load_model(saved).get_weights()[0].shape == (3, 4)  # still loads
    weights = model.save_weights(tmp_path / "weights")
    with pytest.raises(ValueError, match=r"holds a saved weights folder \(weights.json\)"):
        model.save(weights)
    model.save(saved)  # saving again over its own kind replaces it
    model.save_weights(weights)


# ---- training-batch hooks, against Keras --------------------------------------------------
def batch_recorder(base, stop_at=None):
    """A callback class on ``base`` recording every hook call; optionally stopping after
    training step ``stop_at`` of the first epoch."""

    class Recorder(base):
        def __init__(self):
            super().__init__()
            self.calls, self.kernels = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.calls.append(("begin", batch, None))

        def on_train_batch_end(self, batch, logs=None):
            self.calls.append(("end", batch, float(logs["loss"])))
            self.kernels.append(np.asarray(self.model.get_weights()[0]))
            if stop_at is not None and batch >= stop_at:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append(("epoch", epoch, float(logs["loss"])))

    return Recorder()


@pytest.mark.parametrize(("k", "stop_at"), [(1, None), (2, None), (1, 2)])
def test_training_batch_hooks_match_keras(keras, k, stop_at):
    kmodel, nmodel = twins(keras)
    for model in (kmodel, nmodel):
        model.compile(optimizer=keras.optimizers.SGD(0.1) if model is kmodel else "sgd",
                      loss="sparse_categorical_crossentropy", steps_per_execution=k,
                      **({} if model is kmodel else {"learning_rate": 0.1}))  # fmt: skip
    seen = {}
    for name, model, base in (("keras", kmodel, keras.callbacks.Callback),
                              ("nnfun", nmodel, nnfun.Callback)):  # fmt: skip
        rec = batch_recorder(base, stop_at)
        model.fit(X, Y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[rec])
        seen[name] = rec
    kcalls, ncalls = seen["keras"].calls, seen["nnfun"].calls
    assert [c[:2] for c in ncalls] == [c[:2] for c in kcalls]  # which hooks, which steps
    np.testing.assert_allclose([c[2] for c in ncalls if c[2] is not None],
                               [c[2] for c in kcalls if c[2] is not None], rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(seen["nnfun"].kernels, seen["keras"].kernels, atol=1e-6)
    np.testing.assert_allclose(nmodel.get_weights()[0], kmodel.get_weights()[0], atol=1e-6)
