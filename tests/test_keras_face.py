"""The Keras face's own rules, where Keras is not needed as the oracle: bad input is refused
with the argument named, a frozen layer stays under both gradient sources, Keras's class
names resolve to nnfun's records, and Keras's attributes leave a layer's hash alone."""

import numpy as np
import pytest

import nnfun
from nnfun import losses, metrics, optimizers

X = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


def model(**dense):
    return nnfun.Sequential(
        [nnfun.Input(shape=(3,)), nnfun.Dense(4, "tanh", **dense), nnfun.Dense(2, "softmax")],
        key=0,
    )


@pytest.mark.parametrize(
    ("call", "kind", "fragments"),
    [
        (lambda: nnfun.Dense(3, name=5), TypeError, ["name:", "5"]),
        (lambda: nnfun.Dense(3, trainable="no"), TypeError, ["trainable:", "'no'"]),
        (lambda: nnfun.Dense(3).get_weights(), ValueError, ["belongs to no model"]),
        (lambda: model().get_layer("head"), ValueError, ["name:", "'dense'", "'head'"]),
        (lambda: model().get_layer(), ValueError, ["get_layer:", "name or index"]),
        (lambda: model().compile(optimizer="adam"), ValueError, ["loss:", "None"]),
        (lambda: optimizers.SGD(learning_rate=-1.0), ValueError, ["learning_rate"]),
        (lambda: optimizers.Adam(clipnorm=1.0, clipvalue=1.0), ValueError, ["at most one"]),
        (lambda: optimizers.Adam(beta_1="0.9"), TypeError, ["beta_1:", "'0.9'"]),
        (
            lambda: nnfun.Config.make("mse", optimizers.Adam(), learning_rate=0.1),
            ValueError,
            ["learning_rate:", "Adam(learning_rate=...)"],
        ),
        (lambda: nnfun.Config.make("mse", "lion"), ValueError, ["optimizer:", "'adamw'", "'lion'"]),
        (
            lambda: losses.BinaryCrossentropy(label_smoothing=0.1),
            ValueError,
            ["BinaryCrossentropy:", "label_smoothing:", "0.1"],
        ),
        (lambda: metrics.BinaryAccuracy(threshold=0.3), ValueError, ["threshold:", "0.3"]),
    ],
)
def test_bad_input_names_the_argument(call, kind, fragments):
    with pytest.raises(kind) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)


def test_kerass_class_names_resolve_to_nnfuns_records():
    assert losses.MeanSquaredError() is losses.mean_squared_error
    assert losses.SparseCategoricalCrossentropy() is losses.categorical_crossentropy
    assert (
        losses.CategoricalCrossentropy(from_logits=True)
        is losses.categorical_crossentropy_from_logits
    )
    assert metrics.SparseCategoricalAccuracy() == "sparse_categorical_accuracy"
    assert optimizers.from_name("RMSprop").get_config()["epsilon"] == 1e-7
    assert optimizers.from_name("adagrad").learning_rate == 0.001  # Keras's, not optax's 0.1


def test_trainable_and_name_leave_the_layer_spec_and_its_hash_alone():
    layer = nnfun.Dense(3, "relu", name="hidden")
    twin = nnfun.Dense(3, "relu")
    assert layer == twin and hash(layer) == hash(twin)  # compiled programs are shared
    layer.trainable = False
    assert hash(layer) == hash(twin) and not layer.trainable and twin.trainable
    with pytest.raises(AttributeError):
        layer.units = 4  # the spec itself stays frozen


@pytest.mark.parametrize("grad", ["autodiff", "manual"])
def test_a_frozen_layer_does_not_move_under_either_gradient(grad):
    m = model()
    m.layers[0].trainable = False
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", grad=grad)
    before = m.get_weights()
    m.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    after = m.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before[:2], after[:2], strict=True))
    assert not np.allclose(before[2], after[2])  # the head trained
    assert [len(m.trainable_weights), len(m.non_trainable_weights)] == [2, 2]


def test_a_function_loss_refuses_the_manual_gradient():
    def absolute(y_true, y_pred):
        return abs(y_pred - y_true).sum(-1)

    m = model()
    m.compile(optimizer="sgd", loss=absolute, grad="manual")
    with pytest.raises(ValueError, match="absolute is a function without a hand-written"):
        m.fit(X, Y, epochs=1, verbose=0)


def test_pop_keeps_the_other_layers_weights():
    m = model()
    m.add(nnfun.Dense(2, "softmax"))
    before = m.get_weights()
    m.pop()
    assert all(np.array_equal(a, b) for a, b in zip(before[:4], m.get_weights(), strict=True))
    assert m.output_shape == (None, 2)


def test_names_and_trainable_are_saved(tmp_path):
    m = nnfun.Sequential(
        [nnfun.Input(shape=(3,)), nnfun.Dense(4, name="base", trainable=False), nnfun.Dense(2)]
    )
    m.compile(optimizer=optimizers.Adam(0.02), loss="mse")
    m.save(tmp_path / "m")
    restored = nnfun.load_model(tmp_path / "m")
    assert [layer.name for layer in restored.layers] == ["base", None]
    assert [layer.trainable for layer in restored.layers] == [False, True]
    assert restored.compiled.optimizer_name == "adam"
