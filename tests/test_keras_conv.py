"""Convolutional networks against Keras 3: from Keras's initial weights, one epoch on a few
digits gives Keras's losses and weights (keras.io's MNIST convnet without its dropout, whose
masks come from another generator, and a net with strides, "same" padding, dilation, average
and global max pooling); keras.io's script itself runs in nnfun with only its imports
changed, with Keras's published parameter count.
"""

import numpy as np
import pytest

import nnfun
from experiments import keras_convnet


def digits(n, size):
    """The first n 8x8 digits, scaled up and padded to size x size x 1, one-hot labels."""
    split = nnfun.data.load_digits()
    x = split.x_train[:n].reshape(n, 8, 8)
    x = np.kron(x, np.ones((3, 3)))[:, : size - 2, : size - 2] / max(float(x.max()), 1.0)
    pad = (size - x.shape[1]) // 2
    x = np.pad(x, [(0, 0), (pad, size - x.shape[1] - pad), (pad, size - x.shape[2] - pad)])
    return x[..., None].astype(np.float32), nnfun.data.one_hot(split.y_train[:n], 10)


def mnist_convnet(m, layers):
    """keras.io's convnet without Dropout, in Keras (m = keras) or nnfun (m = layers = nnfun)."""
    return [
        m.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ]


def strided_net(m, layers):
    """Strides, "same" padding (odd sizes), dilation, average and global max pooling."""
    return [
        m.Input(shape=(13, 13, 1)),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
        layers.AveragePooling2D(2, padding="same"),
        layers.Conv2D(6, 2, dilation_rate=2, padding="same", activation="relu"),
        layers.GlobalMaxPooling2D(),
        layers.Dense(10, activation="softmax"),
    ]


@pytest.mark.parametrize(("build", "size"), [(mnist_convnet, 28), (strided_net, 13)])
def test_one_epoch_matches_keras_loss_and_weights(keras, build, size):
    x, y = digits(96, size)
    keras.utils.set_random_seed(0)
    k = keras.Sequential(build(keras, keras.layers))
    n = nnfun.Sequential(build(nnfun, nnfun), key=0)
    options = dict(loss="categorical_crossentropy", metrics=["accuracy"])
    # Adam, as keras.io's script (nnfun.optimizers follows Keras's update rule step for step).
    k.compile(optimizer=keras.optimizers.Adam(0.001), **options)
    n.compile(optimizer="adam", learning_rate=0.001, **options)
    n.set_weights(k.get_weights())
    fit = dict(batch_size=32, epochs=1, shuffle=False, verbose=0)
    kh, nh = k.fit(x, y, **fit).history, n.fit(x, y, **fit).history
    np.testing.assert_allclose(nh["loss"], kh["loss"], rtol=1e-5)
    np.testing.assert_allclose(nh["accuracy"], kh["accuracy"], rtol=1e-5)
    for a, b in zip(n.get_weights(), k.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_keras_io_script_runs_with_only_its_imports_changed(capsys):
    x, y = digits(64, 28)
    model, history, score = keras_convnet.run(nnfun, nnfun, x[:48], y[:48], x[48:], y[48:], 1)
    printed = capsys.readouterr().out
    assert "Total params: 34,826" in printed  # keras.io's summary of the same model
    assert "Test accuracy:" in printed and len(score) == 2 and 0 <= score[1] <= 1
    assert history.params["steps"] == 1 and np.isfinite(history.history["val_loss"][0])
