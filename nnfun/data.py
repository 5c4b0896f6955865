"""Bundled and file data sets as NumPy arrays: x float32 ``(n, features)``, y int32 ``(n,)``.

Toy sets (XOR, planar flower, moons, circles) and scikit-learn's digits need no files; the
cat-vs-non-cat HDF5 files and MNIST IDX files are read from a folder the caller names.
Batching and device placement happen elsewhere. A missing path raises ``FileNotFoundError``;
a file that is not what it should be raises ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import zlib
from numbers import Real
from pathlib import Path
from typing import NamedTuple

import numpy as np

PathLike = str | Path

_IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dims (n, rows, cols)
_IDX_LABELS = 0x00000801  # unsigned bytes, 1 dim (n,)


class Split(NamedTuple):
    """Train/test arrays: x float32 ``(n, features)``, y int32 ``(n,)``, and the class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def _check_fraction(test_fraction: float) -> None:
    if not isinstance(test_fraction, Real) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n: expected an integer >= 2 (two classes), got {n!r}")


def _check_noise(noise: float) -> None:
    if not noise >= 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")


def _split(x, y, test_fraction: float, seed: int, class_names) -> Split:
    """Stratified split of ``x (n, f)``, ``y (n,)`` into a ``Split``."""
    from sklearn.model_selection import train_test_split  # lazy: importing it takes a second

    try:
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=float(test_fraction), random_state=seed, stratify=y
        )
    except ValueError as e:  # too few samples per class for a stratified split
        raise ValueError(
            f"test_fraction: expected a fraction that leaves every one of the "
            f"{len(np.unique(y))} classes in both parts of {len(y)} samples, "
            f"got {test_fraction!r} ({e})"
        ) from e
    return Split(x_tr, y_tr, x_te, y_te, tuple(class_names))


def _require_dir(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"data_dir: {path} is not a folder; expected one holding {what}")
    return path


def _require_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {what}")
    return path


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 digits: 1797 samples, x ``(n, 64)`` in [0, 1], 10 classes."""
    _check_fraction(test_fraction)
    from sklearn import datasets

    d = datasets.load_digits()
    x = d.data.astype(np.float32) / 16.0  # pixels are integers 0..16
    return _split(x, d.target.astype(np.int32), test_fraction, seed, map(str, d.target_names))


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points: x ``(4, 2)`` float32, y ``(4,)`` int32 = x0 xor x1."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return x, np.array([0, 1, 1, 0], dtype=np.int32)


def planar_flower(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-class rose curve ("flower"): x ``(n, 2)`` float32, y ``(n,)`` int32, n/2 per class.

    Class j: t = linspace(3.12 j, 3.12 (j+1)) + 0.2 eps, r = 4 sin(4t) + 0.2 eps,
    x = r [sin t, cos t], eps ~ N(0, 1).
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for j, m in enumerate((n // 2, n - n // 2)):
        t = np.linspace(j * 3.12, (j + 1) * 3.12, m) + rng.standard_normal(m) * 0.2
        r = 4 * np.sin(4 * t) + rng.standard_normal(m) * 0.2
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(m, j))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32)


def moons(n: int = 400, noise: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (sklearn ``make_moons``): x ``(n, 2)``, y ``(n,)``."""
    _check_n(n)
    _check_noise(noise)
    from sklearn import datasets

    x, y = datasets.make_moons(n_samples=n, noise=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int32)


def circles(
    n: int = 400, noise: float = 0.1, factor: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two circles (sklearn ``make_circles``, inner radius ``factor``): x ``(n, 2)``."""
    _check_n(n)
    _check_noise(noise)
    if not 0 <= factor < 1:
        raise ValueError(f"factor: expected a number in [0, 1), got {factor!r}")
    from sklearn import datasets

    x, y = datasets.make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    return x.astype(np.float32), y.astype(np.int32)


def _read_h5(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Reads the datasets ``names`` from the HDF5 file ``path``."""
    try:
        import h5py
    except ImportError as e:
        raise ImportError(
            "load_cat needs h5py: pip install h5py (or the extra: pip install 'nnfun[experiments]')"
        ) from e
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in names if k not in f]
            if missing:
                raise ValueError(
                    f"{path}: missing dataset {missing[0]!r}; expected {list(names)}, "
                    f"the file has {sorted(f.keys())}"
                )
            return {k: np.asarray(f[k][()]) for k in names}
    except OSError as e:  # h5py reports a non-HDF5 or corrupt file as OSError
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e


