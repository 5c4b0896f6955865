"""Losses: each hand-written gradient against jax.grad in float64 (also under jit and vmap),
the textbook fused gradients (p - y)/m and (a - y)/m, label forms, weights, and logits of
+-1e4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnfun import activations, losses

TOL = 1e-10
M, K = 6, 4  # batch, outputs


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def cases():
    """(name, loss, pred, y): every loss with the inputs and label forms it takes."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(M, K)) * 2)
    probs = activations.softmax.fn(logits)  # rows on the simplex, inside the clip range
    sig = jnp.asarray(rng.uniform(0.05, 0.95, (M, K)))
    labels = jnp.asarray(rng.integers(0, K, M))
    one_hot = jax.nn.one_hot(labels, K, dtype=jnp.float64)
    bits = jnp.asarray(rng.integers(0, 2, (M, K)), jnp.float64)
    soft = jnp.asarray(rng.uniform(size=(M, K)))
    return [
        ("mse", losses.mean_squared_error, logits, soft),
        ("half_squared_error", losses.half_squared_error, logits, soft),
        ("bce", losses.binary_crossentropy, sig, bits),
        ("bce soft targets", losses.binary_crossentropy, sig, soft),
        ("bce one unit, int labels", losses.binary_crossentropy, sig[:, :1], labels % 2),
        ("bce_logits", losses.binary_crossentropy_from_logits, logits, bits),
        ("bce_logits one unit", losses.binary_crossentropy_from_logits, logits[:, :1], labels % 2),
        ("cce one-hot", losses.categorical_crossentropy, probs, one_hot),
        ("cce int labels", losses.categorical_crossentropy, probs, labels),
        ("cce_logits one-hot", losses.categorical_crossentropy_from_logits, logits, one_hot),
        ("cce_logits int labels", losses.categorical_crossentropy_from_logits, logits, labels),
    ]


@jax.jit
def all_gradients(weights):
    """Per case: (manual, jax.grad) unweighted, weighted, and vmapped over 3 shifted copies."""
    out = {}
    for name, loss, pred, y in cases():
        ref = jax.grad(lambda p, loss=loss, y=y: losses.value(loss, p, y))(pred)
        ref_w = jax.grad(lambda p, loss=loss, y=y: losses.value(loss, p, y, weights))(pred)
        # A batch of 3 problems (pred scaled a little) through vmap.
        preds = jnp.stack([pred, pred * 0.9, pred * 0.8])
        vm = jax.vmap(lambda p, loss=loss, y=y: losses.gradient(loss, p, y))(preds)
        ref_vm = jax.vmap(jax.grad(lambda p, loss=loss, y=y: losses.value(loss, p, y)))(preds)
        out[name] = {
            "plain": (losses.gradient(loss, pred, y), ref),
            "weighted": (losses.gradient(loss, pred, y, weights), ref_w),
            "vmap": (vm, ref_vm),
        }
    return out


def test_every_loss_gradient_matches_jax_grad_in_float64_under_jit_and_vmap():
    weights = jnp.asarray([1.0, 0.0, 2.0, 0.5, 1.0, 3.0])
    worst = 0.0
    results = all_gradients(weights)
    assert len(results) == len(cases())
    for name, checks in results.items():
        for kind, (manual, ref) in checks.items():
            assert manual.dtype == jnp.float64 and manual.shape == ref.shape
            rel = float(jnp.max(jnp.abs(manual - ref)) / jnp.max(jnp.abs(ref)))
            assert rel < TOL, (name, kind, rel)
            worst = max(worst, rel)
        # A zero weight masks its sample out exactly.
        assert float(jnp.max(jnp.abs(checks["weighted"][0][1]))) == 0.0, name
    print(f"worst relative error of a loss gradient vs jax.grad: {worst:.2e}")


def test_values_against_numpy():
    rng = np.random.default_rng(1)
    a, y = rng.uniform(0.1, 0.9, (M, K)), rng.uniform(size=(M, K))
    p = a / a.sum(1, keepdims=True)
    labels = rng.integers(0, K, M)

    @jax.jit  # one program: op-by-op dispatch is slow
    def compute(a, y, p, labels):
        hse = losses.half_squared_error
        return {
            "mse": losses.value("mse", a, y),
            "mse grad": losses.gradient("mse", a, y),
            "hse": losses.value(hse, a, y),
            "hse grad": losses.gradient(hse, a, y),
            "bce": losses.value("binary_crossentropy", a, y),
            "cce": losses.value("categorical_crossentropy", p, labels),
        }

    got = compute(*map(jnp.asarray, (a, y, p, labels)))
    # mse (Keras' mean form): mean over outputs, then over the batch; gradient 2(a - y)/(K m).
    np.testing.assert_allclose(got["mse"], np.mean((a - y) ** 2), rtol=1e-14)
    np.testing.assert_allclose(got["mse grad"], 2 * (a - y) / (K * M), rtol=1e-14)
    # The notes' 1/2 ||a - y||^2 per sample; gradient (a - y)/m.
    np.testing.assert_allclose(got["hse"], np.mean(0.5 * np.sum((a - y) ** 2, 1)), rtol=1e-14)
    np.testing.assert_allclose(got["hse grad"], (a - y) / M, rtol=1e-14)
    # Binary cross-entropy: -(y log a + (1 - y) log(1 - a)), summed over outputs, mean over m.
    bce = -np.mean(np.sum(y * np.log(a) + (1 - y) * np.log(1 - a), axis=1))
    np.testing.assert_allclose(got["bce"], bce, rtol=1e-14)
    # Categorical cross-entropy with integer labels: -mean log p[label].
    cce = -np.mean(np.log(p[np.arange(M), labels]))
    np.testing.assert_allclose(got["cce"], cce, rtol=1e-14)


