"""Tests for nnfun.data: bundled sets, file loaders on synthetic and real files, and errors."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from nnfun import data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAT_DIR = SHARED / "catvnoncat"
MNIST_DIR = SHARED / "mnist-t10k"


def _needs(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (see ../shared/data/README.md)")


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def _write_h5(path: Path, **datasets) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


def _cat_pair(tmp_path: Path, rng: np.random.Generator, drop: str | None = None):
    """Writes a tiny valid cat pair (3 train, 2 test 2x2x3 images), minus dataset ``drop``."""
    sets = {}
    for part, n in (("train", 3), ("test", 2)):
        content = {
            f"{part}_set_x": rng.integers(0, 256, (n, 2, 2, 3), dtype=np.uint8),
            f"{part}_set_y": rng.integers(0, 2, n),
            "list_classes": np.array([b"non-cat", b"cat"]),
        }
        content.pop(drop, None)
        _write_h5(tmp_path / f"{part}_catvnoncat.h5", **content)
        sets.update(content)
    return sets


# --- bundled and generated sets ----------------------------------------------------------


def test_digits_shapes_range_and_stratification():
    s = data.load_digits(test_fraction=0.2, seed=0)
    assert len(s.x_train) + len(s.x_test) == 1797
    assert s.x_train.shape[1] == s.x_test.shape[1] == 64
    assert s.x_train.dtype == np.float32 and s.y_train.dtype == np.int32
    assert s.class_names == tuple(str(i) for i in range(10))
    assert len(s.x_test) == pytest.approx(0.2 * 1797, abs=1)
    x = np.concatenate([s.x_train, s.x_test])
    assert x.min() == 0.0 and x.max() == 1.0
    total = np.bincount(np.concatenate([s.y_train, s.y_test]), minlength=10)
    test = np.bincount(s.y_test, minlength=10)
    assert np.all(np.abs(test - 0.2 * total) <= 1), (test, total)


def test_digits_seed_is_reproducible():
    a, b, c = data.load_digits(seed=1), data.load_digits(seed=1), data.load_digits(seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)
    assert len(data.load_digits(test_fraction=np.float32(0.25)).x_test) == 450


def test_xor_values():
    x, y = data.xor()
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(y, np.logical_xor(x[:, 0], x[:, 1]))


@pytest.mark.parametrize("make", [data.planar_flower, data.moons, data.circles])
def test_planar_sets_shape_balance_and_seed(make):
    x, y = make(n=400, seed=0)
    assert x.shape == (400, 2) and x.dtype == np.float32
    assert y.shape == (400,) and y.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y), [200, 200])
    x2, y2 = make(n=400, seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, make(n=400, seed=1)[0])
    assert make(n=7)[0].shape == (7, 2)


def test_flower_lies_on_the_rose():
    x, _ = data.planar_flower(n=400, seed=0)
    # |r| = |4 sin 4t + 0.2 eps| stays below 4 plus a few noise deviations
    assert np.linalg.norm(x, axis=1).max() < 4 + 6 * 0.2
    assert np.linalg.norm(x, axis=1).mean() > 2  # petals, not a blob at the origin


def test_circles_factor_sets_inner_radius():
    x, y = data.circles(n=400, noise=0.0, factor=0.3)
    radius = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(radius[y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(radius[y == 1], 0.3, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: data.load_digits(test_fraction=0.0), "test_fraction"),
        (lambda: data.load_digits(test_fraction=1.5), "test_fraction"),
        (lambda: data.load_digits(test_fraction=0.001), "test_fraction"),  # 2 < 10 classes
        (lambda: data.load_mnist(".", test_fraction=-0.1), "test_fraction"),
        (lambda: data.planar_flower(n=0), "n"),
        (lambda: data.moons(n=-5), "n"),
        (lambda: data.moons(noise=-1.0), "noise"),
        (lambda: data.circles(factor=1.0), "factor"),
        (lambda: data.one_hot(np.array([0, 3]), 3), "y"),
        (lambda: data.one_hot(np.array([-1, 0]), 3), "y"),
        (lambda: data.one_hot(np.array([0, 1]), 0), "classes"),
        (lambda: data.one_hot(np.array([0.0, 1.0]), 2), "y"),
    ],
)
def test_bad_arguments_name_argument_expected_and_got(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: expected .*, got "):
        call()


def test_one_hot():
    out = data.one_hot(np.array([2, 0, 1]), 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"\[0, 3\), got values in \[0, 5\]"):
        data.one_hot(np.array([0, 5]), 3)


# --- synthetic files: round trips -------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_mnist_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    ip = _write(tmp_path / f"img{suffix}", _idx_bytes(images, 0x803))
    lp = _write(tmp_path / f"lab{suffix}", _idx_bytes(labels, 0x801))
    x, y = data.load_mnist_idx(ip, lp)
    assert x.shape == (5, 12) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), images.reshape(5, -1))
    np.testing.assert_array_equal(x, images.reshape(5, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_pools_pairs_and_splits(tmp_path):
    labels = np.repeat(np.arange(10, dtype=np.uint8), 3)  # 30 samples, 3 per class
    images = np.arange(30 * 4, dtype=np.uint8).reshape(30, 2, 2)
    _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx_bytes(images[:20], 0x803))
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_bytes(labels[:20], 0x801))
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(images[20:], 0x803))
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(labels[20:], 0x801))
    s = data.load_mnist(tmp_path, test_fraction=1 / 3, seed=0)
    assert len(s.x_train) == 20 and len(s.x_test) == 10
    np.testing.assert_array_equal(np.bincount(s.y_test, minlength=10), np.ones(10))
    x = np.concatenate([s.x_train, s.x_test])
    got = np.sort(np.rint(x[:, 0] * 255).astype(int))  # first pixel identifies each image
    np.testing.assert_array_equal(got, images.reshape(30, -1)[:, 0])


def test_cat_h5_round_trip(tmp_path):
    sets = _cat_pair(tmp_path, np.random.default_rng(0))
    s = data.load_cat(tmp_path)
    assert s.class_names == ("non-cat", "cat")
    for part, x, y in (("train", s.x_train, s.y_train), ("test", s.x_test, s.y_test)):
        raw = sets[f"{part}_set_x"].reshape(len(x), -1)
        assert x.shape == (len(raw), 12) and x.dtype == np.float32 and y.dtype == np.int32
        np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), raw)
        np.testing.assert_array_equal(y, sets[f"{part}_set_y"])


# --- synthetic files: corruption and missing paths ----------------------------------------


def test_h5_missing_dataset_names_file_dataset_and_contents(tmp_path):
    _cat_pair(tmp_path, np.random.default_rng(0), drop="train_set_x")
    with pytest.raises(ValueError) as err:
        data.load_cat(tmp_path)
    msg = str(err.value)
    assert "train_catvnoncat.h5" in msg and "'train_set_x'" in msg
    assert "['list_classes', 'train_set_y']" in msg


def test_non_hdf5_file_is_value_error(tmp_path):
    _cat_pair(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_catvnoncat.h5").write_bytes(b"this is not HDF5" * 10)
    with pytest.raises(ValueError, match=r"test_catvnoncat\.h5: not a readable HDF5 file"):
        data.load_cat(tmp_path)


def test_cat_count_mismatch(tmp_path):
    _write_h5(
        tmp_path / "train_catvnoncat.h5",
        train_set_x=np.zeros((3, 2, 2, 3), np.uint8),
        train_set_y=np.zeros(2),
        list_classes=np.array([b"non-cat", b"cat"]),
    )
    with pytest.raises(ValueError, match=r"train_catvnoncat\.h5: .*3 images .* 2 labels"):
        data.load_cat(tmp_path)


def test_missing_h5py_gives_install_hint(tmp_path, monkeypatch):
    _cat_pair(tmp_path, np.random.default_rng(0))
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    with pytest.raises(ImportError, match=r"pip install h5py.*nnfun\[experiments\]"):
        data.load_cat(tmp_path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_wrong_magic(tmp_path, suffix):
    ip = _write(tmp_path / f"img{suffix}", _idx_bytes(np.zeros(4, np.uint8), 0x801))
    lp = _write(tmp_path / f"lab{suffix}", _idx_bytes(np.zeros(4, np.uint8), 0x801))
    with pytest.raises(
        ValueError, match=rf"img{suffix}: magic number 0x00000801; expected 0x00000803"
    ):
        data.load_mnist_idx(ip, lp)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_data(tmp_path, suffix):
    payload = _idx_bytes(np.zeros((2, 3, 3), np.uint8), 0x803)[:-5]
    ip = _write(tmp_path / f"img{suffix}", payload)
    lp = _write(tmp_path / f"lab{suffix}", _idx_bytes(np.zeros(2, np.uint8), 0x801))
    with pytest.raises(ValueError, match=rf"img{suffix}: header promises 18 .*; got 13"):
        data.load_mnist_idx(ip, lp)


def test_idx_truncated_header(tmp_path):
    ip = _write(tmp_path / "img", _idx_bytes(np.zeros((2, 3, 3), np.uint8), 0x803)[:10])
    with pytest.raises(ValueError, match=r"img: truncated header: 10 bytes; expected 16"):
        data.load_mnist_idx(ip, ip)


def test_truncated_gzip_stream(tmp_path):
    ip = tmp_path / "img.gz"
    ip.write_bytes(gzip.compress(_idx_bytes(np.zeros((2, 3, 3), np.uint8), 0x803))[:-12])
    with pytest.raises(ValueError, match=r"img\.gz: corrupt or truncated gzip stream"):
        data.load_mnist_idx(ip, ip)


def test_idx_count_mismatch(tmp_path):
    ip = _write(tmp_path / "img", _idx_bytes(np.zeros((3, 2, 2), np.uint8), 0x803))
    lp = _write(tmp_path / "lab", _idx_bytes(np.zeros(4, np.uint8), 0x801))
    with pytest.raises(ValueError, match=r"img has 3 images but .*lab has 4 labels"):
        data.load_mnist_idx(ip, lp)


def test_missing_paths(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a folder; expected .*h5"):
        data.load_cat(missing)
    with pytest.raises(FileNotFoundError, match=r"train_catvnoncat\.h5: no such file"):
        data.load_cat(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a folder; expected .*t10k"):
        data.load_mnist(missing)
    with pytest.raises(FileNotFoundError, match=r"holds no MNIST files; expected t10k-images"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"img\.gz: no such file; expected an IDX images"):
        data.load_mnist_idx(tmp_path / "img.gz", tmp_path / "lab.gz")
    _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx_bytes(np.zeros((1, 2, 2)), 0x803))
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\]: no such file"):
        data.load_mnist(tmp_path)


# --- real data (../shared/data) ---------------------------------------------------------


def test_real_cat():
    _needs(CAT_DIR)
    s = data.load_cat(CAT_DIR)
    assert s.x_train.shape == (209, 12288) and s.x_test.shape == (50, 12288)
    assert s.y_train.shape == (209,) and s.y_test.shape == (50,)
    assert int(s.y_train.sum()) == 72 and int(s.y_test.sum()) == 33
    assert s.class_names == ("non-cat", "cat")
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0


def test_real_mnist():
    _needs(MNIST_DIR)
    x, y = data.load_mnist_idx(
        MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    )
    assert x.shape == (10000, 784) and y.shape == (10000,)
    assert set(np.unique(y)) == set(range(10))
    assert x.min() == 0.0 and x.max() == 1.0
    s = data.load_mnist(MNIST_DIR, test_fraction=0.2, seed=0)
    assert len(s.x_train) == 8000 and len(s.x_test) == 2000