def load_cat(data_dir: PathLike) -> Split:
    """Cat vs non-cat images: x ``(n, 64*64*3 = 12288)`` in [0, 1], y 1 = cat (209 / 50 samples)."""
    data_dir = _require_dir(data_dir, "train_catvnoncat.h5 and test_catvnoncat.h5")
    arrays = []
    for part in ("train", "test"):
        path = _require_file(data_dir / f"{part}_catvnoncat.h5", f"the cat {part} set (HDF5)")
        kx, ky = f"{part}_set_x", f"{part}_set_y"
        d = _read_h5(path, (kx, ky, "list_classes"))
        x, y = d[kx], d[ky].reshape(-1)  # some copies store y as (1, n)
        if len(x) != len(y):
            raise ValueError(f"{path}: {kx} has {len(x)} images but {ky} has {len(y)} labels")
        arrays += [x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int32)]
    class_names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in d["list_classes"])
    return Split(*arrays, class_names)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # bad header, truncated stream, bad CRC
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e


def _read_idx(path: PathLike, magic: int, what: str) -> np.ndarray:
    """Parses an unsigned-byte IDX file: big-endian magic, one uint32 per dim, then the data."""
    path = _require_file(path, f"an IDX {what} file (magic 0x{magic:08x}), raw or .gz")
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated: {len(data)} bytes; expected at least {header}")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise ValueError(f"{path}: magic number 0x{got:08x}; expected 0x{magic:08x} (IDX {what})")
    if len(data) < header:
        raise ValueError(f"{path}: truncated header: {len(data)} bytes; expected {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise ValueError(
            f"{path}: header promises {size} data bytes for shape {shape}; "
            f"got {len(data) - header} (truncated or trailing bytes)"
        )
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(shape)


def load_mnist_idx(images_path: PathLike, labels_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """MNIST IDX pair (raw or .gz): x ``(n, rows*cols = 784)`` float32 in [0, 1], y ``(n,)``."""
    images = _read_idx(images_path, _IDX_IMAGES, "images")
    labels = _read_idx(labels_path, _IDX_LABELS, "labels")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; expected equal counts"
        )
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x, labels.astype(np.int32)


def _find(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(data_dir: PathLike, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Every MNIST IDX pair in ``data_dir`` (``t10k-*``, ``train-*``), pooled and split stratified.

    x ``(n, 784)`` float32 in [0, 1], y ``(n,)`` int32 digits 0-9.
    """
    _check_fraction(test_fraction)
    expected = "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (or train-*)"
    data_dir = _require_dir(data_dir, expected)
    xs, ys = [], []
    for prefix in ("t10k", "train"):
        images = _find(data_dir, f"{prefix}-images-idx3-ubyte")
        if images is None:
            continue
        labels = _find(data_dir, f"{prefix}-labels-idx1-ubyte")
        if labels is None:
            raise FileNotFoundError(
                f"{data_dir / f'{prefix}-labels-idx1-ubyte'}[.gz]: no such file; "
                f"expected the labels for {images}"
            )
        x, y = load_mnist_idx(images, labels)
        xs.append(x)
        ys.append(y)
    if not xs:
        raise FileNotFoundError(f"data_dir: {data_dir} holds no MNIST files; expected {expected}")
    names = tuple(str(i) for i in range(10))
    return _split(np.concatenate(xs), np.concatenate(ys), test_fraction, seed, names)


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    """Integer labels ``(n,)`` in [0, classes) -> float32 ``(n, classes)``, a 1 at each label."""
    y = np.asarray(y)
    if isinstance(classes, bool) or not isinstance(classes, int | np.integer) or classes < 1:
        raise ValueError(f"classes: expected an integer >= 1, got {classes!r}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y: expected integer labels of shape (n,), got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"y: expected labels in [0, {classes}), got values in [{y.min()}, {y.max()}]"
        )
    return np.eye(classes, dtype=np.float32)[y]
