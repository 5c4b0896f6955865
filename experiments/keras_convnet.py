"""keras.io's "Simple MNIST convnet" (fchollet), its model, training and evaluation as written
there; only the imports change: ``import nnfun as keras`` and ``import nnfun as layers``
run it in nnfun (``keras`` / ``keras.layers`` run it in Keras). The data arrive as arguments
(keras.datasets downloads, which this project does not): images (n, 28, 28, 1) float32 in
[0, 1] and one-hot labels (n, 10), what the original's preparation makes.
"""

from __future__ import annotations


def run(keras, layers, x_train, y_train, x_test, y_test, epochs=15, verbose="auto"):
    """Builds, trains and evaluates the example; returns (model, history, score)."""
    num_classes = 10
    input_shape = (28, 28, 1)
    # ---- from here on, keras.io's text (``verbose`` added so that tests stay quiet) ----
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    if verbose:
        model.summary()
    batch_size = 128
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1,
        verbose=verbose,
    )  # fmt: skip
    score = model.evaluate(x_test, y_test, verbose=0)
    if verbose:
        print("Test loss:", score[0])
        print("Test accuracy:", score[1])
    return model, history, score
