"""Gradient checking: hand-written derivatives against jax.grad and central differences.

Point it at your own code: ``check(loss_fn, params, grads)`` compares any gradient pytree
with ``jax.grad(loss_fn)`` and with finite differences and reports per leaf (``[1]['b']``:
layer 1's bias) the error max|manual - ref| / max(max|ref|, floor) and the worst element
(its manual value, then the reference's); ``check_network`` adds a layer-by-layer check
that names every piece of the backward pass that is wrong on its own, in training mode and,
for layers that differ, evaluation mode; ``check_activation``, ``check_loss`` and
``check_layer`` check one piece at a time, and ``python -m nnfun.gradcheck FILE.py`` checks
those defined in a file. Finite differences skip elements on a kink (ReLU at 0, a maxout
tie, |w| at 0), found element by element. Checks run in float64 on the CPU whatever the
default device. Stochastic code must use the same key on every evaluation (close over it).

The course's conventions (``gradcheck.course``): its one number ``difference``, its layout
(``from_course``, ``to_course``, ``samples_from_course``), ``check_course`` for a student's
NumPy gradients, and ``unfused`` for its log(a), log(1 - a) form of the loss.

Extension points, i.e. what the manual backward pass calls and so what to override to
write (or plant a bug in) a derivative:
  ``Layer.backward(params, cache, dy)``   every layer, except a fused output layer;
  ``Dense.backward_affine(params, cache, dz)``  dW, db, dx from dZ: called by
      ``Dense.backward`` after the activation's vjp, and directly for a fused output layer
      (sigmoid + binary cross-entropy, softmax + categorical cross-entropy), whose
      ``backward`` is never called; override it to change a Dense layer's affine part;
  ``Activation.derivative(z, a)`` / ``vjp(z, a, da)``  in Dense (not fused) and Activation
      layers: ``activations.elementwise(name, fn, derivative)`` builds one;
  ``Loss.grad(pred, y)``  dJ/dpred of an unfused loss; ``losses.FUSED[(activation, loss)]``
      the fused dJ/dz, used when the network's output and loss fuse.

Inside ``jit`` (checked training): ``leaf_errors(manual, reference)`` gives the same error
per leaf as an array, to compare with ``tolerance(dtype)``.
"""

from nnfun.gradcheck.course import (
    CourseCheck,
    check_course,
    difference,
    from_course,
    samples_from_course,
    to_course,
    unfused,
)
from nnfun.gradcheck.errors import (
    GradCheck,
    LeafError,
    Report,
    compare,
    leaf_errors,
    leaf_names,
    tolerance,
)
from nnfun.gradcheck.network_check import NetworkCheck, PieceCheck, check_network
from nnfun.gradcheck.pieces import (
    check,
    check_activation,
    check_derivative,
    check_layer,
    check_loss,
    check_vjp,
    finite_differences,
)

__all__ = [
    "CourseCheck",
    "GradCheck",
    "LeafError",
    "NetworkCheck",
    "PieceCheck",
    "Report",
    "check",
    "check_activation",
    "check_course",
    "check_derivative",
    "check_layer",
    "check_loss",
    "check_network",
    "check_vjp",
    "compare",
    "difference",
    "finite_differences",
    "from_course",
    "leaf_errors",
    "leaf_names",
    "samples_from_course",
    "to_course",
    "tolerance",
    "unfused",
]
