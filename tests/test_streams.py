"""Training from streams (nnfun.sources, fit_stream, train_steps, prefetch): generators,
PyDatasets, Grain and memory-mapped arrays give the same bits as the same batches in the
same order given as arrays; errors name the source and the batch; runs resume bit for bit.

Every test shares one tiny network, one batch size (16 of 50 rows: three full batches and a
last one of 2) and so a few compiled programs.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest

import nnfun
from nnfun import fit as F
from nnfun import prefetch, sources, train, train_steps

N, FEATURES, CLASSES, BATCH = 50, 5, 3, 16


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, N).astype(np.int32)
    net = nnfun.Sequential([nnfun.Dense(8, "tanh", input_dim=FEATURES),
                            nnfun.Dense(CLASSES, "softmax")], key=0)  # fmt: skip
    net.compile("adam", "categorical_crossentropy", ["accuracy"])  # the Keras face's model too
    config = net.compiled
    state = train.init_state(net, config, jax.random.key(0))
    return net, config, state, x, y


def batches_of(x, y, order=None):
    """The batches fit cuts arrays into (rows in ``order``), as a list."""
    if order is not None:
        x, y = x[order], y[order]
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def looping(batches):
    while True:
        yield from batches


class Listed(sources.PyDataset):
    """A PyDataset over a list of batches that records which it was asked for."""

    def __init__(self, batches, fail_at=None):
        super().__init__()
        self.batches, self.asked, self.ends, self.fail_at = batches, [], 0, fail_at

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        self.asked.append(i)
        if i == self.fail_at:
            raise OSError("disk read failed")
        return self.batches[i]

    def on_epoch_end(self):
        self.ends += 1


def same_bits(a, b) -> bool:
    """Every leaf equal bit for bit (PRNG keys by their data)."""

    def plain(tree):
        keys = jax.dtypes.prng_key
        return [np.asarray(jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, keys) else v)
                for v in jax.tree.leaves(tree)]  # fmt: skip

    return all(np.array_equal(p, q) for p, q in zip(plain(a), plain(b), strict=True))


def fit(setup, x, y=None, **kw):
    net, config, state, *_ = setup
    kw = {"epochs": 2, "batch_size": BATCH, **kw}
    return F.fit(net, x, y, config=config, state=state, **kw)


@pytest.fixture(scope="module")
def unshuffled(setup):
    """The reference: arrays, no shuffling, two epochs."""
    *_, x, y = setup
    return fit(setup, x, y, shuffle=False)


@pytest.mark.bits
def test_generator_gives_the_arrays_bits(setup, unshuffled):
    # Planted bug seen failing: dropping the last smaller batch, or running K-1 of K steps.
    *_, x, y = setup
    state, history = fit(setup, looping(batches_of(x, y)), steps_per_epoch=4,
                         steps_per_execution=2)  # fmt: skip
    assert same_bits(state.params, unshuffled[0].params)
    assert history["loss"] == unshuffled[1]["loss"]
    assert history["accuracy"] == unshuffled[1]["accuracy"]
    assert int(state.step) == 8 and int(state.epoch) == 2


@pytest.mark.bits
def test_memmap_gives_the_arrays_bits_shuffled(setup, tmp_path):
    *_, x, y = setup
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    want, history = fit(setup, x, y, shuffle=True)
    got, streamed = fit(setup, xm, ym, shuffle=True, steps_per_execution=3)
    assert same_bits(got, want)  # params, optimiser moments, key, step
    assert streamed["loss"] == history["loss"]


def test_pydataset_is_shuffled_per_epoch_with_the_run_key(setup, unshuffled):
    net, config, state, x, y = setup
    batches = batches_of(x, y)
    ds = Listed(batches)
    got, _ = fit(setup, ds, shuffle=True, steps_per_execution=2)
    first, second = ds.asked[:4], ds.asked[4:]
    # fit's own key sequence: each epoch splits the state's key and permutes with the second
    key = state.key
    orders = []
    for _ in range(2):
        key, perm = jax.random.split(key)
        orders.append(np.asarray(jax.random.permutation(perm, 4)).tolist())
    assert [first, second] == orders and first != second
    assert ds.ends == 2
    # the same batches in that order, given as a generator, train to the same bits
    again, _ = fit(setup, iter([batches[i] for i in first + second]), steps_per_epoch=4,
                   steps_per_execution=2)  # fmt: skip
    assert same_bits(got.params, again.params)
    unshuffled_ds, _ = fit(setup, Listed(batches), shuffle=False, steps_per_execution=2)
    assert same_bits(unshuffled_ds.params, unshuffled[0].params)


def test_grain_gives_the_arrays_bits(setup, unshuffled):
    grain = pytest.importorskip("grain")
    *_, x, y = setup
    ds = grain.MapDataset.range(N).map(lambda i: (x[i], y[i])).batch(BATCH)
    got, history = fit(setup, ds, shuffle=False, steps_per_execution=2)
    assert same_bits(got.params, unshuffled[0].params)
    assert history["loss"] == unshuffled[1]["loss"]


def test_keras_face_fit_evaluate_predict(setup, unshuffled):
    net, config, state, x, y = setup
    batches = batches_of(x, y)
    net.state = state
    history = net.fit(Listed(batches), epochs=2, shuffle=False, verbose=0, steps_per_execution=2,
                      validation_data=Listed(batches))  # fmt: skip
    assert same_bits(net.state.params, unshuffled[0].params)
    assert history.history["loss"] == unshuffled[1]["loss"]
    assert history.params["steps"] == 4
    want = F.evaluate(net, net.state, x, y), F.predict(net, net.state, x)
    np.testing.assert_allclose(history.history["val_loss"][-1], want[0][0], rtol=1e-6)
    np.testing.assert_allclose(net.evaluate(Listed(batches), verbose=0), want[0], rtol=1e-6)
    np.testing.assert_allclose(net.predict(looping(batches), steps=4), want[1], rtol=1e-6)


@pytest.mark.parametrize(
    "case, message",
    [
        ("short", r"x \(a generator\): ended after 1 batches of epoch 1; expected "
                  r"steps_per_epoch=4"),
        ("shape", r"x \(a generator\), batch 2 of epoch 1: x has shape \(16, 4\)"),
        ("labels", r"x \(a generator\), batch 3 of epoch 1: expected class labels in \[0, 3\), "
                   r"got values in \[9, 9\]"),
        ("raises", r"x \(Listed\), batch 2 of epoch 1: OSError: disk read failed"),
    ],
)  # fmt: skip
def test_bad_batches_name_the_source_and_batch_and_keep_the_trained_epochs(
    setup, unshuffled, case, message
):
    net, config, state, x, y = setup
    good = batches_of(x, y)
    bad = {
        "short": good + good[:1],
        "shape": good + good[:2] + [(good[2][0][:, :4], good[2][1])] + good[3:],
        "labels": good + good[:3] + [(good[3][0], np.full_like(good[3][1], 9))],
    }
    if case == "raises":
        source = Listed(good, fail_at=None)
    else:
        source = iter(bad[case])
    kept, calls = [], []

    class FailSecondEpoch(nnfun.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            calls.append(epoch)
            if case == "raises":
                source.fail_at = 2

    with pytest.raises(sources.SourceError, match=message):
        fit(setup, source, shuffle=False, steps_per_epoch=4, steps_per_execution=2,
            callbacks=[FailSecondEpoch()], on_state=kept.append)  # fmt: skip
    one_epoch, _ = fit(setup, x, y, epochs=1, shuffle=False)
    assert calls == [0]
    assert same_bits(kept[-1].params, one_epoch.params)  # epoch 0 is kept


@pytest.mark.parametrize("kind", ["pydataset", "memmap"])
def test_resumes_bit_identical(setup, tmp_path, kind):
    *_, x, y = setup
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    def data():
        if kind == "memmap":
            return np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy",
                                                                      mmap_mode="r")  # fmt: skip
        return Listed(batches_of(x, y)), None

    kw = {"shuffle": True, "steps_per_execution": 2}
    whole, history = fit(setup, *data(), epochs=3, **kw)
    fit(setup, *data(), epochs=2, checkpoint_dir=tmp_path / "run", **kw)
    resumed, rest = fit(setup, *data(), epochs=3, checkpoint_dir=tmp_path / "run", **kw)
    assert same_bits(resumed, whole)
    assert rest["loss"] == history["loss"] and rest["epoch"] == [0, 1, 2]


class Rows:
    """A Grain data source: sample i of (x, y)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __repr__(self):  # Grain checks a restored loader's source by its repr
        return f"Rows({len(self.x)})"

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("kind", ["dataset", "loader"])
def test_grain_resumes_from_its_iterator_state(setup, tmp_path, kind):
    grain = pytest.importorskip("grain")
    *_, x, y = setup

    def dataset():  # Grain's own shuffle, a new order each pass
        if kind == "loader":
            sampler = grain.samplers.IndexSampler(N, shuffle=True, seed=7, num_epochs=None)
            return grain.DataLoader(data_source=Rows(x, y), sampler=sampler, worker_count=0,
                                    operations=[grain.transforms.Batch(BATCH)])  # fmt: skip
        pairs = grain.MapDataset.range(N).shuffle(seed=7).map(lambda i: (x[i], y[i]))
        return pairs.repeat().batch(BATCH)

    kw = {"steps_per_epoch": 3, "steps_per_execution": 2}
    whole, history = fit(setup, dataset(), epochs=3, **kw)
    fit(setup, dataset(), epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed, rest = fit(setup, dataset(), epochs=3, checkpoint_dir=tmp_path, **kw)
    assert same_bits(resumed, whole)
    assert rest["loss"] == history["loss"]


def test_is_stream():
    assert not sources.is_stream(np.zeros((3, 2)))
    assert not sources.is_stream([[1.0, 2.0]])
    assert sources.is_stream(iter([]))
    assert sources.is_stream(Listed([]))


def test_stream_options_are_checked(setup):
    *_, x, y = setup
    with pytest.raises(ValueError, match="y: expected None when x is a list_iterator"):
        fit(setup, iter([]), y, steps_per_epoch=1)
    with pytest.raises(ValueError, match="validation_split: not supported when x is a stream"):
        fit(setup, iter([]), validation_split=0.2)
    with pytest.raises(ValueError, match="steps_per_execution: expected"):
        fit(setup, iter([]), steps_per_execution=0)


def test_masked_padding_rows_change_nothing_batchnorm_included():
    """A batch padded with masked rows (what several processes feed) trains as the batch
    alone: the loss, the gradient step and BatchNorm's running statistics."""
    rng = np.random.default_rng(1)
    net = nnfun.Sequential([nnfun.Dense(6, input_dim=FEATURES), nnfun.BatchNorm(),
                            nnfun.Activation("relu"), nnfun.Dense(CLASSES, "softmax")])  # fmt: skip
    config = nnfun.Config.make("categorical_crossentropy", "sgd", learning_rate=0.1)
    state = train.init_state(net, config, jax.random.key(2))
    x = rng.normal(size=(5, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, 5).astype(np.int32)
    x_pad = np.concatenate([x, 100 * rng.normal(size=(3, FEATURES)).astype(np.float32)])
    y_pad = np.concatenate([y, [2, 2, 2]]).astype(np.int32)
    step = train_steps.compiled_steps(net, config)
    plain = step(state, x[None], y[None], None, None, np.int32(1))
    xs, ys, ws, ms = (a[None] for a in prefetch._padded((x_pad[:5], y_pad[:5], None), 8))
    ms = ms.copy()
    xs[0, 5:], ys[0, 5:] = x_pad[5:], y_pad[5:]  # garbage in the padding rows
    padded = step(state, xs, ys, ws, ms, np.int32(1))
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    jax.tree.map(chex_close, padded[0].params, plain[0].params)
    jax.tree.map(chex_close, padded[0].model_state, plain[0].model_state)
    chex_close(padded[1]["loss"], plain[1]["loss"])
    assert float(padded[1]["size"][0]) == 5


def test_prefetch_reads_at_most_its_depth_ahead():
    """Host memory is bounded by the prefetch depth: an endless source is read only a few
    groups ahead of what the device has taken, and the thread stops when reading stops."""
    made = []

    def endless():
        while True:
            made.append(len(made))
            yield np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.int32), None, None, 2, 0

    reader = prefetch.Prefetcher(endless(), depth=2)
    first = next(iter(reader))
    time.sleep(0.5)  # the thread fills the queue, then waits
    assert first.count == 2 and first.x.shape == (2, 3, 4)
    assert len(made) <= 1 + 2 + 1  # taken, queued, the one waiting to be queued
    reader.close()
    assert not reader.thread.is_alive()
