"""A typical Keras Sequential MNIST script, ported line for line (only the imports and the
optimiser's spelling change), on scikit-learn's 8x8 digits so that it runs in seconds; each
behaviour is checked against what Keras documents.

The Keras original::

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(784,)),
        layers.Dense(32, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss="sparse_categorical_crossentropy", metrics=["acc"])
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2),
        keras.callbacks.ModelCheckpoint("best.keras", save_best_only=True),
        keras.callbacks.CSVLogger("log.csv"),
    ]
    history = model.fit(x_train, y_train, batch_size=64, epochs=50,
                        validation_split=0.2, callbacks=callbacks)
    test_loss, test_acc = model.evaluate(x_test, y_test)
    predictions = model.predict(x_test)
    model.summary()
    model.save("model.keras")
    restored = keras.models.load_model("model.keras")
    restored.fit(x_train, y_train, batch_size=64, epochs=2)
"""

import csv
import types

import chex
import numpy as np
import pytest

import nnfun

SPLIT = nnfun.data.load_digits()
X_TRAIN, Y_TRAIN = SPLIT.x_train[:300], SPLIT.y_train[:300]  # few samples: it overfits soon
X_TEST, Y_TEST = SPLIT.x_test, SPLIT.y_test
EPOCHS, PATIENCE = 50, 2


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    """Runs the script once; returns what each test inspects."""
    tmp = tmp_path_factory.mktemp("keras_script")
    nnfun.set_random_seed(0)
    model = nnfun.Sequential(
        [
            nnfun.Input(shape=(64,)),
            nnfun.Dense(32, activation="relu"),
            nnfun.Dropout(0.2),
            nnfun.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer="adam",
        learning_rate=0.02,
        loss="sparse_categorical_crossentropy",
        metrics=["acc"],
    )
    callbacks = [
        nnfun.EarlyStopping(monitor="val_loss", patience=PATIENCE),
        nnfun.ModelCheckpoint(tmp / "best", save_best_only=True),
        nnfun.CSVLogger(tmp / "log.csv"),
        nnfun.ModelCheckpoint(tmp / "best_weights", save_best_only=True, save_weights_only=True),
    ]
    history = model.fit(
        X_TRAIN,
        Y_TRAIN,
        batch_size=64,
        epochs=EPOCHS,
        validation_split=0.2,
        callbacks=callbacks,
        verbose=0,
    )
    test_loss, test_acc = model.evaluate(X_TEST, Y_TEST, verbose=0)
    predictions = model.predict(X_TEST)
    summary = []
    model.summary(print_fn=summary.append)
    model.save(tmp / "model")
    restored = nnfun.load_model(tmp / "model")
    restored_predictions = restored.predict(X_TEST)
    trained_epochs = int(restored.state.epoch)
    before_again = restored.get_weights()
    again = restored.fit(X_TRAIN, Y_TRAIN, batch_size=64, epochs=2, verbose=0)
    return types.SimpleNamespace(**locals())


def test_history_as_keras_returns_it(script):
    h = script.history
    assert isinstance(h, nnfun.History)
    assert set(h.history) == {"loss", "acc", "val_loss", "val_acc"}
    assert h.epoch == list(range(len(h.epoch)))
    assert all(len(v) == len(h.epoch) for v in h.history.values())


def test_early_stopping_stops_patience_epochs_after_the_best(script):
    val_loss = script.history.history["val_loss"]
    best = int(np.argmin(val_loss))
    # Keras: stop once `patience` epochs in a row did not improve on the best (min_delta 0).
    assert len(val_loss) == best + PATIENCE + 1 < EPOCHS
    assert all(v >= val_loss[best] for v in val_loss[best + 1 :])


def test_the_checkpoint_holds_the_best_epoch_not_the_last(script):
    val_loss = script.history.history["val_loss"]
    assert int(np.argmin(val_loss)) != len(val_loss) - 1  # the premise: the last is worse
    best = nnfun.load_model(script.tmp / "best")
    cut = len(X_TRAIN) - round(0.2 * len(X_TRAIN))  # Keras validates on the last 20%
    loss, _ = best.evaluate(X_TRAIN[cut:], Y_TRAIN[cut:], batch_size=64, verbose=0)
    assert loss == pytest.approx(min(val_loss), rel=1e-6)
    assert int(best.state.epoch) == int(np.argmin(val_loss)) + 1
    # save_weights_only: the same best epoch's weights, for load_weights into a new model.
    layers = [nnfun.Dense(32, "relu", input_dim=64), nnfun.Dropout(0.2), nnfun.Dense(10)]
    fresh = nnfun.Sequential(layers, key=1)
    fresh.load_weights(script.tmp / "best_weights")
    chex.assert_trees_all_equal(fresh.get_weights(), best.get_weights())


def test_csv_logger_writes_one_row_per_epoch_with_sorted_keys(script):
    with open(script.tmp / "log.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "acc", "loss", "val_acc", "val_loss"]  # Keras sorts the keys
    h = script.history
    assert [int(r[0]) for r in rows[1:]] == h.epoch
    for j, key in enumerate(rows[0][1:], start=1):
        assert [float(r[j]) for r in rows[1:]] == h.history[key]


def test_evaluate_and_predict_agree_with_numpy(script):
    p = script.predictions.astype(np.float64)
    assert p.shape == (len(X_TEST), 10)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    # Sparse categorical cross-entropy and accuracy, by hand from the predicted probabilities.
    expected_loss = -np.mean(np.log(p[np.arange(len(Y_TEST)), Y_TEST]))
    assert script.test_loss == pytest.approx(expected_loss, rel=1e-5)
    assert script.test_acc == pytest.approx(np.mean(p.argmax(1) == Y_TEST), abs=1e-6)


def test_summary_counts_by_hand(script):
    # Dense 64*32 + 32 = 2080, Dropout 0, Dense 32*10 + 10 = 330; float32 = 4 bytes each.
    text = "\n".join(script.summary)
    assert "Total params: 2,410 (9.41 KB)" in text
    assert "Trainable params: 2,410 (9.41 KB)" in text
    assert "Non-trainable params: 0 (0.00 B)" in text
    assert script.model.count_params() == 2410


def test_load_model_predicts_the_same_and_a_second_fit_trains_more(script):
    chex.assert_trees_all_equal(script.restored_predictions, script.predictions)
    assert script.trained_epochs == len(script.history.epoch)
    # Keras: fit(epochs=2) on a trained model trains 2 more epochs, numbered 0 and 1.
    assert script.again.epoch == [0, 1]
    assert int(script.restored.state.epoch) == script.trained_epochs + 2
    assert not np.array_equal(script.restored.get_weights()[0], script.before_again[0])


def test_recompiling_with_a_new_rate_keeps_the_weights_and_changes_the_step():
    """One SGD step at the new rate, checked against the gradient by hand (NumPy)."""
    x, y = X_TRAIN[:50], Y_TRAIN[:50]
    model = nnfun.Sequential([nnfun.Input(shape=(64,)), nnfun.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", learning_rate=0.5, loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)
    w0, b0 = model.get_weights()
    model.compile(optimizer="sgd", learning_rate=0.05, loss="sparse_categorical_crossentropy")
    chex.assert_trees_all_equal(model.get_weights(), [w0, b0])
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)
    # Softmax + cross-entropy: dJ/dz = (p - onehot(y)) / m; dW = x^T dz, db = sum dz.
    z = x.astype(np.float64) @ w0 + b0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(10)[y]) / len(y)
    w1, b1 = model.get_weights()
    np.testing.assert_allclose(w1, w0 - 0.05 * (x.T @ dz), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b1, b0 - 0.05 * dz.sum(0), rtol=1e-5, atol=1e-7)
    # Another optimiser: a fresh optimiser state, trains without error.
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["acc"])
    history = model.fit(x, y, batch_size=50, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.epoch == [0]
    assert not np.array_equal(model.get_weights()[0], w1)
