"""Data-parallel fit over 8 simulated CPU devices; mixed precision and matmul precision.

The sharded runs live in one subprocess because XLA_FLAGS must be set before JAX starts.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import train

ROOT = Path(__file__).resolve().parents[1]

SHARDED = r"""
import json, jax, numpy as np
import nnfun
from nnfun import parallel, train

assert jax.device_count() == 8, jax.devices()
rng = np.random.default_rng(0)
x = rng.normal(size=(203, 16)).astype(np.float32)  # 203 = 12 * 16 + 11: a ragged last batch
y = (x[:, :3].sum(1) > 0).astype(np.int32) + (x[:, 3] > 0.5).astype(np.int32)
net = nnfun.Sequential([nnfun.Dense(32, "sigmoid", input_dim=16), nnfun.Dense(3, "softmax")])
cfg = nnfun.Config.make("categorical_crossentropy", "adam", ["accuracy"])
mesh = parallel.data_mesh()
out = {"mesh": int(parallel.data_size(mesh))}

def run(**kw):
    kw = {"batch_size": 16, **kw}
    return train.fit(net, x, y, config=cfg, key=jax.random.key(3), epochs=4, **kw)

solo, h_solo = run()
shard, h_shard = run(mesh=mesh)
out["loss_solo"], out["loss_shard"] = h_solo["loss"], h_shard["loss"]
out["param_diff"] = max(  # in NumPy: eager jnp ops compile a program each
    float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
    zip(jax.tree.leaves(solo.params), jax.tree.leaves(shard.params), strict=True))
out["steps"] = int(shard.step)
out["param_devices"] = len(shard.params[0]["W"].sharding.device_set)
out["replicated"] = bool(shard.params[0]["W"].sharding.is_fully_replicated)

# The compiled epoch splits the batch: the gradient needs a cross-device all-reduce.
epoch = train.compiled_epoch(net, cfg, 16, True, mesh=mesh)
placed = parallel.replicate((x, y), mesh)
state = parallel.replicate(train.init_state(net, cfg, jax.random.key(3)), mesh)
hlo = epoch.lower(state, *placed).compile().as_text()
out["all_reduce"] = "all-reduce" in hlo

try:
    run(mesh=mesh, batch_size=12)
    out["error"] = None
except ValueError as e:
    out["error"] = str(e)

states = train.init_many(net, cfg, jax.random.split(jax.random.key(5), 3))
_, m_solo = train.fit_many(net, x, y, states, config=cfg, epochs=3, batch_size=16)
states = train.init_many(net, cfg, jax.random.split(jax.random.key(5), 3))
m_states, m_shard = train.fit_many(net, x, y, states, config=cfg, epochs=3, batch_size=16,
                                   mesh=mesh)
out["many_solo"], out["many_shard"] = m_solo["loss"].tolist(), m_shard["loss"].tolist()
out["many_steps"] = np.asarray(m_states.step).tolist()

model = nnfun.Sequential([nnfun.Dense(32, "sigmoid", input_dim=16), nnfun.Dense(3, "softmax")])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
keras = model.fit(x, y, batch_size=16, epochs=4, mesh=mesh, key=jax.random.key(3))
out["keras_loss"] = keras.history["loss"]
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded():
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def test_sharded_fit_matches_single_device(sharded):
    assert sharded["mesh"] == 8
    assert len(sharded["loss_shard"]) == 4
    np.testing.assert_allclose(sharded["loss_shard"], sharded["loss_solo"], rtol=0, atol=1e-5)
    assert sharded["param_diff"] < 1e-5
    assert sharded["loss_shard"][-1] < sharded["loss_shard"][0]
    # 203 samples at batch 16: 12 full steps plus the 11-sample remainder, every epoch.
    assert sharded["steps"] == 4 * 13
    assert sharded["param_devices"] == 8 and sharded["replicated"]
    assert sharded["all_reduce"]


def test_batch_size_that_does_not_split_names_a_valid_one(sharded):
    error = sharded["error"]
    assert error is not None
    assert "batch_size" in error and "8 devices" in error and "8 or 16" in error


def test_many_models_compose_with_sharding(sharded):
    solo, shard = np.array(sharded["many_solo"]), np.array(sharded["many_shard"])
    assert solo.shape == shard.shape == (3, 3)
    np.testing.assert_allclose(shard, solo, rtol=0, atol=1e-5)
    assert sharded["many_steps"] == [3 * 13] * 3


def test_keras_face_takes_the_mesh(sharded):
    np.testing.assert_allclose(sharded["keras_loss"], sharded["loss_solo"], rtol=0, atol=1e-5)


RNG = np.random.default_rng(1)
X = RNG.normal(size=(256, 20)).astype(np.float32)
Y = (X[:, :4].sum(1) > 0).astype(np.int32) + 2 * (X[:, 4] > 0).astype(np.int32)
TANH_NET = nnfun.Sequential([nnfun.Dense(64, "tanh", input_dim=20), nnfun.Dense(4, "softmax")])
MIXED_FIT = dict(key=jax.random.key(0), epochs=6, batch_size=32)


