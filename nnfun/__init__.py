"""nnfun: functional neural networks on JAX with hand-written derivatives and backprop."""

from nnfun import (
    activations,
    callbacks,
    data,
    gradcheck,
    initializers,
    losses,
    metrics,
    optimizers,
    regularizers,
    saving,
    train,
)
from nnfun.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from nnfun.layers import (
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    Input,
    Layer,
    Maxout,
    PReLU,
    RReLU,
)
from nnfun.model import Sequential, set_random_seed
from nnfun.network import Network
from nnfun.saving import load_model, register
from nnfun.sources import PyDataset
from nnfun.train import Config, TrainState

__all__ = [
    "Activation",
    "BatchNorm",
    "CSVLogger",
    "Callback",
    "Config",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Flatten",
    "History",
    "Input",
    "Layer",
    "LearningRateScheduler",
    "Maxout",
    "ModelCheckpoint",
    "Network",
    "PReLU",
    "PyDataset",
    "RReLU",
    "ReduceLROnPlateau",
    "Sequential",
    "TerminateOnNaN",
    "TrainState",
    "activations",
    "callbacks",
    "data",
    "gradcheck",
    "initializers",
    "losses",
    "load_model",
    "metrics",
    "optimizers",
    "register",
    "regularizers",
    "saving",
    "set_random_seed",
    "train",
]
