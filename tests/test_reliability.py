"""Reliability: bad input raises a clear error before anything compiles, blow-ups stop with
the last finite state, extreme values stay finite, Ctrl-C and SIGKILL lose no finished epoch,
broken data files are named, and two processes train to the same bits."""

import gzip
import importlib.util
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import activations, checkpoint, data, losses, train
from nnfun import epochs as programs
from nnfun.layers import BatchNorm, Dense, Dropout, Maxout

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 4)).astype(np.float32)
Y = RNG.integers(0, 3, 12).astype(np.int32)
NET = nnfun.Sequential([Dense(8, "relu", input_dim=4), Dense(3, "softmax")])
BN_NET = nnfun.Sequential([Dense(8, "relu", input_dim=4), BatchNorm(), Dense(3, "softmax")])
BIN_NET = nnfun.Sequential([Dense(5, "tanh", input_dim=4), Dense(1, "sigmoid")])
CFG = nnfun.Config.make("categorical_crossentropy", "sgd", metrics=["accuracy"])
BIN_CFG = nnfun.Config.make("binary_crossentropy", "sgd")
PARAMS = NET.init(jax.random.key(0))
STATE = train.init_state(NET, CFG, jax.random.key(0))
OTHER = train.init_state(BIN_NET, BIN_CFG, jax.random.key(0))


def fit(x=X, y=Y, net=NET, **kw):
    kw.setdefault("config", BIN_CFG if net is BIN_NET else CFG)
    return train.fit(net, x, y, epochs=kw.pop("epochs", 1), batch_size=kw.pop("bs", 4), **kw)


def with_value(a, index, value):
    integral = np.isfinite(value) and value == int(value)
    a = np.array(a, dtype=a.dtype if integral else np.float32)
    a[index] = value
    return a


def transposed_first_w():
    params = [dict(p) for p in PARAMS]
    params[0]["W"] = params[0]["W"].T
    return params