def test_fused_gradients_are_the_textbook_ones():
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(M, K)) * 3)
    labels = jnp.asarray(rng.integers(0, K, M))
    y = jax.nn.one_hot(labels, K, dtype=jnp.float64)
    # softmax + cross-entropy -> (p - y)/m
    p = activations.softmax.fn(z)
    fused = losses.FUSED["softmax", "categorical_crossentropy"]
    np.testing.assert_allclose(losses.gradient(fused, z, labels), (p - y) / M, atol=1e-16)
    # ... which is the chain rule through softmax's Jacobian and the CE gradient -y/(m p).
    chained = activations.softmax.vjp(z, p, losses.gradient("categorical_crossentropy", p, y))
    np.testing.assert_allclose(chained, (p - y) / M, atol=1e-15)
    # ... and the fused value is the unfused one.
    np.testing.assert_allclose(
        losses.value(fused, z, y), losses.value("categorical_crossentropy", p, y), rtol=1e-13
    )
    # sigmoid + binary cross-entropy -> (a - y)/m, per output unit.
    bits = jnp.asarray(rng.integers(0, 2, (M, K)), jnp.float64)
    a = activations.sigmoid.fn(z)
    fused = losses.FUSED["sigmoid", "binary_crossentropy"]
    np.testing.assert_allclose(losses.gradient(fused, z, bits), (a - bits) / M, atol=1e-16)
    chained = activations.sigmoid.vjp(z, a, losses.gradient("binary_crossentropy", a, bits))
    np.testing.assert_allclose(chained, (a - bits) / M, atol=1e-15)
    np.testing.assert_allclose(
        losses.value(fused, z, bits), losses.value("binary_crossentropy", a, bits), rtol=1e-12
    )


def test_integer_and_one_hot_labels_agree():
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(M, K)))
    labels = jnp.asarray(rng.integers(0, K, M))
    one_hot = jax.nn.one_hot(labels, K, dtype=jnp.float64)
    for loss in ("categorical_crossentropy_from_logits", "categorical_crossentropy"):
        pred = z if "logits" in loss else activations.softmax.fn(z)
        assert float(losses.value(loss, pred, labels)) == float(losses.value(loss, pred, one_hot))
        np.testing.assert_array_equal(
            losses.gradient(loss, pred, labels), losses.gradient(loss, pred, one_hot)
        )
    # One output unit: labels 0/1 are the targets themselves, not class indices.
    y = jnp.asarray([0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(losses.targets_like(z[:, :1], y)[:, 0], y)
    with pytest.raises(ValueError, match=r"y: expected shape \(6, 4\)"):
        losses.value("mse", z, jnp.ones((6, 3)))


def test_logits_of_1e4_give_finite_exact_losses_and_gradients():
    bce, cce = losses.binary_crossentropy_from_logits, losses.categorical_crossentropy_from_logits

    @jax.jit  # one program: op-by-op dispatch is slow
    def values_and_grads(z, y, zc, labels):
        out = {"bce": (z, y, bce), "cce0": (zc, labels[0], cce), "cce1": (zc, labels[1], cce)}
        return {
            k: (
                losses.value(loss, p, t),
                losses.gradient(loss, p, t),
                jax.grad(lambda p, t=t, loss=loss: losses.value(loss, p, t))(p),
            )
            for k, (p, t, loss) in out.items()
        }

    z = jnp.asarray([[1e4], [-1e4], [1e4], [-1e4], [0.0]])
    y = jnp.asarray([0, 1, 1, 0, 1])
    zc = jnp.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])
    got = values_and_grads(z, y, zc, jnp.asarray([[0, 2], [1, 0]]))
    for name, (value, grad, auto) in got.items():
        assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad))), name
        np.testing.assert_allclose(grad, auto, atol=1e-300, err_msg=name)
    # Per sample: 1e4, 1e4, 0, 0, log 2 (confidently wrong, wrong, right, right, unsure).
    # The last logit is exactly 0 (a zero-initialised output layer): d/dz = sigmoid(0) - y,
    # by hand and by jax.grad alike.
    value, grad, _ = got["bce"]
    np.testing.assert_allclose(value, (2e4 + np.log(2)) / 5, rtol=1e-15)
    np.testing.assert_allclose(grad[:, 0], np.array([1, -1, 0, 0, -0.5]) / 5, atol=1e-300)
    # Softmax cross-entropy: right with margin 1e4 costs 0; wrong by 2e4 costs 2e4.
    np.testing.assert_allclose(got["cce0"][0], 0.0, atol=1e-300)
    np.testing.assert_allclose(got["cce1"][0], 2e4, rtol=1e-15)
    np.testing.assert_allclose(got["cce1"][1], [[0.5, -0.5, 0.0], [-0.5, 0.0, 0.5]], atol=1e-300)


