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
VALUES = jax.jit(lambda z: {n: a.fn(z) for n, a in ELEMENTWISE.items()})
SOFTMAX = jax.jit(activations.softmax.fn)


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
        # The vjp vmapped over rows (each row one sample's pre-activations) ...
        rows = jax.vmap(lambda r, c, act=act: act.vjp(r, act.fn(r), c))(z, ct)
        ref_rows = jax.vmap(lambda r, c, act=act: jax.vjp(act.fn, r)[1](c)[0])(z, ct)
        out[name] = {"vmap": (rows, ref_rows)}
        if act.derivative is None:  # ... softmax's on the whole batch ...
            out[name]["vjp"] = (act.vjp(z, act.fn(z), ct), jax.vjp(act.fn, z)[1](ct)[0])
        else:  # ... and g'(z) element by element.
            ref = jax.vmap(jax.grad(act.fn))(z.ravel()).reshape(z.shape)
            out[name]["g'"] = (act.derivative(z, act.fn(z)), ref)
    return out


def test_derivatives_match_jax_grad_in_float64_under_jit_and_vmap():
    z = away_from_kinks()
    ct = jnp.asarray(np.random.default_rng(1).normal(size=z.shape))
    worst = 0.0
    for name, checks in manual_and_reference(z, ct).items():
        assert set(checks) == ({"vjp", "vmap"} if name == "softmax" else {"vmap", "g'"})
        for kind, (manual, ref) in checks.items():
            assert manual.dtype == jnp.float64 and manual.shape == z.shape
            rel = float(jnp.max(jnp.abs(manual - ref)) / jnp.max(jnp.abs(ref)))
            assert rel < TOL, (name, kind, rel)
            worst = max(worst, rel)
    print(f"worst relative error of an activation derivative vs jax.grad: {worst:.2e}")


def test_softmax_vjp_is_the_full_jacobian():
    z = jnp.asarray(np.random.default_rng(4).normal(size=(3, 5)) * 3)
    ct = jnp.asarray(np.random.default_rng(5).normal(size=(3, 5)))
    sm = activations.softmax
    assert sm.derivative is None  # not element-wise
    report = gradcheck.check_vjp(sm.fn, lambda z, ct: sm.vjp(z, sm.fn(z), ct), z, ct, tol=TOL)
    assert report.ok, str(report)

    @jax.jit
    def pieces(z, ct):
        a = sm.fn(z)
        return {
            "jacobian": jax.jacobian(sm.fn)(z[0]),
            "by formula": jnp.diag(a[0]) - jnp.outer(a[0], a[0]),  # J = diag(a) - a a^T
            "vjp": sm.vjp(z, a, ct),
            "diagonal only": ct * a * (1 - a),  # the element-wise rule a(1 - a)
            "constant cotangent": sm.vjp(z, a, jnp.ones_like(z)),
            "row sums": jnp.sum(a, axis=-1),
        }

    got = pieces(z, ct)
    np.testing.assert_allclose(got["jacobian"], got["by formula"], atol=1e-15)
    assert not np.allclose(got["diagonal only"], got["vjp"], atol=1e-3)
    # Rows of softmax sum to 1, so a constant cotangent has no effect.
    np.testing.assert_allclose(got["constant cotangent"], 0.0, atol=1e-15)
    np.testing.assert_allclose(got["row sums"], 1.0, atol=1e-15)


def test_known_values():
    z = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    got = VALUES(jnp.asarray(z))
    np.testing.assert_allclose(got["sigmoid"], 1 / (1 + np.exp(-z)), rtol=1e-15)
    np.testing.assert_allclose(got["tanh"], np.tanh(z), rtol=1e-15)
    np.testing.assert_array_equal(got["relu"], [0, 0, 0, 1, 2])
    np.testing.assert_allclose(got["leaky_relu"], [-0.02, -0.01, 0, 1, 2], rtol=1e-15)
    np.testing.assert_allclose(got["leaky_relu(0.2)"], [-0.4, -0.2, 0, 1, 2], rtol=1e-15)
    np.testing.assert_allclose(got["elu"][:2], np.expm1([-2.0, -1.0]), rtol=1e-15)
    np.testing.assert_allclose(got["elu(0.5)"][:2], 0.5 * np.expm1([-2.0, -1.0]), rtol=1e-15)
    np.testing.assert_allclose(got["softplus"], np.log1p(np.exp(z)), rtol=1e-15)
    np.testing.assert_allclose(got["swish"], z / (1 + np.exp(-z)), rtol=1e-15)
    # gelu(1) = 1 * Phi(1) = 0.8413447460685429
    np.testing.assert_allclose(got["gelu"][3], 0.8413447460685429, rtol=1e-14)