# (id, call, exception type, fragments the message must contain: argument, expected, got)
CASES = [
    # shapes and sample counts
    (
        "x wrong feature count (fit)",
        lambda: fit(X[:, :3]),
        ValueError,
        ["x:", "(batch, 4)", "(12, 3)"],
    ),
    (
        "x wrong feature count (predict)",
        lambda: train.predict(NET, STATE, X[:, :3]),
        ValueError,
        ["x:", "(batch, 4)", "(12, 3)"],
    ),
    (
        "x wrong feature count (apply)",
        lambda: NET.apply(PARAMS, X[:, :3]),
        ValueError,
        ["x:", "(batch, 4)", "(12, 3)"],
    ),
    ("x 1-D (apply)", lambda: NET.apply(PARAMS, X[0]), ValueError, ["x:", "(batch, 4)", "(4,)"]),
    ("x and y lengths differ", lambda: fit(X, Y[:10]), ValueError, ["y:", "12 samples", "10"]),
    (
        "x and y lengths differ (evaluate)",
        lambda: train.evaluate(NET, STATE, X, Y[:5], config=CFG),
        ValueError,
        ["y:", "12 samples", "5"],
    ),
    ("empty data", lambda: fit(X[:0], Y[:0]), ValueError, ["x:", "at least one sample", "(0, 4)"]),
    (
        "empty data (predict)",
        lambda: train.predict(NET, STATE, X[:0]),
        ValueError,
        ["x:", "at least one sample", "(0, 4)"],
    ),
    # labels
    ("label = classes", lambda: fit(y=with_value(Y, 0, 3)), ValueError, ["y:", "[0, 3)", "[0, 3]"]),
    (
        "negative label",
        lambda: fit(y=with_value(Y, 0, -1)),
        ValueError,
        ["y:", "[0, 3)", "[-1, 2]"],
    ),
    (
        "float labels for classes",
        lambda: fit(y=Y.astype(np.float32)),
        TypeError,
        ["y:", "integer class labels in [0, 3)", "float32"],
    ),
    (
        "one-hot of wrong width",
        lambda: fit(y=data.one_hot(Y, 4)),
        ValueError,
        ["y:", "(12, 3)", "(12, 4)"],
    ),
    (
        "one-hot with values outside [0, 1]",
        lambda: fit(y=2 * data.one_hot(Y, 3)),
        ValueError,
        ["y:", "[0, 1]", "[0, 2]"],
    ),
    (
        "binary label 2 for one sigmoid unit",
        lambda: fit(net=BIN_NET, y=np.minimum(Y, 1) * 2),
        ValueError,
        ["y:", "binary labels in [0, 1]", "[0, 2]"],
    ),
    (
        "y of 3 dims",
        lambda: fit(y=data.one_hot(Y, 3)[..., None]),
        ValueError,
        ["y:", "(12, 3)", "(12, 3, 1)"],
    ),
    # non-finite values
    (
        "NaN in x",
        lambda: fit(with_value(X, (2, 1), np.nan)),
        ValueError,
        ["x:", "finite", "1 NaN and 0 inf", "(2, 1)"],
    ),
    (
        "inf in x",
        lambda: fit(with_value(X, (0, 3), -np.inf)),
        ValueError,
        ["x:", "finite", "0 NaN and 1 inf", "(0, 3)"],
    ),
    (
        "NaN in x (evaluate)",
        lambda: train.evaluate(NET, STATE, with_value(X, (1, 1), np.nan), Y, config=CFG),
        ValueError,
        ["x:", "finite", "1 NaN"],
    ),
    (
        "NaN in x (apply)",
        lambda: NET.apply(PARAMS, with_value(X, (1, 1), np.nan)),
        ValueError,
        ["x:", "finite", "1 NaN"],
    ),
    (
        "NaN in y",
        lambda: fit(y=with_value(data.one_hot(Y, 3), (4, 0), np.nan)),
        ValueError,
        ["y:", "finite", "1 NaN", "(4, 0)"],
    ),
    (
        "inf in y",
        lambda: fit(net=BIN_NET, y=with_value(np.minimum(Y, 1).astype(np.float32), 3, np.inf)),
        ValueError,
        ["y:", "finite", "1 inf"],
    ),
    # strings, objects, ragged
    ("strings as x", lambda: fit(np.full((12, 4), "a")), TypeError, ["x:", "numeric array", "<U1"]),
    (
        "object array as x",
        lambda: fit(X.astype(object)),
        TypeError,
        ["x:", "numeric array", "object"],
    ),
    ("a string as x", lambda: NET.apply(PARAMS, "x"), TypeError, ["x:", "numeric array", "'x'"]),
    (
        "string labels",
        lambda: fit(y=np.array(list("abcabcabcabc"))),
        TypeError,
        ["y:", "numeric array", "<U1"],
    ),
    (
        "complex x",
        lambda: fit(X.astype(np.complex64)),
        TypeError,
        ["x:", "numeric array", "complex64"],
    ),
    (
        "ragged nested list as x",
        lambda: fit([[1.0, 2.0], [3.0]]),
        ValueError,
        ["x:", "rectangular numeric array", "inhomogeneous"],
    ),
    # scalar arguments of fit / evaluate / predict / fit_many
    ("batch_size 0", lambda: fit(bs=0), ValueError, ["batch_size:", "integer >= 1", "got 0"]),
    (
        "batch_size negative",
        lambda: fit(bs=-4),
        ValueError,
        ["batch_size:", "integer >= 1", "got -4"],
    ),
    (
        "batch_size not an integer",
        lambda: fit(bs=2.5),
        TypeError,
        ["batch_size:", "integer >= 1", "2.5"],
    ),
    (
        "batch_size a string",
        lambda: fit(bs="32"),
        TypeError,
        ["batch_size:", "integer >= 1", "'32'"],
    ),
    (
        "batch_size 0 (predict)",
        lambda: train.predict(NET, STATE, X, batch_size=0),
        ValueError,
        ["batch_size:", "integer >= 1", "got 0"],
    ),
    ("epochs negative", lambda: fit(epochs=-1), ValueError, ["epochs:", "integer >= 0", "got -1"]),
    (
        "epochs not an integer",
        lambda: fit(epochs=1.5),
        TypeError,
        ["epochs:", "integer >= 0", "1.5"],
    ),
    (
        "checkpoint_every 0",
        lambda: fit(checkpoint_every=0),
        ValueError,
        ["checkpoint_every:", ">= 1", "got 0"],
    ),
    (
        "validation_split 1.5",
        lambda: fit(validation_split=1.5),
        ValueError,
        ["validation_split:", "[0, 1)", "1.5"],
    ),
    (
        "validation x of wrong shape",
        lambda: fit(validation_data=(X[:, :2], Y)),
        ValueError,
        ["validation_data[0]:", "(batch, 4)", "(12, 2)"],
    ),
    (
        "validation y of wrong length",
        lambda: fit(validation_data=(X, Y[:3])),
        ValueError,
        ["validation_data[1]:", "12 samples", "3"],
    ),
    (
        "validation data not a pair",
        lambda: fit(validation_data=X),
        TypeError,
        ["validation_data:", "pair (x_val, y_val)", "float32 array of shape (12, 4)"],
    ),
    (
        "key a float",
        lambda: fit(key=1.5),
        TypeError,
        ["key:", "PRNG key (jax.random.key(n)) or an int seed", "float"],
    ),
    (
        "config a string",
        lambda: fit(config="adam"),
        TypeError,
        ["config:", "nnfun.Config", "'adam'"],
    ),
    (
        "fit_many batch_size 0",
        lambda: train.fit_many(NET, X, Y, train.stack([STATE, STATE]), config=CFG, batch_size=0),
        ValueError,
        ["batch_size:", ">= 1", "got 0"],
    ),
    (
        "fit_many unstacked states",
        lambda: train.fit_many(NET, X, Y, STATE, config=CFG),
        ValueError,
        ["state.params[0]['W']", "(models, 4, 8)", "init_many", "got (4, 8)"],
    ),
    # names
    (
        "unknown activation",
        lambda: Dense(3, "relu6"),
        ValueError,
        ["activation:", "'sigmoid'", "'relu6'"],
    ),
    (
        "unknown loss",
        lambda: nnfun.Config.make("hinge"),
        ValueError,
        ["loss:", "'mean_squared_error'", "'hinge'"],
    ),
    (
        "unknown optimizer",
        lambda: nnfun.Config.make("mse", "lamb"),
        ValueError,
        ["optimizer:", "'rmsprop'", "'lamb'"],
    ),
    (
        "unknown metric",
        lambda: nnfun.Config.make("mse", metrics=["f1"]),
        ValueError,
        ["metrics:", "'accuracy'", "'f1'"],
    ),
    (
        "unknown initializer (Dense)",
        lambda: Dense(3, kernel_init="xavier_normal"),
        ValueError,
        ["kernel_init:", "'glorot_normal'", "'xavier_normal'"],
    ),
    (
        "unknown initializer (Maxout)",
        lambda: Maxout(3, bias_init="one"),
        ValueError,
        ["bias_init:", "'zeros'", "'one'"],
    ),
    (
        "unknown loss (losses.value)",
        lambda: losses.value("hinge", jnp.ones((2, 3)), jnp.zeros(2, jnp.int32)),
        ValueError,
        ["loss:", "'mse'", "'hinge'"],
    ),
    (
        "learning_rate negative",
        lambda: nnfun.Config.make("mse", "sgd", learning_rate=-0.1),
        ValueError,
        ["learning_rate:", "> 0", "-0.1"],
    ),
    (
        "learning_rate a string",
        lambda: nnfun.Config.make("mse", "sgd", learning_rate="fast"),
        TypeError,
        ["learning_rate:", "> 0", "'fast'"],
    ),
    ("l2 negative", lambda: nnfun.Config.make("mse", l2=-1.0), ValueError, ["l2:", ">= 0", "-1.0"]),
    # layers
    ("Dense units 0", lambda: Dense(0), ValueError, ["units:", "positive int", "got 0"]),
    ("dropout rate 1", lambda: Dropout(1.0), ValueError, ["rate:", "[0, 1)", "1.0"]),
    ("dropout rate negative", lambda: Dropout(-0.1), ValueError, ["rate:", "[0, 1)", "-0.1"]),
    (
        "BatchNorm on 1 sample (forward)",
        lambda: BN_NET.forward(BN_NET.init(jax.random.key(0)), X[:1], train=True),
        ValueError,
        ["BatchNorm", "at least 2", "(1, 8)"],
    ),
    (
        "BatchNorm on 1 sample (fit, last batch)",
        lambda: fit(net=BN_NET, bs=11),
        ValueError,
        ["batch_size:", "at least 2 samples", "batch of 1"],
    ),
    (
        "BatchNorm on 1 sample (fit, batch_size 1)",
        lambda: fit(net=BN_NET, bs=1),
        ValueError,
        ["batch_size:", "at least 2 samples", "batch_size=1"],
    ),
    # parameter trees
    (
        "params with a layer missing",
        lambda: NET.apply(PARAMS[:1], X),
        ValueError,
        ["params:", "2 dicts", "1 entries"],
    ),
    (
        "params with a key missing",
        lambda: NET.apply([PARAMS[0], {"W": PARAMS[1]["W"]}], X),
        ValueError,
        ["params[1]", "['W', 'b']", "['W']"],
    ),
    (
        "params leaf transposed",
        lambda: NET.loss(transposed_first_w(), X, Y, loss="categorical_crossentropy"),
        ValueError,
        ["params[0]['W']", "(4, 8)", "(8, 4)"],
    ),
    (
        "params not a list",
        lambda: NET.apply({"W": 1}, X),
        ValueError,
        ["params:", "2 dicts", "dict"],
    ),
    (
        "state of another network",
        lambda: fit(state=OTHER),
        ValueError,
        ["state.params[0]['W']", "(4, 8)", "(4, 5)"],
    ),
    (
        "sample_weight of wrong length",
        lambda: NET.loss(PARAMS, X, Y, loss="categorical_crossentropy", sample_weight=jnp.ones(5)),
        ValueError,
        ["sample_weight:", "(12,)", "(5,)"],
    ),
    (
        "losses.value on 1-D pred",
        lambda: losses.value(losses.LOSSES["mse"], jnp.ones(5), jnp.ones(5)),
        ValueError,
        ["pred:", "(batch, outputs)", "(5,)"],
    ),
    (
        "losses.gradient y of wrong shape",
        lambda: losses.gradient(losses.LOSSES["mse"], jnp.ones((5, 2)), jnp.ones((5, 3))),
        ValueError,
        ["y:", "(5, 2)", "(5, 3)"],
    ),
    # data loaders' arguments
    (
        "load_digits test_fraction 1.5",
        lambda: data.load_digits(test_fraction=1.5),
        ValueError,
        ["test_fraction:", "(0, 1)", "1.5"],
    ),
    ("moons n = 1", lambda: data.moons(n=1), ValueError, ["n:", ">= 2", "got 1"]),
    (
        "one_hot label out of range",
        lambda: data.one_hot(np.array([0, 5]), 3),
        ValueError,
        ["y:", "[0, 3)", "[0, 5]"],
    ),
]


