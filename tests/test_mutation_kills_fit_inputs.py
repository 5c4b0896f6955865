"""fit's inputs, checked directly (sampled mutants of nnfun.fit_inputs survived the fit tests):
weights given inside ``validation_data`` weigh the validation loss, and a single 0/1 target
column takes its class weights by value, not by argmax."""

import numpy as np

import nnfun
from nnfun.fit_inputs import class_weights
from nnfun.layers import Dense

RNG = np.random.default_rng(5)
X = RNG.normal(size=(16, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


def val_loss(validation_data):
    model = nnfun.Sequential([nnfun.Input(shape=(3,)), Dense(2, activation="softmax")], key=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", learning_rate=0.1)
    history = model.fit(X, Y, epochs=1, batch_size=8, shuffle=False,
                        validation_data=validation_data, verbose=0)  # fmt: skip
    return history.history["val_loss"][0]


def test_validation_weights_weigh_the_validation_loss():
    # Keras 3: J = sum_i w_i L_i / n, so weights of 3 on every row triple the loss (an
    # average normalised by the weights' sum would leave it unchanged).
    xv, yv = X[:6], 1 - Y[:6]
    plain = val_loss((xv, yv))
    weighted = val_loss((xv, yv, np.full(6, 3.0, np.float32)))
    np.testing.assert_allclose(weighted, 3 * plain, rtol=1e-5)


def test_class_weights_of_a_single_binary_column():
    y = np.array([[0.0], [1.0], [1.0], [0.0]])  # (n, 1): the value is the class
    np.testing.assert_array_equal(class_weights({0: 1.0, 1: 5.0}, y, 4), [1.0, 5.0, 5.0, 1.0])
    onehot = np.array([[1.0, 0.0], [0.0, 1.0]])  # (n, k > 1): the argmax is the class
    np.testing.assert_array_equal(class_weights({0: 1.0, 1: 5.0}, onehot, 2), [1.0, 5.0])
