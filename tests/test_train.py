"""Training: gradient sources agree, nothing is dropped, chunks of epochs change no bit,
early stopping follows Keras's rule, resume, blow-ups, probes, checked gradients, sample
weights, many models, and the Keras face's semantics."""

import functools
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_rounding_close

import nnfun
from nnfun import epochs as programs
from nnfun import program_cache, train
from nnfun.layers import BatchNorm, Dense, Dropout

RNG = np.random.default_rng(0)
X = RNG.normal(size=(90, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int32) + (X[:, 3] > 1).astype(np.int32)
X_VAL, Y_VAL = X[:20] + 0.5, Y[:20][::-1].copy()  # noisy labels so that val_loss turns up


# One network object and one Config object per set of arguments: fit's compiled programs are
# cached by (network, config, plan) identity, so tests asking for the same ones share them.
@functools.cache
def small_net(*extra, seed=0):
    layers = [Dense(16, "tanh", input_dim=6), *extra, Dense(3, "softmax")]
    return nnfun.Sequential(layers, key=seed)


_CONFIGS: dict = {}


def config(**kw):
    kw.setdefault("metrics", ["accuracy"])
    key = repr(sorted(kw.items()))
    if key not in _CONFIGS:
        optimizer = kw.pop("optimizer", "adam")
        _CONFIGS[key] = nnfun.Config.make("categorical_crossentropy", optimizer, **kw)
    return _CONFIGS[key]


def assert_same_bits(a, b):
    """Every leaf equal bit for bit (typed PRNG keys compared by their data)."""
    unkey = lambda v: jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v  # noqa: E731
    chex.assert_trees_all_equal(jax.tree.map(unkey, a), jax.tree.map(unkey, b))


@pytest.mark.parametrize("extra", [(), (BatchNorm(), Dropout(0.2))], ids=["plain", "bn+dropout"])
def test_manual_and_autodiff_trajectories_agree_under_sgd(extra):
    # Plain SGD: a gradient off by a constant factor moves the weights differently (Adam
    # would normalise it away).
    net = small_net(*extra)
    runs = {}
    for grad in ("autodiff", "manual"):
        cfg = config(grad=grad, optimizer="sgd", learning_rate=0.5)
        runs[grad] = train.fit(net, X, Y, config=cfg, key=jax.random.key(1), epochs=10,
                               batch_size=9)  # fmt: skip
        assert int(runs[grad][0].step) == 100
    (auto, h_auto), (manual, h_manual) = runs["autodiff"], runs["manual"]
    chex.assert_trees_all_close(manual.params, auto.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h_manual["loss"], h_auto["loss"], rtol=1e-5)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), auto.params,
                         train.init_state(net, config(), jax.random.key(1)).params)  # fmt: skip
    assert min(jax.tree.leaves(moved)) > 1e-3  # the trajectories went somewhere


def test_last_partial_batch_is_trained_on():
    net, cfg = small_net(), config(optimizer="sgd", learning_rate=0.1)
    state0 = train.init_state(net, cfg, jax.random.key(0))
    x, y = jnp.asarray(X[:10]), jnp.asarray(Y[:10])
    epoch = jax.jit(lambda s: train.run_epoch(net, cfg, 4, False, s, x, y))
    state, metrics = epoch(state0)
    assert int(state.step) == 3 and metrics["loss"].shape == (3,)  # 4 + 4 + 2 samples
    # The same three steps by hand: batches [0:4], [4:8] and the remainder [8:10].
    by_hand = state0._replace(key=jax.random.split(state0.key)[0])  # as run_epoch splits
    step = jax.jit(lambda s, xb, yb: train.train_step(net, cfg, s, xb, yb))  # 2 shapes: 2 compiles
    for lo, hi in ((0, 4), (4, 8), (8, 10)):
        by_hand, _ = step(by_hand, x[lo:hi], y[lo:hi])
    assert_rounding_close(state.params, by_hand.params)


