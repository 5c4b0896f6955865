"""What fit says and where, checked directly (sampled mutants of nnfun.fit survived the fit
tests): a loss that overflows while every gradient stays finite, Ctrl-C's message on stderr,
early stopping given twice, a fit on a one-device mesh, the logs ``on_train_end`` gets and
evaluate's check of its sample weights."""

import jax
import numpy as np
import pytest

import nnfun
from nnfun import epochs as programs
from nnfun import parallel, train
from nnfun.layers import Dense

NET = nnfun.Sequential([nnfun.Input(shape=(2,)), Dense(1)], key=0)
CFG = nnfun.Config.make("mse", "sgd", learning_rate=1e-30)
RNG = np.random.default_rng(7)
X = RNG.normal(size=(8, 2)).astype(np.float32)
Y = RNG.normal(size=(8, 1)).astype(np.float32)


def test_a_loss_past_float32_with_finite_gradients_names_the_loss():
    # Predictions of 1e20: their squared error (1e40) overflows float32; the gradients
    # (pred * x / 2 = 5e19 for a batch of 4) and the step (lr 1e-30) do not.
    x = np.ones((8, 2), np.float32)
    start = train.init_state(NET, CFG, jax.random.key(0))
    start = start._replace(params=[{"W": np.full((2, 1), 5e19, np.float32),
                                    "b": np.zeros(1, np.float32)}])  # fmt: skip
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient at epoch 0"):
        _, hist = train.fit(NET, x, Y, config=CFG, state=start, epochs=1, batch_size=4)
    assert hist["stopped"] == (
        "non-finite loss or gradient at epoch 0, step 1 (batch size 4): the loss; "
        "kept the starting state"
    )


def test_ctrl_c_is_reported_on_stderr(monkeypatch, capsys):
    original, calls = programs.compiled_run, []

    def interrupting(*args, **kwargs):
        program = original(*args, **kwargs)

        def run(*a):
            calls.append(1)
            if len(calls) == 2:  # the second one-epoch chunk: epoch 0 is done
                raise KeyboardInterrupt
            return program(*a)

        return run

    monkeypatch.setattr(programs, "compiled_run", interrupting)
    _, hist = train.fit(NET, X, Y, config=CFG, key=jax.random.key(0), epochs=3, batch_size=4,
                        epochs_per_chunk=1)  # fmt: skip
    assert hist["stopped"] == "interrupted after epoch 0"
    out = capsys.readouterr()
    assert out.err == "nnfun.fit: interrupted after epoch 0; returning its state\n"
    assert out.out == ""


def test_early_stopping_given_twice_is_refused():
    es = nnfun.EarlyStopping("loss")
    with pytest.raises(ValueError, match=r"^early_stopping: also given in callbacks; pass it"):
        train.fit(NET, X, Y, config=CFG, key=jax.random.key(0), epochs=1, batch_size=4,
                  early_stopping=es, callbacks=[nnfun.EarlyStopping("loss")])  # fmt: skip


def test_a_one_device_mesh_fits_as_no_mesh():
    kw = dict(config=CFG, key=jax.random.key(0), epochs=2, batch_size=4)
    _, plain = train.fit(NET, X, Y, **kw)
    _, meshed = train.fit(NET, X, Y, mesh=parallel.data_mesh(jax.devices()[:1]), **kw)
    assert meshed["loss"] == plain["loss"]


def test_on_train_end_gets_the_last_epochs_logs():
    class LastLogs(nnfun.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.logs = logs

    last = LastLogs()
    _, hist = train.fit(NET, X, Y, config=CFG, key=jax.random.key(0), epochs=3, batch_size=4,
                        epochs_per_chunk=1, callbacks=[last])  # fmt: skip
    assert last.logs["epoch"] == 2  # epochs 0, 1, 2: Keras passes the last epoch's logs
    assert last.logs["loss"] == hist["loss"][2]


def test_evaluate_names_a_bad_sample_weight():
    state = train.init_state(NET, CFG, jax.random.key(0))
    with pytest.raises(ValueError, match=r"^sample_weight: expected 8 numbers, one per sample"):
        train.evaluate(NET, state, X, Y, config=CFG, sample_weight=np.ones(3))
