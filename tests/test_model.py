"""The Keras face beyond training: summary and counts, weights in Keras's order, save /
load_model (bit for bit, continued training, registered names, damaged folders),
per-layer regularizers in both gradients, Input / input_shape and Keras's argument names."""

import json
from dataclasses import dataclass

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun
from nnfun import activations, losses, regularizers, saving
from nnfun.layers import BatchNorm, Dense, Dropout, Flatten, Input, Layer

RNG = np.random.default_rng(1)
X = RNG.normal(size=(48, 6)).astype(np.float32)
LABELS = (X[:, 0] + X[:, 1] > 0).astype(np.int32) + (X[:, 2] > 0.5).astype(np.int32)


def bn_model(key=0):
    """Input(6) -> Dense(5, relu) -> BatchNorm -> Dropout -> Dense(3, softmax), Adam."""
    model = nnfun.Sequential(
        [Input(shape=(6,)), Dense(5, "relu"), BatchNorm(), Dropout(0.25), Dense(3, "softmax")],
        key=key,
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["acc"])
    return model


def unkeyed(tree):
    """Typed PRNG keys as their raw data, so that chex can compare them."""
    is_key = lambda v: jnp.issubdtype(v.dtype, jax.dtypes.prng_key)  # noqa: E731
    return jax.tree.map(lambda v: jax.random.key_data(v) if is_key(v) else v, tree)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """`first` trains 2 epochs and is saved (its state then kept as `at_save`); `loaded` is
    read back and trains 2 more, and so does `first`: 4 epochs in one model (that a second
    fit continues exactly as one longer fit is tested in test_train). Predictions are taken
    right after loading."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    first = bn_model()
    first.fit(X, LABELS, batch_size=16, epochs=2, verbose=0)
    first.save(folder)
    at_save = first.state
    loaded = nnfun.load_model(folder)
    at_load = (first.predict(X), loaded.predict(X))
    history = loaded.fit(X, LABELS, batch_size=16, epochs=2, verbose=0)
    first.fit(X, LABELS, batch_size=16, epochs=2, verbose=0)
    return folder, first, at_save, loaded, at_load, history


# ---- summary, counts, weights ------------------------------------------------------------------
def test_summary_lists_layers_shapes_and_counts_as_a_hand_count():
    model = bn_model()
    assert not model.built
    lines = []
    model.summary(print_fn=lines.append)
    assert model.built  # summary builds, as Keras's does once the input shape is known
    # By hand: Dense 6*5 + 5 = 35; BatchNorm gamma, beta (trainable) + mean, var = 4 * 5;
    # Dropout 0; Dense 5*3 + 3 = 18. Trainable 35 + 10 + 18 = 63, non-trainable 10.
    text = "\n".join(lines)
    assert lines[0] == 'Model: "sequential"'
    for name, kind, shape, count in [
        ("dense", "Dense", "(None, 5)", "35"),
        ("batch_norm", "BatchNorm", "(None, 5)", "20"),
        ("dropout", "Dropout", "(None, 5)", "0"),
        ("dense_1", "Dense", "(None, 3)", "18"),
    ]:
        row = next(line for line in lines if line.startswith(f" {name} ({kind})"))
        assert row.split()[2:] == [*shape.split(), count]
    # float32: 4 bytes each; 73 * 4 = 292 B, 63 * 4 = 252 B, 10 * 4 = 40 B.
    assert "Total params: 73 (292.00 B)" in text
    assert "Trainable params: 63 (252.00 B)" in text
    assert "Non-trainable params: 10 (40.00 B)" in text
    assert model.count_params() == 73


def test_get_weights_in_keras_order_and_set_weights_round_trip():
    model = bn_model()
    shapes = [w.shape for w in model.get_weights()]
    # Keras: Dense kernel (in, out), bias; BatchNorm gamma, beta, moving_mean, moving_variance.
    assert shapes == [(6, 5), (5,), (5,), (5,), (5,), (5,), (5, 3), (3,)]
    new = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    new[5] = np.abs(new[5]) + 0.1  # a variance
    model.set_weights(new)
    params, stats = model.state.params, model.state.model_state
    placed = [
        params[0]["W"], params[0]["b"], params[1]["gamma"], params[1]["beta"],
        stats[1]["mean"], stats[1]["var"], params[3]["W"], params[3]["b"],
    ]  # fmt: skip
    chex.assert_trees_all_equal(placed, [jnp.asarray(w) for w in new])
    chex.assert_trees_all_equal(model.get_weights(), new)
    # float64 in, the model's float32 kept.
    model.set_weights([w.astype(np.float64) for w in new])
    assert all(w.dtype == np.float32 for w in model.get_weights())


def test_set_weights_names_the_wrong_count_or_shape():
    model = bn_model()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"weights: expected 8 arrays .* got 7"):
        model.set_weights(weights[:-1])
    bad = [*weights[:6], np.zeros((3, 5), np.float32), weights[7]]
    message = r"weights\[6\] \(layer 3 dense_1, W\): expected shape \(5, 3\), got \(3, 5\)"
    with pytest.raises(ValueError, match=message):
        model.set_weights(bad)
    with pytest.raises(TypeError, match="weights: expected a list"):
        model.set_weights(weights[0])


# ---- save / load ---------------------------------------------------------------------------
def test_a_loaded_model_predicts_bit_for_bit(saved):
    _, _, _, loaded, (original, restored), _ = saved
    chex.assert_trees_all_equal(original, restored)
    assert [type(layer) for layer in loaded.layers] == [Dense, BatchNorm, Dropout, Dense]
    assert loaded.compiled.metrics == ("acc",) and loaded.compiled.optimizer_name == "adam"


def test_save_load_then_train_equals_training_straight_through(saved):
    _, straight, _, loaded, _, history = saved
    # Weights, Adam's moments, BatchNorm statistics, PRNG key, step and epoch counters.
    chex.assert_trees_all_equal(unkeyed(loaded.state), unkeyed(straight.state))
    assert history.epoch == [0, 1] and int(loaded.state.epoch) == 4


def test_save_writes_the_state_it_is_given(tmp_path, saved):
    _, first, at_save, *_ = saved
    first.save(tmp_path / "m", state=at_save)  # as ModelCheckpoint saves a best epoch
    chex.assert_trees_all_equal(unkeyed(nnfun.load_model(tmp_path / "m").state), unkeyed(at_save))
    assert int(first.state.epoch) == 4 and int(at_save.epoch) == 2


def test_the_folder_is_plain_json_and_a_checkpoint(saved):
    folder = saved[0]
    config = json.loads((folder / "model.json").read_text())
    assert config["format"] == "nnfun.model" and config["input_shape"] == [6]
    assert [layer["class_name"] for layer in config["layers"]] == [
        "Dense", "BatchNorm", "Dropout", "Dense"
    ]  # fmt: skip
    assert config["layers"][0]["config"] == {
        "units": 5,
        "activation": "relu",
        "kernel_initializer": "glorot_uniform",
        "bias_initializer": "zeros",
    }
    assert config["compile"]["optimizer"] == "adam"
    assert config["compile"]["learning_rate"] == pytest.approx(0.001)
    # Named by the step: 2 epochs of 48 rows in batches of 16.
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "step_00000006"]
    assert not list(folder.rglob("*.pkl"))


def test_save_weights_and_load_weights(tmp_path, saved):
    first = saved[1]
    first.save_weights(tmp_path / "w")
    other = bn_model(key=5)
    other.load_weights(tmp_path / "w")
    chex.assert_trees_all_equal(other.get_weights(), first.get_weights())
    with pytest.raises(ValueError, match=r"model\.json.*use nnfun\.load_model"):
        other.load_weights(saved[0])
    small = nnfun.Sequential([Dense(2, input_dim=6)], key=0)
    with pytest.raises(ValueError, match=f"load_weights: {tmp_path / 'w'} is damaged or belongs"):
        small.load_weights(tmp_path / "w")


def test_damaged_or_foreign_folders_get_a_clear_error_naming_the_path(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nothing'}: no such folder"):
        nnfun.load_model(tmp_path / "nothing")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=f"{foreign} is not a folder written by nnfun"):
        nnfun.load_model(foreign)
    with pytest.raises(ValueError, match=f"path: {foreign} holds other files"):
        saved[1].save(foreign)

    def copy_of_saved(name):
        target = tmp_path / name
        saving.save_model(saved[1], target)
        return target

    broken_json = copy_of_saved("broken_json")
    (broken_json / "model.json").write_text('{"format": "nnfun.mod')
    with pytest.raises(ValueError, match=f"{broken_json / 'model.json'} is damaged"):
        nnfun.load_model(broken_json)
    truncated = copy_of_saved("truncated")
    arrays = next(truncated.glob("step_*")) / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"load_model: {truncated} is damaged"):
        nnfun.load_model(truncated)
    # A file cannot name code to run: only nnfun's classes and registered names resolve.
    hostile = copy_of_saved("hostile")
    config = json.loads((hostile / "model.json").read_text())
    config["layers"][0]["class_name"] = "os.system"
    (hostile / "model.json").write_text(json.dumps(config))
    message = f"{hostile}: layers\\[0\\]: unknown layer class 'os.system'"
    with pytest.raises(ValueError, match=message):
        nnfun.load_model(hostile)
    config["layers"][0].update(class_name="Dense", config={"units": -3})
    (hostile / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{hostile}: layers\\[0\\]: cannot build Dense: .*units"):
        nnfun.load_model(hostile)


def test_uncompiled_models_round_trip_and_unsavable_settings_say_what_to_do(tmp_path):
    model = nnfun.Sequential([Dense(2, input_dim=3)], key=0)
    model.save(tmp_path / "plain")
    loaded = nnfun.load_model(tmp_path / "plain")
    assert loaded.compiled is None
    chex.assert_trees_all_equal(loaded.get_weights(), model.get_weights())
    model.compile(loss="mse", optimizer=optax.sgd(0.1))
    with pytest.raises(
        TypeError, match="optax GradientTransformation.*optimizer name.*save_weights"
    ):
        model.save(tmp_path / "optax")
    model.compile(loss="mse", optimizer="sgd", learning_rate=optax.constant_schedule(0.1))
    with pytest.raises(TypeError, match="schedule.*save_weights"):
        model.save(tmp_path / "schedule")
    model.save_weights(tmp_path / "weights")  # the weights alone can always be saved
    assert not (tmp_path / "optax").exists() and not (tmp_path / "schedule").exists()


# ---- custom objects ------------------------------------------------------------------------
cube = activations.elementwise("cube", lambda z: z**3, lambda z, a: 3 * z**2)


@dataclass(frozen=True)
class Scale(Layer):
    """y = factor * x, no parameters: a custom layer for the registry tests."""

    factor: float = 2.0

    def forward(self, params, state, x, key=None, train=False):
        return self.factor * x, state, None

    def backward(self, params, cache, dy):
        return {}, self.factor * dy


def custom_model():
    model = nnfun.Sequential([Dense(4, cube, input_dim=6), Scale(0.5), Dense(3)], key=2)
    model.compile(loss="mse", optimizer="sgd", learning_rate=0.05)
    return model


def test_unregistered_custom_objects_are_refused_with_how_to_register(tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "_REGISTRY", {})
    message = r"Dense\(4, cube\).*activation.*nnfun\.register.*custom_objects"
    with pytest.raises(TypeError, match=message):
        custom_model().save(tmp_path / "m")
    nnfun.register(cube)
    with pytest.raises(TypeError, match=r"custom layer class Scale.*nnfun\.register"):
        custom_model().save(tmp_path / "m")
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_registered_custom_objects_round_trip_and_custom_objects_load(tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "_REGISTRY", {})
    nnfun.register(cube)
    assert nnfun.register(name="scale_layer")(Scale) is Scale
    model = custom_model()
    model.save(tmp_path / "m")
    loaded = nnfun.load_model(tmp_path / "m")
    assert loaded.layers[0].activation is cube and loaded.layers[1] == Scale(0.5)
    chex.assert_trees_all_equal(loaded.predict(X), model.predict(X))
    # In a fresh process nothing is registered: custom_objects supplies the names, as Keras.
    monkeypatch.setattr(saving, "_REGISTRY", {})
    with pytest.raises(ValueError, match=r"custom object 'cube'.*custom_objects"):
        nnfun.load_model(tmp_path / "m")
    again = nnfun.load_model(tmp_path / "m", custom_objects={"cube": cube, "scale_layer": Scale})
    chex.assert_trees_all_equal(again.get_weights(), model.get_weights())
    with pytest.raises(ValueError, match="'cube' is already registered"):
        nnfun.register(cube), nnfun.register(activations.elementwise("cube", abs, abs))


# ---- regularizers ----------------------------------------------------------------------------
def test_kernel_regularizer_in_both_gradients_against_jax_grad_and_numpy():
    reg = regularizers.l1_l2(l1=0.03, l2=0.02)
    net = nnfun.Network(
        [Dense(4, "tanh", input_dim=3, kernel_regularizer=reg), Dense(2, "softmax")]
    )
    plain = nnfun.Network([Dense(4, "tanh", input_dim=3), Dense(2, "softmax")])
    loss = "categorical_crossentropy"

    @jax.jit  # one compiled program rather than a hundred float64 ops one by one
    def quantities(params, x, y):
        return {
            "penalty": net.penalty(params),
            "added": net.loss(params, x, y, loss=loss) - plain.loss(params, x, y, loss=loss),
            "manual": net.manual_grad(params, x, y, loss=loss),
            "auto": jax.grad(net.loss)(params, x, y, loss=loss),
            "manual_plain": plain.manual_grad(params, x, y, loss=loss),
            "auto_plain": jax.grad(plain.loss)(params, x, y, loss=loss),
            "auto_penalty": jax.grad(net.penalty)(params),
        }

    with jax.enable_x64(True):
        params = net.init(jax.random.key(0), jnp.float64)
        params[0]["W"] = params[0]["W"].at[0, 0].set(0.0)  # |w| at its kink: sign(0) = 0
        x = jnp.asarray(RNG.normal(size=(5, 3)))
        q = quantities(params, x, jnp.asarray([0, 1, 1, 0, 1]))
    w = np.asarray(params[0]["W"])
    # Keras's form: R = l1 sum|W| + l2 sum W^2 on the regularised layer's kernel only.
    expected = 0.03 * np.abs(w).sum() + 0.02 * (w**2).sum()
    np.testing.assert_allclose(q["penalty"], expected, rtol=1e-14)
    np.testing.assert_allclose(q["added"], expected, rtol=1e-12)
    chex.assert_trees_all_close(q["manual"], q["auto"], rtol=1e-12, atol=1e-15)
    # dR/dW by hand (NumPy): what the regulariser adds to each gradient; sign(0) = 0.
    dr = 0.03 * np.sign(w) + 2 * 0.02 * w
    for with_r, without in (("manual", "manual_plain"), ("auto", "auto_plain")):
        added = q[with_r][0]["W"] - q[without][0]["W"]
        np.testing.assert_allclose(added, dr, rtol=1e-10, atol=1e-15)
        chex.assert_trees_all_equal(q[with_r][1], q[without][1])  # the other layer untouched
    np.testing.assert_allclose(q["auto_penalty"][0]["W"], dr, rtol=1e-14)
    assert float(q["auto_penalty"][0]["W"][0, 0]) == 0.0 and dr[0, 0] == 0.0
    # Keras's l2(c) equals the notes' compile-level l2 = 2c: c sum W^2 = (2c)/2 sum W^2.
    only_l2 = nnfun.Network([Dense(4, "tanh", input_dim=3, kernel_regularizer="l2")])
    notes = nnfun.Network([Dense(4, "tanh", input_dim=3)])
    p = [{"W": jnp.asarray(w, jnp.float32), "b": jnp.zeros(4)}]
    np.testing.assert_allclose(only_l2.penalty(p), notes.penalty(p, l2=0.02), rtol=1e-6)


def test_regularizer_arguments_are_checked():
    assert regularizers.l1(0.5) == regularizers.L1L2(l1=0.5, l2=0.0)
    assert regularizers.get({"l1": 0.1, "l2": 0.2}) == regularizers.l1_l2(0.1, 0.2)
    with pytest.raises(ValueError, match="l2: expected a finite number >= 0, got -1"):
        regularizers.l2(-1)
    with pytest.raises(ValueError, match="Dense: kernel_regularizer: expected None.*got 'l3'"):
        Dense(3, kernel_regularizer="l3")


# ---- Keras's argument names ------------------------------------------------------------------
def test_input_and_input_shape_declare_the_input():
    assert nnfun.Sequential([Input(shape=(6,)), Dense(2)]).input_shape == (6,)
    assert nnfun.Sequential([Input(shape=6), Dense(2)]).input_shape == (6,)
    assert nnfun.Sequential([Dense(2, input_shape=(6,))]).input_shape == (6,)
    assert Dense(2, input_shape=(6,)).input_dim == 6
    images = nnfun.Sequential([Flatten(input_shape=(2, 3)), Dense(2)])
    assert images.input_shape == (2, 3) and images.shapes()[1] == (6,)
    with pytest.raises(ValueError, match=r"Input\(shape=\(6,\)\) must come first"):
        nnfun.Sequential([Dense(2, input_dim=6), Input(shape=(6,))])
    with pytest.raises(ValueError, match=r"input_shape=\(6,\) and input_dim=5 disagree"):
        Dense(2, input_shape=(6,), input_dim=5)
    with pytest.raises(ValueError, match=r"input_shape: expected \(features,\), got \(2, 3\)"):
        Dense(2, input_shape=(2, 3))
    with pytest.raises(ValueError, match=r"Input: shape: expected a tuple of positive ints"):
        Input(shape=(0,))
    with pytest.raises(ValueError, match="input_dim: layer 0"):  # Input(6) then a 5-input Dense
        nnfun.Sequential([Input(shape=(6,)), Dense(2, input_dim=5)]).shapes()


def test_keras_initializer_names_and_aliases():
    key = jax.random.key(3)
    keras = Dense(4, kernel_initializer="he_normal", bias_initializer="ones").init(key, (6,))
    ours = Dense(4, kernel_init="he_normal", bias_init="ones").init(key, (6,))
    chex.assert_trees_all_equal(keras, ours)
    assert Dense(4, kernel_init="zeros") == Dense(4, kernel_initializer="zeros")
    assert float(jnp.std(keras["W"])) > 0 and bool(jnp.all(keras["b"] == 1))
    with pytest.raises(ValueError, match="kernel_init is its alias"):
        Dense(4, kernel_initializer="he_normal", kernel_init="zeros")
    with pytest.raises(ValueError, match="Dense: kernel_init: initializer: expected one of"):
        Dense(4, kernel_initializer="gaussian")


def test_sparse_categorical_crossentropy_is_the_fused_categorical_loss():
    assert losses.get("sparse_categorical_crossentropy") is losses.categorical_crossentropy
    net = nnfun.Network([Dense(3, "softmax", input_dim=2)])
    fused = net._fused(losses.get("sparse_categorical_crossentropy"))
    assert fused is losses.categorical_crossentropy_from_logits
    # Integer labels and one-hot targets give the same J; logits of 1e4 stay finite.
    params = [{"W": jnp.asarray([[1e4, 0.0, -1e4], [0.0, 1.0, 0.0]]), "b": jnp.zeros(3)}]
    x = jnp.asarray([[1.0, 0.0], [0.0, 1.0]])
    labels = jnp.asarray([2, 1])
    sparse = net.loss(params, x, labels, loss="sparse_categorical_crossentropy")
    onehot = net.loss(params, x, jax.nn.one_hot(labels, 3), loss="categorical_crossentropy")
    # By hand: sample 1 has logits (1e4, 0, -1e4), label 2: -log softmax = 2e4 (to rounding);
    # sample 2 logits (0, 1, 0), label 1: log(2 + e) - 1.
    expected = (2e4 + np.log(2 + np.e) - 1) / 2
    np.testing.assert_allclose(sparse, expected, rtol=1e-6)
    chex.assert_trees_all_equal(sparse, onehot)