def test_fit_history_validation_and_metrics():
    net = small_net()
    state, hist = train.fit(net, X, Y, config=config(), epochs=5, batch_size=16,
                            validation_split=0.2)  # fmt: skip
    assert set(hist) == {"loss", "accuracy", "val_loss", "val_accuracy", "epoch"}
    assert hist["epoch"] == [0, 1, 2, 3, 4] and all(len(v) == 5 for v in hist.values())
    assert hist["loss"][-1] < hist["loss"][0]
    assert int(state.epoch) == 5 and int(state.step) == 5 * 5  # 72 samples: 4 x 16 + 8
    # The last epoch's validation numbers are evaluate's on the held-out last 18 rows.
    val = train.evaluate(net, state, X[72:], Y[72:], config=config())
    np.testing.assert_allclose([hist["val_loss"][-1], hist["val_accuracy"][-1]], val, rtol=1e-5)
    probs = train.predict(net, state, X)
    assert probs.shape == (90, 3) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    loss, acc = train.evaluate(net, state, X, Y, config=config())
    assert acc == pytest.approx(np.mean(probs.argmax(-1) == Y), abs=1e-6)
    chunked = train.evaluate(net, state, X, Y, config=config(), batch_size=7)
    np.testing.assert_allclose(chunked, [loss, acc], rtol=1e-5)


def test_batchnorm_running_statistics_are_learned_and_used():
    net = small_net(BatchNorm())
    state, _ = train.fit(net, X, Y, config=config(), epochs=3, batch_size=30)
    bn = state.model_state[1]
    assert not np.allclose(bn["mean"], 0) and not np.allclose(bn["var"], 1)
    # Evaluation is deterministic and uses the running statistics.
    np.testing.assert_allclose(train.predict(net, state, X[:5]), train.predict(net, state, X)[:5],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


# ---- chunks of epochs ------------------------------------------------------------------------
def chunked_run(per_chunk, **kw):
    net = small_net(BatchNorm(), Dropout(0.3))
    stop = nnfun.EarlyStopping(monitor="val_loss", patience=4, restore_best_weights=True)
    weights = np.linspace(0.5, 1.5, 90).astype(np.float32)
    return train.fit(
        net, X, Y, config=config(learning_rate=0.02), key=jax.random.key(3), epochs=40,
        batch_size=16, validation_data=(X_VAL, Y_VAL), early_stopping=stop,
        sample_weight=weights, epochs_per_chunk=per_chunk, **kw,
    )  # fmt: skip


@pytest.mark.bits
def test_chunks_of_epochs_change_no_bit_and_a_resume_matches_the_uninterrupted_run(tmp_path):
    """Dropout, BatchNorm, validation, early stopping, sample weights and a remainder batch
    (90 = 5 x 16 + 10): one epoch per compiled call, 7 per call and timed chunks agree.
    One test so that the resume reuses the chunk programs compiled here (callbacks of one's
    own run one epoch per call)."""
    one, one_hist = chunked_run(1)
    assert "early stopping" in one_hist["stopped"] and len(one_hist["loss"]) < 40
    for per_chunk in (7, None):
        state, hist = chunked_run(per_chunk)
        assert hist == one_hist
        assert_same_bits(state, one)
    straight, straight_hist = state, hist  # the last one: chunked_run(None)
    # Interrupted after epoch index 5 (6 epochs); epoch 5's checkpoint is not written
    # because the interrupt comes first, so the restart resumes after epoch 5 (index 4).
    counter = CountEpochs(interrupt_after=5)
    _, cut = chunked_run(None, checkpoint_dir=tmp_path, callbacks=[counter])
    assert cut["stopped"].startswith("interrupted") and len(cut["loss"]) == 6
    again = CountEpochs()
    resumed, resumed_hist = chunked_run(None, checkpoint_dir=tmp_path, callbacks=[again])
    assert again.seen[0] == 5, "a resume trains only the epochs after the checkpoint"
    assert len(again.seen) == len(straight_hist["loss"]) - 5
    assert resumed_hist == straight_hist
    assert_same_bits(resumed, straight)


class CountEpochs(nnfun.Callback):
    """Counts the epochs a call really trains, and can interrupt after one of them."""

    def __init__(self, interrupt_after=None):
        self.seen, self.interrupt_after = [], interrupt_after

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(epoch)
        if epoch == self.interrupt_after:
            raise KeyboardInterrupt


def early_stop_epoch(values, patience, min_delta, maximise=False):
    """Keras 3's rule by hand: (epochs run, best epoch's number) for a list of values."""
    best, best_at, wait = None, 0, 0
    for epoch, v in enumerate(values):
        wait += 1
        if best is None or (v - min_delta > best if maximise else v + min_delta < best):
            best, best_at, wait = v, epoch, 0
        elif wait >= patience and epoch > 0:
            return epoch + 1, best_at
    return len(values), best_at


def test_early_stopping_follows_keras_rule():
    # The three cases share the network, the config and the uninterrupted run (and so the
    # compiled programs of the runs without early stopping).
    net = nnfun.Sequential([Dense(16, "relu", input_dim=6), Dense(16, "relu"), Dense(3, "softmax")])
    kw = dict(config=config(learning_rate=0.02), batch_size=10, key=jax.random.key(3),
              validation_data=(X_VAL, Y_VAL))  # fmt: skip
    _, full = train.fit(net, X, Y, epochs=40, **kw)
    for monitor, patience, min_delta in (("val_loss", 3, 0.0), ("val_loss", 2, 0.02),
                                         ("val_accuracy", 3, 0.0)):  # fmt: skip
        case = f"{monitor}, patience {patience}, min_delta {min_delta}"
        stop_at, best_at = early_stop_epoch(full[monitor], patience, min_delta,
                                            maximise=monitor.endswith("accuracy"))  # fmt: skip
        assert stop_at < 40, f"the data must make the monitored value stall ({case})"
        stop = nnfun.EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta,
                                   restore_best_weights=True)  # fmt: skip
        state, hist = train.fit(net, X, Y, epochs=40, early_stopping=stop, **kw)
        assert len(hist["loss"]) == stop_at and hist["loss"] == full["loss"][:stop_at], case
        assert hist["best_epoch"] == best_at and "early stopping" in hist["stopped"], case
        # The replays run in one call of the uninterrupted run's program (64 epochs a call).
        replay, _ = train.fit(net, X, Y, epochs=best_at + 1, epochs_per_chunk=64, **kw)
        assert_same_bits(state.params, replay.params)
        # Without restore_best_weights (Keras's default) the last epoch's state comes back.
        stop = nnfun.EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta)
        last, _ = train.fit(net, X, Y, epochs=40, early_stopping=stop, **kw)
        replay, _ = train.fit(net, X, Y, epochs=stop_at, epochs_per_chunk=64, **kw)
        assert_same_bits(last.params, replay.params)


