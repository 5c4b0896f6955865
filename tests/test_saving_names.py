"""A saved folder's checkpoint is named by the state's step (optimiser updates so far), as
Keras-style scripts that save after training expect, and holds that one step only."""

import numpy as np
import pytest

import nnfun
from nnfun import checkpoint

X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


def steps_in(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("step_"))


@pytest.fixture(scope="module")
def model():
    model = nnfun.Sequential([nnfun.Dense(2, "softmax", input_dim=3)], key=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    return model


def test_save_and_save_weights_name_the_checkpoint_by_the_step(tmp_path, model):
    model.build()
    untrained = model.state
    model.fit(X, Y, batch_size=4, epochs=3, verbose=0)  # ceil(10 / 4) = 3 steps an epoch
    model.save(tmp_path / "m")
    model.save_weights(tmp_path / "w")
    assert steps_in(tmp_path / "m") == steps_in(tmp_path / "w") == ["step_00000009"]
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0)
    model.save(tmp_path / "m")  # replaces the step 9 checkpoint
    assert steps_in(tmp_path / "m") == ["step_00000015"]
    assert int(nnfun.load_model(tmp_path / "m").state.step) == 15
    model.save(tmp_path / "m", state=untrained)  # an earlier state replaces a later one
    assert steps_in(tmp_path / "m") == ["step_00000000"]
    assert int(nnfun.load_model(tmp_path / "m").state.step) == 0


def test_a_best_epoch_checkpoint_is_named_by_that_epoch_s_step(tmp_path, model):
    best = nnfun.ModelCheckpoint(tmp_path / "best", monitor="loss", save_best_only=True)
    start = int(model.state.step)
    history = model.fit(X, Y, batch_size=4, epochs=4, verbose=0, callbacks=[best])
    best_epoch = int(np.argmin(history.history["loss"]))
    assert steps_in(tmp_path / "best") == [f"step_{start + 3 * (best_epoch + 1):08d}"]
    assert checkpoint.all_steps(tmp_path / "best") == [start + 3 * (best_epoch + 1)]
