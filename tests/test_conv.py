"""Convolution, pooling and reshaping layers: each hand-written backward against jax.vjp and
central differences in float64 (strides, paddings, dilation, odd sizes); the forward against
a NumPy loop; max-pooling ties by the stated rule, with finite differences flagging them as
kinks; planted bugs blamed on their own layer and leaf; Keras's kernel fans; save and load;
Dropout after a convolution; errors that name the argument."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.flatten_util import ravel_pytree

import nnfun
from nnfun import gradcheck, windows
from nnfun.conv import Conv1D, Conv2D
from nnfun.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
)

CCE = "categorical_crossentropy"


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


LAYERS = [
    (Conv2D(2, (2, 3), strides=2, padding="same", activation="tanh"), (7, 6, 2)),
    (Conv2D(2, 3, dilation_rate=2, padding="same", use_bias=False), (7, 8, 3)),
    (Conv2D(2, (3, 2), strides=(2, 3), dilation_rate=(1, 2), activation="relu"), (9, 11, 1)),
    (Conv2D(2, 4, strides=3, padding="same"), (7, 5, 2)),  # even kernel: more padding after
    (Conv1D(3, 3, strides=2, padding="same", activation="sigmoid"), (9, 2)),
    (MaxPooling2D(2), (7, 6, 2)),  # odd size: the last row is never read
    (MaxPooling2D(3, strides=2, padding="same"), (7, 6, 2)),  # overlapping windows
    (AveragePooling2D(3, strides=2, padding="same"), (7, 5, 2)),  # padding not counted
    (MaxPooling1D(3, strides=1), (7, 2)),
    (GlobalMaxPooling2D(), (3, 4, 2)),
]


def _random_like(tree, seed=0):
    """NumPy normals shaped like ``tree``'s leaves (jax.random would add a compile per test)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(0.5 * rng.normal(size=a.shape)), tree)


def _three_ways(layer, shape, h=1e-6):
    """The hand-written backward, jax.vjp and central differences of sum(dy * y) over every
    parameter and input element, for random params, x (2, *shape) and dy: one program."""
    like = jax.eval_shape(lambda: layer.init(jax.random.key(0), shape, jnp.float64))
    params = _random_like(like)
    x = _random_like(jnp.zeros((2, *shape)), seed=1)
    dy = _random_like(jax.eval_shape(lambda: layer.forward(params, {}, x)[0]), seed=2)

    @jax.jit
    def run(params, x, dy):
        y, _, cache = layer.forward(params, {}, x, train=True)
        manual = layer.backward(params, cache, dy)
        reference = jax.vjp(lambda p, v: layer.forward(p, {}, v)[0], params, x)[1](dy)
        flat, unravel = ravel_pytree((params, x))

        def f(v):
            p, xv = unravel(v)
            return jnp.sum(dy * layer.forward(p, {}, xv)[0])

        # lax.map, not vmap: a batch of kernels would make a grouped convolution.
        central = lax.map(
            lambda e: (f(flat + h * e) - f(flat - h * e)) / (2 * h), jnp.eye(flat.size)
        )
        return ravel_pytree(manual)[0], ravel_pytree(reference)[0], central

    return run(params, x, dy)


@pytest.mark.parametrize(("layer", "shape"), LAYERS, ids=[str(lay) for lay, _ in LAYERS])
def test_backward_matches_jax_vjp_and_finite_differences(layer, shape):
    manual, reference, central = _three_ways(layer, shape)
    scale = float(jnp.max(jnp.abs(reference)))
    assert float(jnp.max(jnp.abs(manual - reference))) < 1e-12 * scale
    assert float(jnp.max(jnp.abs(manual - central))) < 1e-7 * scale


def test_gradcheck_check_layer_accepts_them():
    result = gradcheck.check_layer(AveragePooling1D(2, padding="same"), (5, 2), batch=2)
    assert result.ok, str(result)


