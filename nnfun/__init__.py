"""nnfun: functional neural networks on JAX with hand-written derivatives and backprop."""

from nnfun import activations, gradcheck, initializers, losses
from nnfun.layers import (
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    Layer,
    Maxout,
    PReLU,
    RReLU,
)
from nnfun.network import Sequential

__all__ = [
    "Activation",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "Maxout",
    "PReLU",
    "RReLU",
    "Sequential",
    "activations",
    "gradcheck",
    "initializers",
    "losses",
]