def _raise(call):
    try:
        call()
    except (ValueError, TypeError) as e:
        return e
    raise AssertionError("no ValueError/TypeError raised")


@pytest.mark.parametrize(
    ("call", "kind", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_a_clear_error_before_anything_compiles(call, kind, fragments):
    error = _raise(call)
    assert type(error) is kind, f"{type(error).__name__}: {error}"
    message = str(error)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Raised by our Python checks, not from inside JAX tracing or XLA compilation.
    frames = traceback.extract_tb(error.__traceback__)
    assert not any(f"{os.sep}jax{os.sep}" in f.filename for f in frames), message
    assert "Tracer" not in message and "XLA" not in message


def test_case_table_covers_the_issue_list():
    assert len(CASES) >= 60
    ids = " ".join(c[0] for c in CASES)
    for topic in (
        "feature count",
        "lengths differ",
        "negative label",
        "float labels",
        "one-hot of wrong width",
        "NaN in x",
        "NaN in y",
        "empty",
        "batch_size 0",
        "batch_size negative",
        "batch_size not",
        "epochs negative",
        "validation x",
        "strings",
        "object",
        "unknown activation",
        "unknown loss",
        "unknown optimizer",
        "unknown metric",
        "unknown initializer",
        "dropout rate",
        "BatchNorm on 1 sample",
        "params",
    ):
        assert topic in ids, topic


def test_readme_troubleshooting_lists_every_case():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Troubleshooting") :]
    missing = [c[0] for c in CASES if f"| {c[0]} |" not in section]
    assert not missing, f"add these cases to the README's troubleshooting table: {missing}"


def test_valid_binary_integer_labels_are_the_targets_themselves():
    """One sigmoid unit, int labels 0/1: label 1 means target 1 (not one_hot(1, 1) = 0)."""
    pred = jnp.array([[0.9], [0.2]])
    np.testing.assert_array_equal(losses.targets_like(pred, jnp.array([1, 0])), [[1.0], [0.0]])
    j = losses.value(losses.LOSSES["binary_crossentropy"], pred, jnp.array([1, 0]))
    np.testing.assert_allclose(float(j), -(np.log(0.9) + np.log(0.8)) / 2, rtol=1e-6)


# ---- non-finite values ------------------------------------------------------------------
@pytest.mark.parametrize("learning_rate", [1e20, 3e38], ids=["loss-blows-up", "params-overflow"])
def test_huge_learning_rate_stops_with_the_last_finite_epoch(learning_rate):
    cfg = nnfun.Config.make("categorical_crossentropy", "sgd", learning_rate=learning_rate)
    x = RNG.normal(size=(64, 4)).astype(np.float32) * 3
    y = RNG.integers(0, 3, 64).astype(np.int32)
    start = train.init_state(NET, cfg, jax.random.key(0))
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient at epoch 0"):
        state, hist = train.fit(NET, x, y, config=cfg, state=start, epochs=3, batch_size=8)
    stopped = hist["stopped"]
    assert stopped.startswith("non-finite loss or gradient at epoch 0, step "), stopped
    assert "(batch size 8)" in stopped and "kept the starting state" in stopped
    assert any(f"params[{i}]['{k}'] (layer {i}" in stopped for i in (0, 1) for k in "Wb"), stopped
    step = int(stopped.split("step ")[1].split(" ")[0])
    assert 1 <= step <= 8  # 64 samples in batches of 8
    # Nothing of the blown-up epoch is kept or recorded: the state is the one fit started from.
    assert int(state.step) == 0 and int(state.epoch) == 0
    assert_identical(state, start)
    chex.assert_tree_all_finite((state.params, state.opt_state))
    assert hist.get("loss", []) == []


def test_losses_and_activations_stay_finite_at_extremes():
    z = jnp.array([[-1e4, 0.0, 1e4], [1e6, -1e6, 3.0], [1e4, 1e4, -1e4]], jnp.float32)

    @jax.jit  # one program for all of them: op-by-op dispatch is slow
    def every_activation(z):
        return {
            n: (a.fn(z), a.vjp(z, a.fn(z), jnp.ones_like(z)))
            for n, a in activations.ACTIVATIONS.items()
        }

    for name, out in every_activation(z).items():
        chex.assert_tree_all_finite(out, custom_message=name)
    y_int, y_hot = jnp.array([0, 1, 2]), jax.nn.one_hot(jnp.array([0, 1, 2]), 3)
    probs = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])

    @jax.jit
    def every_loss(z, probs):
        out = {}
        for name, loss in losses.LOSSES.items():
            pred = z if "logits" in name or "squared" in name else probs
            for kind, y in (("int", y_int), ("one-hot", y_hot)):
                out[name, kind] = (losses.value(loss, pred, y), losses.gradient(loss, pred, y))
        return out

    for name, out in every_loss(z, probs).items():
        chex.assert_tree_all_finite(out, custom_message=str(name))
    # Logits of +-1e4: softmax + cross-entropy is fused, so J is exact, not inf.
    j = losses.value(losses.LOSSES["categorical_crossentropy_from_logits"], z[:1], jnp.array([0]))
    np.testing.assert_allclose(float(j), 2e4, rtol=1e-6)
    # Inputs of 1e6 through saturating networks: output, J and both gradients finite.
    x = jnp.full((4, 4), 1e6, jnp.float32).at[0].set(-1e6)
    for net, y, loss in (
        (NET, Y[:4], "categorical_crossentropy"),
        (BIN_NET, np.array([0, 1, 1, 0]), "binary_crossentropy"),
    ):
        params = net.init(jax.random.key(1))

        @jax.jit
        def both(params, x, y, net=net, loss=loss):
            value_and_manual = net.value_and_manual_grad(params, x, y, loss=loss)
            return value_and_manual, jax.grad(net.loss)(params, x, y, loss=loss)

        ((j, aux), manual), auto = both(params, x, y)
        chex.assert_tree_all_finite((j, aux.output, manual, auto), custom_message=loss)
        assert float(j) > 1.0  # saturated and wrong for some samples: a large but finite loss


