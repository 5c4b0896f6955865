"""nnfun: functional neural networks on JAX with hand-written derivatives and backprop."""

from nnfun import activations, data, gradcheck, initializers, losses, train
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
from nnfun.train import Config, EarlyStopping, TrainState

__all__ = [
    "Activation",
    "BatchNorm",
    "Config",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Flatten",
    "Layer",
    "Maxout",
    "PReLU",
    "RReLU",
    "Sequential",
    "TrainState",
    "activations",
    "data",
    "gradcheck",
    "initializers",
    "losses",
    "train",
]
