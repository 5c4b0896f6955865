"""Activations: each hand-written derivative against jax.grad in float64 (also under jit and
vmap), softmax's full Jacobian, the kink conventions, known values and the notes' golden
sigmoid layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnfun import activations, gradcheck
from nnfun.layers import Dense

ELEMENTWISE = {
    "identity": activations.identity,
    "sigmoid": activations.sigmoid,
    "tanh": activations.tanh,
    "relu": activations.relu,
    "leaky_relu": activations.leaky_relu(),
    "leaky_relu(0.2)": activations.leaky_relu(0.2),
    "elu": activations.elu(),
    "elu(0.5)": activations.elu(0.5),
    "softplus": activations.softplus,
    "swish": activations.swish,
    "gelu": activations.gelu,
}
TOL = 1e-10


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def away_from_kinks(shape=(7, 9), seed=0):
    """Values in +-[0.05, 6]: both sides of every kink (all at 0), never on one."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, 6.0, shape))


def derivative_of(act):
    return lambda z: act.derivative(z, act.fn(z))


@jax.jit  # one program for every activation: op-by-op dispatch is slow
def manual_and_reference(z, ct):
    """Per activation: (manual, jax) pairs for g'(z), the vjp, and the vjp vmapped over rows."""
    out = {}
    for name, act in {**ELEMENTWISE, "softmax": activations.softmax}.items():
        vjp = act.vjp(z, act.fn(z), ct)
        ref_vjp = jax.vjp(act.fn, z)[1](ct)[0]
        # vmap over rows: each row is one sample's pre-activations.
        rows = jax.vmap(lambda r, c, act=act: act.vjp(r, act.fn(r), c))(z, ct)
        ref_rows = jax.vmap(lambda r, c, act=act: jax.vjp(act.fn, r)[1](c)[0])(z, ct)
        out[name] = {"vjp": (vjp, ref_vjp), "vmap": (rows, ref_rows)}
        if act.derivative is not None:
            ref = jax.vmap(jax.grad(act.fn))(z.ravel()).reshape(z.shape)
            out[name]["g'"] = (act.derivative(z, act.fn(z)), ref)
    return out


def test_derivatives_match_jax_grad_in_float64_under_jit_and_vmap():
    z = away_from_kinks()
    ct = jnp.asarray(np.random.default_rng(1).normal(size=z.shape))
    worst = 0.0
    for name, checks in manual_and_reference(z, ct).items():
        assert set(checks) == ({"vjp", "vmap"} if name == "softmax" else {"vjp", "vmap", "g'"})
        for kind, (manual, ref) in checks.items():
            assert manual.dtype == jnp.float64 and manual.shape == z.shape
            rel = float(jnp.max(jnp.abs(manual - ref)) / jnp.max(jnp.abs(ref)))
            assert rel < TOL, (name, kind, rel)
            worst = max(worst, rel)
    print(f"worst relative error of an activation derivative vs jax.grad: {worst:.2e}")


def test_check_derivative_helper_on_an_activation():
    act = activations.gelu
    report = gradcheck.check_derivative(act.fn, derivative_of(act), away_from_kinks((3, 4)))
    assert report.ok and report.worst.rel_error < TOL, str(report)


def test_softmax_vjp_is_the_full_jacobian():
    z = jnp.asarray(np.random.default_rng(4).normal(size=(3, 5)) * 3)
    ct = jnp.asarray(np.random.default_rng(5).normal(size=(3, 5)))
    sm = activations.softmax
    assert sm.derivative is None  # not element-wise
    report = gradcheck.check_vjp(sm.fn, lambda z, ct: sm.vjp(z, sm.fn(z), ct), z, ct, tol=TOL)
    assert report.ok, str(report)
    # J = diag(a) - a a^T for one sample, against jax.jacobian.
    a = sm.fn(z[0])
    np.testing.assert_allclose(jax.jacobian(sm.fn)(z[0]), jnp.diag(a) - jnp.outer(a, a), atol=1e-15)
    # Its diagonal alone (a(1 - a), the element-wise rule) is not the vjp.
    diagonal_only = lambda z, ct: ct * sm.fn(z) * (1 - sm.fn(z))  # noqa: E731
    assert not gradcheck.check_vjp(sm.fn, diagonal_only, z, ct).ok
    # Rows of softmax sum to 1, so a constant cotangent has no effect.
    np.testing.assert_allclose(sm.vjp(z, sm.fn(z), jnp.ones_like(z)), 0.0, atol=1e-15)
    np.testing.assert_allclose(jnp.sum(sm.fn(z), axis=-1), 1.0, atol=1e-15)


