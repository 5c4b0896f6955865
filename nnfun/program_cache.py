"""Compiled programs shared by equal networks.

A compiled program depends on its network only through the network's class, its layers
(frozen specs, compared by value) and its input shape. ``by_structure`` caches a program
builder on exactly that, so a network rebuilt layer for layer (the next notebook cell, the
next test, a model made by the same function) reuses the programs of the first one
instead of compiling them again.

Programs are built over a private twin of the network, holding its layers and input shape
and none of its training state: changing the network later (``add``, ``pop``) cannot reach
a program already built, since the changed network has another structure and gets its own.
A network whose layers cannot be hashed (a layer holding an array) is cached by identity.
Code changed in place (a layer class's method replaced at run time, as tests plant bugs)
is not part of the structure: call ``clear()`` afterwards so that programs are traced anew.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

MAXSIZE = 64  # programs kept per builder (each also holds its compiled executables)
_HEAVY = ("state", "history")  # training state a twin must not keep alive


def structure(net) -> tuple | None:
    """``(class, layers, input shape)``, or None when a layer is unhashable."""
    try:
        key = (type(net), tuple(net.layers), net.input_shape)
        hash(key)
    except (TypeError, ValueError):  # an unhashable layer; an input shape not known yet
        return None
    return key


_TWINS: dict = {}  # structure -> twin, oldest first


def twin(net):
    """The network every network of ``net``'s structure shares (``net`` itself when its
    structure cannot be hashed)."""
    key = structure(net)
    if key is None:
        return net
    if key not in _TWINS:
        found = copy.copy(net)
        vars(found).update({name: None for name in _HEAVY if name in vars(found)})
        found.layers = list(net.layers)
        _TWINS[key] = found
        while len(_TWINS) > MAXSIZE:
            _TWINS.pop(next(iter(_TWINS)))
    return _TWINS[key]


_CACHES: list = []


def clear() -> None:
    """Forgets every program built here (and the twins)."""
    for cached in _CACHES:
        cached.cache_clear()
    _TWINS.clear()


def by_structure(build: Callable) -> Callable:
    """``functools.lru_cache`` for ``build(net, *args)``, keyed on the net's structure."""
    cached = functools.lru_cache(maxsize=MAXSIZE)(build)
    _CACHES.append(cached)

    @functools.wraps(build)
    def wrapper(net, *args, **kwargs):
        return cached(twin(net), *args, **kwargs)

    wrapper.cache_clear = cached.cache_clear
    return wrapper
