"""Differential tests: the same small script run by Keras 3 and by nnfun in one process (only
the library differs: ``lib`` is ``keras`` or ``nnfun``), nnfun from Keras's initial weights,
``shuffle=False``. Weights, history, evaluate and predict agree to 1e-5; behaviour (epochs
run, history keys, hooks called and their order, files written) is the same. The expected
values are Keras's own; the run-semantics comparisons (early stopping, weighted losses,
validation rows, LR callbacks) live in tests/test_run_semantics.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="keras (the test extra) is the oracle here")
if keras.backend.backend() != "jax":
    pytest.skip("the oracle needs Keras's JAX backend", allow_module_level=True)

import keras_oracle as oracle  # noqa: E402
from keras_oracle import LABELS, Y_REG, X, assert_same, history_of, run_both  # noqa: E402

import nnfun  # noqa: E402

FIT = {"batch_size": 20, "epochs": 2, "shuffle": False, "verbose": 0}
SPARSE = "sparse_categorical_crossentropy"


def classifier(lib):
    return [
        lib.layers.Dense(5, activation="tanh"),
        lib.layers.Dense(3, activation="softmax"),
    ]


def trained(compile_args, fit_args=None, build=classifier, y=LABELS):
    """Compiles with ``compile_args`` (``lib -> dict``), fits and evaluates."""

    def script(lib, model):
        model.compile(**compile_args(lib))
        history = model.fit(X, y, **{**FIT, **(fit_args or {})})
        return {
            "history": history_of(history),
            "evaluate": model.evaluate(X, y, verbose=0, return_dict=True),
        }

    return run_both(build, script)


def assert_run_matches(theirs, ours, atol=1e-5, rtol=0.0):
    for key in ("weights", "history", "evaluate"):
        assert_same(theirs[key], ours[key], atol, rtol, key)


# ---- the optimisers: Keras's update rules step for step, then compile's default -----------
PARAMS = [
    np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]], np.float32),
    np.array([0.1, -0.2, 0.3], np.float32),
]
GRADS = [
    [np.array([[0.5, -2.0, 3.0], [1e-3, 0.0, -0.25]], np.float32), np.array([1.0, 0.2, -4.0])],
    [np.array([[-1.0, 0.5, 0.25], [4.0, 0.2, 0.0]], np.float32), np.array([-0.1, 0.3, 2.0])],
    [np.array([[0.75, 1.0, -3.0], [-0.5, 0.1, 0.3]], np.float32), np.array([0.0, -1.0, 0.5])],
]
OPTIMIZERS = {
    **{name: lambda o, name=name: name for name in
       ("sgd", "rmsprop", "adagrad", "adam", "adamw", "adamax", "nadam", "adadelta")},
    "SGD momentum": lambda o: o.SGD(0.1, momentum=0.9),
    "SGD nesterov": lambda o: o.SGD(0.1, momentum=0.9, nesterov=True),
    "SGD clipvalue": lambda o: o.SGD(0.1, clipvalue=0.5),
    "RMSprop centered momentum": lambda o: o.RMSprop(0.01, momentum=0.5, centered=True),
    "RMSprop momentum": lambda o: o.RMSprop(0.01, momentum=0.5),
    "Adagrad": lambda o: o.Adagrad(0.1, initial_accumulator_value=0.5, epsilon=1e-3),
    "Adam amsgrad clipnorm": lambda o: o.Adam(0.05, amsgrad=True, clipnorm=1.0),
    "Adam weight_decay": lambda o: o.Adam(0.05, beta_1=0.8, weight_decay=0.1),
    "AdamW global_clipnorm": lambda o: o.AdamW(0.05, weight_decay=0.1, global_clipnorm=2.0),
    "Adadelta": lambda o: o.Adadelta(1.0, rho=0.9),
    "Nadam": lambda o: o.Nadam(0.02, beta_2=0.99),
    "Adamax": lambda o: o.Adamax(0.02, beta_1=0.5),
}  # fmt: skip


def keras_steps(make, rates):
    """Keras's optimiser applied to PARAMS with GRADS, its rate set to ``rates[i]`` before
    step i (as a callback sets it between epochs)."""
    optimizer = keras.optimizers.get(make(keras.optimizers))
    variables = [keras.Variable(p) for p in PARAMS]
    for grads, rate in zip(GRADS, rates, strict=True):
        optimizer.learning_rate = rate
        optimizer.apply_gradients(zip([np.float32(g) for g in grads], variables, strict=True))
    return [np.asarray(v) for v in variables]


def nnfun_steps(make, rates):
    state = nnfun.Sequential([nnfun.Dense(3, input_dim=2)])
    state.compile(optimizer=make(nnfun.optimizers), loss="mse")
    tx = state.compiled.optimizer
    params = [{"W": jnp.asarray(PARAMS[0]), "b": jnp.asarray(PARAMS[1])}]
    opt_state = tx.init(params)
    for grads, rate in zip(GRADS, rates, strict=True):
        hyper = dict(opt_state.hyperparams, learning_rate=jnp.float32(rate))
        opt_state = opt_state._replace(hyperparams=hyper)
        g = [{"W": jnp.asarray(grads[0], jnp.float32), "b": jnp.asarray(grads[1], jnp.float32)}]
        updates, opt_state = tx.update(g, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return [np.asarray(params[0]["W"]), np.asarray(params[0]["b"])]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_step_as_kerass(name):
    """Three steps from the same weights and gradients, the rate changed between steps
    (Keras's SGD momentum keeps -lr g, so a new rate weighs only the new gradients)."""
    make = OPTIMIZERS[name]
    default = keras.optimizers.get(make(keras.optimizers)).get_config()["learning_rate"]
    rates = [default, default * 0.5, default * 0.5]
    theirs, ours = keras_steps(make, rates), nnfun_steps(make, rates)
    assert_same(theirs, ours, 1e-6, 1e-6, name)


def test_compile_without_an_optimizer_is_rmsprop_as_in_keras():
    assert_run_matches(*trained(lambda lib: {"loss": SPARSE}))


# ---- losses and metrics under Keras's names -------------------------------------------------
def logits(lib):
    return [lib.layers.Dense(5, activation="relu"), lib.layers.Dense(3)]


def regressor(lib):
    return [lib.layers.Dense(5, activation="tanh"), lib.layers.Dense(2)]


def test_loss_objects_and_metric_names_match():
    theirs, ours = trained(
        lambda lib: {
            "optimizer": lib.optimizers.Adam(0.01),
            "loss": lib.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": ["sparse_categorical_accuracy"],
        },
        build=logits,
    )
    assert_run_matches(theirs, ours)
    assert sorted(ours["history"]) == sorted(theirs["history"])


def squared_log_error(y_true, y_pred):
    """A loss written as a plain function, as Keras users write them."""
    return jnp.mean(jnp.square(jnp.log1p(jnp.abs(y_pred)) - jnp.log1p(jnp.abs(y_true))), -1)


def test_a_function_loss_regression_metrics_and_validation_match():
    theirs, ours = trained(
        lambda lib: {
            "optimizer": lib.optimizers.SGD(0.05),
            "loss": squared_log_error,
            "metrics": ["mae", "mean_squared_error"],
        },
        {"validation_split": 0.33},
        build=regressor,
        y=Y_REG,
    )
    assert_run_matches(theirs, ours)
    assert sorted(ours["history"]) == sorted(theirs["history"])


# ---- layers: initializers, names, trainable, per-layer weights -----------------------------
def test_constant_initializers_give_kerass_weights():
    def build(lib):
        init = lib.initializers
        return [
            lib.layers.Dense(3, kernel_initializer=init.Constant(0.3), bias_initializer="ones"),
            lib.layers.Dense(2, kernel_initializer=init.Ones(), bias_initializer=init.Zeros()),
        ]

    keras.utils.set_random_seed(0)
    theirs = keras.Sequential([keras.Input((4,)), *build(keras)])
    ours = nnfun.Sequential([nnfun.Input(shape=(4,)), *build(nnfun)])
    assert_same(theirs.get_weights(), ours.get_weights(), 0.0, what="initial weights")


def test_a_frozen_layer_stays_and_the_others_train_as_in_keras():
    def build(lib):
        return [
            lib.layers.Dense(5, activation="tanh", name="base"),
            lib.layers.Dense(3, activation="softmax", name="head"),
        ]

    def script(lib, model):
        model.get_layer("base").trainable = False
        model.compile(optimizer=lib.optimizers.Adam(0.05), loss=SPARSE)
        model.fit(X, LABELS, **FIT)
        return {
            "names": [layer.name for layer in model.layers],
            "base": model.get_layer("base").get_weights(),
            "head": model.layers[1].get_weights(),
            "counts": [len(model.trainable_weights), len(model.non_trainable_weights)],
        }

    (theirs, ours), start = run_both(build, script), oracle.twins(build)[1].get_weights()
    assert ours["names"] == theirs["names"] == ["base", "head"]
    assert ours["counts"] == theirs["counts"] == [2, 2]
    assert_same(start[:2], ours["base"], 0.0, what="frozen layer")
    for key in ("base", "head", "weights"):
        assert_same(theirs[key], ours[key], what=key)


def test_layer_weights_can_be_set_one_layer_at_a_time():
    def script(lib, model):
        model.layers[0].set_weights([np.full((4, 5), 0.1), np.arange(5.0)])
        return {"predict": np.asarray(model.predict(X[:5], verbose=0)), "shape": model.output_shape}

    theirs, ours = run_both(classifier, script)
    assert ours["shape"] == theirs["shape"] == (None, 3)
    assert_same(theirs["predict"], ours["predict"], what="predict")
    assert_same(theirs["weights"], ours["weights"], 0.0, what="weights")


# ---- the run's behaviour: hooks, history, params, files -------------------------------------
def recorder(lib):
    class Recorder(lib.callbacks.Callback):
        """Writes down every epoch-level hook in the order called, with its logs' keys."""

        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_begin(self, logs=None):
            self.calls.append(("train_begin",))

        def on_epoch_begin(self, epoch, logs=None):
            self.calls.append(("epoch_begin", epoch))

        def on_epoch_end(self, epoch, logs=None):
            self.calls.append(("epoch_end", epoch, tuple(sorted(logs))))

        def on_train_end(self, logs=None):
            self.calls.append(("train_end", tuple(sorted(logs or {}))))

    return Recorder()


@pytest.fixture(scope="module")
def callback_run(tmp_path_factory):
    """A run with a recorder, early stopping (restoring), a plateau, a CSV log and two
    checkpoints, in each library's own folder."""

    def script(lib, model):
        folder = tmp_path_factory.mktemp(lib.__name__)
        record = recorder(lib)
        cbs = lib.callbacks
        model.compile(optimizer=lib.optimizers.SGD(4.0), loss=SPARSE, metrics=["accuracy"])
        history = model.fit(
            X,
            LABELS,
            **{**FIT, "epochs": 9},
            validation_split=0.33,
            callbacks=[
                cbs.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True),
                cbs.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
                cbs.CSVLogger(str(folder / "log.csv")),
                cbs.ModelCheckpoint(str(folder / "best.keras"), save_best_only=True),
                cbs.ModelCheckpoint(
                    str(folder / "e{epoch:02d}.weights.h5"), save_weights_only=True
                ),
            ],
            initial_epoch=1,
        )
        return {
            "calls": record.calls,
            "history": history_of(history),
            "epochs": list(history.epoch),
            "params": dict(history.params),
            "model_history": model.history is history,
            "files": sorted(p.name for p in folder.iterdir()),
            "csv": (folder / "log.csv").read_text().splitlines(),
            "evaluate": model.evaluate(X, LABELS, verbose=0),
        }

    return run_both(classifier, script)