def test_large_close_logits_keep_float32_precision():
    """lse(z) - z_y cancels two numbers of size |z|: shifted by the row max first, float32
    keeps its relative precision (unshifted: 0.313477 at 1e4, 0.3125 at 1e6; exact 0.313262)."""
    z = np.array([[1e4, 1e4 - 1, -1e4], [1e6, 1e6 - 1, -1e6], [-3e4, -3e4 - 2, -5e4]])
    soft = np.array([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
    # Reference in float64 NumPy: -sum_k y_k log softmax_k(z), with log softmax = (z - m) - lse.
    shifted = z - z.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -(soft * log_softmax).sum(axis=1)
    assert abs(expected[0] - 0.3132616875182228) < 1e-15
    z32, soft32 = jnp.asarray(z, jnp.float32), jnp.asarray(soft, jnp.float32)
    cce = losses.categorical_crossentropy_from_logits
    per_sample = jax.jit(cce.fn)(z32, soft32)
    assert per_sample.dtype == jnp.float32
    np.testing.assert_allclose(per_sample, expected, rtol=2e-7)
    np.testing.assert_allclose(
        losses.value(cce, z32[:1], jnp.asarray([0])), 0.3132616875182228, rtol=2e-7
    )


def test_probabilities_at_0_and_1_are_clipped_with_zero_gradient():
    a = jnp.asarray([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    y = jnp.asarray([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    value, grad = jax.jit(
        lambda a, y: (
            losses.value("binary_crossentropy", a, y),
            losses.gradient("binary_crossentropy", a, y),
        )
    )(a, y)
    # Row 0 is confidently wrong twice (-log EPS each), row 1 right twice (-log(1 - EPS)
    # each); the 0.5s cost log 2 each.
    eps = losses.EPS
    expected = (-2 * np.log(eps) - 2 * np.log1p(-eps) + 2 * np.log(2)) / 2
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_array_equal(grad[:, :2], 0.0)  # clipped: no gradient
    np.testing.assert_allclose(grad[:, 2], [-1.0, 1.0], rtol=1e-14)  # -y/a + (1-y)/(1-a), / m


def test_get_by_name_and_unknown_names():
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get(losses.half_squared_error) is losses.half_squared_error
    with pytest.raises(ValueError, match="loss: expected one of") as err:
        losses.get("crossentropy")
    for name in ("binary_crossentropy", "categorical_crossentropy", "mse"):
        assert repr(name) in str(err.value)


@jax.jit
def logit_losses(z, labels):
    out = {}
    for loss in (
        losses.categorical_crossentropy_from_logits,
        losses.binary_crossentropy_from_logits,
    ):
        binary = jnp.broadcast_to((labels % 2)[:, None], z.shape).astype(z.dtype)
        y = labels if loss.name.startswith("categorical") else binary
        value = losses.value(loss, z, y)
        out[loss.name] = (
            value,
            losses.gradient(loss, z, y),
            jax.grad(lambda z, loss=loss, y=y: losses.value(loss, z, y))(z),
        )
    return out


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    m=st.sampled_from([1, 3]),
    k=st.sampled_from([1, 4]),
)
def test_property_extreme_logits_stay_finite_and_agree(data, m, k):
    value = st.floats(-1e4, 1e4, allow_nan=False) | st.sampled_from([-1e4, 1e4, 0.0, -3.5])
    z = np.asarray(data.draw(st.lists(value, min_size=m * k, max_size=m * k))).reshape(m, k)
    labels = np.asarray(data.draw(st.lists(st.integers(0, k - 1), min_size=m, max_size=m)))
    with jax.enable_x64(True):
        for name, (v, grad, auto) in logit_losses(jnp.asarray(z), jnp.asarray(labels)).items():
            assert bool(jnp.isfinite(v)) and float(v) >= 0, (name, z)
            assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.all(jnp.isfinite(auto)))
            np.testing.assert_allclose(grad, auto, rtol=1e-10, atol=1e-300, err_msg=name)
            if name.startswith("categorical"):  # softmax rows sum to 1: (p - y) rows sum to 0
                np.testing.assert_allclose(np.sum(np.asarray(grad), 1), 0.0, atol=1e-15)
                assert np.all(np.abs(np.asarray(grad)) <= 1.0 / m + 1e-15)