@pytest.mark.bits
def test_a_blow_up_returns_the_last_finite_epoch():
    net = nnfun.Sequential([Dense(1, "identity", input_dim=6)], key=0)
    cfg = nnfun.Config.make("mse", "sgd", learning_rate=0.05)
    x = X.copy()
    x[37] = 1e30  # its squared error overflows once the batches reach it (no shuffle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, hist = train.fit(net, x, Y, config=cfg, epochs=3, batch_size=16, shuffle=False,
                                key=jax.random.key(0))  # fmt: skip
    # Said even with verbose=0, and nothing else leaks (e.g. NumPy's invalid-value warning).
    assert [str(w.message) for w in caught] == [f"nnfun.fit: {hist['stopped']}"]
    assert hist["loss"] == [] and "epoch 0, step 3" in hist["stopped"]
    assert int(state.epoch) == 0 and int(state.step) == 0
    assert_same_bits(state, train.init_state(net, cfg, jax.random.key(0)))
    # Blowing up in a later epoch (a rate far above 2 / curvature) keeps the epochs before it.
    big = nnfun.Config.make("mse", "sgd", learning_rate=3.0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        state, hist = train.fit(net, X, Y, config=big, epochs=30, batch_size=16,
                                key=jax.random.key(0))  # fmt: skip
    done = len(hist["loss"])
    assert 0 < done < 30 and "non-finite" in hist["stopped"] and int(state.epoch) == done
    # In one call of the program above (its buffers hold 32 epochs).
    before, _ = train.fit(net, X, Y, config=big, epochs=done, batch_size=16, key=jax.random.key(0),
                          epochs_per_chunk=32)  # fmt: skip
    assert_same_bits(state, before)


def test_track_probes_are_computed_after_every_epoch():
    net, cfg = small_net(), config(optimizer="sgd", learning_rate=0.1)
    probes = {
        "w_norm": lambda p, s: jnp.linalg.norm(p[0]["W"]),
        "layer_means": lambda p, s: [jnp.mean(p[0]["W"]), jnp.mean(p[1]["W"])],
    }
    _, hist = train.fit(net, X, Y, config=cfg, epochs=6, batch_size=32, track=probes,
                        key=jax.random.key(2))  # fmt: skip
    assert hist["w_norm"].shape == (6,)
    state = train.init_state(net, cfg, jax.random.key(2))
    for epoch in range(6):  # the same states one epoch per call, probed on the host
        state, _ = train.fit(net, X, Y, config=cfg, state=state, epochs=1, batch_size=32)
        np.testing.assert_allclose(hist["w_norm"][epoch], np.linalg.norm(state.params[0]["W"]),
                                   rtol=1e-6)  # fmt: skip
        np.testing.assert_allclose(hist["layer_means"][1][epoch], np.mean(state.params[1]["W"]),
                                   rtol=1e-5, atol=1e-8)  # fmt: skip


def test_checked_gradients_report_agreement_and_a_planted_error(monkeypatch):
    net = small_net(BatchNorm())
    cfg = config(grad="checked", optimizer="sgd", learning_rate=0.1)
    _, hist = train.fit(net, X, Y, config=cfg, epochs=3, batch_size=30)
    assert len(hist["grad_error"]) == 3 and max(hist["grad_error"]) < 1e-4  # float32
    # The output layer's bias gradient doubled (softmax + CE backpropagates through its
    # fused dZ = (p - y)/m): the warning names layer 2's bias.
    original = Dense.backward_affine

    def doubled(self, params, cache, dz):
        grads, dx = original(self, params, cache, dz)
        return {**grads, "b": 2 * grads["b"]}, dx

    monkeypatch.setattr(Dense, "backward_affine", doubled)
    program_cache.clear()  # programs already built for this structure hold the right code
    with pytest.warns(RuntimeWarning, match=r"params\[2\]\['b'\] \(layer 2"):
        fresh = small_net.__wrapped__(BatchNorm(), seed=1)  # its programs not shared
        _, hist = train.fit(fresh, X, Y, config=cfg, epochs=2, batch_size=30)
    assert min(hist["grad_error"]) > 0.3


def test_sample_weights_and_class_weights():
    net, cfg = small_net(), config(optimizer="sgd", learning_rate=0.3)
    # Full-batch descent with weight 0 on half the samples: Keras's sum(w L) / batch size
    # still counts those rows, so it equals plain descent on the rest at half the rate.
    keep = np.arange(90) % 2 == 0
    masked, _ = train.fit(net, X, Y, config=cfg, epochs=5, batch_size=90, key=jax.random.key(0),
                          sample_weight=keep.astype(np.float32))  # fmt: skip
    half = config(optimizer="sgd", learning_rate=0.15)
    subset, _ = train.fit(net, X[keep], Y[keep], config=half, epochs=5, batch_size=45,
                          key=jax.random.key(0))  # fmt: skip
    chex.assert_trees_all_close(masked.params, subset.params, rtol=1e-5, atol=1e-7)
    # class_weight {c: w} is sample_weight w[y].
    table = {0: 1.0, 1: 3.0, 2: 0.5}
    by_class, h1 = train.fit(net, X, Y, config=cfg, epochs=2, batch_size=16, key=jax.random.key(0),
                             class_weight=table)  # fmt: skip
    weights = np.array([table[c] for c in Y])
    by_sample, h2 = train.fit(net, X, Y, config=cfg, epochs=2, batch_size=16,
                              key=jax.random.key(0), sample_weight=weights)  # fmt: skip
    assert_same_bits(by_class.params, by_sample.params)
    assert h1["loss"] == h2["loss"]
    with pytest.raises(ValueError, match=r"class_weight: no weight for classes \[2\]"):
        train.fit(net, X, Y, config=cfg, class_weight={0: 1.0, 1: 2.0})
    with pytest.raises(ValueError, match=r"sample_weight: expected 90 numbers"):
        train.fit(net, X, Y, config=cfg, sample_weight=np.ones(89))


def test_integer_rates_and_seeds():
    net = small_net()
    cfg = nnfun.Config.make("categorical_crossentropy", "sgd", learning_rate=1)
    states = train.init_many(net, cfg, [0, 1], learning_rates=[0.5, 0.1])
    np.testing.assert_allclose(states.opt_state.hyperparams["learning_rate"], [0.5, 0.1])
    assert_same_bits(train.unstack(states)[1].params,
                     train.init_state(net, cfg, jax.random.key(1)).params)  # fmt: skip
    with pytest.raises(TypeError, match=r"keys\[0\]: expected a PRNG key"):
        train.init_many(net, cfg, [0.5])


def test_evaluate_and_val_loss_count_the_penalty_once():
    """Per-layer l2(c) and compile(l2=2c) are the same objective (l2/2 sum W^2 there)."""
    from nnfun import regularizers

    def model(per_layer):
        reg = dict(kernel_regularizer=regularizers.l2(0.01)) if per_layer else {}
        m = nnfun.Sequential([Dense(5, "tanh", input_dim=6, **reg), Dense(3, "softmax", **reg)],
                             key=0)  # fmt: skip
        m.compile(loss="categorical_crossentropy", optimizer="sgd", learning_rate=1e-30,
                  **({} if per_layer else {"l2": 0.02}))  # fmt: skip
        return m

    a, b = model(True), model(False)
    ha = a.fit(X, Y, epochs=1, batch_size=90, validation_data=(X, Y), verbose=0)
    b.fit(X, Y, epochs=1, batch_size=90, verbose=0)
    params = a.state.params
    plain = nnfun.Network([Dense(5, "tanh", input_dim=6), Dense(3, "softmax")])  # no penalty
    data_loss = jax.jit(lambda p: plain.loss(p, X, Y, loss="categorical_crossentropy"))(params)
    penalty = 0.01 * sum(float(np.sum(np.square(p["W"]))) for p in params)  # NumPy, by hand
    expected = float(data_loss) + penalty
    assert a.evaluate(X, Y, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert b.evaluate(X, Y, verbose=0) == pytest.approx(expected, rel=1e-5)
    # Rate 1e-30: the weights do not move, so the training loss, val_loss and evaluate agree.
    assert ha.history["val_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert ha.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_accuracy_of_logits_thresholds_at_zero():
    net = nnfun.Sequential([Dense(1, "identity", input_dim=6)], key=0)
    cfg = nnfun.Config.make("binary_crossentropy_from_logits", "sgd", ["accuracy"])
    state = train.init_state(net, cfg, jax.random.key(0))
    logits = np.asarray(net.apply(state.params, X))[:, 0]
    perfect = (logits > 0).astype(np.float32)  # labels a perfect logit classifier gets right
    assert train.evaluate(net, state, X, perfect, config=cfg)[1] == 1.0


def test_fit_many_with_validation_probes_and_a_diverging_model():
    net, cfg = small_net(Dropout(0.1)), config(optimizer="sgd")
    keys = jax.random.split(jax.random.key(7), 3)
    rates = [0.05, 0.2, 1e38]  # the last one blows up
    probe = {"w": lambda p, s: jnp.sum(p[0]["W"])}
    states, hist = train.fit_many(
        net, X, Y, train.init_many(net, cfg, keys, learning_rates=rates), config=cfg, epochs=4,
        batch_size=16, validation_data=(X_VAL, Y_VAL), track=probe,
    )  # fmt: skip
    assert hist["loss"].shape == (4, 3) and hist["val_loss"].shape == (4, 3)
    assert hist["w"].shape == (4, 3)
    assert hist["stopped"][:2] == [None, None] and "non-finite" in hist["stopped"][2]
    assert np.isnan(hist["loss"][-1, 2]) and np.all(np.isfinite(hist["loss"][:, :2]))
    for i in range(2):
        solo_cfg = config(optimizer="sgd", learning_rate=rates[i])
        solo, solo_hist = train.fit(net, X, Y, config=solo_cfg, key=keys[i], epochs=4,
                                    batch_size=16, validation_data=(X_VAL, Y_VAL))  # fmt: skip
        assert_rounding_close(train.unstack(states)[i].params, solo.params, ulps=256)
        np.testing.assert_allclose(hist["val_loss"][:, i], solo_hist["val_loss"], rtol=1e-5)
    chex.assert_tree_all_finite(train.unstack(states)[2].params)


def test_the_compiled_run_is_traced_once_across_chunks_and_calls():
    net, cfg = small_net(), config()
    plan = programs.Plan(16, True, 8)
    calls = chex.assert_max_traces(n=1)(programs.run_epochs)
    program = jax.jit(lambda run, count, first, data: calls(net, cfg, plan, run, count, first,
                                                            data))  # fmt: skip
    run = programs.start_run(train.init_state(net, cfg, jax.random.key(0)))
    data = (jnp.asarray(X), jnp.asarray(Y), None, None, None, None)
    for first, count in ((0, 1), (1, 3), (4, 8)):  # different chunk lengths: one program
        run, _, done, _ = program(run, jnp.asarray(count), jnp.asarray(first), data)
        assert int(done) == count


# ---- the Keras face ------------------------------------------------------------------------
def notes_model(**kw):
    model = nnfun.Sequential(**kw)
    model.add(Dense(input_dim=6, units=32, activation="sigmoid"))
    model.add(Dense(units=32, activation="sigmoid"))
    model.add(Dense(units=3, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def test_keras_face_runs_the_notes_example_and_a_second_fit_trains_more(capsys):
    model = notes_model(key=0)
    history = model.fit(X, Y, batch_size=10, epochs=3, verbose=2)
    assert history.epoch == [0, 1, 2] and len(history.history["loss"]) == 3
    assert capsys.readouterr().out.count("Epoch ") == 3  # verbose=2: a line per epoch
    score = model.evaluate(X, Y, verbose=0)
    assert len(score) == 2 and 0 <= score[1] <= 1 and model.predict(X).shape == (90, 3)
    again = model.fit(X, Y, batch_size=10, epochs=3, verbose=0)  # three more, as Keras
    assert again.epoch == [0, 1, 2] and int(model.state.epoch) == 6
    assert model.history is again  # Keras: the model's history is its last fit's
    straight = notes_model(key=0)
    straight.fit(X, Y, batch_size=10, epochs=6, verbose=0)
    assert_same_bits(model.state, straight.state)
    # initial_epoch: epochs initial_epoch .. epochs - 1 (four of them: the program of the
    # three-epoch fits above, whose buffers hold four).
    resumed = model.fit(X, Y, batch_size=10, epochs=7, initial_epoch=3, verbose=0)
    assert resumed.epoch == [3, 4, 5, 6]


def test_keras_face_weights_seeds_and_untrained_models():
    nnfun.set_random_seed(4)
    a, b = notes_model(), notes_model()
    nnfun.set_random_seed(4)
    a_again = notes_model()
    a.build(), b.build(), a_again.build()
    assert not np.allclose(a.state.params[0]["W"], b.state.params[0]["W"])
    assert_same_bits(a.state.params, a_again.state.params)
    # A built, untrained model predicts and evaluates with its initial weights.
    out = a.predict(X[:4])
    assert_rounding_close(out, a.apply(a.state.params, X[:4]))
    plain = nnfun.Sequential([Dense(3, "softmax", input_dim=6)], key=0)
    plain.compile(loss="categorical_crossentropy")
    assert isinstance(plain.evaluate(X, Y, verbose=0), float)  # no metrics: a scalar
    with pytest.raises(ValueError, match="compile"):
        nnfun.Sequential([Dense(3, input_dim=6)]).fit(X, Y)


def test_recompiling_keeps_weights_and_applies_the_new_rate_or_optimizer():
    model = nnfun.Sequential([Dense(3, "softmax", input_dim=6)], key=0)
    model.compile(loss="categorical_crossentropy", optimizer="sgd", learning_rate=0.1)
    model.fit(X, Y, batch_size=90, epochs=2, verbose=0)
    before = model.state
    model.compile(loss="categorical_crossentropy", optimizer="sgd", learning_rate=0.7)
    assert_same_bits(model.state.params, before.params)
    model.fit(X, Y, batch_size=90, epochs=1, verbose=0, shuffle=False)
    grads = model.manual_grad(before.params, X, Y, loss="categorical_crossentropy")
    expected = jax.tree.map(lambda p, g: p - 0.7 * g, before.params, grads)  # one SGD step
    chex.assert_trees_all_close(model.state.params, expected, rtol=1e-5, atol=1e-7)
    model.compile(loss="categorical_crossentropy", optimizer="adam", learning_rate=0.01)
    history = model.fit(X, Y, batch_size=30, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Adam's moments stay when only its rate changes.
    mu = model.state.opt_state.inner_state.slots[0]  # Keras's m
    model.compile(loss="categorical_crossentropy", optimizer="adam", learning_rate=0.001)
    chex.assert_trees_all_equal(model.state.opt_state.inner_state.slots[0], mu)
    assert float(model.state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.001)


def test_callbacks_csv_logger_user_hooks_and_stop_training(tmp_path):
    class StopAfterTwo(nnfun.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = self.model.state.params[0]["W"]
            if epoch == 1:
                self.model.stop_training = True

    log = tmp_path / "log.csv"
    stopper = StopAfterTwo()
    model = notes_model(key=0)
    history = model.fit(X, Y, epochs=10, batch_size=30, verbose=0,
                        callbacks=[nnfun.CSVLogger(log), stopper])  # fmt: skip
    assert history.epoch == [0, 1] and "callback" in history.stopped
    chex.assert_trees_all_equal(stopper.weights, model.state.params[0]["W"])
    rows = log.read_text().splitlines()
    assert rows[0] == "epoch,accuracy,loss" and len(rows) == 3
    assert float(rows[2].split(",")[2]) == pytest.approx(history.history["loss"][1])

    class PerBatch(nnfun.Callback):
        def on_test_batch_end(self, batch, logs=None):
            pass

    with pytest.raises(ValueError, match="on_test_batch_end"):
        model.fit(X, Y, callbacks=[PerBatch()], verbose=0)


# ---- bad input to the loop and the face --------------------------------------------------
class PerBatch(nnfun.Callback):
    def on_test_batch_end(self, batch, logs=None):
        pass


def face(compiled=True):
    model = nnfun.Sequential([Dense(8, "relu", input_dim=6), Dense(3, "softmax")], key=0)
    if compiled:
        model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    return model


def built(model):
    model.build()
    return model


SGD, ADAM = (nnfun.Config.make("categorical_crossentropy", o) for o in ("sgd", "adam"))
FACE_CASES = [
    # (case as the README lists it, call, error type, fragments of the message)
    ("fit before compile", lambda: face(False).fit(X, Y), ValueError, ["compile(", "fit()"]),
    ("evaluate before compile", lambda: face(False).evaluate(X, Y), ValueError, ["evaluate()"]),
    (
        "EarlyStopping monitor not logged",
        lambda: face().fit(X, Y, verbose=0, callbacks=[nnfun.EarlyStopping()]),
        ValueError,
        ["EarlyStopping.monitor", "['loss', 'accuracy']", "'val_loss'"],
    ),
    (
        "EarlyStopping patience negative",
        lambda: nnfun.EarlyStopping(patience=-1),
        ValueError,
        ["patience:", ">= 0", "-1"],
    ),  # fmt: skip
    (
        "EarlyStopping mode unknown",
        lambda: nnfun.EarlyStopping(mode="up"),
        ValueError,
        ["mode:", "'min'", "'up'"],
    ),  # fmt: skip
    (
        "callback with test-batch hooks",
        lambda: face().fit(X, Y, verbose=0, callbacks=[PerBatch()]),
        ValueError,
        ["callbacks[0]", "on_test_batch_end", "on_epoch_end"],
    ),  # fmt: skip
    (
        "callbacks not callbacks",
        lambda: face().fit(X, Y, verbose=0, callbacks=["stop"]),
        TypeError,
        ["callbacks[0]", "Callback", "'stop'"],
    ),  # fmt: skip
    (
        "class_weight without a class",
        lambda: face().fit(X, Y, verbose=0, class_weight={0: 1.0}),
        ValueError,
        ["class_weight:", "[1, 2]"],
    ),  # fmt: skip
    (
        "sample_weight of wrong length (fit)",
        lambda: face().fit(X, Y, verbose=0, sample_weight=np.ones(5)),
        ValueError,
        ["sample_weight:", "90 numbers", "(5,)"],
    ),  # fmt: skip
    (
        "sample_weight negative",
        lambda: face().fit(X, Y, verbose=0, sample_weight=-np.ones(90)),
        ValueError,
        ["sample_weight:", ">= 0", "-1.0"],
    ),  # fmt: skip
    ("verbose unknown", lambda: face().fit(X, Y, verbose=3), ValueError, ["verbose:", "got 3"]),
    (
        "initial_epoch negative",
        lambda: face().fit(X, Y, verbose=0, initial_epoch=-1),
        ValueError,
        ["initial_epoch:", ">= 0", "-1"],
    ),  # fmt: skip
    (
        "epochs_per_chunk 0",
        lambda: face().fit(X, Y, verbose=0, epochs_per_chunk=0),
        ValueError,
        ["epochs_per_chunk:", ">= 1", "got 0"],
    ),  # fmt: skip
    (
        "track not a dict",
        lambda: face().fit(X, Y, verbose=0, track=[len]),
        TypeError,
        ["track:", "dict"],
    ),  # fmt: skip
    (
        "track probe of one argument",
        lambda: face().fit(X, Y, verbose=0, track={"n": lambda p: 0}),
        TypeError,
        ["track['n']", "fn(params, model_state)", "(p)"],
    ),  # fmt: skip
    (
        "class_weight keys not labels",
        lambda: face().fit(X, Y, verbose=0, class_weight={"0": 1, "1": 1, "2": 1}),
        TypeError,
        ["class_weight:", "integer class labels", "'0'"],
    ),  # fmt: skip
    (
        "key after the weights exist",
        lambda: built(face()).fit(X, Y, key=1),
        ValueError,
        ["key:", "exist already"],
    ),  # fmt: skip
    (
        "set_random_seed negative",
        lambda: nnfun.set_random_seed(-1),
        ValueError,
        ["seed:", ">= 0", "-1"],
    ),  # fmt: skip
    (
        "optimizer state of another optimizer",
        lambda: train.fit(face(), X, Y, config=ADAM, state=train.init_state(face(), SGD, 0)),
        ValueError,
        ["state.opt_state", "with_optimizer"],
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("call", "kind", "fragments"), [c[1:] for c in FACE_CASES], ids=[c[0] for c in FACE_CASES]
)
def test_bad_input_to_fit_and_the_face_names_the_argument(call, kind, fragments):
    with pytest.raises(kind) as error:
        call()
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


def test_readme_troubleshooting_lists_the_face_cases():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Troubleshooting") :]
    missing = [c[0] for c in FACE_CASES if f"| {c[0]} |" not in section]
    assert not missing, f"add these cases to the README's troubleshooting table: {missing}"