def _conv_by_loops(x, w, b, stride, dilation, padding):
    """Keras's Conv2D written as loops over NumPy arrays (TensorFlow's "same" padding)."""
    n, h, wd, _ = x.shape
    kh, kw, _, out = w.shape
    pads = []
    for size, k, s, d in zip((h, wd), (kh, kw), stride, dilation, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    oh = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    z = np.zeros((n, oh, ow, out))
    for p in range(oh):
        for q in range(ow):
            for i in range(kh):
                for j in range(kw):
                    row = xp[:, p * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]]
                    z[:, p, q] += row @ w[i, j]
    return z + b


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"strides": 2, "padding": "same"}, (7, 6, 2)),
        ({"strides": (1, 2), "dilation_rate": (2, 1)}, (6, 7, 3)),
    ],
)
def test_forward_matches_a_numpy_loop(kwargs, shape):
    layer = Conv2D(4, (3, 2), **kwargs)
    params = _random_like(jax.eval_shape(lambda: layer.init(jax.random.key(0), shape, jnp.float64)))
    params["b"] = jnp.arange(4.0)
    x = np.random.default_rng(0).normal(size=(2, *shape))
    y = jax.jit(lambda p, v: layer.forward(p, {}, v)[0])(params, jnp.asarray(x))
    expected = _conv_by_loops(
        x, np.asarray(params["W"]), np.arange(4.0), layer.strides, layer.dilation_rate,
        layer.padding,
    )  # fmt: skip
    assert y.shape == expected.shape == (2, *layer.output_shape(shape))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_max_pooling_ties_follow_the_stated_rule_and_are_kinks():
    assert "first maximum in row-major order" in MaxPooling2D.kink == GlobalMaxPooling2D.kink
    # One 2x2 window holds a tie of 3s at (0, 1) and (1, 0); one a tie of four 1s.
    x = np.array([[0.0, 3.0, 1.0, 1.0], [3.0, 2.0, 1.0, 1.0]])[None, :, :, None]
    layer = MaxPooling2D(2)
    y, _, cache = layer.forward({}, {}, jnp.asarray(x))
    assert y[0, :, :, 0].tolist() == [[3.0, 1.0]]
    _, dx = layer.backward({}, cache, jnp.array([[[[10.0], [20.0]]]]))
    # By hand: each window's first maximum in row-major order takes the whole gradient.
    assert dx[0, :, :, 0].tolist() == [[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    _, dx_global = GlobalMaxPooling1D().backward(
        {}, ([1, 4, 1], jnp.array([[1]])), jnp.ones((1, 1))
    )
    assert dx_global[0, :, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    # Central differences: the tied inputs are kinks (skipped), every other one is checked.
    dy = jnp.array([[[[10.0], [20.0]]]])
    f = lambda v: jnp.sum(dy * layer.forward({}, {}, v)[0])  # noqa: E731
    estimate, checked, kink = gradcheck.finite_differences(f, jnp.asarray(x))
    assert np.argwhere(kink[0, :, :, 0]).tolist() == [
        [0, 1],
        [0, 2],
        [0, 3],
        [1, 0],
        [1, 2],
        [1, 3],
    ]
    np.testing.assert_allclose(estimate[checked], np.asarray(dx)[checked], atol=1e-8)
    # At a tie the rule's choice lies between the one-sided slopes (0 and the full dy).
    h = 1e-6
    for i, j, g in ((0, 1, 10.0), (1, 0, 10.0)):
        e = np.zeros_like(x)
        e[0, i, j, 0] = h
        right = (f(jnp.asarray(x + e)) - f(jnp.asarray(x))) / h
        left = (f(jnp.asarray(x)) - f(jnp.asarray(x - e))) / h
        assert min(left, right) - 1e-6 <= dx[0, i, j, 0] <= max(left, right) + 1e-6
        assert {round(float(left)), round(float(right))} == {0, round(g)}


@dataclass(frozen=True)
class ConvWithoutFlip(Conv2D):
    """dx by correlating with the unflipped kernel: the classic mistake."""

    def backward_affine(self, params, cache, dz):
        grads, _ = super().backward_affine(params, cache, dz)
        flipped = {**params, "W": jnp.flip(params["W"], axis=(0, 1))}
        return grads, super().backward_affine(flipped, cache, dz)[1]


@dataclass(frozen=True)
class ConvKernelGradOffByOneRow(Conv2D):
    def backward_affine(self, params, cache, dz):
        grads, dx = super().backward_affine(params, cache, dz)
        return {**grads, "W": jnp.roll(grads["W"], 1, axis=0)}, dx


@dataclass(frozen=True)
class MaxPoolToTheCorner(MaxPooling2D):
    """Sends each window's dy to its top-left input instead of its maximum."""

    def backward(self, params, cache, dy):
        x, _ = cache
        padded = [
            n + lo + hi
            for n, (lo, hi) in zip(x.shape[1:-1], self._geometry(x.shape[1:-1])[0], strict=True)
        ]
        dxp = windows.tap_place(dy, (0, 0), self.strides, padded)
        return {}, dxp[:, : x.shape[1], : x.shape[2]]


@dataclass(frozen=True)
class AveragePoolCountsPadding(AveragePooling2D):
    """Divides by the full window size also where "same" padding filled part of it."""

    def backward(self, params, cache, dy):
        shape = cache
        grads, dx = super().backward(params, cache, dy)
        pads, out = self._geometry(shape[1:-1])
        counts = self._counts(shape[1:-1], pads, out, dy.dtype)
        wrong = super().backward(params, cache, dy * counts / np.prod(self.pool_size))[1]
        return grads, wrong


def _net(conv0=Conv2D, pool1=MaxPooling2D, pool2=AveragePooling2D):
    return nnfun.Network(
        [
            conv0(2, 2, padding="same", activation="tanh"),  # even: padded more after
            pool1(2),  # 5x5: the last row and column are never read
            pool2(2, strides=1, padding="same"),
            nnfun.Reshape((-1,)),
            nnfun.Dense(3, "softmax"),
        ],
        input_shape=(5, 5, 1),
    )


def _network_check(net):
    """check_network without finite differences (check_layer's tests above have them)."""
    params = _random_like(jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.float64)))
    x = _random_like(jnp.zeros((3, 5, 5, 1)), seed=1)
    y = jax.nn.one_hot(jnp.arange(3), 3, dtype=jnp.float64)
    return gradcheck.check_network(net, params, x, y, loss=CCE, train=True, finite_diff=False)


def test_a_correct_conv_net_passes_the_network_check():
    result = _network_check(_net())
    assert result.ok and result.first_disagreement is None, str(result)


@pytest.mark.parametrize(
    ("net", "layer", "leaf"),
    [
        (_net(conv0=ConvWithoutFlip), 0, "dx"),
        (_net(conv0=ConvKernelGradOffByOneRow), 0, "[0]['W']"),
        (_net(pool1=MaxPoolToTheCorner), 1, "dx"),
        (_net(pool2=AveragePoolCountsPadding), 2, "dx"),
    ],
    ids=["conv-no-flip", "conv-dW-shifted", "maxpool-to-the-corner", "avgpool-counts-padding"],
)
def test_a_planted_bug_is_blamed_on_its_own_layer_and_leaf(net, layer, leaf):
    result = _network_check(net)
    first = result.first_disagreement
    assert not result.ok and first is not None and first.layer == layer, str(result)
    assert [f.path for f in first.report.failures] == [leaf]
    assert "the layers below it fail because of it" in result.diagnosis() or layer == 0


def test_save_and_load_a_conv_model(tmp_path):
    model = nnfun.Sequential(
        [
            nnfun.Input(shape=(8, 8, 1)),
            Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            nnfun.Dropout(0.5),
            MaxPooling2D(2),
            nnfun.Reshape((-1,)),
            nnfun.Dense(3, "softmax"),
        ],
        key=0,
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    # Keras's glorot_uniform fans for a (3, 3, 1, 16) kernel: a = sqrt(6 / (9 * 1 + 9 * 16)).
    kernel = model.get_weights()[0]
    limit = np.sqrt(6 / (9 + 9 * 16))
    assert kernel.shape == (3, 3, 1, 16) and 0.95 * limit < np.max(np.abs(kernel)) <= limit
    model.save(tmp_path / "m")
    restored = nnfun.load_model(tmp_path / "m")
    assert [str(a) for a in restored.layers] == [str(a) for a in model.layers]
    assert restored.layers[0] == model.layers[0]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Conv2D(0, 3), "Conv2D: filters: expected a positive int, got 0"),
        (lambda: Conv2D(2, (3, 3, 3)), "Conv2D: kernel_size: expected a positive int or 2"),
        (lambda: Conv2D(2, 3, padding="full"), "Conv2D: padding: expected one of"),
        (lambda: Conv1D(2, 3, input_shape=(5, 5, 1)), "Conv1D: input_shape: expected 1 spatial"),
        (lambda: MaxPooling2D(strides=0), "MaxPooling2D: strides: expected a positive int"),
        (lambda: nnfun.Reshape((-1, -1)), "Reshape: target_shape: expected positive ints"),
        (lambda: Conv2D(2, 5).output_shape((4, 9, 1)), "does not fit the input's spatial size"),
        (lambda: nnfun.Reshape((5,)).output_shape((2, 3)), "cannot reshape per-sample shape"),
        (
            lambda: Conv2D(2, 3).forward(
                {"W": jnp.zeros((3, 3, 2, 2))}, {}, jnp.zeros((1, 5, 5, 3))
            ),
            r"x: Conv2D\(2, 3x3, identity\) expected shape \(batch, 2 spatial axes, 2\), got "
            r"\(1, 5, 5, 3\)",
        ),
    ],
)
def test_bad_arguments_name_themselves(make, message):
    with pytest.raises(ValueError, match=message):
        make()