@pytest.fixture(scope="module")
def float32_fit():
    cfg = nnfun.Config.make("categorical_crossentropy")
    return train.fit(TANH_NET, X, Y, config=cfg, **MIXED_FIT)


@pytest.mark.parametrize(
    ("dtype", "grad"), [("bfloat16", "autodiff"), ("bfloat16", "manual"), ("float16", "manual")]
)
def test_low_precision_compute_trains_and_keeps_float32_params(float32_fit, dtype, grad):
    cfg = nnfun.Config.make("categorical_crossentropy", compute_dtype=dtype, grad=grad)
    state, hist = train.fit(TANH_NET, X, Y, config=cfg, **MIXED_FIT)
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    moments = jax.tree.leaves(state.opt_state.inner_state)
    assert moments and all(leaf.dtype == jnp.float32 for leaf in moments if leaf.ndim)
    # The same run in float32 lands close by: only the matmul inputs are rounded.
    ref_hist = float32_fit[1]
    assert abs(hist["loss"][-1] - ref_hist["loss"][-1]) < 0.05
    assert hist["loss"] != ref_hist["loss"]  # it really ran in low precision


# Normwise relative error of a gradient leaf against float32: measured 1e-3 (bfloat16) and
# 3e-4 (float16) for the manual and autodiff gradients alike; a derivative wrong by 1%
# gives 1e-2.
LOW_PRECISION_TOLERANCE = {"bfloat16": 4e-3, "float16": 1.5e-3}


@pytest.mark.parametrize("dtype", sorted(LOW_PRECISION_TOLERANCE))
def test_low_precision_manual_gradient_is_float32_up_to_rounding(dtype):
    net = nnfun.Sequential([nnfun.Dense(32, "sigmoid", input_dim=20), nnfun.Dense(4, "softmax")])
    params = net.init(jax.random.key(2))
    loss = "categorical_crossentropy"

    @jax.jit  # as in training (eager validation refuses low-precision inputs)
    def gradients(params):
        (value, aux), manual = net.value_and_manual_grad(params, X, Y, loss=loss,
                                                         compute_dtype=dtype)  # fmt: skip
        reference = jax.grad(net.loss)(params, X, Y, loss=loss)  # float32, autodiff
        return value, aux.output, manual, reference

    value, output, manual, reference = gradients(params)
    assert value.dtype == output.dtype == jnp.float32
    chex.assert_trees_all_equal_dtypes(manual, params)
    for m, r in zip(jax.tree.leaves(manual), jax.tree.leaves(reference), strict=True):
        error = float(jnp.linalg.norm(m - r) / jnp.linalg.norm(r))
        assert 1e-6 < error < LOW_PRECISION_TOLERANCE[dtype], (m.shape, error)


def test_precision_and_dtype_options_are_checked():
    cfg = nnfun.Config.make("mse", precision="highest", compute_dtype=jnp.bfloat16)
    assert cfg.precision == "highest" and cfg.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        nnfun.Config.make("mse", precision="fast")
    with pytest.raises(ValueError, match="compute_dtype"):
        nnfun.Config.make("mse", compute_dtype="int8")


def _matmul_precisions(tmp_path, precision, train_too=True) -> dict[str, set[str]]:
    """Per compiled program of an evaluate (and a fit) under ``precision``, the precisions
    of its matmuls, read from the StableHLO that JAX dumps (CPU computes float32 matmuls the
    same way under every precision, so the program text is the observable)."""
    net = nnfun.Sequential([nnfun.Dense(2, "softmax", input_dim=20)])
    cfg = nnfun.Config.make("categorical_crossentropy", "sgd", precision=precision)
    dump = tmp_path / str(precision)
    jax.config.update("jax_dump_ir_to", str(dump))
    try:
        state = train.init_state(net, cfg, jax.random.key(0))
        if train_too:
            state, _ = train.fit(net, X[:16], Y[:16] % 2, config=cfg, state=state, batch_size=8)
        train.evaluate(net, state, X[:16], Y[:16] % 2, config=cfg)
    finally:
        jax.config.update("jax_dump_ir_to", "")
    found = {}
    for path in dump.glob("*.mlir"):
        for program in ("run_epochs", "evaluate_arrays"):
            if program in path.name:
                text = path.read_text()
                found.setdefault(program, set()).update(re.findall(r"precision = \[(\w+)", text))
    return found


def test_precision_reaches_every_matmul_of_training_and_evaluation(tmp_path):
    assert _matmul_precisions(tmp_path, "highest") == {
        "run_epochs": {"HIGHEST"},
        "evaluate_arrays": {"HIGHEST"},
    }
    # The observable tells precisions apart: the default program says DEFAULT.
    assert _matmul_precisions(tmp_path, None, train_too=False) == {"evaluate_arrays": {"DEFAULT"}}
