"""A masked, weighted loss keeps the prediction's dtype (float16 here), as every other part of
the loss does: the sampled mutants of nnfun.losses that cast the weights or the mask to the
default float survived without this."""

import jax.numpy as jnp
import numpy as np

from nnfun import losses

PRED = np.array([[0.5, 1.0], [2.0, 0.0], [1.5, -1.0]], np.float16)
Y = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], np.float16)
MASK = np.array([True, True, False])


def test_value_and_gradient_keep_float16_with_and_without_a_mask():
    mse = losses.get("mean_squared_error")
    for mask in (None, MASK):
        j = losses.value(mse, jnp.asarray(PRED), jnp.asarray(Y), mask=mask)
        g = losses.gradient(mse, jnp.asarray(PRED), jnp.asarray(Y), mask=mask)
        assert j.dtype == jnp.float16 and g.dtype == jnp.float16, (mask, j.dtype, g.dtype)
    # By hand: per-sample mse 0.125, 1.0 (the third is masked out), averaged over 2 rows.
    np.testing.assert_allclose(float(j), 0.5625, rtol=1e-3)