# ---- Ctrl-C -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("epochs_per_chunk", "interrupted_call"),
    [(1, 3), (2, 2)],
    ids=["third one-epoch chunk", "second two-epoch chunk"],
)
def test_ctrl_c_returns_the_last_completed_chunk(monkeypatch, epochs_per_chunk, interrupted_call):
    """Ctrl-C inside a compiled chunk (here: when it is called) keeps every completed chunk
    and nothing of the interrupted one: the state and history of a 2-epoch fit."""
    kw = dict(config=CFG, key=jax.random.key(3), batch_size=4, validation_data=(X, Y))
    reference, ref_hist = train.fit(NET, X, Y, epochs=2, epochs_per_chunk=2, **kw)
    original, calls = programs.compiled_run, []

    def interrupting(*args, **kwargs):
        program = original(*args, **kwargs)

        def run(*a):
            calls.append(1)
            if len(calls) == interrupted_call:
                raise KeyboardInterrupt
            return program(*a)

        return run

    monkeypatch.setattr(programs, "compiled_run", interrupting)
    state, hist = train.fit(NET, X, Y, epochs=6, epochs_per_chunk=epochs_per_chunk, **kw)
    assert len(calls) == interrupted_call
    assert hist["stopped"] == "interrupted after epoch 1"
    assert int(state.epoch) == 2 and len(hist["loss"]) == len(hist["val_loss"]) == 2
    assert hist["loss"] == ref_hist["loss"] and hist["val_accuracy"] == ref_hist["val_accuracy"]
    assert_identical(state, reference)


