"""A student's file whose derivatives are all right: ``python -m nnfun.gradcheck`` exits 0."""

import jax.numpy as jnp

from nnfun.activations import elementwise

# ReLU written with maximum: jax.grad takes 1/2 at 0 (a tie), the derivative 0; both are
# subgradients, so the kink at 0 is skipped, not failed.
my_relu = elementwise("my_relu", lambda z: jnp.maximum(z, 0.0), lambda z, a: (z > 0) * 1.0)