def test_hooks_are_called_in_kerass_order(callback_run):
    theirs, ours = callback_run
    assert ours["calls"] == theirs["calls"]
    assert ours["epochs"] == theirs["epochs"]
    assert len(theirs["epochs"]) < 8, "the run is meant to stop early"


def test_history_and_weights_after_early_stopping_match(callback_run):
    theirs, ours = callback_run
    assert ours["model_history"] and theirs["model_history"]
    assert ours["params"] == theirs["params"]
    for key in ("history", "weights", "evaluate"):
        assert_same(theirs[key], ours[key], what=key)


def test_the_same_files_are_written(callback_run):
    theirs, ours = callback_run
    assert ours["files"] == theirs["files"]
    their_rows, our_rows = ([r.split(",") for r in run["csv"]] for run in callback_run)
    assert our_rows[0] == their_rows[0]  # header
    assert_same(np.array(their_rows[1:], float), np.array(our_rows[1:], float), what="CSV log")


def test_batch_methods_match():
    def script(lib, model):
        model.compile(optimizer="sgd", loss=SPARSE, metrics=["accuracy"])
        return {
            "train": model.train_on_batch(X[:20], LABELS[:20]),
            "test": model.test_on_batch(X[20:40], LABELS[20:40]),
            "predict": np.asarray(model.predict_on_batch(X[40:])),
            "call": np.asarray(model(X[:3])),
        }

    theirs, ours = run_both(classifier, script)
    for key in ("train", "test", "predict", "call", "weights"):
        assert_same(theirs[key], ours[key], what=key)