def _raw(leaf):
    return jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf


def assert_identical(a, b):
    """Bit-identical pytrees (PRNG keys compared by their data)."""
    chex.assert_trees_all_equal(jax.tree.map(_raw, a), jax.tree.map(_raw, b))


# ---- broken data files ------------------------------------------------------------------
def test_missing_and_corrupt_data_files_are_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_mnist(missing)
    import h5py  # a test dependency: a broken install must fail, not skip

    for part in ("train", "test"):
        with h5py.File(tmp_path / f"{part}_catvnoncat.h5", "w") as f:
            f["wrong"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"train_catvnoncat\.h5: missing dataset 'train_set_x'"):
        data.load_cat(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28))
    images.write_bytes(gzip.compress(header + bytes(100)))  # promises 1568 bytes
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        (0x801).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2)
    )
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: header promises 1568"):
        data.load_mnist(tmp_path)
    images.write_bytes(gzip.compress((0x801).to_bytes(4, "big") + bytes(12)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: magic number 0x00000801"):
        data.load_mnist(tmp_path)


# ---- SIGKILL while saving a checkpoint --------------------------------------------------
WORKER = Path(__file__).with_name("_reliability_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("_reliability_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines_in_one_save(directory, run, history) -> int:
    """Lines executed inside nnfun/checkpoint.py by one save of fit's kind (the kill points
    to choose from)."""
    target, count = os.path.abspath(checkpoint.__file__), [0]

    def tracer(frame, event, arg):
        if os.path.abspath(frame.f_code.co_filename) != target:
            return None
        count[0] += event == "line"
        return tracer

    sys.settrace(tracer)
    try:
        checkpoint.save(directory, 1, run, metadata={"history": history, "epoch": 1}, keep=2)
    finally:
        sys.settrace(None)
    return count[0]


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """Two worker processes, each killed inside its second checkpoint save (at a third and at
    two thirds of the lines a save executes); each first trains and writes the plain run's
    result (the determinism test's two processes). With the in-process reference runs."""
    tmp_path = tmp_path_factory.mktemp("sigkill")
    worker = _load_worker()
    reference, ref_hist = worker.fit()  # uninterrupted, no checkpoints
    one_epoch, one_hist = worker.fit(epochs=1)
    like = programs.start_run(one_epoch)
    lines = _lines_in_one_save(tmp_path / "probe", like, one_hist)
    kill_points = sorted({lines // 3, 2 * lines // 3})
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    runs = {
        k: subprocess.Popen(
            [sys.executable, str(WORKER), "checkpoint", str(tmp_path / f"kill{k}"), str(k),
             str(tmp_path / f"train{k}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for k in kill_points
    }  # fmt: skip
    ended = {}
    for k, proc in runs.items():
        log, _ = proc.communicate(timeout=300)
        ended[k] = (proc.returncode, log, tmp_path / f"kill{k}", tmp_path / f"train{k}.npz")
    return {"worker": worker, "reference": reference, "ref_hist": ref_hist, "like": like,
            "lines": lines, "ended": ended}  # fmt: skip


def test_sigkill_while_saving_keeps_the_last_checkpoint_and_fit_resumes_from_it(
    killed_runs, monkeypatch
):
    """fit killed inside its second checkpoint save: the folder holds an intact checkpoint,
    and the next fit resumes from it (runs only the epochs left) to the uninterrupted run's
    bits. nnfun.checkpoint's own tests kill at every stage of a save."""
    worker, like = killed_runs["worker"], killed_runs["like"]
    reference, ref_hist = killed_runs["reference"], killed_runs["ref_hist"]
    assert killed_runs["lines"] > 3
    epochs_run = []
    original = programs.compiled_run

    def counting(*args, **kwargs):
        program = original(*args, **kwargs)

        def run(run_state, count, first, data):
            out = program(run_state, count, first, data)
            epochs_run.append(int(out[2]))
            return out

        return run

    monkeypatch.setattr(programs, "compiled_run", counting)
    assert len(killed_runs["ended"]) == 2
    for k, (returncode, log, directory, _) in killed_runs["ended"].items():
        assert returncode == -signal.SIGKILL, f"kill at line {k}: rc {returncode}\n{log}"
        # Killed inside the second save: the first checkpoint (epoch 1) is intact, or the
        # second is complete if the kill came after it was committed; never a broken one.
        step = checkpoint.latest_step(directory)
        assert step in (1, 2), (k, step)
        restored, meta = checkpoint.restore(directory, like=like)
        assert int(restored.state.epoch) == step and meta["record"]["epoch"] == step
        assert meta["history"]["loss"] == ref_hist["loss"][:step]
        epochs_run.clear()
        resumed, hist = worker.fit(checkpoint_dir=directory, checkpoint_every=1)
        assert sum(epochs_run) == worker.EPOCHS - step  # resumed, not retrained
        assert_identical(resumed, reference)
        assert hist["loss"] == ref_hist["loss"] and hist["accuracy"] == ref_hist["accuracy"]
        assert checkpoint.latest_step(directory) == worker.EPOCHS


# ---- determinism ------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_params_across_processes(killed_runs):
    """The same seed and data give bit-identical parameters in two separate processes on CPU
    (initialisation, shuffling, dropout masks and BatchNorm all included): the plain runs the
    two SIGKILL workers trained before their checkpointed runs."""
    if os.environ.get("JAX_PLATFORMS", "cpu") not in ("", "cpu"):
        pytest.skip("bit-identity is promised on CPU only")
    outs = [out for *_, out in killed_runs["ended"].values()]
    assert len(outs) == 2
    for _, log, _, out in killed_runs["ended"].values():
        assert out.is_file(), log
    first, second = (np.load(out) for out in outs)
    assert sorted(first.files) == sorted(second.files) and len(first.files) >= 7
    for name in first.files:
        assert first[name].tobytes() == second[name].tobytes(), name
    loss = first["loss"]
    assert loss.shape == (4,) and np.all(np.isfinite(loss)) and np.all(loss > 0)