def test_known_values():
    z = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(activations.sigmoid.fn(z), 1 / (1 + np.exp(-np.asarray(z))))
    np.testing.assert_allclose(activations.relu.fn(z), [0, 0, 0, 1, 2])
    np.testing.assert_allclose(activations.leaky_relu().fn(z), [-0.02, -0.01, 0, 1, 2])
    np.testing.assert_allclose(activations.leaky_relu(0.2).fn(z), [-0.4, -0.2, 0, 1, 2])
    np.testing.assert_allclose(activations.elu(0.5).fn(z)[:2], 0.5 * np.expm1([-2.0, -1.0]))
    np.testing.assert_allclose(activations.softplus.fn(z)[2], np.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(activations.swish.fn(z)[3], 1 / (1 + np.exp(-1.0)), rtol=1e-15)
    # gelu(1) = 1 * Phi(1) = 0.8413447460685429
    np.testing.assert_allclose(activations.gelu.fn(z)[3], 0.8413447460685429, rtol=1e-14)
    # Derivatives at 0 from the notes: sigmoid' = 1/4, tanh' = 1.
    zero = jnp.zeros(())
    assert float(derivative_of(activations.sigmoid)(zero)) == 0.25
    assert float(derivative_of(activations.tanh)(zero)) == 1.0


def test_kink_conventions_are_stated_and_agree_with_jax():
    zero = jnp.zeros(())
    # ReLU: g'(0) = 0, as jax.nn.relu (and so jax.grad) has it.
    relu = activations.relu
    assert "0" in relu.kink and float(derivative_of(relu)(zero)) == 0.0
    assert float(jax.grad(jax.nn.relu)(zero)) == 0.0
    assert float(derivative_of(relu)(jnp.array(1e-300))) == 1.0
    # Leaky ReLU and ELU take the left side at 0: the slope, alpha.
    assert float(derivative_of(activations.leaky_relu(0.2))(zero)) == 0.2
    assert float(derivative_of(activations.elu(0.5))(zero)) == 0.5
    assert float(derivative_of(activations.elu())(zero)) == 1.0  # alpha = 1 is smooth there
    # At 0, jax.grad of every activation's fn equals its hand-written derivative (softplus,
    # ELU and sigmoid are written so that autodiff does not pick a wrong one-sided value).
    at_zero = jax.jit(
        lambda z: {n: (jax.grad(a.fn)(z), derivative_of(a)(z)) for n, a in ELEMENTWISE.items()}
    )
    for name, (auto, manual) in at_zero(zero).items():
        assert float(auto) == float(manual), name
    assert float(derivative_of(activations.softplus)(zero)) == 0.5


def test_notes_sigmoid_layer_golden_value():
    """sigma([[1, -2], [-1, 1]] @ [1, -1] + [1, 0]) = [0.98, 0.12] in the notes.

    The notes write a layer as W x + b with x a column; nnfun is row-major, z = x @ W + b
    with W of shape (in, out), so the notes' W enters nnfun transposed.
    """
    w_notes = np.array([[1.0, -2.0], [-1.0, 1.0]])  # (out, in): the notes' column convention
    x, b = np.array([1.0, -1.0]), np.array([1.0, 0.0])
    expected = 1 / (1 + np.exp(-(w_notes @ x + b)))  # sigma([4, -2])
    np.testing.assert_allclose(np.round(expected, 2), [0.98, 0.12])
    layer = Dense(2, "sigmoid")
    params = {"W": jnp.asarray(w_notes.T), "b": jnp.asarray(b)}  # nnfun's W is (in, out)
    out, _, _ = layer.forward(params, {}, jnp.asarray(x[None, :]))
    assert out.shape == (1, 2)
    np.testing.assert_allclose(np.round(np.asarray(out[0]), 2), [0.98, 0.12])
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(out[0], [1 / (1 + np.exp(-4.0)), 1 / (1 + np.exp(2.0))], atol=1e-6)
    # Using the notes' W untransposed gives another (wrong) answer: the convention matters.
    wrong, _, _ = layer.forward({"W": jnp.asarray(w_notes), "b": params["b"]}, {}, jnp.asarray([x]))
    assert not np.allclose(wrong[0], expected, atol=1e-2)


def test_get_by_name_and_unknown_names():
    assert activations.get(None) is activations.identity
    assert activations.get("linear") is activations.identity
    assert activations.get("tanh") is activations.tanh
    custom = activations.leaky_relu(0.3)
    assert activations.get(custom) is custom
    with pytest.raises(ValueError, match="activation: expected one of") as err:
        activations.get("sigmod")
    for name in ("relu", "sigmoid", "softmax", "gelu"):
        assert repr(name) in str(err.value)
    assert "'sigmod'" in str(err.value)


FINITE_OR_HUGE = st.floats(-1e4, 1e4, allow_nan=False) | st.sampled_from([-1e4, 1e4, 0.0])


@jax.jit
def values_and_derivatives(flat):
    return {
        name: (act.fn(flat), derivative_of(act)(flat), jax.vmap(jax.grad(act.fn))(flat))
        for name, act in ELEMENTWISE.items()
    }


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    z=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
        elements=FINITE_OR_HUGE,
    )
)
def test_property_any_shape_and_extreme_values(z):
    with jax.enable_x64(True):
        # Values and derivatives on a fixed-size padded copy (one compiled program) ...
        flat = np.zeros(64)
        flat[: z.size] = z.ravel()
        for name, (a, d, ref) in values_and_derivatives(jnp.asarray(flat)).items():
            assert bool(jnp.all(jnp.isfinite(a))) and bool(jnp.all(jnp.isfinite(d))), name
            np.testing.assert_allclose(d, ref, rtol=1e-10, atol=1e-300, err_msg=name)
        # ... and shapes on the array itself: softmax normalises the last axis, finitely.
        s = activations.softmax.fn(jnp.asarray(z))
        assert s.shape == z.shape and bool(jnp.all(jnp.isfinite(s)))
        np.testing.assert_allclose(np.sum(np.asarray(s), axis=-1), 1.0, rtol=1e-12)