def test_kink_conventions_are_stated_and_agree_with_jax():
    @jax.jit  # one program: op-by-op dispatch is slow
    def at_zero(z):
        # At 0, jax.grad of every activation's fn against its hand-written derivative.
        return {n: (jax.grad(a.fn)(z), derivative_of(a)(z)) for n, a in ELEMENTWISE.items()}

    got = {name: (float(auto), float(manual)) for name, (auto, manual) in at_zero(0.0).items()}
    # ReLU: g'(0) = 0, as jax.nn.relu (and so jax.grad) has it.
    assert "taken as 0" in activations.relu.kink and got["relu"] == (0.0, 0.0)
    assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0
    # Leaky ReLU and ELU take the left side at 0: the slope, alpha (for alpha = 1 the two
    # sides agree: ELU is smooth there).
    assert got["leaky_relu(0.2)"] == (0.2, 0.2) and got["leaky_relu"] == (0.01, 0.01)
    assert got["elu(0.5)"] == (0.5, 0.5) and got["elu"] == (1.0, 1.0)
    # Smooth ones: softplus' = sigmoid(0) = 1/2, sigmoid' = 1/4, tanh' = 1, swish' = gelu' = 1/2
    # (softplus, ELU and sigmoid are written so that autodiff does not pick a wrong one-sided
    # value at 0).
    assert got["softplus"] == (0.5, 0.5) and got["sigmoid"] == (0.25, 0.25)
    assert got["tanh"] == (1.0, 1.0) and got["swish"] == got["gelu"] == (0.5, 0.5)
    assert all(auto == manual for auto, manual in got.values()), got


# g(NaN), g(+inf), g(-inf), written out by hand from each g's limits (swish and gelu: -inf * 0).
NON_FINITE = {
    "identity": (np.nan, np.inf, -np.inf),
    "sigmoid": (np.nan, 1.0, 0.0),
    "tanh": (np.nan, 1.0, -1.0),
    "relu": (np.nan, np.inf, 0.0),
    "leaky_relu": (np.nan, np.inf, -np.inf),
    "leaky_relu(0.2)": (np.nan, np.inf, -np.inf),
    "elu": (np.nan, np.inf, -1.0),
    "elu(0.5)": (np.nan, np.inf, -0.5),
    "softplus": (np.nan, np.inf, 0.0),
    "swish": (np.nan, np.inf, np.nan),
    "gelu": (np.nan, np.inf, np.nan),
}


def test_nan_propagates_and_inf_gives_the_limit_with_derivatives_as_jax_grad():
    @jax.jit
    def values_and_derivatives(z):
        return {
            n: (a.fn(z), derivative_of(a)(z), jax.vmap(jax.grad(a.fn))(z))
            for n, a in ELEMENTWISE.items()
        }

    z = jnp.array([np.nan, np.inf, -np.inf])
    assert set(NON_FINITE) == set(ELEMENTWISE)
    for name, (value, manual, auto) in values_and_derivatives(z).items():
        np.testing.assert_array_equal(value, NON_FINITE[name], err_msg=name)
        # NaN where jax.grad has NaN: assert_array_equal counts NaN == NaN.
        np.testing.assert_array_equal(manual, auto, err_msg=name)
    # softmax: a NaN or +inf logit turns its whole row into NaN, as jax.nn.softmax does.
    rows = jnp.array([[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 0.0]])
    got = np.asarray(activations.softmax.fn(rows))
    assert np.isnan(got[:2]).all()
    np.testing.assert_array_equal(got[2], [0.0, 0.5, 0.5])


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


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    z=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=3),
        elements=FINITE_OR_HUGE,
    )
)
def test_property_any_shape_and_extreme_values(z):
    with jax.enable_x64(True):
        # Values and derivatives on a copy padded to the (7, 9) batch used above, so that the
        # same compiled program runs (pads are 0.5) ...
        padded = np.full(63, 0.5)
        padded[: z.size] = z.ravel()
        padded = jnp.asarray(padded.reshape(7, 9))
        ct = jnp.asarray(np.random.default_rng(1).normal(size=(7, 9)))
        for name, checks in manual_and_reference(padded, ct).items():
            for kind, (manual, ref) in checks.items():
                assert bool(jnp.all(jnp.isfinite(manual))), (name, kind)
                np.testing.assert_allclose(manual, ref, rtol=1e-10, atol=1e-14, err_msg=name)
        values = VALUES(padded)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in values.values())
        # ... and shapes on the array itself: softmax normalises the last axis, finitely.
        s = SOFTMAX(jnp.asarray(z))
        assert s.shape == z.shape and bool(jnp.all(jnp.isfinite(s)))
        np.testing.assert_allclose(np.sum(np.asarray(s), axis=-1), 1.0, rtol=1e-12)
